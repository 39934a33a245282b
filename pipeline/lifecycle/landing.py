"""The landing area: where new batches arrive, how they are screened, and how bad ones are quarantined.

New data arrives in ``paths.landing``; the ingest stage stacks every landed batch under the source
rows. What a batch is belongs to the pipeline's kind (``KindRuntime.landing_screen``): tables take CSV or
Parquet files matching the source's columns and types, sequences long tables of new steps or corrections,
images ``.npz`` files or ImageFolder folders matching the source's image shape and pixel scale (a kind
returns a ``LandingScreen`` saying which entry types it takes; a plain check means table files). Before a
retrain or a drift check, ``screen`` checks each new batch with it and moves any that fails to
``paths.quarantine``, next to a ``<name>.reason.txt`` saying why: a bad batch never stops the loop and is
never silently dropped. Every entry is screened, not only the batch-looking ones: links (never followed),
folders a kind does not take, pipes, hidden, compressed or unknown files are quarantined too, so nothing
stays behind for ingest to trip on.

Command line (the demo and tests use it to make real data arrive)::

    python -m pipeline.lifecycle.landing next [--waves N]     # the next time period(s) of ingest.source after what is there
    python -m pipeline.lifecycle.landing sample --rows N      # rows from before the cutoff (a batch that should not drift)
    python -m pipeline.lifecycle.landing file PATH            # land a file (or an image folder) you have
    python -m pipeline.lifecycle.landing status               # landed and quarantined batches
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from pipeline import kinds
from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.core.errors import DataError, ParamsError
from pipeline.core.io import TEMP_SUFFIX, atomic_path, atomic_write, file_sha256, fsync_dir
from pipeline.kinds.base import BatchScreen, LandingScreen
from pipeline.kinds.tabular.ingest import read_source
from pipeline.params import Params, TabularParams, load_params
from pipeline.params.paths import shared_landing
from pipeline.shared.tables import TABLE_SUFFIXES, as_time, batch_files, first_line, read_table_file, sortable_time

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"


@dataclass(frozen=True)
class Batch:
    path: Path
    rows: int
    sha256: str


# Compressed batches are refused by name: pandas would open batch.csv.gz transparently, but ingest
# and the monitor read plain CSV/Parquet only, so it would be used by one and ignored by the other.
COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip", ".tar", ".tgz", ".7z"})
# A quarantined entry whose name is longer than this (in bytes) is renamed to a short hash: with the
# ".reason.txt" suffix and atomic_write's temporary prefix and suffix (~35 bytes) the names would
# otherwise pass the file system's 255-byte limit and the reason could not be written.
MAX_KEPT_NAME = 150
# atomic_path's temporary for a target: ".<name>.<pid>-<8 hex>.tmp" (see pipeline.core.io.atomic_path).
_TEMPORARY = re.compile(rf"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}$")


def quarantine(path: Path, quarantine_dir: Path, reason: str) -> Path:
    """Move a bad landing entry (file, link, folder, pipe) aside with a reason file, never following a link.

    The name gets a counter if it is already taken; a very long name is replaced by a short hash of it
    (the reason file then says what the entry was called)."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    name, note = path.name, ""
    if len(os.fsencode(name)) > MAX_KEPT_NAME:
        suffix = path.suffix if len(path.suffix) <= 16 else ""
        name = hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16] + suffix
        note = f" (landed as {path.name!r})"
    first = quarantine_dir / name
    target, counter = first, 1
    while os.path.lexists(target):  # lexists: a dangling quarantined link still takes its name
        target = quarantine_dir / f"{first.stem}.{counter}{first.suffix}"
        counter += 1
    # backslashreplace: a name that is not valid UTF-8 is itself a poison entry; its reason must still be written.
    text = (reason.rstrip() + note + "\n").encode("utf-8", "backslashreplace")
    atomic_write(quarantine_dir / f"{target.name}{REASON_SUFFIX}", text)
    # shutil.move renames (same file system) or re-creates a link as a link: a link's target is never read.
    shutil.move(path, target)
    log.warning("quarantined %r: %s", path.name, reason)
    return target


def landing_rules(check: BatchScreen | LandingScreen) -> LandingScreen:
    """A kind's landing rule in full: a ``LandingScreen`` as it is; a plain check means CSV/Parquet files,
    read as tables (the tabular kind's batches)."""
    if isinstance(check, LandingScreen):
        return check
    return LandingScreen(
        problems=check, rows=lambda path: len(read_table_file(path)), read=read_table_file, suffixes=frozenset(TABLE_SUFFIXES)
    )


def entry_problem(path: Path, rules: LandingScreen | None = None) -> str | None:
    """Why an entry of the landing area is not a batch to read (None: a regular file of a suffix ``rules``
    takes, CSV or Parquet without rules, or a folder where ``rules.folders``).

    Looks at the entry itself (``lstat``): a link is refused without following it, so a batch can never
    point the pipeline at a file outside the landing area, nor a link loop hang it; a pipe is never opened."""
    suffixes = rules.suffixes if rules is not None else frozenset(TABLE_SUFFIXES)
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "symbolic link: links are not followed out of the landing area; land the file itself"
    if stat.S_ISDIR(mode):
        if rules is not None and rules.folders and not path.name.startswith("."):
            return None
        return "a directory, not a batch file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device)"
    if _TEMPORARY.match(path.name):
        return "left over by an interrupted write (its writer is gone)"
    if path.name.startswith("."):
        return "hidden file: land batches under a plain name"
    suffix = path.suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        what = "CSV or Parquet file" if suffixes == frozenset(TABLE_SUFFIXES) else f"file (one of {sorted(suffixes)})"
        return f"compressed file ({suffix}): land the uncompressed {what}"
    if suffix not in suffixes:
        return f"unsupported file type {suffix!r}; use one of {sorted(suffixes)}"
    return None


def being_written(path: Path) -> bool:
    """True for ``atomic_path``'s temporary of a writer that is still running (it will rename it when done);
    a dead writer's leftover is not, so it is quarantined like any other hidden file."""
    match = _TEMPORARY.match(path.name)
    if match is None:
        return False
    try:
        os.kill(int(match["pid"]), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, OSError):  # a "pid" too large to be one
        return False
    return True


def screen(landing: Path, quarantine_dir: Path, batch_screen: BatchScreen | LandingScreen) -> tuple[list[Batch], list[Path]]:
    """Screen every entry of the landing area: a readable batch that ``batch_screen`` finds no problem with
    is returned, anything else (links, entry types the kind does not take, hidden, compressed or unknown
    files, unreadable or bad batches) is quarantined with its reason. One bad entry never stops the others.

    Only a batch that cannot even be moved aside (the landing or quarantine folder is not writable) is an
    error, raised once every entry has been screened: left in place, ingest would read it."""
    good: list[Batch] = []
    moved: list[Path] = []
    stuck: list[str] = []
    rules = landing_rules(batch_screen)
    for path in landing_entries(landing, quarantine_dir):
        if being_written(path):
            log.info("%s is being written by a running process; it is screened once it has landed", path.name)
            continue
        try:
            problem = entry_problem(path, rules)
            problems = [problem] if problem is not None else rules.problems(path)
            if not problems:
                good.append(Batch(path, rules.rows(path), entry_sha256(path)))
                continue
        except DataError as exc:
            problems = [str(exc).removeprefix(f"{path}: ")]
        except OSError as exc:
            problems = [f"unreadable: {exc.strerror or first_line(exc)}"]
        except Exception as exc:  # a batch that breaks a check in an unforeseen way is still one bad batch
            log.warning("screening %r failed", path.name, exc_info=True)
            problems = [f"could not be screened ({type(exc).__name__}: {first_line(exc)})"]
        try:
            moved.append(quarantine(path, quarantine_dir, "; ".join(problems)))
        except OSError as exc:
            if not os.path.lexists(path):  # another screening moved it first: nothing left to do
                log.info("%s: already moved by another screening", path.name)
                continue
            stuck.append(f"{path.name!r} ({exc.strerror or first_line(exc)})")
            log.error("could not quarantine %r (%s): %s", path.name, "; ".join(problems), exc)
    if stuck:
        raise DataError(
            f"{quarantine_dir}: {len(stuck)} bad landed batch(es) could not be quarantined: {', '.join(stuck)}; "
            f"make {landing} and {quarantine_dir} writable"
        )
    return good, moved


# The checkout's own files in the landing folder (git keeps the empty folder and its ignore rules with them):
# never batches, never quarantined, or every retrain would leave the checkout dirty and ingest's deps changed.
CHECKOUT_FILES = frozenset({".gitignore", ".gitkeep", ".dvcignore"})


def landing_entries(landing: Path, quarantine_dir: Path | None = None) -> list[Path]:
    """Every entry of the landing area, in name order (a quarantine folder placed inside it and the checkout's
    own ``CHECKOUT_FILES`` excepted)."""
    if not landing.is_dir():
        return []
    try:
        entries = sorted(p for p in landing.iterdir() if p.name not in CHECKOUT_FILES or not p.is_file() or p.is_symlink())
    except OSError as exc:
        raise DataError(f"{landing}: cannot list the landing area ({exc.strerror or first_line(exc)})") from None
    if quarantine_dir is not None and quarantine_dir.resolve().parent == landing.resolve():
        entries = [p for p in entries if p.name != quarantine_dir.name]
    return entries


def screen_landed(
    params: Params, root: Path = Path("."), rules: LandingScreen | None = None
) -> tuple[list[Batch], list[Path]]:
    """Screen ``root``'s landing area with the check of the pipeline's kind (``ingest.kind``), or with
    ``rules`` already built from it; a kind that takes no landed data yet raises ``NotSupportedYet``.
    With a shared landing area ($EVERGREEN_LANDING), its new batches are pulled in first: the monitor and
    every retrain, wherever they run, screen and use the same batches."""
    batch_screen = rules if rules is not None else kinds.get(params.ingest.kind).runtime.landing_screen(params)
    landing, quarantine_dir = root / params.paths.landing, root / params.paths.quarantine
    shared = shared_landing()
    if shared is not None:
        pull_shared_landing(shared, landing, quarantine_dir)
    return screen(landing, quarantine_dir, batch_screen)


def pull_shared_landing(location: str, landing: Path, quarantine_dir: Path) -> list[str]:
    """Copy into ``landing`` every batch of the shared landing area ``location`` (a folder, or an fsspec URL
    such as ``s3://bucket/landing``) that is not here yet, and return their names.

    Each batch (a file, or a folder of images) is copied whole under a hidden temporary name and renamed when
    complete, so screening never sees half of one. Landed batches are immutable and their names never reused
    (``batch_name``), so a batch already here, or quarantined here, is skipped and nothing is deleted; hidden
    entries of the shared area are a producer's uploads in progress and wait for the next pull.
    """
    fs, base = fsspec.core.url_to_fs(location)
    fs.invalidate_cache(base)
    try:
        entries = fs.ls(base, detail=True)
    except FileNotFoundError:
        if "://" in location and not location.startswith("file://"):
            return []  # an object store has no empty folders: nothing has landed under this prefix yet
        raise DataError(f"shared landing area {location}: no such folder (check $EVERGREEN_LANDING)") from None
    except OSError as exc:
        raise DataError(f"shared landing area {location}: cannot list it ({first_line(exc)})") from None
    pulled = []
    for entry in sorted(entries, key=lambda e: str(e["name"])):
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if not name or name.startswith(".") or name in CHECKOUT_FILES:
            continue
        target = landing / name
        if os.path.lexists(target) or os.path.lexists(quarantine_dir / f"{name}{REASON_SUFFIX}"):
            continue
        landing.mkdir(parents=True, exist_ok=True)
        temporary = landing / f".{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            if entry["type"] == "directory":
                fs.get(str(entry["name"]).rstrip("/") + "/", str(temporary) + "/", recursive=True)
            else:
                fs.get_file(entry["name"], str(temporary))
            os.rename(temporary, target)
        except BaseException:
            if temporary.is_dir():
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                temporary.unlink(missing_ok=True)
            raise
        pulled.append(name)
    if pulled:
        fsync_dir(landing)
        log.info("pulled %d batch(es) from the shared landing area %s: %s", len(pulled), location, ", ".join(pulled))
    return pulled


def entry_sha256(path: Path) -> str:
    """A landed batch's content hash: the file's, or for a folder batch a hash over its files' relative
    paths and hashes (in name order), so a changed or added image makes a new batch for the monitor."""
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def land_frame(frame: pd.DataFrame, landing: Path, name: str) -> Path:
    """Write a batch atomically and durably: a hidden temporary name first, renamed when complete."""
    name = batch_name(name, landing)
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


def land_entry(source: Path, landing: Path) -> Path:
    """Land a batch as it is (an image ``.npz``, an ImageFolder folder): copied under a hidden name and
    renamed when complete, so screening and ingest never see half a batch."""
    if source.name.startswith(".") or len(os.fsencode(source.name)) > MAX_KEPT_NAME:
        raise DataError(f"{source}: land a batch under a plain name (not hidden, under {MAX_KEPT_NAME} bytes)")
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    target = landing / source.name
    if os.path.lexists(target):
        raise DataError(f"{target}: a batch with this name has already landed")
    landing.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
    else:
        # The temporary's name is atomic_path's pattern: a copy cut short is quarantined as a leftover.
        temporary = landing / f".{source.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            shutil.copytree(source, temporary, symlinks=True)
            os.rename(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        fsync_dir(landing)
    log.info("landed %s", target)
    return target


def publish(path: Path, shared: str | None) -> None:
    """Put a batch just landed here into the shared landing area too (None: there is none): under a hidden
    name first, then moved, so a host pulling meanwhile never takes half of it (one PUT on an object store)."""
    if shared is None:
        return
    fs, base = fsspec.core.url_to_fs(shared)
    target = f"{base.rstrip('/')}/{path.name}"
    if fs.exists(target):
        raise DataError(f"{shared}/{path.name}: a batch with this name has already landed in the shared area")
    if "://" in shared and not shared.startswith("file://"):
        fs.put_file(str(path), target)  # a single object appears whole
    else:
        fs.makedirs(base, exist_ok=True)
        temporary = f"{base.rstrip('/')}/.{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fs.put(str(path), temporary, recursive=path.is_dir())
        fs.mv(temporary, target, recursive=path.is_dir())
    log.info("landed %s in the shared landing area %s", path.name, shared)


def batch_name(name: str, landing: Path) -> str:
    """``name`` as a landed batch's file name (``.parquet`` added without a table suffix), or a one-line
    error: a folder or an absolute path would write outside the landing area, a dot-name is never read."""
    if not name or Path(name).name != name or name.startswith("."):
        raise DataError(f"batch name {name!r}: give a plain file name (no folder, not hidden); batches land in {landing}")
    if Path(name).suffix.lower() not in TABLE_SUFFIXES:
        name = f"{name}.parquet"
    if len(os.fsencode(name)) > MAX_KEPT_NAME:
        raise DataError(f"batch name {name[:40]!r}...: {len(os.fsencode(name))} bytes; keep it under {MAX_KEPT_NAME}")
    return name


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
        source_times = sortable_time(read_source(cfg.source)[cfg.time_column], cfg.time_column, cfg.time_format)
    times = [as_time(cfg.time_cutoff, source_times)] if cfg.time_cutoff is not None else []
    for path in batch_files(Path(params.paths.landing)):
        try:
            if entry_problem(path) is not None:  # a link, or anything else screening will quarantine
                continue
            frame = read_table_file(path)
        except (DataError, OSError) as exc:
            log.warning("%s: not counted for the latest period (%s); screening will quarantine it", path.name, exc)
            continue
        if cfg.time_column in frame.columns:
            times.append(sortable_time(frame[cfg.time_column], cfg.time_column, cfg.time_format).max())
    return max(times) if times else None


def next_periods(params: TabularParams, waves: int) -> list[tuple[object, pd.DataFrame]]:
    """The next ``waves`` periods of ``ingest.source`` after what is already there, one frame each."""
    cfg = params.ingest
    if cfg.time_column is None or cfg.time_cutoff is None:
        raise DataError("landing the next period needs ingest.time_column and ingest.time_cutoff")
    source = read_source(cfg.source)
    times = sortable_time(source[cfg.time_column], cfg.time_column, cfg.time_format)
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
        times = sortable_time(source[cfg.time_column], cfg.time_column, cfg.time_format)
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


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.lifecycle.landing") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
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
        shared = shared_landing()
        if args.command != "status" and shared is not None:
            # Land into the shared area ($EVERGREEN_LANDING), where the monitor and every retrain pull from:
            # a shared folder directly; an object store by uploading the batch once it is whole here.
            landed = pull_shared_landing(shared, landing, Path(params.paths.quarantine))  # "next" counts what is there
            log.info("%d batch(es) from the shared landing area were not here yet", len(landed))
        if args.command == "next":
            tabular = tabular_params(params)
            for period, frame in next_periods(tabular, args.waves):
                publish(land_frame(frame, landing, f"{tabular.ingest.time_column}_{period}.parquet"), shared)
        elif args.command == "sample":
            # Checked before the source is read: a bad --name fails at once, naming itself.
            name = batch_name(args.name or f"sample_seed{args.seed}" + ("_shifted" if args.shift else ""), landing)
            frame = reference_sample(tabular_params(params), args.rows, args.seed, _parse_shift(args.shift))
            publish(land_frame(frame, landing, name), shared)
        elif args.command == "file":
            if args.path.suffix.lower() in TABLE_SUFFIXES:
                publish(land_frame(read_table_file(args.path), landing, args.path.name), shared)
            else:  # another kind's batch (an image .npz or folder): landed as it is, screened by its kind
                if args.path.is_dir() and shared is not None and "://" in shared:
                    raise DataError(
                        f"{args.path}: an image folder cannot land in {shared} whole (an object store has no rename); "
                        "land it as an .npz file, or share a folder"
                    )
                publish(land_entry(args.path, landing), shared)
        else:
            for path in landing_entries(landing):
                if not path.name.startswith("."):
                    sys.stdout.write(f"landed      {path.name}\n")
            for path in sorted(Path(params.paths.quarantine).glob(f"*{REASON_SUFFIX}")):
                sys.stdout.write(f"quarantined {path.name.removesuffix(REASON_SUFFIX)}: {path.read_text().strip()}\n")

    run_or_exit(act)


if __name__ == "__main__":
    main()
