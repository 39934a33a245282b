"""Landing and drift for sequences: long-table batches screened and quarantined with a reason, ingest
stacking new steps and applying corrections (a later row for the same (series, time) wins), the
steps' inputs drifting on real elecdemand data when the weather and the demand shift, and one series'
shift found by its own check where the pooled check misses it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.kinds.sequence import ingest
from pipeline.kinds.sequence.data import read_sequence
from pipeline.lifecycle.drift import detect_drift
from pipeline.lifecycle.landing import REASON_SUFFIX, land_frame, screen_landed
from pipeline.lifecycle.monitoring import LandingSource, drift_columns, drifted_groups, group_drift
from pipeline.onnxio.card import parse_card
from pipeline.params import MonitorParams
from tests.unit.kinds.sequence.conftest import long_table, sequence_params
from tests.unit.onnxio.fixtures import old_card_data

RUNTIME = kinds.get("sequence").runtime
LONG = {"series_column": "id", "time_column": "t", "target": "y", "lookback": 3, "horizon": 2, "season_length": 4}


def long_params(tmp_path: Path, rows: int = 60):
    source = tmp_path / "raw" / "series.csv"
    source.parent.mkdir(parents=True)
    long_table(rows).to_csv(source, index=False)
    return sequence_params(tmp_path, ingest={"source": str(source), **LONG})


def reasons(params) -> dict[str, str]:
    folder = Path(params.paths.quarantine)
    return {p.name.removesuffix(REASON_SUFFIX): p.read_text().strip() for p in folder.glob(f"*{REASON_SUFFIX}")}


def test_sequence_batches_are_screened_and_bad_ones_quarantined_with_a_reason(tmp_path):
    params = long_params(tmp_path)
    landing = Path(params.paths.landing)
    later = long_table(80).query("t >= 60")
    land_frame(later, landing, "new_steps.csv")
    land_frame(later.drop(columns="x"), landing, "no_x.parquet")
    land_frame(later.assign(x="high"), landing, "text_x.csv")
    land_frame(later.assign(t="soon"), landing, "bad_time.csv")
    land_frame(later.assign(extra=1.0), landing, "extra.parquet")
    land_frame(later.assign(id=None), landing, "no_series.parquet")
    (landing / "corrupt.parquet").write_bytes(b"\x00garbage")
    (landing / "folder").mkdir()

    good, moved = screen_landed(params)

    assert [(b.path.name, b.rows) for b in good] == [("new_steps.csv", 40)]
    assert sorted(p.name for p in moved) == sorted(
        ["no_x.parquet", "text_x.csv", "bad_time.csv", "extra.parquet", "no_series.parquet", "corrupt.parquet", "folder"]
    )
    why = reasons(params)
    assert why["no_x.parquet"] == "missing column(s) ['x']"
    assert why["text_x.csv"] == "column 'x' should be numeric but is mostly text"
    assert why["bad_time.csv"] == "ingest.time_column 't': no value parses as numbers or dates (e.g. 'soon')"
    assert why["extra.parquet"] == "column(s) ['extra'] are not in ingest.source"
    assert why["no_series.parquet"] == "ingest.series_column 'id': 40 rows have no series id"
    assert why["corrupt.parquet"].startswith("not a readable parquet file")
    assert why["folder"] == "a directory, not a batch file"


def test_ingest_stacks_new_steps_and_a_later_row_for_the_same_step_wins(tmp_path):
    params = long_params(tmp_path)
    landing = Path(params.paths.landing)
    land_frame(long_table(70).query("t >= 60"), landing, "b1_new_steps.csv")  # t 60..69 of both series
    # A later batch corrects two known steps of series "a"; inside it, the later of two rows for t=6 wins.
    corrections = pd.DataFrame({"id": ["a", "a", "a"], "t": [5, 6, 6], "y": [99.0, 1.0, 2.0], "x": [0.0, 0.0, 0.5]})
    land_frame(corrections, landing, "b2_corrections.csv")

    report = ingest.run(params.ingest, params.paths, params.seed)

    frame, _ = read_sequence(params.paths.ingested)
    assert len(frame) == 140 and report["rows_replaced_by_later_rows"] == 3  # 120 + 20 new; 3 rows superseded
    assert not frame.duplicated(["id", "t"]).any()
    a = frame[frame["id"] == "a"].set_index("t")
    assert a.loc[5, "y"] == 99.0 and (a.loc[6, "y"], a.loc[6, "x"]) == (2.0, 0.5)
    assert a.index.max() == 69 and a.index.is_monotonic_increasing
    assert [b["file"] for b in report["landed_batches"]] == ["b1_new_steps.csv", "b2_corrections.csv"]

    land_frame(corrections.drop(columns="x"), landing, "b3_bad.csv")  # landed after the screen ran
    with pytest.raises(DataError, match=r"b3_bad.csv: landed batch cannot be used: missing column\(s\) \['x'\]"):
        ingest.run(params.ingest, params.paths, params.seed)


def test_landed_steps_are_kept_whole_when_the_source_is_sliced(tmp_path):
    params = sequence_params(tmp_path, ingest={"source": str(tmp_path / "s.csv"), **LONG, "max_rows": 30, "time_cutoff": 40})
    long_table(60).to_csv(tmp_path / "s.csv", index=False)
    land_frame(long_table(70).query("t >= 60"), Path(params.paths.landing), "new.csv")
    ingest.run(params.ingest, params.paths, params.seed)
    frame, _ = read_sequence(params.paths.ingested)
    # The slice (first 30 steps, up to the cutoff) applies to the source; the landed steps come after it.
    assert sorted(frame.loc[frame["id"] == "a", "t"]) == [*range(30), *range(60, 70)]


@pytest.mark.parametrize(("shift", "drifts"), [({}, False), ({"Temperature": 8.0, "Demand": 1.0}, True)])
def test_shifted_weather_and_demand_drift_and_a_training_era_sample_does_not(tmp_path, shift, drifts):
    params = sequence_params(tmp_path)  # elecdemand, the real half-hourly demand of Victoria in 2014
    rules = RUNTIME.landing_screen(params)
    source, _, _ = ingest.read_raw_source(params.ingest)
    reference_file = tmp_path / "train.parquet"
    source.iloc[:3000].to_parquet(reference_file)  # the training era: the first ~2 months
    sample = source.iloc[np.sort(np.random.default_rng(0).choice(3000, size=600, replace=False))]
    land_frame(sample.assign(**{c: sample[c] + d for c, d in shift.items()}), Path(params.paths.landing), "batch.parquet")
    good, moved = screen_landed(params, rules=rules)
    assert [b.path.name for b in good] == ["batch.parquet"] and moved == []

    card = parse_card(old_card_data("sequence"))
    reference = RUNTIME.drift_frame(rules.read(reference_file), card, params)
    current = LandingSource(Path(params.paths.landing), rules=rules).pending(set())
    frame = RUNTIME.drift_frame(current.frame, card, params)
    assert list(frame.columns) == ["Demand", "WorkDay", "Temperature"] and len(frame) == 600
    result = detect_drift(reference, frame, *drift_columns(reference))
    assert result.dataset_drift is drifts
    assert sorted(result.drifted_columns) == (["Demand", "Temperature"] if drifts else [])


def demand_steps(series: str, n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    """``n`` half-hourly steps of one series shaped like elecdemand's; ``shift``: in units of each column's spread."""
    t = np.arange(n)
    demand = 4 + 0.5 * np.sin(2 * np.pi * t / 48) + 0.2 * rng.normal(size=n)
    temperature = 20 + 4 * np.sin(2 * np.pi * t / 48 - 1) + 2 * rng.normal(size=n)
    return pd.DataFrame(
        {
            "series": series,
            "time": pd.Timestamp("2014-01-01") + pd.to_timedelta(30 * t, unit="min"),
            "Demand": demand + shift * demand.std(),
            "WorkDay": rng.integers(0, 2, size=n).astype(float),
            "Temperature": temperature + shift * temperature.std(),
        }
    )


def test_each_large_series_is_checked_against_its_own_training_steps(tmp_path):
    """One series of six shifts by 0.3 of its spread in demand and temperature: diluted among the others the
    pooled check stays quiet, its own check does not. The largest series are checked, up to monitor.max_groups."""
    params = sequence_params(tmp_path)
    card = parse_card(old_card_data("sequence"))
    rng = np.random.default_rng(0)
    reference_rows = pd.concat(
        [*(demand_steps(f"s{k}", 1200, rng) for k in range(1, 7)), demand_steps("thin", 100, rng)], ignore_index=True
    )
    sizes = {"s1": 900, "s2": 800, "s3": 700, "thin": 650, "s4": 600, "new": 600, "s5": 550, "s6": 100}
    current_rows = pd.concat(
        [demand_steps(name, n, rng, shift=0.3 if name == "s1" else 0.0) for name, n in sizes.items()], ignore_index=True
    )
    reference = RUNTIME.drift_frame(reference_rows, card, params)
    current = RUNTIME.drift_frame(current_rows, card, params)
    cfg = MonitorParams(min_rows=500, max_groups=4)

    pooled = detect_drift(reference, current, *drift_columns(reference))
    assert pooled.drifted_columns == []
    report = group_drift(
        reference, current, reference_rows[RUNTIME.drift_groups(card)], current_rows["series"], "series", cfg, seed=0
    )
    assert report is not None and report.column == "series"
    assert [(g.group, g.status, g.current_rows, g.reference_rows) for g in report.groups] == [
        ("s1", "checked", 900, 1200),
        ("s2", "checked", 800, 1200),
        ("s3", "checked", 700, 1200),
        ("thin", "few_reference_rows", 650, 100),  # too few training steps to compare with
        ("new", "new", 600, 0),  # not in the training data: reported, not compared
    ]
    assert report.groups[0].drifted_columns == ("Demand", "Temperature") and report.groups[0].drifted_share == 2 / 3
    assert [g.drifted_columns for g in report.groups[1:3]] == [(), ()]
    assert (report.small, report.over_limit) == (1, 2)  # s6 is too small; s4 and s5 are past monitor.max_groups
    assert drifted_groups(report, cfg.drift_share) == ("s1",)
    table = report.markdown_table()
    assert "| s1 | 900 | 1200 | checked | 67% | Demand, Temperature |" in table and "2 past monitor.max_groups" in table

    # One series (no series column in the new rows, as elecdemand's landed batches): the pooled check is its check.
    assert group_drift(reference, current, reference_rows["series"], None, "series", cfg, seed=0) is None
    assert (
        group_drift(
            reference,
            current,
            reference_rows["series"],
            current_rows["series"],
            "series",
            cfg.model_copy(update={"max_groups": 0}),
            seed=0,
        )
        is None
    )
