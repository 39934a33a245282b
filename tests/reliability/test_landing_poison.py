"""Issue 9, landing and monitor: no poison batch. Every entry of the landing area is screened and either
used or quarantined with a reason file, never followed out of the area, never skipped, never the end of
the run; drift never reaches Evidently with an all-missing column. Real files, links and pipes in tmp_path."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.lifecycle.drift import detect_drift
from pipeline.lifecycle.landing import REASON_SUFFIX, land_frame, screen_landed
from pipeline.lifecycle.monitoring import LandingSource, drift_columns
from pipeline.onnxio.card import CategoricalInput, NumericInput, TabularCard
from tests.conftest import REPO, make_params, make_table

GOOD = "good.parquet"


@pytest.fixture
def params(tmp_path, raw_params):
    """A tabular pipeline whose source is make_table's, with a valid range on x; paths under tmp_path."""
    source = tmp_path / "source.csv"
    make_table(600).to_csv(source, index=False)
    ingest = {
        "source": str(source),
        "target": "label",
        "time_column": "period",
        "time_cutoff": 5,
        "drop_columns": [],
        "categorical": [],
        "min_rows": 10,
    }
    return make_params(raw_params, tmp_path, ingest=ingest, clean={"valid_ranges": {"x": [-10, 10]}})


@pytest.fixture
def landing(params) -> Path:
    """The landing area with one good batch already in it: every case checks that it is still used."""
    folder = Path(params.paths.landing)
    land_frame(make_table(50), folder, GOOD)
    return folder


def reasons(params) -> dict[str, str]:
    quarantine = Path(params.paths.quarantine)
    return {p.name.removesuffix(REASON_SUFFIX): p.read_text().strip() for p in quarantine.glob(f"*{REASON_SUFFIX}")}


def screened(params) -> tuple[list[str], list[str]]:
    good, moved = screen_landed(params)
    return [b.path.name for b in good], [p.name for p in moved]


def assert_only_good_left(landing: Path) -> None:
    assert sorted(os.listdir(landing)) == [GOOD]  # nothing bad left for ingest or the monitor to trip on


def test_a_symlink_loop_is_quarantined_as_a_link(params, landing):
    os.symlink("loop_b.csv", landing / "loop_a.csv")
    os.symlink("loop_a.csv", landing / "loop_b.csv")
    assert screened(params) == ([GOOD], ["loop_a.csv", "loop_b.csv"])
    assert reasons(params)["loop_a.csv"].startswith("symbolic link: links are not followed out of the landing area")
    assert (Path(params.paths.quarantine) / "loop_a.csv").is_symlink()  # the link itself moved, as it was
    assert_only_good_left(landing)


def test_a_link_out_of_the_landing_area_is_never_followed(params, landing, tmp_path):
    outside = tmp_path / "elsewhere" / "secret.csv"
    outside.parent.mkdir()
    make_table(50).to_csv(outside, index=False)  # a batch that would pass screening if it were read
    before = outside.read_bytes()
    os.symlink(outside, landing / "innocent.csv")
    assert screened(params) == ([GOOD], ["innocent.csv"])
    assert reasons(params)["innocent.csv"].startswith("symbolic link")
    assert os.readlink(Path(params.paths.quarantine) / "innocent.csv") == str(outside)
    assert outside.read_bytes() == before  # the target stays where it was, untouched
    assert_only_good_left(landing)


def test_a_bad_batch_with_a_very_long_name_gets_a_hashed_reason_file(params, landing):
    name = "b" * 251 + ".csv"  # 255 bytes: the longest name Linux allows; name + ".reason.txt" would not fit
    make_table(50).drop(columns="x").to_csv(landing / name, index=False)
    assert screened(params)[0] == [GOOD]
    hashed = hashlib.sha256(name.encode()).hexdigest()[:16] + ".csv"
    assert reasons(params) == {hashed: f"missing column(s) ['x'] (landed as {name!r})"}
    assert (Path(params.paths.quarantine) / hashed).is_file()
    assert_only_good_left(landing)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (".hidden.csv", "hidden file: land batches under a plain name"),
        ("batch.csv.gz", "compressed file (.gz): land the uncompressed CSV or Parquet file"),
        ("batch.xlsx", "unsupported file type '.xlsx'; use one of ['.csv', '.parquet', '.pq']"),
    ],
)
def test_hidden_compressed_and_unknown_files_are_quarantined_with_a_reason(params, landing, name, reason):
    make_table(50).to_csv(landing / name, index=False)  # a good table inside: refused for what the entry is
    assert screened(params) == ([GOOD], [name])
    assert reasons(params) == {name: reason}
    assert_only_good_left(landing)


def test_a_dead_writers_leftover_is_quarantined_and_a_live_writers_temporary_is_left(params, landing):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead = f".b.parquet.{int(finished.stdout)}-0a1b2c3d.tmp"  # that process has exited: its writer is gone
    live = f".c.parquet.{os.getpid()}-0a1b2c3d.tmp"  # this process: a land_frame still writing
    for name in (dead, live):
        (landing / name).write_bytes(b"half-written")
    assert screened(params) == ([GOOD], [dead])
    assert reasons(params) == {dead: "left over by an interrupted write (its writer is gone)"}
    assert sorted(os.listdir(landing)) == [live, GOOD]


@pytest.mark.parametrize("name", ["folder", "x.csv"])
def test_a_directory_is_quarantined_even_under_a_table_name(params, landing, name):
    (landing / name).mkdir()
    make_table(5).to_csv(landing / name / "inner.csv", index=False)
    assert screened(params) == ([GOOD], [name])
    assert reasons(params) == {name: "a directory, not a batch file"}
    assert (Path(params.paths.quarantine) / name / "inner.csv").is_file()
    assert_only_good_left(landing)


def test_a_named_pipe_is_quarantined_without_being_opened(params, landing):
    os.mkfifo(landing / "x.parquet")  # opening it for reading would block for ever: no writer comes
    result: list = []
    screening = threading.Thread(target=lambda: result.append(screened(params)), daemon=True)
    screening.start()
    screening.join(timeout=60)
    assert not screening.is_alive(), "screening blocked on the pipe"
    assert result == [([GOOD], ["x.parquet"])]
    assert reasons(params) == {"x.parquet": "not a regular file (a pipe, socket or device)"}
    assert_only_good_left(landing)


def test_a_batch_whose_numeric_column_is_all_out_of_range_is_quarantined(params, landing):
    land_frame(make_table(50).assign(x=1000.0), landing, "x_impossible.csv")  # clean.valid_ranges x: [-10, 10]
    assert screened(params) == ([GOOD], ["x_impossible.csv"])
    assert reasons(params) == {
        "x_impossible.csv": "column 'x' has no usable value after cleaning (all 50 outside clean.valid_ranges [-10.0, 10.0] or missing)"
    }
    assert_only_good_left(landing)


def test_a_batch_whose_category_is_all_missing_tokens_is_quarantined(params, landing):
    land_frame(make_table(50).assign(colour=" N/A "), landing, "colour_tokens.csv")  # a token once stripped
    assert screened(params) == ([GOOD], ["colour_tokens.csv"])
    assert reasons(params) == {
        "colour_tokens.csv": "column 'colour' has no usable value after cleaning (all 50 are clean.missing_tokens)"
    }
    assert_only_good_left(landing)


def test_the_monitor_keeps_going_past_every_poison_batch_at_once(params, landing, tmp_path):
    """The monitor's path (screen, then the pending landed rows, then drift on the drift frame): every
    bad entry quarantined in one screening, the good batch compared, Evidently never sees an empty column."""
    os.symlink("loop", landing / "loop")
    os.symlink(tmp_path / "source.csv", landing / "outside.csv")
    (landing / "dir.csv").mkdir()
    os.mkfifo(landing / "pipe.csv")
    (landing / "batch.csv.gz").write_bytes(b"\x1f\x8b")
    (landing / "corrupt.parquet").write_bytes(b"\x00garbage")
    land_frame(make_table(50).assign(x=-99.0), landing, "x_impossible.parquet")
    land_frame(make_table(50).assign(colour="?"), landing, "colour_tokens.parquet")
    good, moved = screened(params)
    assert good == [GOOD] and len(moved) == 8 and len(reasons(params)) == 8
    assert_only_good_left(landing)

    current = LandingSource(landing).pending(set())
    assert current.sources == (GOOD,) and len(current.frame) == 50
    card = TabularCard.model_construct(inputs=(NumericInput.of("x"), CategoricalInput.of("colour", ("red", "blue"))))
    runtime = kinds.get("tabular").runtime
    reference = runtime.drift_frame(make_table(600), card, params)
    drift = detect_drift(reference, runtime.drift_frame(current.frame, card, params), *drift_columns(reference))
    assert [c.column for c in drift.columns] == ["x", "colour"] and drift.excluded == ()


def test_drift_leaves_out_an_all_missing_column_instead_of_crashing(params):
    """Another source (the prediction log) can still bring one: the column is named, not compared."""
    card = TabularCard.model_construct(inputs=(NumericInput.of("x"), CategoricalInput.of("colour", ("red", "blue"))))
    runtime = kinds.get("tabular").runtime
    reference = runtime.drift_frame(make_table(600), card, params)
    current = runtime.drift_frame(make_table(300, seed=1).assign(x=np.inf), card, params)  # inf cleans to missing
    drift = detect_drift(reference, current, *drift_columns(reference))
    assert [c.column for c in drift.columns] == ["colour"]
    assert drift.to_dict()["excluded_columns"] == [
        {"column": "x", "kind": "numeric", "reason": "has no values in the current frame (all missing)"}
    ]


def test_a_batch_that_cannot_be_moved_aside_is_one_line_after_the_others_are_screened(params, landing):
    quarantine = Path(params.paths.quarantine)
    quarantine.write_text("a file where the quarantine folder should be\n")
    land_frame(make_table(50).drop(columns="x"), landing, "no_x.csv")
    with pytest.raises(
        DataError, match=r"1 bad landed batch\(es\) could not be quarantined: 'no_x.csv' \(.+\); make .+ writable$"
    ):
        screen_landed(params)
    assert sorted(os.listdir(landing)) == [GOOD, "no_x.csv"]


@pytest.mark.parametrize("name", ["/tmp/evergreen-outside", "../outside", "sub/inside"])
def test_landing_sample_name_takes_a_plain_base_name_only(tmp_path, name):
    """The CLI path: ``landing sample --name`` is refused in one line before anything is read or written."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.lifecycle.landing", "sample", "--rows", "5", "--name", name],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert f"batch name {name!r}: give a plain file name (no folder, not hidden)" in line
    assert not Path("/tmp/evergreen-outside.parquet").exists() and not (tmp_path / "data").exists()
