"""The sequence runtime (pipeline/kinds/sequence/runtime.py): no torch, and the gate's onnxruntime scores agree
with evaluate after the real stages (a forecaster on elecdemand, a classifier on a synthetic long table); the
production model scores new steps (landed, logged) window by window as the gate scores the test split, for the
monitor's performance drift, and gives a classifier's drift frame its predicted class."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import kinds
from pipeline.core.io import INT8_FILE, file_sha256, read_table, split_file
from pipeline.kinds import score_test
from pipeline.kinds.base import LOGGED_LABEL, PREDICTED
from pipeline.kinds.sequence import stages
from pipeline.lifecycle.gate import baseline_key, decide, parity_passed, trained_baseline
from pipeline.lifecycle.monitoring import decide_retrain
from pipeline.onnxio.card import ModelCard, SequenceCard
from pipeline.params import GateParams, MonitorParams, SequenceParams
from pipeline.stages import train
from tests.conftest import REPO
from tests.unit.kinds.sequence.conftest import QUICK, sequence_params, stage_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUNTIME = kinds.get("sequence").runtime


@dataclass(frozen=True)
class Trained:
    """A model through the real stages: its params, workspace, evaluate's metrics, the export report and card."""

    params: SequenceParams
    root: Path
    metrics: dict[str, Any]
    report: dict[str, Any]
    card: SequenceCard


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on ``n`` threads for a module fixture (``one_torch_thread`` is per test), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def test_the_runtime_imports_no_torch_and_no_stages():
    code = (
        "import sys, pipeline.kinds.sequence.runtime; "
        "loaded = [m for m in sys.modules if m == 'torch' or m.startswith(('pipeline.engine', 'pipeline.models', "
        "'pipeline.onnxio.build', 'pipeline.onnxio.verify', 'pipeline.kinds.sequence.stages', 'pipeline.stages'))]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory) -> Trained:
    """A quick LSTM through evaluate and export on elecdemand's first 500 steps (lookback 24, horizon 2)."""
    tmp_path = tmp_path_factory.mktemp("forecaster")
    with torch_threads(1):
        params = stage_data(tmp_path, rows=500, train={**QUICK, "model": {"architecture": "lstm", "hidden": 16}})
        p = params.paths
        train.run(params.features, params.train, p, params.seed)
        metrics = stages.evaluate(params.evaluate, p, params.seed)
        report = stages.export(params.export, p)
    return Trained(params, tmp_path, metrics, report, ModelCard.load(p.model_card))


def test_forecast_stages_end_to_end_score_like_the_gate(forecaster):
    """evaluate and export on a quick LSTM, then the gate's own scoring (onnxruntime only) agrees with evaluate."""
    params, tmp_path, metrics, report = forecaster.params, forecaster.root, forecaster.metrics, forecaster.report
    p = params.paths
    assert {"model", "baseline_seasonal_naive", "baseline_persistence"} <= set(metrics) and "mape" in metrics["model"]
    assert parity_passed(report, params.export.tolerance) and report["label_mismatches"] == 0
    card = json.loads((tmp_path / "models/model_card.json").read_text())
    assert card["kind"] == "sequence" and card["lookback"] == 24 and card["horizon"] == 2
    # The int8 twin (export.int8 is on): written, hashed on the card, its test MAE beside the fp32 model's.
    twin = tmp_path / "models/int8" / INT8_FILE
    assert list((tmp_path / "models/int8").iterdir()) == [twin] and report["int8"]["written"] is True
    assert set(card["int8"]) == {"bytes", "fp32_bytes", "mae", "fp32_mae", "max_abs_diff"}
    assert card["int8"]["bytes"] == twin.stat().st_size < card["int8"]["fp32_bytes"] == Path(p.onnx).stat().st_size
    assert card["hashes"]["onnx_int8_sha256"] == file_sha256(twin) and card["int8_note"].startswith("dynamic int8")
    assert card["int8"]["fp32_mae"] == pytest.approx(metrics["model"]["mae"], rel=1e-4)
    assert abs(forecaster.card.int8.accuracy_loss) < 0.005  # what the retrain flow compares with gate.int8_max_accuracy_loss
    assert score_test(twin, p.model_card, p.split)["mae"] == pytest.approx(card["int8"]["mae"], rel=1e-5)
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["mae"] == pytest.approx(metrics["model"]["mae"], rel=1e-4) and scores["rows"] == metrics["test_windows"]
    assert (tmp_path / "reports/evaluate/plots/forecast/forecast.csv").exists() and (
        tmp_path / "reports/evaluate/plots/horizon_errors/horizon_errors.csv"
    ).exists()


def new_steps(trained: Trained) -> pd.DataFrame:
    """The test split's steps with the ``lookback`` steps before them: every test window of the gate, as new steps."""
    p, lookback = trained.params.paths, trained.card.lookback
    val, test = (read_table(split_file(p.split, name)) for name in ("val", "test"))
    return pd.concat([val.tail(lookback), test], ignore_index=True)


def test_score_rows_scores_every_window_of_new_steps_as_the_gate_scores_the_test_split(forecaster):
    card, params, onnx = forecaster.card, forecaster.params, Path(forecaster.params.paths.onnx)
    gate = score_test(onnx, forecaster.params.paths.model_card, forecaster.params.paths.split)
    steps = new_steps(forecaster)
    scores = RUNTIME.score_rows(onnx, card, steps, params)
    assert scores["rows"] == gate["rows"] == forecaster.metrics["test_windows"]
    assert scores["mae"] == pytest.approx(gate["mae"], rel=1e-6) and scores["rmse"] == pytest.approx(gate["rmse"], rel=1e-6)
    assert set(scores) == {"mae", "rmse", "r2", "rows"}

    # As a landed CSV batch of elecdemand has them: no series column, times as text, rows in any order.
    landed = steps.drop(columns="series").assign(time=steps["time"].astype(str)).sample(frac=1.0, random_state=0)
    assert RUNTIME.score_rows(onnx, card, landed, params) == pytest.approx(scores)
    # As the prediction log keeps them: each window's newest step, its series null, the answered value beside it.
    logged = steps.assign(series=None, time=steps["time"].map(pd.Timestamp.isoformat), **{LOGGED_LABEL: "4.2"})
    assert RUNTIME.score_rows(onnx, card, logged, params) == pytest.approx(scores)


def test_only_complete_windows_with_known_actuals_are_scored(forecaster):
    card, params, onnx = forecaster.card, forecaster.params, Path(forecaster.params.paths.onnx)
    steps = new_steps(forecaster)  # lookback 24, horizon 2: a run of n steps holds n - 25 windows
    n = len(steps)
    assert RUNTIME.score_rows(onnx, card, steps, params)["rows"] == n - 25
    gap = steps.drop(index=60)  # runs of 60 and n - 61 steps
    assert RUNTIME.score_rows(onnx, card, gap, params)["rows"] == (60 - 25) + (n - 61 - 25)
    # An input missing at step 60: the 24 windows that take it as an input are left out (an actual needs the target only).
    no_input = steps.assign(Temperature=steps["Temperature"].where(steps.index != 60))
    assert RUNTIME.score_rows(onnx, card, no_input, params)["rows"] == n - 25 - 24
    # The target missing at step 60: also the 2 windows whose actuals include it.
    no_actual = steps.assign(Demand=steps["Demand"].where(steps.index != 60))
    assert RUNTIME.score_rows(onnx, card, no_actual, params)["rows"] == n - 25 - 24 - 2
    # A correction landed after a step: the later row for the same time wins, and nothing is counted twice.
    corrected = pd.concat([steps, steps.iloc[[70]].assign(Demand=9.0)], ignore_index=True)
    expected = RUNTIME.score_rows(onnx, card, steps.assign(Demand=steps["Demand"].where(steps.index != 70, 9.0)), params)
    assert RUNTIME.score_rows(onnx, card, corrected, params) == pytest.approx(expected)
    assert RUNTIME.score_rows(onnx, card, steps.head(25), params) == {}  # 25 steps: no window with its 2 actuals
    assert RUNTIME.score_rows(onnx, card, steps.drop(columns="time"), params) == {}


def test_a_shifted_demand_raises_the_mae_past_the_monitors_tolerance(forecaster):
    """1 GW more demand than the model learned: its MAE on the new windows asks the monitor for a retrain."""
    card, params, onnx = forecaster.card, forecaster.params, Path(forecaster.params.paths.onnx)
    steps = new_steps(forecaster)
    same = RUNTIME.score_rows(onnx, card, steps, params)
    shifted = RUNTIME.score_rows(onnx, card, steps.assign(Demand=steps["Demand"] + 1.0), params)
    cfg = MonitorParams(min_rows=50, error_tolerance=0.25)
    decide = partial(
        decide_retrain,
        drifted_share=0.0,
        current_rows=len(steps),
        accuracy=None,
        reference_accuracy=None,
        reference_error=card.test_metrics["mae"],
        key="k",
        triggered_keys=set(),
        last_retrain_at=None,
        retrain_running=False,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        cfg=cfg,
    )
    assert not decide(error=same["mae"]).retrain
    wanted = decide(error=shifted["mae"])
    assert shifted["mae"] > 1.25 * same["mae"] and wanted.retrain and wanted.reasons[0].startswith("MAE on new labelled data")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Trained:
    """Nine series, a wave or noise about another level, whole series per split (group): a GRU classifies their windows."""
    tmp_path = tmp_path_factory.mktemp("classifier")
    rng = np.random.default_rng(0)
    frames = []
    for k in range(9):
        kind = "sine" if k % 2 else "noise"
        t = np.arange(60)
        value = 1 + np.sin(t / 2 + k) if kind == "sine" else rng.normal(-1, 0.5, size=60)
        frames.append(pd.DataFrame({"sensor": f"s{k}", "step": t, "value": value, "kind": kind}))
    source = tmp_path / "data/raw/sensors.parquet"
    source.parent.mkdir(parents=True)
    pd.concat(frames).to_parquet(source)
    params = sequence_params(
        tmp_path,
        ingest={
            "source": str(source),
            "target": "kind",
            "time_column": "step",
            "series_column": "sensor",
            "task": "classify",
            "lookback": 12,
            "stride": 2,
        },
        split={"method": "group", "group_column": "sensor", "train": 0.6, "val": 0.2, "test": 0.2},
        train={
            **QUICK,
            "epochs": 6,
            "batch_size": 16,
            "model": {"architecture": "gru", "hidden": 16},
            "early_stopping": {"metric": "val_accuracy"},
        },
    )
    p = params.paths
    with torch_threads(1):
        stages.ingest(params.ingest, p, params.seed)
        stages.clean(params.clean, p)
        split_report = stages.split(params.split, p, params.seed)
        assert split_report["series"] == {"train": 5, "val": 2, "test": 2}
        stages.augment(params.augment, p, params.seed)
        assert stages.prepare(params.features, params.train, p).task == "classification"
        train.run(params.features, params.train, p, params.seed)
        metrics = stages.evaluate(params.evaluate, p, params.seed)
        report = stages.export(params.export, p)
    return Trained(params, tmp_path, metrics, report, ModelCard.load(p.model_card))


def test_sequence_classification_on_a_synthetic_long_table(classifier):
    params, tmp_path, metrics, report = classifier.params, classifier.root, classifier.metrics, classifier.report
    p = params.paths
    assert metrics["model"]["accuracy"] > 0.7 and "baseline_majority" in metrics
    assert (tmp_path / "reports/evaluate/plots/confusion/confusion.csv").exists()
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] <= 1e-4
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["accuracy"] == pytest.approx(metrics["model"]["accuracy"]) and scores["rows"] == metrics["test_rows"]
    # A GRU has no int8 cell in onnxruntime: no twin, and the card says so with what was measured.
    assert classifier.card.int8 is None and report["int8"]["written"] is False
    assert classifier.card.int8_note.startswith("not produced: onnxruntime's dynamic quantisation has no int8 GRU cell")


def test_a_classifiers_new_steps_are_scored_window_by_window_and_its_drift_frame_gets_the_predicted_class(classifier):
    card, params, onnx = classifier.card, classifier.params, Path(classifier.params.paths.onnx)
    test = read_table(split_file(params.paths.split, "test"))
    scores = RUNTIME.score_rows(onnx, card, test, params)
    gate = score_test(onnx, params.paths.model_card, params.paths.split)
    assert scores["rows"] == gate["rows"] and scores["accuracy"] == pytest.approx(gate["accuracy"])

    frame = RUNTIME.drift_frame(test, card, params, onnx)
    assert list(frame.columns) == ["value", "kind", PREDICTED] and frame.index.equals(test.index)
    first_steps = test.groupby("sensor").cumcount() < card.lookback - 1  # no complete window ends there
    assert frame.loc[first_steps, PREDICTED].isna().all() and frame.loc[~first_steps, PREDICTED].notna().all()
    assert (frame.loc[~first_steps, PREDICTED] == test.loc[~first_steps, "kind"]).mean() == pytest.approx(scores["accuracy"])
    assert PREDICTED not in RUNTIME.drift_frame(test, card, params).columns  # no model, no logged answers

    # The prediction log's rows: the class the service answered, scored against the late labels that came.
    logged = test.head(4).assign(**{LOGGED_LABEL: ["sine", "noise", "sine", "sine"]})
    logged["kind"] = ["sine", "sine", None, "sine"]
    assert RUNTIME.drift_frame(logged, card, params)[PREDICTED].tolist() == ["sine", "noise", "sine", "sine"]
    assert RUNTIME.score_rows(onnx, card, logged, params) == pytest.approx(
        {"accuracy": 2 / 3, "balanced_accuracy": 2 / 3, "macro_f1": 0.8, "rows": 3.0}
    )
    assert RUNTIME.score_rows(onnx, card, test.drop(columns="kind"), params) == {}


def test_the_series_column_is_the_drift_group(forecaster):
    assert RUNTIME.drift_groups(forecaster.card) == "series"


def test_a_first_forecaster_is_gated_against_the_stronger_naive_forecast(forecaster):
    """The gate's bar for a first forecaster, from evaluate's real metrics: it must beat the stronger naive
    forecast outright (persistence, half an hour ahead); the tolerance does not loosen it."""
    metrics, cfg = forecaster.metrics, GateParams(metric="mae", tolerance=0.005)
    floor, trained = baseline_key("mae", metrics), trained_baseline(metrics, "mae")
    assert floor == "baseline_persistence" and trained is None
    persistence, seasonal = metrics[floor]["mae"], metrics["baseline_seasonal_naive"]["mae"]
    assert persistence < seasonal
    quick = decide(metrics["model"]["mae"], None, persistence, True, cfg, trained, floor)  # two epochs of an LSTM
    assert metrics["model"]["mae"] > persistence and not quick.promote
    assert decide(persistence - 0.001, None, persistence, True, cfg, trained, floor).promote
    assert not decide(persistence + 0.001, None, persistence, True, cfg, trained, floor).promote
    tie = decide(persistence, None, persistence, True, cfg, trained, floor)
    assert not tie.promote and "does not beat the persistence baseline" in tie.reason
