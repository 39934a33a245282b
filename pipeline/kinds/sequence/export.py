"""Sequence export: one ONNX model from raw windows to forecasts (or class probabilities), verified.

The graph has one input ``window`` float32 [N, L, F] in raw units (the encoder's normalisation is inside
the graph) and outputs ``forecast`` [N, H] in raw target units, or ``probabilities`` [N, K] and
``label`` [N] (the shared label lookup). It is checked and run with onnxruntime on every test window
and the stage fails unless it agrees with PyTorch within ``export.tolerance``: classifiers as every
kind's (``verify_feed``), forecasts in units of the target's training std, so one tolerance fits any
target scale.

With ``export.int8``, onnxruntime's dynamic quantisation makes an int8 twin (``int8_twin``): LSTM cells
(``DynamicQuantizeLSTM``), attention and linear layers (``MatMulInteger``) get int8 weights. It is measured
on the test windows (a forecaster's MAE, a classifier's accuracy) and kept, with its figures on the card,
where the quantiser made the whole network int8; the retrain flow serves it when it loses at most
``gate.int8_max_accuracy_loss`` (a forecaster: its MAE's increase as a share of the fp32 MAE). GRU cells
have no int8 kernel in onnxruntime: such a model gets no twin, and the card's ``int8_note`` says so with
the measured figures.

Inputs:  ``paths.split``, ``paths.preprocessor``, ``paths.model``, ``paths.eval_metrics``
Outputs: ``paths.onnx``, ``paths.onnx_int8`` (empty without a twin), ``paths.model_card``, ``paths.export_report``
Params:  ``export``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.core.io import INT8_FILE, SPLITS, file_sha256, read_json, split_file, write_json
from pipeline.kinds.sequence.data import FORECAST, WINDOW_INPUT
from pipeline.kinds.sequence.encoder import SequenceEncoder, load_encoder
from pipeline.kinds.sequence.evaluate import predict
from pipeline.kinds.sequence.windows import Windows, read_split_windows
from pipeline.models import load_model
from pipeline.onnxio.build import NET_PREFIX, PROBABILITIES, finish_graph, postprocessing_graph, torch_graph
from pipeline.onnxio.card import Output, SequenceCard, WindowInput
from pipeline.onnxio.describe import card_fields
from pipeline.onnxio.verify import (
    compare_int8,
    compare_int8_values,
    quantize_int8,
    save_models,
    verify_feed,
    verify_values,
    without_timing,
)
from pipeline.params import ExportParams, Paths

log = logging.getLogger(__name__)

INT8_NOTE = "not produced: export.int8 is off"
# Recurrent cells onnxruntime's dynamic quantiser leaves in fp32 (it has an int8 kernel for LSTM only).
FP32_CELLS = frozenset({"GRU", "RNN"})


class RawWindowModel(nn.Module):
    """The network with the encoder's arithmetic around it: raw window [N, L, F] -> forecast [N, H] in
    target units, or class probabilities [N, K]."""

    mean: torch.Tensor  # [F], a buffer
    std: torch.Tensor  # [F], a buffer

    def __init__(self, model: nn.Module, encoder: SequenceEncoder):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(encoder.means, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(encoder.stds, dtype=torch.float32))
        self.forecast = encoder.schema.forecast
        self.target_mean, self.target_std = float(encoder.target_mean), float(encoder.target_std)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        out = self.model((window - self.mean) / self.std)
        return out * self.target_std + self.target_mean if self.forecast else torch.softmax(out, dim=1)


def build_sequence_onnx(model: nn.Module, encoder: SequenceEncoder, opset: int) -> onnx.ModelProto:
    """One graph: input ``window`` float32 [N, L, F] (raw); output ``forecast`` [N, H], or
    ``probabilities`` [N, K] and ``label`` [N] (every kind's label lookup, ``postprocessing_graph``)."""
    schema = encoder.schema
    example = torch.zeros(2, schema.lookback, len(schema.features), dtype=torch.float32)
    wrapped = RawWindowModel(model, encoder).eval()
    if schema.forecast:
        graph = torch_graph(wrapped, (example,), [WINDOW_INPUT], [FORECAST], opset)
        # Not finish_graph: nothing was merged, and re-making the exporter's one opset import would write
        # its empty domain explicitly (2 more bytes: another model hash for the same model).
        graph.graph.name = "evergreen"
        graph.doc_string = "Raw window [N, lookback, features] -> forecast [N, horizon] in target units (Evergreen)"
        return graph
    net = torch_graph(wrapped, (example,), [WINDOW_INPUT], [f"{NET_PREFIX}{PROBABILITIES}"], opset)
    post = postprocessing_graph(schema.classes, opset, net.ir_version)
    merged = onnx.compose.merge_models(net, post, io_map=[(f"{NET_PREFIX}{PROBABILITIES}",) * 2])
    return finish_graph(merged, "Raw window [N, lookback, features] -> class probabilities and label (Evergreen)")


def verify_forecast(
    model_bytes: bytes, expected: np.ndarray, x: np.ndarray, target_std: float, tolerance: float
) -> dict[str, Any]:
    """``verify_feed`` for a forecaster: check the graph, run it on the raw windows x [N, L, F], compare
    with the PyTorch forecasts ``expected`` [N, H]; raise if they disagree.

    Forecasts are compared in units of the target's training std (``max_scaled_diff``), so one
    ``export.tolerance`` fits any target scale; the raw difference is reported beside it.
    """
    return verify_values(
        model_bytes, expected, {WINDOW_INPUT: x.astype(np.float32)}, target_std, tolerance, "the test windows"
    )


def verify_sequence(
    model_bytes: bytes, expected: np.ndarray, x: np.ndarray, encoder: SequenceEncoder, tolerance: float
) -> dict[str, Any]:
    """The parity report of a sequence model on raw windows x [N, L, F]: forecasts (``verify_forecast``)
    or, for a classifier, every kind's probability and label check (``verify_feed``)."""
    if encoder.schema.forecast:
        return verify_forecast(model_bytes, expected, x, encoder.target_std, tolerance)
    return verify_feed(model_bytes, expected, {WINDOW_INPUT: x.astype(np.float32)}, encoder.schema.classes, tolerance)


def int8_twin(onnx_path: Path, int8_dir: Path, windows: Windows, encoder: SequenceEncoder) -> tuple[dict[str, Any], bool, str]:
    """Quantise the exported model (dynamic int8) into ``int8_dir`` and measure it against the fp32 model on the
    raw test ``windows``: a forecaster's MAE (target units) and largest difference, a classifier's accuracy
    and label agreement (``pipeline.onnxio.verify``). Returns the figures, whether the twin is kept, and the
    card's note; a twin whose graph still holds fp32 recurrent cells (GRU), or that is no smaller, is removed."""
    schema = encoder.schema
    path = quantize_int8(onnx_path, int8_dir)
    feed = {WINDOW_INPUT: windows.x.astype(np.float32)}
    if schema.forecast:
        measured = compare_int8_values(onnx_path, path, feed, windows.y.astype(np.float64))
        figures = f"test MAE {measured['mae']:.6g} vs fp32 {measured['fp32_mae']:.6g}"
        loss = "its MAE's increase as a share of the fp32 MAE"
    else:
        truth = np.array(schema.classes, dtype=object)[windows.y]
        measured = compare_int8(onnx_path, path, feed, truth)
        figures = f"test accuracy {measured['accuracy']:.4f} vs fp32 {measured['fp32_accuracy']:.4f}"
        loss = "the test accuracy it loses"
    size = f"{measured['bytes']} bytes vs {measured['fp32_bytes']}"
    fp32_cells = sorted({node.op_type for node in onnx.load(path).graph.node} & FP32_CELLS)
    if fp32_cells or measured["bytes"] >= measured["fp32_bytes"]:
        path.unlink()
        why = (
            f"onnxruntime's dynamic quantisation has no int8 {'/'.join(fp32_cells)} cell"
            if fp32_cells
            else "dynamic quantisation does not make this model smaller"
        )
        return measured, False, f"not produced: {why} (measured: {size}, {figures})"
    note = f"dynamic int8 (onnxruntime): {size}, {figures}; served when {loss} is at most gate.int8_max_accuracy_loss"
    return measured, True, note


def sequence_card(
    encoder: SequenceEncoder,
    checkpoint: dict[str, Any],
    metrics: dict[str, Any],
    hashes: dict[str, str],
    parity: dict[str, Any],
    int8: dict[str, Any] | None = None,
    int8_note: str = INT8_NOTE,
) -> SequenceCard:
    """What a consumer of ``model.onnx`` needs to call it and to trust it: every kind's card fields,
    the windowing, and for a forecaster its one output in target units."""
    schema = encoder.schema
    window = WindowInput(
        name=WINDOW_INPUT,
        onnx_type="float32",
        shape=("N", schema.lookback, len(schema.features)),
        features=schema.features,
        units="raw (normalised inside the graph)",
        missing="not allowed: fill gaps first",
    )
    common = card_fields(schema.classes, checkpoint, metrics, hashes, parity, int8)
    if schema.forecast:
        common["task"] = "regression"
        common["outputs"] = (
            Output(name=FORECAST, onnx_type="float32", shape=("N", schema.horizon), units=f"{schema.target}, raw"),
        )
    return SequenceCard(
        **common,
        kind="sequence",
        sequence_task=schema.task,
        target=schema.target,
        lookback=schema.lookback,
        horizon=schema.horizon,
        season_length=schema.season_length,
        frequency=schema.frequency,
        series_column=schema.series_column,
        time_column=schema.time_column,
        features=schema.features,
        inputs=(window,),
        int8_note=int8_note,
    )


def run(cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Export, verify against PyTorch on the raw test windows, write the model, its card and the report."""
    encoder = load_encoder(paths.preprocessor)
    model = load_model(paths.model)
    checkpoint = torch.load(paths.model, map_location="cpu", weights_only=True)
    windows = read_split_windows(paths.split, "test", encoder.schema)

    model_bytes = build_sequence_onnx(model, encoder, cfg.opset).SerializeToString()
    parity = verify_sequence(model_bytes, predict(model, encoder, windows.x), windows.x, encoder, cfg.tolerance)
    # save_models writes the verified model and an empty int8 folder; the twin, when wanted, is made and judged here.
    _, hashes = save_models(model_bytes, cfg.model_copy(update={"int8": False}), paths, {}, windows.y)
    measured, kept, note = (None, False, INT8_NOTE)
    if cfg.int8:
        measured, kept, note = int8_twin(Path(paths.onnx), Path(paths.onnx_int8), windows, encoder)
        log.info("int8: %s", note)
    if kept:
        hashes["onnx_int8_sha256"] = file_sha256(Path(paths.onnx_int8) / INT8_FILE)
    hashes |= {
        **{f"{name}_data_sha256": file_sha256(split_file(paths.split, name)) for name in SPLITS},
        "preprocessor_sha256": file_sha256(paths.preprocessor),
    }
    card = sequence_card(encoder, checkpoint, read_json(paths.eval_metrics), hashes, parity, measured if kept else None, note)
    card.write(paths.model_card)
    int8_report = None if measured is None else {**measured, "written": kept}
    report = {**without_timing(parity), "onnx_bytes": len(model_bytes), "opset": cfg.opset, "int8": int8_report}
    write_json(paths.export_report, report)
    if encoder.schema.forecast:
        agreement = f"max |forecast diff| {parity['max_abs_diff']:.1e}"
    else:
        agreement = f"max |dp| {parity['max_abs_probability_diff']:.1e}, labels identical"
    log.info(
        "exported %s (%d bytes): %s on %d test windows, %.0f us per window",
        paths.onnx,
        len(model_bytes),
        agreement,
        parity["rows"],
        parity["single_record_latency_us"],
    )
    return report
