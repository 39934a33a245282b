from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import kinds
from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.base import NotSupportedYet
from pipeline.kinds.tabular.ingest import ingest
from pipeline.kinds.tabular.landing import batch_problems
from pipeline.lifecycle.landing import (
    REASON_SUFFIX,
    land_frame,
    latest_time,
    next_periods,
    reference_sample,
    screen,
    screen_landed,
    tabular_params,
)
from pipeline.params import TabularIngest, load_params
from tests.conftest import REPO, make_params, make_table

CFG = TabularIngest(target="label", time_column="period", time_cutoff=5, min_rows=10)
COLUMNS = ["x", "noise", "colour", "period", "label"]


@pytest.fixture
def params(tmp_path, raw_params):
    source = tmp_path / "source.csv"
    make_table(600).to_csv(source, index=False)
    return make_params(
        raw_params,
        tmp_path,
        ingest={
            "source": str(source),
            "target": "label",
            "time_column": "period",
            "time_cutoff": 5,
            "drop_columns": [],
            "categorical": [],
            "min_rows": 10,
        },
    )


def test_bad_batches_are_quarantined_with_a_reason_and_good_ones_stay(tmp_path):
    landing, quarantine = tmp_path / "landing", tmp_path / "quarantine"
    land_frame(make_table(50), landing, "good.parquet")
    land_frame(make_table(50).drop(columns="x"), landing, "no_x.csv")
    land_frame(make_table(50).assign(x="not a number"), landing, "text_x.csv")
    (landing / "corrupt.parquet").write_bytes(b"\x00garbage")
    land_frame(make_table(50).drop(columns="label"), landing, "unlabelled.parquet")  # labels may come later

    good, moved = screen(landing, quarantine, lambda path: batch_problems(path, COLUMNS, ["x", "noise"], CFG))
    assert sorted(b.path.name for b in good) == ["good.parquet", "unlabelled.parquet"]
    assert sorted(p.name for p in moved) == ["corrupt.parquet", "no_x.csv", "text_x.csv"]
    reasons = {p.name.removesuffix(REASON_SUFFIX): p.read_text() for p in quarantine.glob(f"*{REASON_SUFFIX}")}
    assert "missing column(s) ['x']" in reasons["no_x.csv"]
    assert "'x' should be numeric" in reasons["text_x.csv"]
    assert "not a readable parquet file" in reasons["corrupt.parquet"]
    assert not (landing / "no_x.csv").exists()  # moved, not copied: never silently kept or dropped


def test_the_checkouts_own_files_in_the_landing_folder_stay_where_git_put_them(tmp_path):
    """The repository keeps data/landing/ with a tracked .gitignore: screening it as a hidden batch would move
    it to quarantine on every retrain, leaving the checkout dirty and ingest's DVC deps changed."""
    landing, quarantine = tmp_path / "landing", tmp_path / "quarantine"
    land_frame(make_table(50), landing, "good.parquet")
    (landing / ".gitignore").write_text((REPO / "data/landing/.gitignore").read_text())
    (landing / ".hidden.csv").write_text("x\n1\n")
    good, moved = screen(landing, quarantine, lambda path: batch_problems(path, COLUMNS, ["x", "noise"], CFG))
    assert [b.path.name for b in good] == ["good.parquet"] and [p.name for p in moved] == [".hidden.csv"]
    assert (landing / ".gitignore").read_text() == (REPO / "data/landing/.gitignore").read_text()


def test_the_landing_area_is_screened_by_the_pipelines_kind(params, tmp_path):
    landing = Path(params.paths.landing)
    land_frame(make_table(50), landing, "good.parquet")
    land_frame(make_table(50).drop(columns="x"), landing, "no_x.csv")
    good, moved = screen_landed(params)  # the tabular kind: the source's columns, read once
    assert [b.path.name for b in good] == ["good.parquet"] and [p.name for p in moved] == ["no_x.csv"]
    assert (Path(params.paths.quarantine) / f"no_x.csv{REASON_SUFFIX}").read_text() == "missing column(s) ['x']\n"

    images = make_params(yaml.safe_load((REPO / "examples/digits/params.yaml").read_text()), tmp_path / "digits")
    land_frame(make_table(50), Path(images.paths.landing), "table.parquet")
    good, moved = screen_landed(images)  # the image kind takes .npz files and ImageFolder folders, not tables
    assert not good and [p.name for p in moved] == ["table.parquet"]
    reason = (Path(images.paths.quarantine) / f"table.parquet{REASON_SUFFIX}").read_text()
    assert reason == "unsupported file type '.parquet'; use one of ['.npz']\n"


def test_a_kind_that_takes_no_landed_data_is_refused_before_anything_moves(params, monkeypatch):
    def refuse(_params):
        raise NotSupportedYet("ingest.kind = 'tabular': landed data is not screened yet")

    monkeypatch.setattr(kinds.get("tabular").runtime, "landing_screen", refuse)
    land_frame(make_table(50), Path(params.paths.landing), "good.parquet")
    with pytest.raises(NotSupportedYet, match=r"^ingest.kind = 'tabular': landed data is not screened yet"):
        screen_landed(params)
    assert (Path(params.paths.landing) / "good.parquet").exists()


def test_landing_is_atomic_and_never_overwrites(tmp_path):
    path = land_frame(make_table(10), tmp_path, "b1")
    assert path.name == "b1.parquet" and not list(tmp_path.glob(".*"))
    with pytest.raises(DataError, match="already landed"):
        land_frame(make_table(10), tmp_path, "b1.parquet")


def test_a_batch_that_fails_to_write_leaves_nothing_behind(tmp_path):
    unwritable = pd.DataFrame({"mixed": [1, "a"]})  # Parquet cannot store a column of ints and text
    with pytest.raises(ValueError, match="mixed"):  # pyarrow's ArrowInvalid names the column
        land_frame(unwritable, tmp_path, "b2")
    assert list(tmp_path.iterdir()) == []


def test_cutoff_holds_back_later_periods_and_landed_batches_join(tmp_path):
    table = make_table(600)
    base, _ = ingest(table, CFG, seed=0)
    assert base["period"].max() == 5
    later = table[table["period"] == 7].drop(columns="label")
    combined, _ = ingest(table, CFG, seed=0, batches=[(Path("b.parquet"), later)])
    assert len(combined) == len(base) + len(later)
    assert combined["label"].isna().sum() == len(later)  # unlabelled rows are kept; clean counts and drops them


def test_window_keeps_the_most_recent_periods(tmp_path):
    table = make_table(600)
    out, _ = ingest(table, CFG.model_copy(update={"time_cutoff": None, "window_periods": 3}), seed=0)
    assert sorted(out["period"].unique()) == [7, 8, 9]


def test_batch_with_other_columns_is_refused_by_ingest():
    table = make_table(600)
    with pytest.raises(DataError, match=r"b\.csv: landed batch does not match the source: missing column\(s\) \['x'\]"):
        ingest(table, CFG, seed=0, batches=[(Path("b.csv"), table.drop(columns="x"))])


def test_next_period_lands_the_real_next_wave(params, tmp_path):
    assert latest_time(params) == 5
    [(period, frame)] = next_periods(params, 1)
    assert period == 6 and set(frame["period"]) == {6}
    land_frame(frame, Path(params.paths.landing), "period_6")
    assert latest_time(params) == 6
    assert [p for p, _ in next_periods(params, 2)] == [7, 8]


def test_reference_sample_comes_from_before_the_cutoff_and_can_shift(params):
    sample = reference_sample(params, 100, seed=0, shift={})
    assert len(sample) == 100 and sample["period"].max() <= 5
    shifted = reference_sample(params, 100, seed=0, shift={"noise": 50.0})
    assert (shifted["noise"] - sample["noise"]).round(6).eq(50.0).all()
    with pytest.raises(DataError, match="--shift colour"):
        reference_sample(params, 10, seed=0, shift={"colour": 1.0})


def test_landing_takes_tables_only(params):
    assert tabular_params(params) is params
    images = load_params(REPO / "examples/digits/params.yaml")
    with pytest.raises(ParamsError, match=r"^ingest.kind = 'image': landing takes tables only \(ingest.kind 'tabular'\)$"):
        tabular_params(images)


def test_date_time_column_with_a_date_cutoff_and_window():
    table = make_table(600).assign(period=lambda f: pd.to_datetime("2020-01-01") + pd.to_timedelta(f["period"] * 31, unit="D"))
    table["period"] = table["period"].dt.strftime("%Y-%m-%d")  # dates arrive as text in CSV files
    cfg = CFG.model_copy(update={"time_cutoff": "2020-04-15"})
    out, _ = ingest(table, cfg, seed=0)
    assert out["period"].max() <= pd.Timestamp("2020-04-15") and out["period"].nunique() == 4
    with pytest.raises(DataError, match="is text but the time column holds numbers"):
        ingest(make_table(600), cfg, seed=0)
