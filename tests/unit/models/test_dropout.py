"""The 16-bit-mask dropout and DropKey masks: rates, scaling, seeding, and nn.Dropout's contract."""

import pytest
import torch
from torch import nn

from pipeline.models.dropout import Dropout, dropkey_mask, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_masks_keep_one_minus_p_and_the_expected_value_is_the_input(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_000)
    out = dropout(x, p, training=True)
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.003)
    assert out.mean().item() == pytest.approx(1.0, abs=0.005)  # kept values scaled by 1 / keep rate
    zero, kept = out.unique().tolist()
    assert zero == 0.0 and kept == pytest.approx(1 / (1 - p), rel=1e-4)


def test_eval_mode_and_p_zero_return_the_input_itself():
    x = torch.randn(4, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x


def test_a_seed_draws_the_same_masks():
    torch.manual_seed(3)
    first = keep_mask((64, 7), 0.25, torch.device("cpu"))
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((64, 7), 0.25, torch.device("cpu")))


def test_the_module_is_a_drop_in_for_nn_dropout():
    module = Dropout(0.2)
    assert module.state_dict() == {} and "p=0.2" in repr(module)
    x = torch.randn(8, 16, requires_grad=True)
    module.train()
    out = module(x)
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - 0.2), rtol=1e-4, atol=0)  # the same mask backward
    module.eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="dropout probability must be in"):
        Dropout(1.0)


def test_dropkey_masks_are_zero_or_minus_1e4_at_rate_p():
    torch.manual_seed(0)
    mask = dropkey_mask((256, 4, 1, 96), 0.2, torch.float32, torch.device("cpu"))
    assert set(mask.unique().tolist()) == {-1e4, 0.0}
    assert (mask < 0).float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert dropkey_mask((2, 2, 1, 3), 0.2, torch.bfloat16, torch.device("cpu")).dtype == torch.bfloat16


def test_the_mlp_uses_the_cheap_dropout():
    from pipeline.models import ModelConfig, build_model

    model = build_model(ModelConfig(n_numeric=3, cardinalities=(4,), n_classes=2, hidden=(8,), dropout=0.2))
    assert any(isinstance(m, Dropout) for m in model.modules())
    assert not any(type(m) is nn.Dropout for m in model.modules())
