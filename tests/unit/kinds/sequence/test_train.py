"""Sequence training inputs (pipeline/kinds/sequence/train.py): the encoder sees training rows only; the networks."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pipeline.core.errors import ParamsError
from pipeline.kinds.sequence.train import prepare, sequence_config
from pipeline.models import RNNConfig, SeqTransformerConfig, build_model, config_from_dict
from pipeline.params import TrainParams
from tests.unit.kinds.sequence.conftest import schema_for, stage_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_encoder_is_fitted_on_the_training_rows_only(tmp_path):
    params = stage_data(tmp_path, rows=400)
    p = params.paths
    prepared = prepare(params.features, params.train, p)
    before = prepared.encoder
    assert prepared.task == "regression"  # a forecast trains on the engine's regression loss and metrics
    for name in ("val", "test"):
        path = tmp_path / f"data/split/{name}.parquet"
        part = pd.read_parquet(path)
        part[["Demand", "Temperature"]] *= 100  # every held-out value changes
        part.to_parquet(path)
    after = prepare(params.features, params.train, p).encoder
    assert after == before
    train = pd.read_parquet(tmp_path / "data/split/train.parquet")
    assert before["means"][0] == pytest.approx(train["Demand"].mean()) and before["target_std"] == pytest.approx(
        train["Demand"].std(ddof=0)
    )


def test_a_tabular_architecture_is_refused_naming_the_key():
    with pytest.raises(
        ParamsError,
        match=r"train\.model\.architecture = 'mlp' is not a sequence model; choose one of \['lstm', 'gru', 'seq_trans",
    ):
        sequence_config(TrainParams(), schema_for())


def test_model_families_rebuild_from_their_configs():
    configs = (
        RNNConfig(3, 2, cell="gru", bidirectional=True, layers=2),
        SeqTransformerConfig(3, 2, lookback=8, positional="learned", pooling="mean"),
    )
    for config in configs:
        rebuilt = config_from_dict(json.loads(json.dumps(config.to_dict())))
        assert rebuilt == config
        assert build_model(rebuilt)(torch.zeros(4, 8, 3)).shape == (4, 2)
