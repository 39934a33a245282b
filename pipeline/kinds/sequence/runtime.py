"""pipeline.kinds.sequence.runtime"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import DataError
from pipeline.kinds.sequence.stages import FORECAST, WINDOW_INPUT, card_schema, forecast_errors, read_split_windows


def score_split(onnx_path: str | Path, card: dict[str, Any], split_dir: str | Path) -> dict[str, float]:
    """A model's scores on every test window of ``split_dir``, built with the model's own windowing:
    MAE, RMSE (target units) and the number of windows; or accuracy, balanced accuracy, macro F1."""
    from pipeline.onnxio.session import ort_session
    from pipeline.shared.metrics import classification_scores

    path = Path(onnx_path)
    if not path.exists():
        raise DataError(f"{path}: model not found")
    schema = card_schema(card)
    windows = read_split_windows(split_dir, "test", schema)
    session = ort_session(path)
    feed = {WINDOW_INPUT: windows.x}
    if schema.forecast:
        (forecast,) = session.run([FORECAST], feed)
        scores = forecast_errors(forecast, windows.y)
        return {"mae": scores["mae"], "rmse": scores["rmse"], "rows": len(windows)}
    _, labels = session.run(["probabilities", "label"], feed)
    index = {c: i for i, c in enumerate(schema.classes)}
    scores = classification_scores(windows.y, np.array([index[v] for v in labels]), len(schema.classes))
    return {k: scores[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} | {"rows": len(windows)}
