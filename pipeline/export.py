"""Stage export: one self-contained ONNX model from raw columns to class probabilities, verified.

The graph has one input per raw feature column, named after it and shaped [N, 1]: float32 for
numeric columns (NaN = missing) and string for categorical ones ("" = missing). Inside it, the
fitted encoder's arithmetic (imputation, missing indicators, scaling, category lookup) is written
out with ONNX operators, followed by the exported network and a softmax; outputs are
``probabilities`` [N, K] float32 and ``label`` [N] string. Serving needs nothing but onnxruntime.

The stage checks the graph with ``onnx.checker``, scores the raw test rows with onnxruntime and
fails unless every probability is within ``export.tolerance`` of the PyTorch path and every
predicted label is identical. A model card (input schema, classes, metrics, hashes) is written
beside the model. Other data kinds build their own graph and reuse the rest (``torch_graph``,
``postprocessing_graph``, ``finish_graph``, ``verify_feed``, ``save_models``, ``card_fields``,
``publish``; see pipeline/images.py).

Inputs:  ``paths.split`` (test, schema), ``paths.preprocessor``, ``paths.model``, ``paths.eval_metrics``
Outputs: ``paths.onnx``, ``paths.onnx_int8`` (the int8 model when ``export.int8``),
         ``paths.model_card``, ``paths.export_report``
Params:  ``export``
Command: ``python -m pipeline.export``
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pipeline.common import SPLITS, file_sha256, read_json, read_schema, read_table, split_file, stage_main, write_json
from pipeline.config import ExportParams, Paths
from pipeline.kinds import TABULAR, data_kind, kind_module
from pipeline.errors import ExportError
from pipeline.features import MISSING_TEXT, Preprocessor
from pipeline.inference import load_model, load_preprocessor, predict_proba
from pipeline.scoring import onnx_feed, ort_session

log = logging.getLogger(__name__)

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
PROBABILITIES = "probabilities"
LABEL = "label"
NET_PREFIX = "net/"


class _Probabilities(torch.nn.Module):
    """The network followed by softmax: encoded tensors in, probabilities out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x_num, x_cat), dim=1)


def torch_graph(module: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str], output_names: list[str], opset: int) -> onnx.ModelProto:
    """A module as ONNX with the legacy TorchScript exporter (no onnxscript needed, no side files),
    every input and output with a dynamic batch axis 0."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter is chosen on purpose (see docstring); its deprecation notice is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Shape checks inside nn.MultiheadAttention are constants for a fixed model: not a tracing hazard.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # Exporting a batch-first LSTM/GRU warns that other batch sizes may misbehave; the parity checks run other sizes.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*", category=UserWarning)
        torch.onnx.export(
            module.eval(),
            example,
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={name: {0: "N"} for name in [*input_names, *output_names]},
        )
    return onnx.load_model_from_string(buffer.getvalue())


def network_graph(model: nn.Module, preprocessor: Preprocessor, opset: int) -> onnx.ModelProto:
    """The trained network followed by softmax as ONNX: encoded tensors in, probabilities out."""
    x_num = torch.zeros(2, preprocessor.n_numeric_inputs, dtype=torch.float32)
    x_cat = torch.zeros(2, len(preprocessor.categorical), dtype=torch.int64)
    return torch_graph(_Probabilities(model.eval()), (x_num, x_cat), ["x_num", "x_cat"], [PROBABILITIES], opset)


def one_opset_per_domain(model: onnx.ModelProto) -> None:
    """merge_models concatenates opset imports; keep one per domain (tools such as the quantizer insist)."""
    unique = {(o.domain or ""): o.version for o in model.opset_import}
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in unique.items())


def _const(name: str, values: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values, name=name))


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
        nodes += [
            helper.make_node("Concat", [c.name for c in numeric], ["prep/raw"], axis=1),
            helper.make_node("IsNaN", ["prep/raw"], ["prep/isnan"]),
            _const("prep/fill", fills),
            _const("prep/mean", means),
            _const("prep/std", stds),
            helper.make_node("Where", ["prep/isnan", "prep/fill", "prep/raw"], ["prep/filled"]),
            helper.make_node("Sub", ["prep/filled", "prep/mean"], ["prep/centred"]),
            helper.make_node("Div", ["prep/centred", "prep/std"], ["prep/scaled"]),
        ]
        indicator_columns = np.array([i for i, c in enumerate(numeric) if c.indicator], dtype=np.int64)
        parts = ["prep/scaled"]
        if len(indicator_columns):
            nodes += [
                _const("prep/indicator_columns", indicator_columns),
                helper.make_node("Gather", ["prep/isnan", "prep/indicator_columns"], ["prep/isnan_kept"], axis=1),
                helper.make_node("Cast", ["prep/isnan_kept"], ["prep/indicators"], to=TensorProto.FLOAT),
            ]
            parts.append("prep/indicators")
        nodes.append(helper.make_node("Concat", parts, ["x_num"], axis=1))
        outputs.append(helper.make_tensor_value_info("x_num", TensorProto.FLOAT, ["N", preprocessor.n_numeric_inputs]))
    codes = []
    for j, col in enumerate(preprocessor.categorical):
        inputs.append(helper.make_tensor_value_info(col.name, TensorProto.STRING, ["N", 1]))
        keys = list(col.vocabulary) + [MISSING_TEXT]
        values = list(range(1, len(col.vocabulary) + 1)) + [col.missing_index]
        nodes.append(
            helper.make_node(
                "LabelEncoder", [col.name], [f"prep/code_{j}"], domain=ML_DOMAIN,
                keys_strings=keys, values_int64s=values, default_int64=0,
            )
        )
        codes.append(f"prep/code_{j}")
    if codes:
        nodes.append(helper.make_node("Concat", codes, ["x_cat"], axis=1))
        outputs.append(helper.make_tensor_value_info("x_cat", TensorProto.INT64, ["N", len(codes)]))
    # A model without numeric (or categorical) columns still takes an [N, 0] tensor for them.
    if not numeric:
        nodes += _empty_batch(inputs[0].name, "x_num", np.float32)
        outputs.append(helper.make_tensor_value_info("x_num", TensorProto.FLOAT, ["N", 0]))
    if not codes:
        nodes += _empty_batch(inputs[0].name, "x_cat", np.int64)
        outputs.append(helper.make_tensor_value_info("x_cat", TensorProto.INT64, ["N", 0]))
    graph = helper.make_graph(nodes, "preprocess", inputs, outputs)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ML_DOMAIN, ML_OPSET)],
        ir_version=ir_version,
    )


def _empty_batch(like: str, name: str, dtype) -> list[onnx.NodeProto]:
    """Nodes making an [N, 0] tensor, N taken from input ``like``."""
    return [
        helper.make_node("Shape", [like], [f"prep/{name}_like_shape"], start=0, end=1),
        _const(f"prep/{name}_zero", np.array([0], dtype=np.int64)),
        helper.make_node("Concat", [f"prep/{name}_like_shape", f"prep/{name}_zero"], [f"prep/{name}_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape", [f"prep/{name}_shape"], [name], value=numpy_helper.from_array(np.zeros(1, dtype=dtype))
        ),
    ]


def postprocessing_graph(classes: tuple[str, ...], opset: int, ir_version: int) -> onnx.ModelProto:
    """Probabilities -> (probabilities, label) with the label looked up from the class names."""
    names = np.array(classes, dtype=object)
    nodes = [
        helper.make_node("Identity", [f"{NET_PREFIX}{PROBABILITIES}"], [PROBABILITIES]),
        helper.make_node("ArgMax", [f"{NET_PREFIX}{PROBABILITIES}"], ["post/index"], axis=1, keepdims=0),
        _const("post/classes", names),
        helper.make_node("Gather", ["post/classes", "post/index"], [LABEL], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "postprocess",
        [helper.make_tensor_value_info(f"{NET_PREFIX}{PROBABILITIES}", TensorProto.FLOAT, ["N", len(classes)])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", len(classes)]),
            helper.make_tensor_value_info(LABEL, TensorProto.STRING, ["N"]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def build_onnx(model: nn.Module, preprocessor: Preprocessor, opset: int) -> onnx.ModelProto:
    """Preprocessing, network and label lookup joined into one graph with raw-column inputs."""
    reserved = {PROBABILITIES, LABEL, "x_num", "x_cat"}
    clash = sorted(c for c in preprocessor.input_columns if c in reserved or c.startswith(("prep/", "post/", NET_PREFIX)))
    if clash:
        raise ExportError(f"feature column(s) {clash} clash with names inside the ONNX graph; rename them")
    net = network_graph(model, preprocessor, opset)
    prep = preprocessing_graph(preprocessor, opset, net.ir_version)
    post = postprocessing_graph(preprocessor.classes, opset, net.ir_version)
    net_inputs = {i.name for i in net.graph.input}
    io_map = [(name, name) for name in ("x_num", "x_cat") if name in net_inputs]
    merged = onnx.compose.merge_models(prep, net, io_map=io_map, prefix2=NET_PREFIX)
    merged = onnx.compose.merge_models(merged, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
    # Network inputs that the preprocessing does not feed (none today) must not leak out as raw inputs.
    leaked = [i.name for i in merged.graph.input if i.name.startswith(NET_PREFIX)]
    if leaked:
        raise ExportError(f"network inputs {leaked} are not fed by the preprocessing graph")
    return finish_graph(merged, "Raw feature columns -> class probabilities and label (Evergreen)")


def finish_graph(merged: onnx.ModelProto, description: str) -> onnx.ModelProto:
    """A merged graph made tidy: one opset import per domain (merge_models concatenates them, and tools
    such as the quantizer insist), the project's graph name and a description."""
    one_opset_per_domain(merged)
    merged.graph.name = "evergreen"
    merged.doc_string = description
    return merged


def raw_inputs(frame: pd.DataFrame, preprocessor: Preprocessor) -> dict[str, np.ndarray]:
    """Feed for the ONNX model: float32 [N, 1] per numeric column, string [N, 1] per categorical one."""
    specs = [{"name": c.name, "kind": "numeric"} for c in preprocessor.numeric]
    specs += [{"name": c.name, "kind": "categorical"} for c in preprocessor.categorical]
    return onnx_feed(frame, specs)


def verify(model_bytes: bytes, expected: np.ndarray, frame: pd.DataFrame, preprocessor: Preprocessor, tolerance: float) -> dict[str, Any]:
    """Check the graph, run it on raw rows, compare with the PyTorch path; raise if they disagree."""
    return verify_feed(model_bytes, expected, raw_inputs(frame, preprocessor), preprocessor.classes, tolerance)


def verify_feed(model_bytes: bytes, expected: np.ndarray, feed: dict[str, np.ndarray], classes, tolerance: float) -> dict[str, Any]:
    """Check the graph, run it on ``feed`` (raw inputs, any data kind), compare with the PyTorch
    probabilities ``expected`` [N, K]; raise if they disagree."""
    onnx.checker.check_model(onnx.load_model_from_string(model_bytes), full_check=True)
    session = ort_session(model_bytes)
    probabilities, labels = session.run([PROBABILITIES, LABEL], feed)
    max_diff = float(np.abs(probabilities - expected).max()) if len(expected) else 0.0
    expected_labels = np.array(classes, dtype=object)[expected.argmax(1)]
    mismatched = int((labels != expected_labels).sum())
    report = {
        "rows": len(expected),
        "max_abs_probability_diff": max_diff,
        "tolerance": tolerance,
        "label_mismatches": mismatched,
        "single_record_latency_us": single_record_latency(session, feed),
    }
    if max_diff > tolerance or mismatched:
        raise ExportError(
            f"ONNX and PyTorch disagree on the test split: max |dp| = {max_diff:.2e} "
            f"(tolerance {tolerance:.0e}), {mismatched} label mismatches"
        )
    return report


def single_record_latency(session, feed: dict[str, np.ndarray], repeats: int = 200) -> float:
    one = {name: values[:1] for name, values in feed.items()}
    session.run(None, one)
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(None, one)
    return round((time.perf_counter() - started) / repeats * 1e6, 1)


INT8_FILE = "model.onnx"


def quantize_int8(fp32_path: Path, int8_dir: Path) -> Path:
    """Dynamic int8 quantisation of the weights of the exported graph (activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_dir.mkdir(parents=True, exist_ok=True)
    target = int8_dir / INT8_FILE
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # the quantiser logs advice about pre-processing for static quantisation
    try:
        quantize_dynamic(str(fp32_path), str(target), weight_type=QuantType.QInt8)
    finally:
        root_logger.setLevel(level)
    return target


def compare_int8(fp32_path: Path, int8_path: Path, feed: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """Size, test accuracy and agreement of the int8 model against the fp32 one on ``feed`` (true labels ``truth``)."""
    p32, l32 = ort_session(fp32_path).run([PROBABILITIES, LABEL], feed)
    p8, l8 = ort_session(int8_path).run([PROBABILITIES, LABEL], feed)
    return {
        "bytes": int8_path.stat().st_size,
        "fp32_bytes": fp32_path.stat().st_size,
        "accuracy": float((l8 == truth).mean()),
        "fp32_accuracy": float((l32 == truth).mean()),
        "label_agreement": float((l8 == l32).mean()),
        "max_abs_probability_diff": float(np.abs(p8 - p32).max()) if len(truth) else 0.0,
    }


def model_card(
    preprocessor: Preprocessor,
    checkpoint: dict[str, Any],
    metrics: dict[str, Any],
    hashes: dict[str, str],
    parity: dict[str, Any],
    int8: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a consumer of ``model.onnx`` needs to call it and to trust it."""
    card = card_fields(preprocessor.classes, checkpoint, metrics, hashes, parity, int8)
    inputs = [
        {"name": c.name, "kind": "numeric", "onnx_type": "float32", "shape": ["N", 1], "missing": "NaN"}
        for c in preprocessor.numeric
    ] + [
        {
            "name": c.name, "kind": "categorical", "onnx_type": "string", "shape": ["N", 1],
            "missing": "empty string", "known_values": list(c.vocabulary),
        }
        for c in preprocessor.categorical
    ]
    return {**card, "target": preprocessor.target, "inputs": inputs}


def card_fields(
    classes, checkpoint: dict[str, Any], metrics: dict[str, Any], hashes: dict[str, str], parity: dict[str, Any], int8: dict[str, Any] | None
) -> dict[str, Any]:
    """The model card's fields shared by every data kind (each kind adds its ``inputs`` and ``target``)."""
    train_params = json.dumps({"train": checkpoint["train_params"], "seed": checkpoint["seed"]}, sort_keys=True)
    return {
        "task": "classification",
        "classes": list(classes),
        "outputs": [
            {"name": PROBABILITIES, "onnx_type": "float32", "shape": ["N", len(classes)]},
            {"name": LABEL, "onnx_type": "string", "shape": ["N"]},
        ],
        "model": {"config": checkpoint["model_config"], "best_epoch": checkpoint["best_epoch"], "best_metric": checkpoint["best_metric"]},
        # The model's test metrics and every baseline evaluate reported beside it.
        "metrics": {"test": metrics["model"], **{k: v for k, v in metrics.items() if k.startswith("baseline_")}},
        # Timings vary run to run; the card stays a pure function of the model and its data.
        "parity": {k: v for k, v in parity.items() if k != "single_record_latency_us"},
        "int8": int8,
        "hashes": {**hashes, "train_params_sha256": _sha256_text(train_params)},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": _ort_version()},
    }


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _ort_version() -> str:
    import onnxruntime as ort  # already imported by ort_session, telemetry off

    return ort.__version__


def run(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export, verify against PyTorch on the raw test rows, and write the model and its card."""
    if (kind := data_kind(paths.split)) != TABULAR:
        return kind_module(kind).export(cfg, paths)
    schema = read_schema(paths.split)
    test = read_table(split_file(paths.split, "test"))
    preprocessor = load_preprocessor(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)

    graph = build_onnx(model, preprocessor, cfg.opset)
    model_bytes = graph.SerializeToString()
    expected = predict_proba(model, preprocessor, test[schema.feature_names])
    feed = raw_inputs(test, preprocessor)
    parity = verify_feed(model_bytes, expected, feed, preprocessor.classes, cfg.tolerance)
    int8, hashes = save_models(model_bytes, cfg, paths, feed, test[preprocessor.target].astype(str).to_numpy())
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    card = model_card(preprocessor, checkpoint, read_json(paths.eval_metrics), hashes, parity, int8)
    return publish(card, parity, len(model_bytes), cfg, paths)


def save_models(model_bytes: bytes, cfg: ExportParams, paths: Paths, feed: dict[str, np.ndarray], truth: np.ndarray):
    """Write the verified ONNX model and, with ``export.int8``, its int8 twin compared with it on
    ``feed`` (true labels ``truth``); returns the int8 comparison (or None) and the models' hashes."""
    onnx_path = Path(paths.onnx)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path.write_bytes(model_bytes)
    int8_dir = Path(paths.onnx_int8)
    shutil.rmtree(int8_dir, ignore_errors=True)  # stale int8 files must never outlive their fp32 model
    int8_dir.mkdir(parents=True)
    int8 = None
    if cfg.int8:
        int8 = compare_int8(onnx_path, quantize_int8(onnx_path, int8_dir), feed, truth)
        log.info(
            "int8: %d -> %d bytes, test accuracy %.4f (fp32 %.4f), labels agree on %.2f%%",
            int8["fp32_bytes"], int8["bytes"], int8["accuracy"], int8["fp32_accuracy"], 100 * int8["label_agreement"],
        )
    hashes = {"onnx_sha256": file_sha256(onnx_path)}
    if int8 is not None:
        hashes["onnx_int8_sha256"] = file_sha256(int8_dir / INT8_FILE)
    return int8, hashes


def publish(card: dict[str, Any], parity: dict[str, Any], onnx_bytes: int, cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Write the model card and the export report (the gate re-checks its parity numbers)."""
    write_json(paths.model_card, card)
    report = {**parity, "onnx_bytes": onnx_bytes, "opset": cfg.opset, "int8": card["int8"]}
    write_json(paths.export_report, report)
    log.info(
        "exported %s (%d bytes): max |dp| %.1e on %d test rows, labels identical, %.0f us per record",
        paths.onnx, onnx_bytes, parity["max_abs_probability_diff"], parity["rows"], parity["single_record_latency_us"],
    )
    return report


def main() -> None:
    stage_main(lambda p: run(p.export, p.paths))


if __name__ == "__main__":
    main()
