"""Benchmark: DDP with 2 processes against 1 process, the real train stage on the GSS training split.

Each run is ``python -m pipeline.stages.train`` in a scratch workspace that links the repo's split and
augmented data, with a fixed number of epochs (early stopping off) and ``train.ddp.nproc_per_node``
set to 1 or 2 (gloo). One process uses both cores (torch's default threads) or one core; each DDP
rank gets one thread (torchrun's default). Runs are interleaved over rounds; medians are printed.
On a 2-core machine DDP can only split the same cores between processes, so read the ratio
honestly: it measures the overhead of gradient all-reduce and gathered validation, not scaling.

    python bench/ddp.py [--epochs 5] [--rounds 2]      (after `dvc repro`)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {"1 process, 2 threads": (1, 2), "1 process, 1 thread": (1, 1), "DDP 2 processes x 1 thread": (2, 1)}


def workspace(root: Path, epochs: int, processes: int, threads: int) -> Path:
    """params.yaml with absolute data paths into the repo and outputs under ``root``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in ("split", "augmented"):
        raw["paths"][key] = str(REPO / raw["paths"][key])
    raw["train"].update(epochs=epochs, num_threads=threads, ddp={"nproc_per_node": processes, "backend": "gloo"})
    raw["train"]["early_stopping"]["patience"] = epochs + 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root


def train_once(epochs: int, processes: int, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        root = workspace(Path(scratch), epochs, processes, threads)
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "DO_NOT_TRACK": "1"}
        result = subprocess.run(
            [sys.executable, "-m", "pipeline.stages.train"], cwd=root, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(result.stderr[-2000:])
        match = re.search(r"in ([\d.]+)s, (\d+) samples/s", result.stderr)
        best = json.loads((root / "reports/train/live/metrics.json").read_text())["best"]
        return {"seconds": float(match.group(1)), "samples_per_s": float(match.group(2)), "val_accuracy": best["val_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not (REPO / "data/augmented/train.parquet").exists():
        raise SystemExit("run `dvc repro` first: the benchmark trains on data/split and data/augmented")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (processes, threads) in VARIANTS.items():
            runs[name].append(train_once(args.epochs, processes, threads))
    print(
        f"train stage, {args.epochs} epochs on the GSS training split, {args.rounds} interleaved rounds, {os.cpu_count()} cores"
    )
    print(f"{'variant':<28} {'samples/s':>10} {'fit s':>7} {'vs 1 proc x 2 thr':>18} {'best val acc':>13}")
    base = statistics.median(r["samples_per_s"] for r in runs["1 process, 2 threads"])
    for name, results in runs.items():
        rate = statistics.median(r["samples_per_s"] for r in results)
        seconds = statistics.median(r["seconds"] for r in results)
        accuracy = statistics.median(r["val_accuracy"] for r in results)
        print(f"{name:<28} {rate:>10,.0f} {seconds:>7.1f} {rate / base:>17.2f}x {accuracy:>13.4f}")


if __name__ == "__main__":
    main()
