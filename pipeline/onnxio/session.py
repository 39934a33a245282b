"""onnxruntime sessions, configured once (threads, graph optimisation); torch-free, so the lifecycle and serving can use it."""

from __future__ import annotations

import os
from pathlib import Path


def ort_session(model: str | Path | bytes, threads: int | None = None, sequential: bool = False):
    """An onnxruntime CPU session with telemetry off and only warnings logged; ``sequential``: one operator at a
    time (batch scoring runs sessions side by side and wants no inter-op threads of its own)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is first imported
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    if sequential:
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
