"""The landing area: where new batches arrive, how they are screened, and how bad ones are quarantined.

New data arrives as CSV or Parquet files in ``paths.landing``; the ingest stage stacks every
landed batch under the source rows. Before a retrain or a drift check, ``screen`` checks each new
batch with the pipeline's kind (``KindRuntime.landing_screen``: for tables, readable and matching the
source's columns and types) and moves any that fails to ``paths.quarantine``, next to a
``<name>.reason.txt`` saying why: a bad batch never stops the loop and is never silently dropped.

Command line (the demo and tests use it to make real data arrive)::

    python -m pipeline.lifecycle.landing next [--waves N]     # the next time period(s) of ingest.source after what is there
    python -m pipeline.lifecycle.landing sample --rows N      # rows from before the cutoff (a batch that should not drift)
    python -m pipeline.lifecycle.landing file PATH            # land a file you have
    python -m pipeline.lifecycle.landing status               # landed and quarantined batches
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import kinds
from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import atomic_path, atomic_write, file_sha256
from pipeline.kinds.base import BatchScreen
from pipeline.kinds.tabular.ingest import read_source
from pipeline.params import Params, TabularParams, load_params
from pipeline.shared.tables import TABLE_SUFFIXES, as_time, batch_files, read_table_file, sortable_time

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"


@dataclass(frozen=True)
class Batch:
    path: Path
    rows: int
    sha256: str


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move a bad batch aside with a reason file; the name gets a suffix if it is already taken."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = quarantine_dir / path.name
    counter = 1
    while target.exists():
        target = quarantine_dir / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    atomic_write(quarantine_dir / f"{target.name}{REASON_SUFFIX}", reason.rstrip() + "\n")
    shutil.move(str(path), target)
    log.warning("quarantined %s: %s", path.name, reason)
    return target


def screen(landing: Path, quarantine_dir: Path, batch_screen: BatchScreen) -> tuple[list[Batch], list[Path]]:
    """Quarantine every landed batch that ``batch_screen`` finds problems with; return the good ones and the quarantined paths."""
    good, moved = [], []
    for path in batch_files(landing):
        problems = batch_screen(path)
        if problems:
            moved.append(quarantine(path, quarantine_dir, "; ".join(problems)))
        else:
            good.append(Batch(path, len(read_table_file(path)), file_sha256(path)))
    return good, moved


def screen_landed(params: Params, root: Path = Path(".")) -> tuple[list[Batch], list[Path]]:
    """Screen ``root``'s landing area with the check of the pipeline's kind (``ingest.kind``); a kind that
    takes no landed data yet raises ``NotSupportedYet``."""
    batch_screen = kinds.get(params.ingest.kind).runtime.landing_screen(params)
    return screen(root / params.paths.landing, root / params.paths.quarantine, batch_screen)


def land_frame(frame: pd.DataFrame, landing: Path, name: str) -> Path:
    """Write a batch atomically and durably: a hidden temporary name first, renamed when complete."""
    if not name or Path(name).name != name or name.startswith("."):
        raise DataError(f"batch name {name!r}: give a plain file name (no folder, not hidden); batches land in {landing}")
    if Path(name).suffix.lower() not in TABLE_SUFFIXES:
        name = f"{name}.parquet"
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / name
    if target.exists():
        raise DataError(f"{target}: a batch with this name has already landed")
    with atomic_path(target) as temporary:
        if target.suffix.lower() == ".csv":
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, index=False)
    log.info("landed %s (%d rows)", target, len(frame))
    return target


def tabular_params(params: Params) -> TabularParams:
    """Landed batches are tables: the params of a tabular pipeline, or a one-line error."""
    if not isinstance(params, TabularParams):
        raise ParamsError(f"ingest.kind = {params.ingest.kind!r}: landing takes tables only (ingest.kind 'tabular')")
    return params


def latest_time(params: TabularParams, source_times: pd.Series | None = None):
    """The most recent period already available: the cutoff, or the newest landed row if later."""
    cfg = params.ingest
    if cfg.time_column is None:
        raise DataError("the latest landed period needs ingest.time_column")
    if source_times is None:
        source_times = sortable_time(read_source(cfg.source)[cfg.time_column], cfg.time_column)
    times = [as_time(cfg.time_cutoff, source_times)] if cfg.time_cutoff is not None else []
    for path in batch_files(Path(params.paths.landing)):
        frame = read_table_file(path)
        if cfg.time_column in frame.columns:
            times.append(sortable_time(frame[cfg.time_column], cfg.time_column).max())
    return max(times) if times else None


def next_periods(params: TabularParams, waves: int) -> list[tuple[object, pd.DataFrame]]:
    """The next ``waves`` periods of ``ingest.source`` after what is already there, one frame each."""
    cfg = params.ingest
    if cfg.time_column is None or cfg.time_cutoff is None:
        raise DataError("landing the next period needs ingest.time_column and ingest.time_cutoff")
    source = read_source(cfg.source)
    times = sortable_time(source[cfg.time_column], cfg.time_column)
    latest = latest_time(params, times)
    later = times > latest
    periods = sorted(times[later].unique())[:waves]
    if not periods:
        raise DataError(f"ingest.source has no period after {latest}: everything has landed")
    return [(period, source[times == period]) for period in periods]


def reference_sample(params: TabularParams, rows: int, seed: int, shift: dict[str, float]) -> pd.DataFrame:
    """Rows from before the cutoff (the training era), optionally shifted: a batch with known drift."""
    cfg = params.ingest
    source = read_source(cfg.source)
    if cfg.time_column is not None and cfg.time_cutoff is not None:
        times = sortable_time(source[cfg.time_column], cfg.time_column)
        source = source[times <= as_time(cfg.time_cutoff, times)]
    picked = source.iloc[np.random.default_rng(seed).choice(len(source), size=min(rows, len(source)), replace=False)]
    for column, delta in shift.items():
        if column not in picked.columns or not pd.api.types.is_numeric_dtype(picked[column]):
            raise DataError(f"--shift {column}: not a numeric column of ingest.source")
        picked = picked.assign(**{column: picked[column] + delta})
    return picked.reset_index(drop=True)


def _parse_shift(items: list[str]) -> dict[str, float]:
    shift = {}
    for item in items:
        column, _, value = item.partition("=")
        try:
            shift[column] = float(value)
        except ValueError:
            raise DataError(f"--shift {item!r}: expected COLUMN=NUMBER") from None
    return shift


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.lifecycle.landing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    nxt = sub.add_parser("next", help="land the next period(s) of ingest.source")
    nxt.add_argument("--waves", type=int, default=1)
    smp = sub.add_parser("sample", help="land a random sample of training-era rows")
    smp.add_argument("--rows", type=int, default=2000)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--shift", action="append", default=[], metavar="COLUMN=DELTA", help="add DELTA to a numeric column")
    smp.add_argument("--name", default=None)
    fil = sub.add_parser("file", help="land a CSV or Parquet file")
    fil.add_argument("path", type=Path)
    sub.add_parser("status", help="list landed and quarantined batches")
    args = parser.parse_args(argv)

    setup_logging()

    def act() -> None:
        params = load_params()
        landing = Path(params.paths.landing)
        if args.command == "next":
            tabular = tabular_params(params)
            for period, frame in next_periods(tabular, args.waves):
                land_frame(frame, landing, f"{tabular.ingest.time_column}_{period}.parquet")
        elif args.command == "sample":
            name = args.name or f"sample_seed{args.seed}" + ("_shifted" if args.shift else "")
            land_frame(reference_sample(tabular_params(params), args.rows, args.seed, _parse_shift(args.shift)), landing, name)
        elif args.command == "file":
            land_frame(read_table_file(args.path), landing, args.path.name)
        else:
            for path in batch_files(landing):
                sys.stdout.write(f"landed      {path.name}\n")
            for path in sorted(Path(params.paths.quarantine).glob(f"*{REASON_SUFFIX}")):
                sys.stdout.write(f"quarantined {path.name.removesuffix(REASON_SUFFIX)}: {path.read_text().strip()}\n")

    run_or_exit(act)


if __name__ == "__main__":
    main()
