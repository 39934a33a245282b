"""pipeline.lifecycle.drift against the real, installed Evidently (no mocks).

The CONTRACT tests pin what the wrapper relies on in Evidently 0.7.23: the default methods, where the
per-column and dataset-level test statuses live, and that the status (not the score) gives the
verdict. An Evidently upgrade fails the version assertion first, forcing a re-check.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket

import numpy as np
import pandas as pd
import pytest

from pipeline.lifecycle.drift import ColumnDrift, DriftResult, detect_drift, parse_snapshot

N = 2000
NUMERIC = ["num_shift", "num_same"]
CATEGORICAL = ["cat_shift", "cat_same"]
LEVELS = ["a", "b", "c", "d"]


def make_frames(n: int = N, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current: one clearly shifted and one unchanged column of each kind, plus a stray column."""
    ref_rng, cur_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    reference = pd.DataFrame(
        {
            "num_shift": ref_rng.normal(0, 1, n),
            "num_same": ref_rng.normal(0, 1, n),
            "cat_shift": ref_rng.choice(LEVELS, n, p=[0.7, 0.1, 0.1, 0.1]),
            "cat_same": ref_rng.choice(LEVELS, n),
            "ignored": ref_rng.normal(0, 1, n),
        }
    )
    # Columns in another order than the reference, and the stray column drifted: neither may matter.
    current = pd.DataFrame(
        {
            "cat_same": cur_rng.choice(LEVELS, n),
            "ignored": cur_rng.normal(50, 1, n),
            "num_same": cur_rng.normal(0, 1, n),
            "cat_shift": cur_rng.choice(LEVELS, n, p=[0.1, 0.1, 0.1, 0.7]),
            "num_shift": cur_rng.normal(3, 1, n),
        }
    )
    return reference, current


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_frames()


@pytest.fixture(scope="module")
def result(frames) -> DriftResult:
    reference, current = frames
    return detect_drift(reference, current, NUMERIC, CATEGORICAL)


def evidently_own_statuses(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, str]:
    """Evidently's test statuses keyed by the tests' display names, read straight from a Report."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        current_data=Dataset.from_pandas(current[NUMERIC + CATEGORICAL], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[NUMERIC + CATEGORICAL], data_definition=definition),
    )
    return {test["name"]: str(test["status"].value) for test in snapshot.dict()["tests"]}


# --- CONTRACT with the installed Evidently -------------------------------------------------------


def test_contract_installed_version(result):
    # Pinned: an upgrade must re-run and re-read these contract tests before changing the pin.
    assert importlib.metadata.version("evidently") == "0.7.23"
    assert result.evidently_version == "0.7.23"  # evidently.__version__, as the wrapper reports it


def test_contract_verdicts_methods_and_shares(result, frames):
    assert [c.column for c in result.columns] == NUMERIC + CATEGORICAL
    assert result.column("num_shift").drifted and result.column("cat_shift").drifted
    assert not result.column("num_same").drifted and not result.column("cat_same").drifted
    assert result.drifted_columns == ["num_shift", "cat_shift"]
    # Evidently 0.7.23's defaults above 1000 reference rows: distances, large = drift.
    assert {c.column: c.method for c in result.columns} == {
        "num_shift": "Wasserstein distance (normed)",
        "num_same": "Wasserstein distance (normed)",
        "cat_shift": "Jensen-Shannon distance",
        "cat_same": "Jensen-Shannon distance",
    }
    for item in result.columns:
        assert item.method and item.threshold == pytest.approx(0.1)
        assert item.kind == ("numeric" if item.column in NUMERIC else "categorical")
        assert (item.score > item.threshold) == item.drifted  # for distances the score agrees with the test
    assert result.drifted_share == len(result.drifted_columns) / len(result.columns) == 0.5
    assert (result.reference_rows, result.current_rows) == (N, N)
    assert result.evidently_version == "0.7.23"


def test_contract_dataset_verdict_agrees_with_evidentlys_own_tests(result, frames):
    reference, current = frames
    statuses = evidently_own_statuses(reference, current)
    # Read independently, by the tests' display names.
    for item in result.columns:
        assert item.drifted == (statuses[f"Value Drift for column {item.column}"] == "FAIL")
    assert result.dataset_drift == (statuses["Share of Drifted Columns: Less 0.500"] == "FAIL")
    # Evidently's rule: dataset drift once the drifted share reaches drift_share.
    assert result.dataset_drift == (result.drifted_share >= result.drift_share)
    assert result.dataset_drift is True


def test_contract_no_dataset_drift_when_under_the_share(frames):
    reference, current = frames
    quiet = detect_drift(reference, current, ["num_same", "num_shift"], ["cat_same"])
    assert quiet.drifted_columns == ["num_shift"]
    assert quiet.drifted_share == pytest.approx(1 / 3)
    assert quiet.dataset_drift is False


def test_contract_small_samples_switch_to_p_values_and_the_verdict_still_comes_from_the_test(frames):
    reference, current = frames
    small = detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=500, current_sample=500)
    shifted, same = small.column("num_shift"), small.column("num_same")
    assert shifted.method == same.method == "K-S p_value"
    # A p-value: drift when the score is BELOW the threshold -- the opposite of the distances above.
    assert shifted.drifted and shifted.score < shifted.threshold
    assert not same.drifted and same.score >= same.threshold
    assert small.column("cat_shift").drifted and not small.column("cat_same").drifted


def test_reading_by_name_does_not_depend_on_column_order(result, frames):
    reference, current = frames
    reordered = detect_drift(
        reference[list(reversed(reference.columns))], current, list(reversed(NUMERIC)), list(reversed(CATEGORICAL))
    )
    assert [c.column for c in reordered.columns] == list(reversed(NUMERIC)) + list(reversed(CATEGORICAL))
    for item in result.columns:
        assert reordered.column(item.column) == item


# --- data handling --------------------------------------------------------------------------------


def test_missing_values_in_both_kinds_are_handled(frames):
    reference, current = (frame.copy() for frame in frames)
    for frame in (reference, current):
        frame.loc[frame.index[:200], ["num_shift", "num_same"]] = np.nan
        frame["cat_shift"] = frame["cat_shift"].astype(object)
        frame.loc[frame.index[:100], "cat_shift"] = None
        frame["cat_same"] = frame["cat_same"].astype("string")
        frame.loc[frame.index[:100], "cat_same"] = pd.NA
    drift = detect_drift(reference, current, NUMERIC, CATEGORICAL)
    assert drift.drifted_columns == ["num_shift", "cat_shift"]
    assert all(np.isfinite(c.score) for c in drift.columns)


def test_inputs_are_not_mutated(frames):
    reference, current = (frame.copy() for frame in frames)
    reference.loc[reference.index[:10], "num_same"] = np.nan
    before = reference.copy(), current.copy()
    detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=300, current_sample=300)
    pd.testing.assert_frame_equal(reference, before[0])
    pd.testing.assert_frame_equal(current, before[1])


def test_sampling_is_seeded_and_reports_the_sampled_sizes(frames):
    reference, current = frames
    options = dict(reference_sample=1500, current_sample=1200)
    first = detect_drift(reference, current, NUMERIC, CATEGORICAL, seed=7, **options)
    again = detect_drift(reference, current, NUMERIC, CATEGORICAL, seed=7, **options)
    other = detect_drift(reference, current, NUMERIC, CATEGORICAL, seed=8, **options)
    assert (first.reference_rows, first.current_rows) == (1500, 1200)
    assert first == again
    assert [c.score for c in first.columns] != [c.score for c in other.columns]
    # A sample size above the frame's length keeps the whole frame.
    whole = detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=10 * N, current_sample=N)
    assert (whole.reference_rows, whole.current_rows) == (N, N)


def test_method_and_threshold_overrides(frames):
    reference, current = frames
    psi = detect_drift(reference, current, NUMERIC, CATEGORICAL, method="psi", threshold=0.2)
    assert {c.method for c in psi.columns} == {"PSI"}
    assert {c.threshold for c in psi.columns} == {0.2}
    assert psi.drifted_columns == ["num_shift", "cat_shift"]
    per_kind = detect_drift(reference, current, NUMERIC, CATEGORICAL, num_method="ks", cat_method="chisquare")
    assert [c.method for c in per_kind.columns] == ["K-S p_value"] * 2 + ["chi-square p_value"] * 2
    assert per_kind.drifted_columns == ["num_shift", "cat_shift"]


def test_summary_formats(result):
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["drifted_columns"] == ["num_shift", "cat_shift"]
    assert summary["dataset_drift"] is True and summary["columns"][0]["column"] == "num_shift"
    table = result.markdown_table().splitlines()
    assert table[0] == "| column | kind | method | score | threshold | drifted |"
    assert len(table) == 2 + len(result.columns)
    assert table[2].startswith("| num_shift | numeric | Wasserstein distance (normed) |") and table[2].endswith("| yes |")
    with pytest.raises(KeyError, match="'nope'"):
        result.column("nope")


def test_non_finite_score_is_null_in_the_summary():
    drift = DriftResult(
        columns=(ColumnDrift("x", "numeric", "K-S p_value", float("nan"), 0.05, False),),
        drifted_share=0.0,
        dataset_drift=False,
        reference_rows=1,
        current_rows=1,
        evidently_version="0.7.23",
    )
    assert json.loads(json.dumps(drift.to_dict(), allow_nan=False))["columns"][0]["score"] is None


def test_html_report_is_written(frames, tmp_path):
    reference, current = frames
    path = tmp_path / "nested" / "drift.html"  # a Path object, into a folder that does not exist yet
    detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=300, current_sample=300, html_path=path)
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>") and len(html) > 10_000
    # Self-contained: Evidently 0.7.23 inlines its JS bundle and fonts, nothing loads from a CDN.
    assert re.search(r"<script[^>]*\bsrc\s*=", html) is None
    assert re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", html) is None


def test_nothing_reaches_the_network(frames, monkeypatch):
    reference, current = frames

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=300, current_sample=300)
    assert os.environ.get("DO_NOT_TRACK")  # telemetry opt-out set (or already chosen by the user)


# --- errors name what is wrong --------------------------------------------------------------------


def test_empty_current_frame_is_rejected(frames):
    reference, current = frames
    with pytest.raises(ValueError, match="current frame has no rows"):
        detect_drift(reference, current.iloc[:0], NUMERIC, CATEGORICAL)


@pytest.mark.parametrize("frame_name", ["reference", "current"])
def test_missing_column_names_the_column_and_the_frame(frames, frame_name):
    reference, current = frames
    if frame_name == "reference":
        reference = reference.drop(columns="cat_same")
    else:
        current = current.drop(columns="cat_same")
    with pytest.raises(ValueError, match=f"'cat_same' is missing from the {frame_name} frame"):
        detect_drift(reference, current, NUMERIC, CATEGORICAL)


def test_an_all_missing_column_is_left_out_and_named_in_the_result(frames):
    reference, current = (frame.copy() for frame in frames)
    current["num_same"] = np.nan
    result = detect_drift(reference, current, NUMERIC, CATEGORICAL, reference_sample=300, current_sample=300)
    assert [c.column for c in result.columns] == ["num_shift", "cat_shift", "cat_same"]
    assert result.drifted_share == pytest.approx(2 / 3)  # over the compared columns only
    [excluded] = result.to_dict()["excluded_columns"]
    assert excluded == {"column": "num_same", "kind": "numeric", "reason": "has no values in the current frame (all missing)"}
    assert result.markdown_table().splitlines()[-1].startswith("| num_same | numeric | not compared: has no values")


def test_every_column_all_missing_names_them_all(frames):
    reference, current = (frame.copy() for frame in frames)
    current[NUMERIC + CATEGORICAL] = np.nan
    with pytest.raises(ValueError, match="no column to compare: 'num_shift' has no values in the current frame.*'cat_same'"):
        detect_drift(reference, current, NUMERIC, CATEGORICAL)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(method="wasserstein"), "method='wasserstein' is not a drift method for categorical columns"),
        (dict(num_method="nope"), "num_method='nope' is not a drift method for numeric columns"),
        (dict(threshold=0.0), "threshold must be a positive number"),
        (dict(drift_share=1.5), "drift_share must be in"),
        (dict(current_sample=0), "current_sample must be a positive integer"),
    ],
)
def test_bad_options_name_the_option(frames, options, message):
    reference, current = frames
    with pytest.raises(ValueError, match=message):
        detect_drift(reference, current, NUMERIC, CATEGORICAL, **options)


def test_bad_column_lists(frames):
    reference, current = frames
    with pytest.raises(ValueError, match="'num_same' is listed twice"):
        detect_drift(reference, current, NUMERIC, ["num_same"])
    with pytest.raises(ValueError, match="no columns to compare"):
        detect_drift(reference, current, [], [])


def test_parse_snapshot_refuses_to_guess_a_verdict(frames):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference, current = (frame.iloc[:300] for frame in frames)
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    kinds = {**{c: "numeric" for c in NUMERIC}, **{c: "categorical" for c in CATEGORICAL}}

    def snapshot(include_tests: bool) -> dict:
        return (
            Report([DataDriftPreset()], include_tests=include_tests)
            .run(
                current_data=Dataset.from_pandas(current[NUMERIC + CATEGORICAL], data_definition=definition),
                reference_data=Dataset.from_pandas(reference[NUMERIC + CATEGORICAL], data_definition=definition),
            )
            .dict()
        )

    # Without include_tests Evidently computes scores but no verdicts: nothing to read.
    with pytest.raises(RuntimeError, match="no drift test for column"):
        parse_snapshot(snapshot(False), kinds, 300, 300, "0.7.23")
    # A status that is neither a pass nor a failure (ERROR/SKIPPED) is not turned into "no drift".
    with_tests = snapshot(True)
    test = next(t for t in with_tests["tests"] if t["metric_config"]["params"].get("column") == "cat_same")
    test["status"] = "ERROR"
    with pytest.raises(RuntimeError, match="column 'cat_same' ended with status 'ERROR'"):
        parse_snapshot(with_tests, kinds, 300, 300, "0.7.23")
