"""Benchmark: the whole `dvc repro` on the default data, from scratch, twice, and a no-op re-run.

Prints wall times, whether the two from-scratch runs gave identical metrics, and the quality
figures (MLP vs the gradient-boosting and majority baselines). Each run happens in its own fresh
copy of the repo (tracked and new files, no outputs, empty DVC cache).

    python bench/repro.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METRICS = ("reports/evaluate/metrics.json", "reports/train/live/metrics.json")


def fresh_copy(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "bench"],
    ):
        subprocess.run(["git", *args], cwd=destination, check=True)
    return destination


def timed_repro(root: Path, *extra: str) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    subprocess.run(["dvc", "repro", *extra], cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
        a, b = fresh_copy(Path(first)), fresh_copy(Path(second))
        full_a = timed_repro(a)
        noop = timed_repro(a)
        full_b = timed_repro(b)
        identical = all((a / m).read_text() == (b / m).read_text() for m in METRICS)
        metrics = json.loads((a / METRICS[0]).read_text())

    print(
        f"dvc repro from scratch (default data, {os.cpu_count()} cores): {full_a:.1f} s, again in a second copy: {full_b:.1f} s"
    )
    print(f"dvc repro with nothing changed: {noop:.2f} s")
    print(f"two from-scratch runs gave identical metrics: {identical}")
    print(f"test rows: {metrics['test_rows']}")
    print(f"{'':22s}{'accuracy':>10s}{'macro F1':>10s}{'bal. acc':>10s}{'ROC AUC':>10s}{'log loss':>10s}{'ECE':>8s}")
    for name in ("model", "baseline_hgb", "baseline_majority"):
        m = metrics[name]
        print(
            f"{name:22s}{m['accuracy']:10.4f}{m['macro_f1']:10.4f}{m['balanced_accuracy']:10.4f}"
            f"{m['roc_auc_ovr']:10.4f}{m['log_loss']:10.4f}{m['ece']:8.4f}"
        )
    gap = metrics["model_minus_hgb"]
    print(f"MLP minus HGB: accuracy {gap['accuracy'] * 100:+.2f} points, macro F1 {gap['macro_f1'] * 100:+.2f} points")


if __name__ == "__main__":
    main()
