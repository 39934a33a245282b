"""The tabular data stages streamed in small chunks give exactly what one whole-table chunk gives.

Each stage's ``run`` takes the chunk size; a table of 300-odd rows read 7 rows at a time crosses every
chunk boundary case (a column that turns to text half-way, an integer column that meets a gap, duplicates
and rare classes in different chunks, a landed batch, a time window, a row slice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import DATA_FILE, SPLITS, split_file
from pipeline.kinds.tabular import augment, clean, ingest, split
from pipeline.params import SplitParams, TabularAugment, TabularClean, TabularIngest, load_params

WHOLE = 1_000_000
SMALL = 7


def paths_under(root: Path):
    base = load_params().paths
    return base.model_copy(update={name: str(root / value) for name, value in base.model_dump().items()})


def source_csv(path: Path) -> Path:
    rng = np.random.default_rng(3)
    n = 320
    frame = pd.DataFrame(
        {
            "rid": np.arange(n),
            "year": 2000 + np.arange(n) % 10,
            "age": rng.integers(18, 80, n).astype(float),
            "kids": rng.integers(0, 5, n),
            "colour": rng.choice(["red", "blue", "green"], n),
            "label": rng.choice(["a", "b", "c"], n),
        }
    )
    frame["code"] = rng.integers(100, 200, n).astype(str)
    frame.loc[250:, "code"] = "x" + frame.loc[250:, "code"]  # numbers for 250 rows, then text
    frame.loc[200, "kids"] = None  # an integer column meets a gap late
    frame.loc[[20, 150], "label"] = "z"  # a rare class, in two chunks
    frame.loc[[30, 170], "label"] = None  # missing labels
    frame.loc[300:303] = frame.loc[10:13].to_numpy()  # exact duplicates, far apart
    frame.to_csv(path, index=False)
    return path


def run_all(root: Path, rows: int, ingest_cfg: TabularIngest, split_cfg: SplitParams, landed: pd.DataFrame | None):
    paths = paths_under(root)
    Path(paths.landing).mkdir(parents=True)
    if landed is not None:
        landed.to_parquet(Path(paths.landing) / "batch_2009.parquet", index=False)
    reports = {
        "ingest": ingest.run(ingest_cfg, paths, seed=5, rows=rows),
        "clean": clean.run(TabularClean(min_class_rows=3, rare_classes="drop"), paths, rows=rows),
        "split": split.run(split_cfg, paths, seed=5, rows=rows),
        "augment": augment.run(TabularAugment(), paths, seed=5, rows=rows),
    }
    tables = {
        "ingested": pd.read_parquet(Path(paths.ingested) / DATA_FILE),
        "clean": pd.read_parquet(Path(paths.clean) / DATA_FILE),
        **{name: pd.read_parquet(split_file(paths.split, name)) for name in SPLITS},
        "augmented": pd.read_parquet(split_file(paths.augmented, "train")),
    }
    schemas = {name: json.loads((Path(getattr(paths, name)) / "schema.json").read_text()) for name in ("ingested", "clean")}
    return reports, tables, schemas, paths


@pytest.mark.parametrize("method", ["stratified", "time"])
def test_small_chunks_give_what_one_chunk_gives(tmp_path, method):
    source = source_csv(tmp_path / "source.csv")
    cfg = TabularIngest(
        source=str(source), target="label", time_column="year", time_cutoff=2008, window_periods=8, max_rows=300, min_rows=50
    )
    landed = pd.read_csv(source).head(12).assign(year=2009).drop(columns=["label"])  # unlabelled later rows
    split_cfg = SplitParams(method=method, train=0.7, val=0.15, test=0.15)

    whole = run_all(tmp_path / "whole", WHOLE, cfg, split_cfg, landed)
    small = run_all(tmp_path / "small", SMALL, cfg, split_cfg, landed)

    assert small[0] == whole[0]  # every report, field for field (profile, counts, class balances)
    for name, table in whole[1].items():
        pd.testing.assert_frame_equal(small[1][name], table, check_exact=True, obj=name)
    assert small[2] == whole[2]
    assert [b["rows"] for b in small[0]["ingest"]["landed_batches"]] == [12]  # each batch counted once
    # It did stream: the small run wrote many row groups.
    assert pq.ParquetFile(Path(small[3].clean) / DATA_FILE).metadata.num_row_groups > 10


def test_what_streaming_preserves_is_what_a_whole_read_gives(tmp_path):
    source = source_csv(tmp_path / "source.csv")
    _, tables, _, _ = run_all(
        tmp_path / "run",
        SMALL,
        TabularIngest(source=str(source), target="label"),
        SplitParams(method="stratified", train=0.7, val=0.15, test=0.15),
        None,
    )
    whole = pd.read_csv(source)

    ingested = tables["ingested"]
    assert ingested["code"].tolist() == whole["code"].tolist()  # text throughout, as a whole read gives it
    assert ingested["kids"].dtype == np.float64 and ingested["kids"].isna().sum() == 1
    clean_rows = tables["clean"]
    assert "z" not in set(clean_rows["label"]) and clean_rows["label"].notna().all()
    assert not clean_rows.drop(columns=["rid"]).duplicated().any() or len(clean_rows) == len(clean_rows.drop_duplicates())


def test_the_in_memory_api_is_the_stream_of_one_chunk(tmp_path):
    source = source_csv(tmp_path / "source.csv")
    cfg = TabularIngest(source=str(source), target="label", time_column="year", max_rows=280, min_rows=50)
    reports, tables, _, _ = run_all(
        tmp_path / "run", SMALL, cfg, SplitParams(method="stratified", train=0.7, val=0.15, test=0.15), None
    )

    frame, schema = ingest.ingest(pd.read_csv(source), cfg, seed=5)
    pd.testing.assert_frame_equal(frame, tables["ingested"], check_exact=True)
    cleaned, _, report = clean.clean(frame, schema, TabularClean(min_class_rows=3, rare_classes="drop"))
    pd.testing.assert_frame_equal(cleaned, tables["clean"], check_exact=True)
    assert report == reports["clean"]


def test_a_source_file_with_other_columns_is_refused_by_name(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    pd.DataFrame({"a": [1] * 30, "label": ["x", "y"] * 15}).to_csv(folder / "1.csv", index=False)
    pd.DataFrame({"a": [1] * 30, "b": [2] * 30, "label": ["x", "y"] * 15}).to_csv(folder / "2.csv", index=False)
    paths = paths_under(tmp_path)

    with pytest.raises(DataError, match=r"2\.csv: columns differ from 1\.csv \(missing \[\], unexpected \['b'\]\)"):
        ingest.run(TabularIngest(source=str(folder), target="label", min_rows=10), paths, seed=0, rows=SMALL)
    assert not (Path(paths.ingested) / DATA_FILE).exists()  # nothing half-written


def test_a_failed_check_after_writing_leaves_no_output(tmp_path):
    source = tmp_path / "source.csv"
    pd.DataFrame({"a": range(40), "label": [None] * 40}).to_csv(source, index=False)
    paths = paths_under(tmp_path)

    with pytest.raises(DataError, match="target column 'label' has no values"):
        ingest.run(TabularIngest(source=str(source), target="label", min_rows=10), paths, seed=0, rows=SMALL)
    assert not (Path(paths.ingested) / DATA_FILE).exists()


def test_text_dates_are_read_alike_in_every_chunk(tmp_path):
    # The first value fixes day-first or month-first for the whole column, as a whole read does; a chunk
    # that starts with "13/..." must not switch to day-first on its own.
    dates = ["03/04/2021", "05/06/2021", "13/01/2021", "02/11/2021"] * 10
    source = tmp_path / "source.csv"
    pd.DataFrame({"when": dates, "x": range(40), "label": ["a", "b"] * 20}).to_csv(source, index=False)
    cfg = TabularIngest(source=str(source), target="label", time_column="when", min_rows=10)

    with pytest.raises(
        DataError,
        match=r"ingest.time_column 'when': '13/01/2021' in .*source.csv does not parse as '%m/%d/%Y', the date format of the column's first value; set ingest.time_format",
    ):
        ingest.run(cfg, paths_under(tmp_path), seed=0, rows=2)


def test_bools_with_gaps_and_a_window_that_empties_the_first_chunks(tmp_path):
    # Time-sorted rows and window_periods: the first chunks keep no row; a bool column with gaps (object
    # in pandas) stays bools, as a whole read gives it.
    n = 200
    frame = pd.DataFrame(
        {
            "t": np.repeat(np.arange(2000, 2010), n // 10),
            "flag": pd.Series([True, None, False, True] * (n // 4), dtype=object),
            "x": np.arange(n, dtype=float),
            "label": ["a", "b"] * (n // 2),
        }
    )
    frame.to_parquet(tmp_path / "source.parquet", index=False)
    csv = tmp_path / "source.csv"
    frame.assign(flag=[True] * 100 + [True, None] * 50).to_csv(csv, index=False)  # gaps only in later chunks
    for source in (tmp_path / "source.parquet", csv):
        cfg = TabularIngest(source=str(source), target="label", time_column="t", window_periods=3, min_rows=10)
        outputs = []
        for rows in (WHOLE, 16):
            paths = paths_under(tmp_path / f"{source.suffix}{rows}")
            ingest.run(cfg, paths, seed=0, rows=rows)
            outputs.append(pd.read_parquet(Path(paths.ingested) / DATA_FILE))
        pd.testing.assert_frame_equal(outputs[1], outputs[0], check_exact=True)
        assert {type(v) for v in outputs[1]["flag"].dropna()} == {bool}
        assert len(outputs[1]) == 60
