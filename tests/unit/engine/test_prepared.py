import pytest
import torch

from pipeline.engine import Prepared, Tensors, keeps_encoder


def test_prepared_says_its_task():
    data = Tensors((torch.zeros(4, 1),), torch.zeros(4, dtype=torch.int64))
    fields = dict(train=data, val=data, config=None, encoder={}, data_files=[], config_for=lambda cfg: None)
    assert Prepared(task="classification", **fields).task == "classification"
    with pytest.raises(TypeError, match="task"):
        Prepared(**fields)  # required: never guessed from the targets' dtype
    with pytest.raises(ValueError, match="Prepared.task = 'forecast'; choose one of"):
        Prepared(task="forecast", **fields)


def test_a_warm_start_encoder_is_kept_only_for_the_same_classes_and_inputs(caplog):
    assert keeps_encoder(("a", "b"), ["a", "b"], ("x", "y"), ("x", "y"))
    assert not keeps_encoder(("a", "b"), ["a", "b", "new class"], ("x",), ("x",))  # new classes: fit afresh
    with caplog.at_level("WARNING", logger="pipeline"):
        assert not keeps_encoder(("a", "b"), ("a", "b"), (1, 8, 8), (3, 8, 8))  # other inputs: fit afresh
    assert "the inputs changed ((1, 8, 8) -> (3, 8, 8))" in caplog.text
