"""Load the fitted encoder and the trained network, and score raw rows on the PyTorch path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.common import read_json
from pipeline.errors import DataError
from pipeline.features import Preprocessor
from pipeline.model import build_model, config_from_dict


def load_preprocessor(path: str | Path) -> Preprocessor:
    return Preprocessor.from_dict(read_json(path))


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild the network from its self-describing checkpoint (tensors and plain values only)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: model checkpoint not found (run the train stage first: dvc repro)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(config_from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()


@torch.no_grad()
def predict_proba(model: torch.nn.Module, preprocessor: Preprocessor, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
    """Class probabilities [N, K] for raw rows: the saved encoder, then the network, then softmax."""
    x_num, x_cat = preprocessor.transform(frame)
    model.eval()
    out = [
        torch.softmax(model(torch.from_numpy(x_num[i : i + batch_size]), torch.from_numpy(x_cat[i : i + batch_size])), dim=1)
        for i in range(0, len(frame), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(preprocessor.classes)), np.float32)
