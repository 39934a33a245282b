"""The engine's fixtures: a small learnable table encoded as tensors, and quick train params."""

from __future__ import annotations

import pytest

from pipeline.engine import Tensors
from pipeline.kinds.tabular.encoder import fit_preprocessor
from pipeline.kinds.tabular.train import tabular_config
from pipeline.params import FeatureParams, TrainParams


def config_for(pre, cfg: TrainParams):
    return tabular_config(pre, cfg)


@pytest.fixture
def data(table, schema):
    pre = fit_preprocessor(table.iloc[:480], schema, FeatureParams())
    return pre, Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)


def quick(**overrides) -> TrainParams:
    values = dict(hidden=(32,), epochs=8, batch_size=64, lr=0.01, warmup_epochs=0, early_stopping={"patience": 8})
    values.update(overrides)
    return TrainParams.model_validate(values)
