"""Verify and publish an exported model: run it in onnxruntime against the PyTorch outputs, quantise to int8, write the files."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.core.errors import ExportError
from pipeline.core.io import INT8_FILE, atomic_write, file_sha256, write_json
from pipeline.onnxio.build import LABEL, PROBABILITIES
from pipeline.onnxio.card import FORECAST
from pipeline.onnxio.session import ort_session
from pipeline.params import ExportParams, Paths

log = logging.getLogger(__name__)


def verify_feed(
    model_bytes: bytes, expected: np.ndarray, feed: dict[str, np.ndarray], classes, tolerance: float
) -> dict[str, Any]:
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


def verify_values(
    model_bytes: bytes,
    expected: np.ndarray,
    feed: dict[str, np.ndarray],
    target_std: float,
    tolerance: float,
    what: str = "the test split",
) -> dict[str, Any]:
    """``verify_feed`` for a model of numbers (a forecaster, a regressor): check the graph, run it on ``feed``,
    compare its ``forecast`` with the PyTorch values ``expected``; raise if they disagree.

    Values are compared in units of the target's training std (``max_scaled_diff``), so one
    ``export.tolerance`` fits any target scale; the raw difference is reported beside it.
    """
    onnx.checker.check_model(onnx.load_model_from_string(model_bytes), full_check=True)
    session = ort_session(model_bytes)
    (values,) = session.run([FORECAST], feed)
    max_diff = float(np.abs(values.reshape(expected.shape) - expected).max()) if len(expected) else 0.0
    report = {
        "rows": len(expected),
        "max_abs_diff": max_diff,
        "max_scaled_diff": max_diff / target_std,
        "label_mismatches": 0,
        "tolerance": tolerance,
        "single_record_latency_us": single_record_latency(session, feed),
    }
    if report["max_scaled_diff"] > tolerance:
        raise ExportError(
            f"ONNX and PyTorch disagree on {what}: max |forecast diff| = {max_diff:.2e} "
            f"({report['max_scaled_diff']:.2e} target stds, tolerance {tolerance:.0e})"
        )
    return report


def without_timing(parity: dict[str, Any]) -> dict[str, Any]:
    """A parity report as written to DVC outputs: without the measured latency."""
    return {k: v for k, v in parity.items() if k != "single_record_latency_us"}


def single_record_latency(session, feed: dict[str, np.ndarray], repeats: int = 200) -> float:
    one = {name: values[:1] for name, values in feed.items()}
    session.run(None, one)
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(None, one)
    return round((time.perf_counter() - started) / repeats * 1e6, 1)


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


def compare_int8_values(fp32_path: Path, int8_path: Path, feed: dict[str, np.ndarray], actual: np.ndarray) -> dict[str, Any]:
    """Size, test MAE and the largest difference of an int8 numeric model (its ``forecast``: a forecaster's,
    a regressor's values) against the fp32 one on ``feed``; ``actual``: the true values, shaped as the output."""
    (v32,) = ort_session(fp32_path).run([FORECAST], feed)
    (v8,) = ort_session(int8_path).run([FORECAST], feed)
    v32, v8 = np.asarray(v32, np.float64).reshape(actual.shape), np.asarray(v8, np.float64).reshape(actual.shape)
    return {
        "bytes": int8_path.stat().st_size,
        "fp32_bytes": fp32_path.stat().st_size,
        "mae": float(np.abs(v8 - actual).mean()) if actual.size else 0.0,
        "fp32_mae": float(np.abs(v32 - actual).mean()) if actual.size else 0.0,
        "max_abs_diff": float(np.abs(v8 - v32).max()) if actual.size else 0.0,
    }


def save_models(model_bytes: bytes, cfg: ExportParams, paths: Paths, feed: dict[str, np.ndarray], truth: np.ndarray):
    """Write the verified ONNX model and, with ``export.int8``, its int8 twin compared with it on
    ``feed`` (true labels ``truth``); returns the int8 comparison (or None) and the models' hashes."""
    onnx_path = Path(paths.onnx)
    atomic_write(onnx_path, model_bytes)
    int8_dir = Path(paths.onnx_int8)
    shutil.rmtree(int8_dir, ignore_errors=True)  # stale int8 files must never outlive their fp32 model
    int8_dir.mkdir(parents=True)
    int8 = None
    if cfg.int8:
        int8 = compare_int8(onnx_path, quantize_int8(onnx_path, int8_dir), feed, truth)
        log.info(
            "int8: %d -> %d bytes, test accuracy %.4f (fp32 %.4f), labels agree on %.2f%%",
            int8["fp32_bytes"],
            int8["bytes"],
            int8["accuracy"],
            int8["fp32_accuracy"],
            100 * int8["label_agreement"],
        )
    hashes = {"onnx_sha256": file_sha256(onnx_path)}
    if int8 is not None:
        hashes["onnx_int8_sha256"] = file_sha256(int8_dir / INT8_FILE)
    return int8, hashes


def publish(card: dict[str, Any], parity: dict[str, Any], onnx_bytes: int, cfg: ExportParams, paths: Paths) -> dict[str, Any]:
    """Write the model card and the export report (the gate re-checks its parity numbers)."""
    write_json(paths.model_card, card)
    # The latency is logged, not written: a timing in a DVC output changes its hash every run.
    report = {**without_timing(parity), "onnx_bytes": onnx_bytes, "opset": cfg.opset, "int8": card["int8"]}
    write_json(paths.export_report, report)
    log.info(
        "exported %s (%d bytes): max |dp| %.1e on %d test rows, labels identical, %.0f us per record",
        paths.onnx,
        onnx_bytes,
        parity["max_abs_probability_diff"],
        parity["rows"],
        parity["single_record_latency_us"],
    )
    return report
