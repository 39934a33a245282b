"""The engine's fixtures: a small learnable table encoded as tensors, and quick train params."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.engine import Tensors
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.train import tabular_config
from pipeline.params import TabularFeatures, TrainParams


def config_for(pre, cfg: TrainParams):
    return tabular_config(pre, cfg)


@pytest.fixture
def data(table, schema):
    pre = Preprocessor.fit(table.iloc[:480], schema, TabularFeatures())
    return pre, Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)


QUICK_MLP = {"architecture": "mlp", "hidden": (32,)}


def quick(model: dict[str, Any] | None = None, **overrides) -> TrainParams:
    """Quick train params. ``model``: keys of ``train.model``, merged into the quick MLP's for an MLP
    (no architecture or ``mlp``), else the whole network section of another architecture."""
    model = model or {}
    network = {**QUICK_MLP, **model} if model.get("architecture", "mlp") == "mlp" else model
    values = dict(model=network, epochs=8, batch_size=64, lr=0.01, warmup_epochs=0, early_stopping={"patience": 8})
    values.update(overrides)
    return TrainParams.model_validate(values)
