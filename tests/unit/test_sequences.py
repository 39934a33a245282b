"""Time series (``ingest.kind: sequence``): ingest, clean, split, windows, augment, encoder, models, export, scores."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.core.errors import DataError, ExportError, ParamsError
from pipeline.engine.loop import fit
from pipeline.kinds.sequence import stages as seq
from pipeline.lifecycle.gate import parity_passed
from pipeline.models import build_model
from pipeline.params import CleanParams, SequenceAugmentParams, SplitParams, TrainParams, parse_params
from tests.conftest import REPO, make_params

SEQUENCE_INGEST = {
    "kind": "sequence", "source": "default", "target": "Demand", "time_column": "time", "time_cutoff": None,
    "drop_columns": [], "categorical": [], "min_rows": 10, "max_rows": None,
}
QUICK = {"epochs": 2, "batch_size": 32, "lr": 0.01, "warmup_epochs": 0, "num_threads": 1, "early_stopping": {"metric": "val_mae"}}


# Small models train fastest on one thread, and a busy machine's other processes cannot slow them.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sequence_params(raw_params, tmp_path, ingest=None, **sections):
    clean = {"valid_ranges": {}, **sections.pop("clean", {})}
    return make_params(raw_params, tmp_path, ingest={**SEQUENCE_INGEST, **(ingest or {})}, clean=clean, **sections)


def schema_for(**overrides) -> seq.SequenceSchema:
    values = dict(series_column="id", time_column="t", target="y", features=("y", "x"), task="forecast",
                  lookback=3, horizon=2, stride=1, season_length=4, frequency=1)
    return seq.SequenceSchema(**{**values, **overrides})


def long_table(n: int = 120, series=("a", "b"), seed: int = 0) -> pd.DataFrame:
    """Series with a period-8 pattern plus noise, and a covariate that leads the value by one step."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, name in enumerate(series):
        t = np.arange(n)
        y = 10 + k + np.sin(2 * np.pi * t / 8) + 0.1 * rng.normal(size=n)
        frames.append(pd.DataFrame({"id": name, "t": t, "y": y, "x": np.roll(y, -1)}))
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- ingest


def test_elecdemand_ingest_builds_the_time_column(raw_params, tmp_path):
    params = sequence_params(raw_params, tmp_path, ingest={"max_rows": 200})
    report = seq.ingest(params.ingest, params.paths, params.seed)
    frame, schema = seq.read_sequence(params.paths.ingested)
    assert report["rows"] == 200 and report["series"] == 1
    assert frame["time"].iloc[0] == pd.Timestamp("2014-01-01 00:00") and frame["time"].iloc[1] == pd.Timestamp("2014-01-01 00:30")
    assert frame["time"].iloc[-1] == pd.Timestamp("2014-01-01") + 199 * pd.Timedelta(minutes=30)
    assert schema.features == ("Demand", "WorkDay", "Temperature")  # the target's history first, then every numeric column
    assert schema.series_column == "series" and set(frame["series"]) == {"elecdemand"}
    assert schema.frequency == "30min" and json.loads((tmp_path / "data/ingested/schema.json").read_text())["kind"] == "sequence"


def test_long_table_ingest_with_two_series(raw_params, tmp_path):
    table = long_table(30).assign(t=lambda f: (pd.Timestamp("2024-03-01") + f["t"] * pd.Timedelta(hours=1)).astype(str), note="x")
    source = tmp_path / "data/raw/long.csv"
    source.parent.mkdir(parents=True)
    table.sample(frac=1.0, random_state=0).to_csv(source, index=False)  # row order does not matter
    params = sequence_params(
        raw_params, tmp_path,
        ingest={"source": str(source), "target": "y", "time_column": "t", "sequence": {"series_column": "id", "lookback": 4}},
    )
    seq.ingest(params.ingest, params.paths, params.seed)
    frame, schema = seq.read_sequence(params.paths.ingested)
    assert schema.features == ("y", "x") and schema.frequency == "h"  # the text column is not an input
    assert list(frame.columns) == ["id", "t", "y", "x"]
    assert frame.groupby("id")["t"].apply(lambda t: t.is_monotonic_increasing).all()
    assert frame["id"].value_counts().to_dict() == {"a": 30, "b": 30}


# ---------------------------------------------------------------- clean


def _clean(frame, **sequence):
    schema = schema_for(frequency=1)
    return seq.clean_frame(frame, schema, CleanParams.model_validate({"sequence": sequence}))


def test_clean_imputes_within_each_series_and_reports():
    frame = long_table(20)
    frame.loc[5, "y"] = np.nan  # a gap inside series a
    frame = frame.drop(index=9)  # a missing time step in series a
    frame = pd.concat([frame, frame.iloc[[3]].assign(y=99.0)])  # a duplicate timestamp: the later row wins
    frame.loc[20, "y"] = np.nan  # series b starts with a missing value: nothing before it to fill from
    frame["x"] = frame["x"].astype(object)
    frame.loc[12, "x"] = "oops"
    out, _, report = _clean(frame)
    a = out[out["id"] == "a"].set_index("t")
    assert a.loc[5, "y"] == pytest.approx((a.loc[4, "y"] + a.loc[6, "y"]) / 2)  # linear in time
    assert list(a.index) == list(range(20)) and a.loc[3, "y"] == 99.0
    assert report["duplicate_timestamps"] == 1 and report["inserted_steps"] == 1
    assert report["set_missing"]["unparseable_or_infinite"] == {"x": 1}
    assert report["imputed"] == {"y": 2, "x": 2}  # y: the gap and the inserted step; x: "oops" and the inserted step
    assert report["trimmed_steps"] == 1 and out[out["id"] == "b"]["t"].min() == 1  # never filled across series
    assert not out[["y", "x"]].isna().any().any()


def test_a_series_with_too_many_missing_values_is_named_or_dropped():
    frame = long_table(20)
    frame.loc[frame["id"] == "b", "y"] = np.where(np.arange(20) % 2, np.nan, 1.0)
    with pytest.raises(DataError, match=r"series 'b': 50\.0% of its steps miss a value"):
        _clean(frame, max_missing_share=0.2)
    out, _, report = _clean(frame, max_missing_share=0.2, bad_series="drop")
    assert set(out["id"]) == {"a"} and "b" in report["dropped_series"]
    with pytest.raises(DataError, match=r"series 'b': a gap of 3 steps is longer than clean.sequence.limit = 2"):
        gappy = long_table(20)
        gappy.loc[(gappy["id"] == "b") & gappy["t"].between(5, 7), "y"] = np.nan
        _clean(gappy, limit=2)


# ---------------------------------------------------------------- split and windows


def test_chronological_split_has_no_overlap_and_test_windows_take_context_from_val():
    frame = long_table(100)
    schema = schema_for(lookback=6, horizon=2)
    parts = seq.split_frame(frame, schema, SplitParams(method="time", train=0.6, val=0.2, test=0.2), seed=0)
    for name in ("a", "b"):
        times = {s: parts[s].loc[parts[s]["id"] == name, "t"] for s in parts}
        assert times["train"].max() < times["val"].min() and times["val"].max() < times["test"].min()
        assert sum(len(t) for t in times.values()) == 100
    test = seq.split_windows(parts, "test", schema, stride=1)
    assert len(test) == 2 * (20 - 2 + 1)  # every test origin whose two targets fit, per series
    assert test.time.min() == parts["test"]["t"].min()  # the first window's inputs are the last 6 validation steps
    with pytest.raises(ParamsError, match="split.method = 'stratified' does not apply to sequence forecast data; choose time"):
        seq.split_frame(frame, schema, SplitParams(method="stratified", train=0.6, val=0.2, test=0.2), seed=0)
    with pytest.raises(DataError, match="series 'a' is too short"):
        seq.split_frame(frame, schema_for(lookback=70), SplitParams(method="time", train=0.6, val=0.2, test=0.2), seed=0)


def test_windows_on_a_tiny_series():
    values = np.arange(10, dtype=float)[:, None] * np.array([1.0, 10.0])  # [T, F]: the target and 10x it
    origins, x, y = seq.series_windows(values, values[:, 0], first=0, lookback=3, horizon=2, stride=1)
    assert origins.tolist() == [3, 4, 5, 6, 7, 8]
    assert x[0, :, 0].tolist() == [0, 1, 2] and x[0, :, 1].tolist() == [0, 10, 20] and y[0].tolist() == [3, 4]
    assert y[-1].tolist() == [8, 9] and x.dtype == np.float32 and x.shape == (6, 3, 2)
    origins, _, y = seq.series_windows(values, values[:, 0], first=6, lookback=3, horizon=1, stride=2)
    assert origins.tolist() == [6, 8] and y[:, 0].tolist() == [6, 8]  # targets from row 6 on, inputs from before


def test_seasonal_naive_and_persistence_on_a_hand_made_series():
    pattern = np.array([1.0, 2.0, 3.0, 4.0])
    target = np.tile(pattern, 6)  # a perfect period-4 season
    origins = np.array([8, 13])
    assert seq.seasonal_naive(target, origins, horizon=6, season=4).tolist() == [[1, 2, 3, 4, 1, 2], [2, 3, 4, 1, 2, 3]]
    assert np.isnan(seq.seasonal_naive(target, np.array([2]), horizon=1, season=4)).all()  # no value a season back

    schema = schema_for(features=("y",), lookback=4, horizon=1, season_length=4)
    frame = pd.DataFrame({"id": "a", "t": np.arange(24), "y": target + np.arange(24) * 0.0})
    windows = seq.split_windows({"train": frame}, "train", schema, stride=1)
    metrics, breakdown, plots = seq.forecast_report(windows, predicted=windows.y + 0.5, target_index=0)
    assert metrics["baseline_seasonal_naive"]["mae"] == 0.0 and metrics["model"]["mae"] == pytest.approx(0.5)
    # persistence repeats the last value: off by 1 three times in four, by 3 (4 -> 1) once
    assert metrics["baseline_persistence"]["mae"] == pytest.approx(np.mean(np.abs(windows.y[:, 0] - windows.x[:, -1, 0])))
    assert metrics["baseline_persistence"]["mae"] == pytest.approx((3 * 1 + 3) / 4, abs=0.1)
    assert breakdown["per_horizon_step"][0]["model_mae"] == pytest.approx(0.5) and set(plots) == {"forecast", "horizon_errors"}


# ---------------------------------------------------------------- augment


def test_augment_is_deterministic_and_each_technique_changes_windows_as_intended():
    rng = np.random.default_rng(0)
    x = (5 + rng.normal(size=(50, 12, 2))).astype(np.float32)
    y = (5 + rng.normal(size=(50, 3))).astype(np.float32)
    std = np.array([1.0, 1.0])

    def run(seed=0, copies=1, **enabled):
        cfg = SequenceAugmentParams.model_validate({**{k: {"enabled": True, **v} for k, v in enabled.items()}, "copies": copies})
        return seq.augment_windows(x, y, cfg, std, target_index=0, seed=seed)

    same_x, same_y, added = run()
    assert same_x is x and same_y is y and added == {}  # nothing enabled: unchanged
    a, b = run(jitter={"std": 0.1}), run(jitter={"std": 0.1})
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], run(seed=1, jitter={"std": 0.1})[0])
    jx, jy, added = run(copies=2, jitter={"std": 0.1})
    assert jx.shape == (150, 12, 2) and added == {"jitter": 100} and np.array_equal(jx[:50], x)
    assert np.array_equal(jy[50:100], y) and 0.05 < np.std(jx[50:100] - x) < 0.15  # noise on inputs, truth kept

    sx, sy, _ = run(scaling={"std": 0.2})
    factors = sx[50:] / x  # one factor per window and feature
    assert np.allclose(factors, factors[:, :1, :], atol=1e-5) and factors.std() > 0.05
    assert np.allclose(sy[50:] / y, factors[:, 0, :1], atol=1e-5)  # the targets scale with their own feature

    wx, wy, _ = run(window_slicing={"ratio": 0.5})
    assert np.array_equal(wx[50:, -1], x[:, -1]) and np.array_equal(wy[50:], y)  # forecast origin kept
    assert not np.allclose(wx[50:, 0], x[:, 0])
    assert (wx[50:].min(axis=1) >= x.min(axis=1) - 1e-5).all()  # interpolation stays inside the values


# ---------------------------------------------------------------- train, encoder, models, export


def _stage_data(raw_params, tmp_path, rows: int = 700, **sections):
    """elecdemand's first ``rows`` steps through ingest, clean, split and augment."""
    params = sequence_params(
        raw_params, tmp_path, ingest={"max_rows": rows, "sequence": {"lookback": 24, "horizon": 2, "stride": 2}},
        split={"method": "time", "train": 0.6, "val": 0.2, "test": 0.2}, **sections,
    )
    p = params.paths
    seq.ingest(params.ingest, p, params.seed)
    seq.clean(params.clean, p)
    seq.split(params.split, p, params.seed)
    seq.augment(params.augment, p, params.seed)
    return params


def test_encoder_is_fitted_on_the_training_rows_only(raw_params, tmp_path):
    params = _stage_data(raw_params, tmp_path, rows=400)
    p = params.paths
    before = seq.prepare(params.features, params.train.model_copy(update={"architecture": "lstm"}), p).encoder
    for name in ("val", "test"):
        path = tmp_path / f"data/split/{name}.parquet"
        part = pd.read_parquet(path)
        part[["Demand", "Temperature"]] *= 100  # every held-out value changes
        part.to_parquet(path)
    after = seq.prepare(params.features, params.train.model_copy(update={"architecture": "lstm"}), p).encoder
    assert after == before
    train = pd.read_parquet(tmp_path / "data/split/train.parquet")
    assert before["means"][0] == pytest.approx(train["Demand"].mean()) and before["target_std"] == pytest.approx(train["Demand"].std(ddof=0))


@pytest.mark.parametrize("architecture", ["lstm", "gru", "seq_transformer"])
def test_each_architecture_trains_and_exports_with_parity_in_raw_units(raw_params, tmp_path, architecture):
    params = _stage_data(raw_params, tmp_path, rows=700)
    cfg = TrainParams.model_validate(
        {**QUICK, "architecture": architecture, "rnn": {"hidden": 16}, "seq_transformer": {"d_model": 16, "heads": 2, "layers": 1}}
    )
    prepared = seq.prepare(params.features, cfg, params.paths)
    model, _, history = fit(prepared.train, prepared.val, prepared.config, cfg, seed=0)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]

    encoder = seq.SequenceEncoder.from_dict(prepared.encoder)
    windows = seq.read_split_windows(params.paths.split, "test", encoder.schema)
    graph = seq.build_sequence_onnx(model, encoder, opset=17)
    (window,) = graph.graph.input
    assert window.name == "window" and [o.name for o in graph.graph.output] == ["forecast"]
    assert [d.dim_param or d.dim_value for d in window.type.tensor_type.shape.dim] == ["N", 24, 3]
    expected = seq.predict(model, encoder, windows.x)  # raw units: GW
    report = seq.verify_sequence(graph.SerializeToString(), expected, windows.x, encoder.schema, encoder.target_std, tolerance=1e-4)
    assert report["max_scaled_diff"] <= 1e-4 and parity_passed(report, 1e-4)
    assert 2 < expected.mean() < 10  # forecasts come out in GW, not in normalised units

    from pipeline.onnxio.session import ort_session

    session = ort_session(graph.SerializeToString())
    for rows in (1, 7):  # the batch axis is dynamic (the recurrent exporter warns about it; this checks it)
        (forecast,) = session.run(None, {"window": windows.x[:rows]})
        np.testing.assert_allclose(forecast, expected[:rows], atol=1e-4 * encoder.target_std)
    with pytest.raises(ExportError, match="ONNX and PyTorch disagree on the test windows"):
        seq.verify_sequence(graph.SerializeToString(), expected + 0.01, windows.x, encoder.schema, encoder.target_std, tolerance=1e-4)


def test_forecast_stages_end_to_end_score_like_the_gate(raw_params, tmp_path):
    """evaluate and export on a quick LSTM, then the gate's own scoring (onnxruntime only) agrees with evaluate."""
    from pipeline.kinds import score_test
    from pipeline.stages import train

    params = _stage_data(raw_params, tmp_path, rows=500, train={**QUICK, "architecture": "lstm", "rnn": {"hidden": 8}})
    p = params.paths
    train.run(params.features, params.train, p, params.seed)
    metrics = seq.evaluate(params.evaluate, p, params.seed)
    assert {"model", "baseline_seasonal_naive", "baseline_persistence"} <= set(metrics) and "mape" in metrics["model"]
    report = seq.export(params.export, p)
    assert parity_passed(report, params.export.tolerance) and report["label_mismatches"] == 0
    card = json.loads((tmp_path / "models/model_card.json").read_text())
    assert card["kind"] == "sequence" and card["lookback"] == 24 and card["horizon"] == 2 and card["int8"] is None
    assert list((tmp_path / "models/int8").iterdir()) == []
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["mae"] == pytest.approx(metrics["model"]["mae"], rel=1e-4) and scores["rows"] == metrics["test_windows"]
    assert (tmp_path / "reports/evaluate/plots/forecast.csv").exists() and (tmp_path / "reports/evaluate/plots/horizon_errors.csv").exists()


def test_sequence_classification_on_a_synthetic_long_table(raw_params, tmp_path):
    """Nine series, a wave or noise about another level, whole series per split (group): classified from their windows."""
    from pipeline.kinds import score_test
    from pipeline.stages import train

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
        raw_params, tmp_path,
        ingest={"source": str(source), "target": "kind", "time_column": "step",
                "sequence": {"series_column": "sensor", "task": "classify", "lookback": 12, "stride": 2}},
        split={"method": "group", "group_column": "sensor", "train": 0.6, "val": 0.2, "test": 0.2},
        train={**QUICK, "epochs": 6, "batch_size": 16, "architecture": "gru", "rnn": {"hidden": 16},
               "early_stopping": {"metric": "val_accuracy"}},
    )
    p = params.paths
    seq.ingest(params.ingest, p, params.seed)
    seq.clean(params.clean, p)
    split_report = seq.split(params.split, p, params.seed)
    assert split_report["series"] == {"train": 5, "val": 2, "test": 2}
    seq.augment(params.augment, p, params.seed)
    train.run(params.features, params.train, p, params.seed)
    metrics = seq.evaluate(params.evaluate, p, params.seed)
    assert metrics["model"]["accuracy"] > 0.7 and "baseline_majority" in metrics
    assert (tmp_path / "reports/evaluate/plots/confusion.csv").exists()
    report = seq.export(params.export, p)
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] <= 1e-4
    scores = score_test(p.onnx, p.model_card, p.split)
    assert scores["accuracy"] == pytest.approx(metrics["model"]["accuracy"]) and scores["rows"] == metrics["test_rows"]


# ---------------------------------------------------------------- one-line errors


def test_params_errors_name_the_key(raw_params):
    def parse(**sections):
        data = copy.deepcopy(raw_params)
        for name, values in sections.items():
            data[name] = {**data[name], **values}
        return parse_params(data)

    with pytest.raises(ParamsError, match="ingest.time_column is required for ingest.kind 'sequence'"):
        parse(ingest={**SEQUENCE_INGEST, "time_column": None})
    with pytest.raises(ParamsError, match="ingest.categorical applies to tabular data only"):
        parse(ingest={**SEQUENCE_INGEST, "categorical": ["occ10"]})
    with pytest.raises(ParamsError, match=r"ingest.sequence.lookback = 1: Input should be greater than or equal to 2"):
        parse(ingest={**SEQUENCE_INGEST, "sequence": {"lookback": 1}})
    with pytest.raises(ParamsError, match=r"ingest.sequence.task = 'regress'"):
        parse(ingest={**SEQUENCE_INGEST, "sequence": {"task": "regress"}})
    with pytest.raises(ParamsError, match=r"augment.sequence.jitter.sigma: unknown key; allowed: enabled, std"):
        parse(augment={"sequence": {"jitter": {"sigma": 1}}})
    with pytest.raises(ParamsError, match=r"clean.sequence.impute = 'mean'"):
        parse(clean={"sequence": {"impute": "mean"}})
    with pytest.raises(ParamsError, match=r"train.seq_transformer.d_model \(30\) must be a multiple of heads \(4\)"):
        parse(train={"seq_transformer": {"d_model": 30}})


def test_data_and_architecture_errors_name_the_column_or_key(raw_params, tmp_path):
    params = sequence_params(raw_params, tmp_path, ingest={"max_rows": 300, "sequence": {"features": ["Demand", "Humidity"]}})
    with pytest.raises(DataError, match=r"ingest.sequence.features: column\(s\) \['Humidity'\] not in the data"):
        seq.ingest(params.ingest, params.paths, params.seed)
    params = sequence_params(raw_params, tmp_path, ingest={"max_rows": 300, "sequence": {"frequency": "fortnightly-ish"}})
    with pytest.raises(ParamsError, match="ingest.sequence.frequency = 'fortnightly-ish' is not a pandas frequency"):
        seq.ingest(params.ingest, params.paths, params.seed)
    with pytest.raises(ParamsError, match=r"train.architecture = 'mlp' is not a sequence model; choose one of \['lstm', 'gru', 'seq_trans"):
        seq.sequence_config(TrainParams(), schema_for())
    with pytest.raises(DataError, match=r"series 'b' has 2 labels \['p', 'q'\] in 'y'"):
        frame = long_table(10).assign(y=lambda f: np.where((f["id"] == "b") & (f["t"] > 4), "q", "p"))
        seq.series_labels(frame, schema_for(task="classify", features=("x",), horizon=0), CleanParams())


def test_the_example_params_switch_only_what_a_sequence_run_needs():
    """examples/elecdemand/params.yaml is a whole params file: it loads, and outside ingest, clean, train
    and gate it is the committed params.yaml (so it cannot drift from it unnoticed)."""
    example = yaml.safe_load((REPO / "examples/elecdemand/params.yaml").read_text())
    committed = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(example)
    assert params.ingest.kind == "sequence" and params.train.architecture == "lstm" and params.gate.metric == "mae"
    assert params.train.early_stopping.metric == "val_mae"
    assert {k for k in committed if committed[k] != example[k]} == {"ingest", "clean", "train", "gate"}


def test_model_families_rebuild_from_their_configs():
    from pipeline.models import RNNConfig, SeqTransformerConfig, config_from_dict

    configs = (RNNConfig(3, 2, cell="gru", bidirectional=True, layers=2), SeqTransformerConfig(3, 2, lookback=8, positional="learned", pooling="mean"))
    for config in configs:
        rebuilt = config_from_dict(json.loads(json.dumps(config.to_dict())))
        assert rebuilt == config
        assert build_model(rebuilt)(torch.zeros(4, 8, 3)).shape == (4, 2)
