import pytest
import torch

from pipeline.engine import Prepared, Tensors, reusable_encoder


def test_prepared_says_its_task():
    data = Tensors((torch.zeros(4, 1),), torch.zeros(4, dtype=torch.int64))
    fields = dict(train=data, val=data, config=None, encoder={}, data_files=[], config_for=lambda cfg: None)
    assert Prepared(task="classification", **fields).task == "classification"
    with pytest.raises(TypeError, match="task"):
        Prepared(**fields)  # required: never guessed from the targets' dtype
    with pytest.raises(ValueError, match="Prepared.task = 'forecast'; choose one of"):
        Prepared(task="forecast", **fields)


def test_a_warm_start_encoder_is_kept_only_for_the_same_classes():
    encoder = {"classes": ["a", "b"]}
    assert reusable_encoder(encoder, ("a", "b")) is encoder
    assert reusable_encoder(encoder, ["a", "b", "new class"]) is None  # new classes: fit afresh
    assert reusable_encoder(None, ["a"]) is None
