"""Benchmark: time and peak memory of every stage as the table grows (GSS resampled x1, x10, x100).

For each factor the default GSS table is resampled with replacement to ``factor`` times its rows (seeded),
numeric features jittered by a few percent of their spread so rows are not exact copies, and written as
one Parquet source. In a fresh copy of the repo (tracked and new files, no outputs) whose params point
``ingest.source`` at it (``train.epochs`` set by ``--epochs``), the seven stages run one after the other
as ``python -m pipeline.stages.<stage>``; each stage's wall time and peak resident memory (its process's
``ru_maxrss`` from ``wait4``) are printed, then the totals and the time ratios between factors.

    python bench/scale.py [--factors 1 10 100] [--epochs 1] [--until augment]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import OtherLoad  # noqa: E402
from bench.repro import fresh_copy  # noqa: E402

STAGES = ("ingest", "clean", "split", "augment", "train", "evaluate", "export")
JITTER = 0.02  # of each numeric column's standard deviation


def resampled(factor: int, seed: int = 0):
    """The default table, ``factor`` times its rows, drawn with replacement; numeric features jittered."""
    from pipeline.kinds.tabular.ingest import load_default

    frame = load_default()
    if factor == 1:
        return frame  # the default data itself: the x1 run is the default pipeline's
    rng = np.random.default_rng(seed)
    out = frame.iloc[rng.integers(0, len(frame), len(frame) * factor)].reset_index(drop=True)
    for column in ("age", "realrinc", "prestg10", "childs"):  # numeric features; year (the time) and the label stay
        values = out[column].astype("float64")
        out[column] = values + rng.normal(0.0, JITTER * np.nanstd(values), len(out))
    out["rownames"] = np.arange(1, len(out) + 1)  # an identifier, as in the source
    return out


def write_resampled(factor: int, path: Path) -> int:
    """Write the x``factor`` table in a child process (this one stays small); its row count."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]); from bench.scale import resampled;"
        " frame = resampled(int(sys.argv[1])); frame.to_parquet(sys.argv[2], index=False); print(len(frame))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(factor), str(path), str(REPO)], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"writing the x{factor} table failed:\n{result.stderr[-3000:]}")
    return int(result.stdout.split()[-1])


def edit_params(root: Path, source: Path, epochs: int) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["ingest"]["source"] = str(source)
    params["train"]["epochs"] = epochs
    params["train"]["warmup_epochs"] = min(params["train"].get("warmup_epochs", 0), epochs - 1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# The stage runs as the grandchild of this process, forked by a tiny launcher: a process's peak RSS
# (ru_maxrss) survives exec, so a stage forked straight from this process (which held the x100 table
# while writing it) would report this process's peak instead of its own.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_stage(stage: str, root: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one stage's process."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "DO_NOT_TRACK": "1"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", f"pipeline.stages.{stage}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{result.stderr[-3000:]}")
    return seconds, int(result.stdout.split()[-1]) / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--until", choices=STAGES, default=STAGES[-1], help="the last stage to run (default: all seven)")
    args = parser.parse_args()
    stages = STAGES[: STAGES.index(args.until) + 1]  # a stage needs the ones before it
    load = OtherLoad().start()
    results: dict[int, dict[str, tuple[float, float]]] = {}
    rows: dict[int, int] = {}
    for factor in args.factors:
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder)
            root = fresh_copy(base / "repo")
            source = base / f"gss_x{factor}.parquet"
            rows[factor] = write_resampled(factor, source)
            edit_params(root, source, args.epochs)
            results[factor] = {}
            for stage in stages:
                results[factor][stage] = run_stage(stage, root)
                seconds, peak = results[factor][stage]
                print(f"x{factor} {stage}: {seconds:.1f} s, {peak:.0f} MB", file=sys.stderr, flush=True)
            shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    print(f"GSS resampled, {args.epochs} epoch(s); each stage a process: wall seconds / peak RSS MB")
    header = f"{'stage':<10}" + "".join(f"{f'x{f} ({rows[f]:,} rows)':>26}" for f in args.factors)
    print(header)
    for stage in stages:
        print(
            f"{stage:<10}" + "".join(f"{results[f][stage][0]:>14.1f} s {results[f][stage][1]:>7.0f} MB" for f in args.factors)
        )
    totals = {f: sum(s for s, _ in results[f].values()) for f in args.factors}
    peaks = {f: max(m for _, m in results[f].values()) for f in args.factors}
    print(f"{'total':<10}" + "".join(f"{totals[f]:>14.1f} s {peaks[f]:>7.0f} MB" for f in args.factors))
    for smaller, larger in zip(args.factors, args.factors[1:], strict=False):
        print(
            f"x{larger} / x{smaller}: time {totals[larger] / totals[smaller]:.2f}x, peak memory {peaks[larger] / peaks[smaller]:.2f}x"
        )
    print(load.report())


if __name__ == "__main__":
    main()
