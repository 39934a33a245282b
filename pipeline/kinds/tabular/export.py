"""Tabular export: one self-contained ONNX model from raw columns to class probabilities, verified.

The graph has one input per raw feature column, named after it and shaped [N, 1]: float32 for
numeric columns (NaN = missing) and string for categorical ones ("" = missing). Inside it, clean's
row rules (non-finite and out-of-range numbers, missing-value tokens -> missing: so every consumer of
the model applies them, and serving cannot skew from training) and the fitted encoder's arithmetic
(imputation, missing indicators, scaling, category lookup) are written out with ONNX operators, followed by the exported network and a softmax; outputs are
``probabilities`` [N, K] float32 and ``label`` [N] string. A regressor's network is followed by the target
scaling undone instead, and its one output is ``forecast`` float32 [N, 1] in the target's units (the
sequence forecaster's name, so a consumer reads any numeric prediction alike). Serving needs nothing but onnxruntime.

The stage checks the graph with ``onnx.checker``, scores the raw test rows with onnxruntime and
fails unless every probability is within ``export.tolerance`` of the PyTorch path and every
predicted label is identical (a regressor: every value within ``export.tolerance`` training stds of
the target; no int8 twin is written for it). A model card (input schema, classes, metrics, hashes) is written
beside the model. The shared pieces (``torch_graph``, ``postprocessing_graph``, ``finish_graph``,
``verify_feed``, ``save_models``, ``card_fields``, ``publish``, the ``ModelCard``) live in ``pipeline.onnxio``.

Inputs:  ``paths.split`` (test, schema), ``paths.preprocessor``, ``paths.model``, ``paths.eval_metrics``
Outputs: ``paths.onnx``, ``paths.onnx_int8`` (the int8 model when ``export.int8``),
         ``paths.model_card``, ``paths.export_report``
Params:  ``export``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper
from torch import nn

from pipeline.core.errors import ExportError
from pipeline.core.io import SPLITS, file_sha256, read_json, read_table_sample, split_file, write_json
from pipeline.kinds.tabular.encoder import MISSING_TEXT, NumericColumn, Preprocessor, load_preprocessor
from pipeline.kinds.tabular.evaluate import predict_proba, predict_values
from pipeline.kinds.tabular.runtime import onnx_feed
from pipeline.kinds.tabular.schema import FORECAST, read_schema
from pipeline.models import load_model
from pipeline.onnxio.build import (
    ML_DOMAIN,
    ML_OPSET,
    NET_PREFIX,
    PROBABILITIES,
    Probabilities,
    const,
    empty_batch,
    finish_graph,
    postprocessing_graph,
    torch_graph,
)
from pipeline.onnxio.card import CategoricalInput, NumericInput, Output, TabularCard, TabularInput, graph_name_clashes
from pipeline.onnxio.describe import card_fields
from pipeline.onnxio.verify import publish, save_models, verify_feed, verify_values, without_timing
from pipeline.params import ExportParams, Paths

log = logging.getLogger(__name__)


class ScaledRegressor(nn.Module):
    """The network with the target scaling undone: encoded tensors in, values [N, 1] in target units out."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model = model
        self.mean, self.std = float(mean), float(std)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.model(x_num, x_cat) * self.std + self.mean


def network_graph(model: nn.Module, preprocessor: Preprocessor, opset: int) -> onnx.ModelProto:
    """The trained network followed by softmax (a regressor: the target scaling undone) as ONNX: encoded
    tensors in, probabilities (values) out."""
    x_num = torch.zeros(2, preprocessor.n_numeric_inputs, dtype=torch.float32)
    x_cat = torch.zeros(2, len(preprocessor.categorical), dtype=torch.int64)
    if preprocessor.regression:
        wrapped = ScaledRegressor(model.eval(), preprocessor.target_mean, preprocessor.target_std)
        return torch_graph(wrapped, (x_num, x_cat), ["x_num", "x_cat"], [FORECAST], opset)
    return torch_graph(Probabilities(model.eval()), (x_num, x_cat), ["x_num", "x_cat"], [PROBABILITIES], opset)


def regression_output_graph(opset: int, ir_version: int) -> onnx.ModelProto:
    """The merged network's prefixed output -> ``forecast`` [N, 1], the graph's one output."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"{NET_PREFIX}{FORECAST}"], [FORECAST])],
        "postprocess",
        [helper.make_tensor_value_info(f"{NET_PREFIX}{FORECAST}", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info(FORECAST, TensorProto.FLOAT, ["N", 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def row_rules(numeric: tuple[NumericColumn, ...], raw: str, out: str) -> list[onnx.NodeProto]:
    """clean's row rules on the raw [N, F] numeric block, as ``NumericColumn.valid``: a value that is not
    finite, or lies outside its column's ``clean.valid_ranges`` bounds, becomes NaN (missing)."""
    lows = np.array([-np.inf if c.low is None else c.low for c in numeric], dtype=np.float32)
    highs = np.array([np.inf if c.high is None else c.high for c in numeric], dtype=np.float32)
    nodes = [
        const("prep/nan", np.array([np.nan], dtype=np.float32)),
        helper.make_node("IsInf", [raw], ["prep/is_inf"]),
        const("prep/low", lows),
        const("prep/high", highs),
        helper.make_node("Less", [raw, "prep/low"], ["prep/below"]),
        helper.make_node("Greater", [raw, "prep/high"], ["prep/above"]),
        helper.make_node("Or", ["prep/below", "prep/above"], ["prep/outside"]),
        helper.make_node("Or", ["prep/is_inf", "prep/outside"], ["prep/invalid"]),
        helper.make_node("Where", ["prep/invalid", "prep/nan", raw], [out]),
    ]
    return nodes


def preprocessing_graph(preprocessor: Preprocessor, opset: int, ir_version: int) -> onnx.ModelProto:
    """Raw [N, 1] columns -> x_num float32 [N, F] and x_cat int64 [N, C], as ``Preprocessor.transform``."""
    inputs, nodes, outputs = [], [], []
    numeric = preprocessor.numeric
    if numeric:
        for col in numeric:
            inputs.append(helper.make_tensor_value_info(col.name, TensorProto.FLOAT, ["N", 1]))
        fills = np.array([c.fill for c in numeric], dtype=np.float32)
        means = np.array([c.mean for c in numeric], dtype=np.float32)
        stds = np.array([c.std for c in numeric], dtype=np.float32)
        nodes.append(helper.make_node("Concat", [c.name for c in numeric], ["prep/input"], axis=1))
        nodes += row_rules(numeric, "prep/input", "prep/raw")
        nodes += [
            helper.make_node("IsNaN", ["prep/raw"], ["prep/isnan"]),
            const("prep/fill", fills),
            const("prep/mean", means),
            const("prep/std", stds),
            helper.make_node("Where", ["prep/isnan", "prep/fill", "prep/raw"], ["prep/filled"]),
            helper.make_node("Sub", ["prep/filled", "prep/mean"], ["prep/centred"]),
            helper.make_node("Div", ["prep/centred", "prep/std"], ["prep/scaled"]),
        ]
        indicator_columns = np.array([i for i, c in enumerate(numeric) if c.indicator], dtype=np.int64)
        parts = ["prep/scaled"]
        if len(indicator_columns):
            nodes += [
                const("prep/indicator_columns", indicator_columns),
                helper.make_node("Gather", ["prep/isnan", "prep/indicator_columns"], ["prep/isnan_kept"], axis=1),
                helper.make_node("Cast", ["prep/isnan_kept"], ["prep/indicators"], to=TensorProto.FLOAT),
            ]
            parts.append("prep/indicators")
        nodes.append(helper.make_node("Concat", parts, ["x_num"], axis=1))
        outputs.append(helper.make_tensor_value_info("x_num", TensorProto.FLOAT, ["N", preprocessor.n_numeric_inputs]))
    codes = []
    for j, category in enumerate(preprocessor.categorical):
        inputs.append(helper.make_tensor_value_info(category.name, TensorProto.STRING, ["N", 1]))
        # clean.missing_tokens are missing, like "", and win over a vocabulary entry (as in transform)
        tokens = [t for t in preprocessor.missing_tokens if t != MISSING_TEXT]
        known = [(value, i + 1) for i, value in enumerate(category.vocabulary) if value not in tokens]
        keys = [value for value, _ in known] + [MISSING_TEXT] + tokens
        values = [code for _, code in known] + [category.missing_index] * (1 + len(tokens))
        nodes.append(
            helper.make_node(
                "LabelEncoder",
                [category.name],
                [f"prep/code_{j}"],
                domain=ML_DOMAIN,
                keys_strings=keys,
                values_int64s=values,
                default_int64=0,
            )
        )
        codes.append(f"prep/code_{j}")
    if codes:
        nodes.append(helper.make_node("Concat", codes, ["x_cat"], axis=1))
        outputs.append(helper.make_tensor_value_info("x_cat", TensorProto.INT64, ["N", len(codes)]))
    # A model without numeric (or categorical) columns still takes an [N, 0] tensor for them.
    if not numeric:
        nodes += empty_batch(inputs[0].name, "x_num", np.float32)
        outputs.append(helper.make_tensor_value_info("x_num", TensorProto.FLOAT, ["N", 0]))
    if not codes:
        nodes += empty_batch(inputs[0].name, "x_cat", np.int64)
        outputs.append(helper.make_tensor_value_info("x_cat", TensorProto.INT64, ["N", 0]))
    graph = helper.make_graph(nodes, "preprocess", inputs, outputs)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
        ir_version=ir_version,
    )


def build_onnx(model: nn.Module, preprocessor: Preprocessor, opset: int) -> onnx.ModelProto:
    """Preprocessing, network and label lookup joined into one graph with raw-column inputs."""
    clash = graph_name_clashes(preprocessor.input_columns)  # ingest refuses these; a hand-made preprocessor may not
    if preprocessor.regression and FORECAST in preprocessor.input_columns:
        clash.append(FORECAST)
    if clash:
        raise ExportError(f"feature column(s) {clash} clash with names inside the ONNX graph; rename them")
    net = network_graph(model, preprocessor, opset)
    prep = preprocessing_graph(preprocessor, opset, net.ir_version)
    if preprocessor.regression:
        post = regression_output_graph(opset, net.ir_version)
        net_output = f"{NET_PREFIX}{FORECAST}"
    else:
        post = postprocessing_graph(preprocessor.classes, opset, net.ir_version)
        net_output = f"{NET_PREFIX}{PROBABILITIES}"
    net_inputs = {i.name for i in net.graph.input}
    io_map = [(name, name) for name in ("x_num", "x_cat") if name in net_inputs]
    merged = onnx.compose.merge_models(prep, net, io_map=io_map, prefix2=NET_PREFIX)
    merged = onnx.compose.merge_models(merged, post, io_map=[(net_output, net_output)])
    # Network inputs that the preprocessing does not feed (none today) must not leak out as raw inputs.
    leaked = [i.name for i in merged.graph.input if i.name.startswith(NET_PREFIX)]
    if leaked:
        raise ExportError(f"network inputs {leaked} are not fed by the preprocessing graph")
    if preprocessor.regression:
        return finish_graph(merged, f"Raw feature columns -> forecast [N, 1]: {preprocessor.target} in its units (Evergreen)")
    return finish_graph(merged, "Raw feature columns -> class probabilities and label (Evergreen)")


def card_inputs(preprocessor: Preprocessor) -> tuple[TabularInput, ...]:
    """The graph's inputs as the model card lists them: the numeric columns, then the categorical ones."""
    numeric = tuple(NumericInput.of(c.name, c.low, c.high) for c in preprocessor.numeric)
    return numeric + tuple(CategoricalInput.of(c.name, c.vocabulary) for c in preprocessor.categorical)


def raw_inputs(frame: pd.DataFrame, preprocessor: Preprocessor) -> dict[str, np.ndarray]:
    """Feed for the ONNX model: float32 [N, 1] per numeric column, string [N, 1] per categorical one."""
    return onnx_feed(frame, card_inputs(preprocessor))


def verify(
    model_bytes: bytes, expected: np.ndarray, frame: pd.DataFrame, preprocessor: Preprocessor, tolerance: float
) -> dict[str, Any]:
    """Check the graph, run it on raw rows, compare with the PyTorch path; raise if they disagree."""
    return verify_feed(model_bytes, expected, raw_inputs(frame, preprocessor), preprocessor.classes, tolerance)


def verify_regression(
    model_bytes: bytes, expected: np.ndarray, feed: dict[str, np.ndarray], target_std: float, tolerance: float
) -> dict[str, Any]:
    """Check the graph, run it on raw rows, compare with the PyTorch values ``expected`` [N] in units of the
    target's training std (as the sequence forecaster's check: one tolerance fits any target scale); raise
    if they disagree."""
    return verify_values(model_bytes, expected, feed, target_std, tolerance, "the test split")


def model_card(
    preprocessor: Preprocessor,
    checkpoint: dict[str, Any],
    metrics: dict[str, Any],
    hashes: dict[str, str],
    parity: dict[str, Any],
    int8: dict[str, Any] | None,
) -> TabularCard:
    """What a consumer of ``model.onnx`` needs to call it and to trust it."""
    common = card_fields(preprocessor.classes, checkpoint, metrics, hashes, parity, int8)
    if preprocessor.regression:
        common["task"] = "regression"
        common["outputs"] = (Output(name=FORECAST, onnx_type="float32", shape=("N", 1), units=f"{preprocessor.target}, raw"),)
    return TabularCard(
        **common, target=preprocessor.target, inputs=card_inputs(preprocessor), missing_tokens=preprocessor.missing_tokens
    )


# The parity sample of a test split larger than export.parity_max_rows: fixed, so export reruns identically.
PARITY_SAMPLE_SEED = 0


def sampled(parity: dict[str, Any], total: int) -> dict[str, Any]:
    """The parity report, saying how many test rows it was sampled from when it was (``rows`` is what was run)."""
    return parity if parity["rows"] >= total else {**parity, "test_rows": total}


def run(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export, verify against PyTorch on the raw test rows, and write the model and its card."""
    schema = read_schema(paths.split)
    test, total = read_table_sample(split_file(paths.split, "test"), cfg.parity_max_rows, PARITY_SAMPLE_SEED)
    if total > len(test):
        log.info("parity and the int8 check on %d of %d test rows (export.parity_max_rows)", len(test), total)
    preprocessor = load_preprocessor(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)

    graph = build_onnx(model, preprocessor, cfg.opset)
    model_bytes = graph.SerializeToString()
    if preprocessor.regression:
        return run_regression(model_bytes, model, preprocessor, checkpoint, test, cfg, paths, total)
    expected = predict_proba(model, preprocessor, test[schema.feature_names])
    feed = raw_inputs(test, preprocessor)
    parity = sampled(verify_feed(model_bytes, expected, feed, preprocessor.classes, cfg.tolerance), total)
    int8, hashes = save_models(model_bytes, cfg, paths, feed, test[preprocessor.target].astype(str).to_numpy())
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    card = model_card(preprocessor, checkpoint, read_json(paths.eval_metrics), hashes, parity, int8)
    return publish(card.to_dict(), parity, len(model_bytes), cfg, paths)


def run_regression(
    model_bytes: bytes,
    model: nn.Module,
    preprocessor: Preprocessor,
    checkpoint: dict[str, Any],
    test: pd.DataFrame,
    cfg: ExportParams,
    paths: Paths,
    total: int,
) -> dict[str, Any]:
    """A regressor's export: parity in target stds, no int8 twin (its check compares labels, which a
    regressor has none of), the card with the ``forecast`` output."""
    expected = predict_values(model, preprocessor, test)
    feed = raw_inputs(test, preprocessor)
    parity = sampled(verify_regression(model_bytes, expected, feed, preprocessor.target_std, cfg.tolerance), total)
    if cfg.int8:
        log.info("export.int8 is on, but a regressor gets no int8 twin (the int8 check compares labels)")
    _, hashes = save_models(model_bytes, cfg.model_copy(update={"int8": False}), paths, {}, np.array([]))
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    model_card(preprocessor, checkpoint, read_json(paths.eval_metrics), hashes, parity, None).write(paths.model_card)
    report = {**without_timing(parity), "onnx_bytes": len(model_bytes), "opset": cfg.opset, "int8": None}
    write_json(paths.export_report, report)
    log.info(
        "exported %s (%d bytes): max |forecast diff| %.1e (%.1e target stds) on %d test rows, %.0f us per record",
        paths.onnx,
        len(model_bytes),
        parity["max_abs_diff"],
        parity["max_scaled_diff"],
        parity["rows"],
        parity["single_record_latency_us"],
    )
    return report
