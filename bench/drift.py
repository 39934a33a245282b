"""Benchmark: one drift check on 100,000 rows x 20 columns (14 numeric, 6 categorical).

The requirement: a drift check on 100k x 20 finishes within 10 s on the 2-core machine (sampling
allowed). Times, side by side in one run: importing Evidently (paid once per process), the check with
the monitor's default samples (20,000 reference and 20,000 current rows, seeded), the same with the
HTML report written, and the check on all 100k rows. Each drifted-column list is printed: the shifted
columns are n00..n02 (mean +0.5 sd, +25% sd, heavier tail) and c00 (one level four times as frequent).

    python bench/drift.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.lifecycle.drift import _import_evidently, detect_drift

ROWS = 100_000
NUMERIC = [f"n{i:02d}" for i in range(14)]
CATEGORICAL = [f"c{i:02d}" for i in range(6)]
LEVELS = [f"level_{k}" for k in range(12)]
SAMPLE = 20_000  # the project's params default (monitor.reference_sample / current_sample)
LIMIT_S = 10.0


def make_frame(rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    """100k rows; with ``shifted`` four columns move, the other sixteen keep their distribution."""
    columns: dict[str, object] = {}
    for i, name in enumerate(NUMERIC):
        values = rng.normal(0.0, 1.0, ROWS)
        if shifted and i == 0:
            values = values + 0.5
        if shifted and i == 1:
            values = values * 1.25
        if shifted and i == 2:
            values = rng.standard_t(3, ROWS)
        values[rng.random(ROWS) < 0.02] = np.nan  # 2% missing, as in real batches
        columns[name] = values
    base = np.full(len(LEVELS), 1.0 / len(LEVELS))
    for i, name in enumerate(CATEGORICAL):
        p = base
        if shifted and i == 0:
            p = base.copy()
            p[0] *= 4
            p /= p.sum()
        values = pd.Series(rng.choice(LEVELS, ROWS, p=p), dtype="string")
        values[rng.random(ROWS) < 0.02] = pd.NA
        columns[name] = values
    return pd.DataFrame(columns)


def timed(label: str, reference: pd.DataFrame, current: pd.DataFrame, **options) -> tuple[str, float]:
    start = time.perf_counter()
    result = detect_drift(reference, current, NUMERIC, CATEGORICAL, seed=0, **options)
    seconds = time.perf_counter() - start
    verdict = "PASS" if seconds <= LIMIT_S else "FAIL"
    line = (
        f"{label:<34} {result.reference_rows:>7} {result.current_rows:>7} {len(result.columns):>4} "
        f"{seconds:>7.2f} {verdict:>5}  share {result.drifted_share:.2f} dataset_drift={result.dataset_drift} "
        f"drifted={result.drifted_columns}"
    )
    return line, seconds


def main() -> None:
    rng = np.random.default_rng(2024)
    reference, current = make_frame(rng, shifted=False), make_frame(rng, shifted=True)

    start = time.perf_counter()
    version = _import_evidently()
    import_s = time.perf_counter() - start

    print(f"evidently {version}, {os.cpu_count()} CPU cores, frames {ROWS} rows x {len(NUMERIC) + len(CATEGORICAL)} columns")
    print(f"import evidently (once per process): {import_s:.2f} s")
    print(f"{'check':<34} {'ref':>7} {'cur':>7} {'cols':>4} {'seconds':>7} {'<=10s':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        lines = [
            timed(f"sampled {SAMPLE}/{SAMPLE} (default)", reference, current, reference_sample=SAMPLE, current_sample=SAMPLE),
            timed(
                f"sampled {SAMPLE}/{SAMPLE} + HTML report",
                reference,
                current,
                reference_sample=SAMPLE,
                current_sample=SAMPLE,
                html_path=Path(tmp) / "drift.html",
            ),
            timed("no sampling (all rows)", reference, current),
        ]
        html_mb = (Path(tmp) / "drift.html").stat().st_size / 1e6
    for line, _ in lines:
        print(line)
    print(f"HTML report size: {html_mb:.1f} MB")
    default_s = lines[0][1]
    print(
        f"fresh process, default check incl. import: {import_s + default_s:.2f} s "
        f"({'within' if import_s + default_s <= LIMIT_S else 'OVER'} the {LIMIT_S:.0f} s budget)"
    )


if __name__ == "__main__":
    main()
