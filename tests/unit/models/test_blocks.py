"""Attention through scaled_dot_product_attention: the same function and the same parameters as
nn.MultiheadAttention (old checkpoints load), DropKey in training, and bf16 autocast."""

import pytest
import torch
from torch import nn

from pipeline.models import (
    FTTransformerConfig,
    SeqTransformerConfig,
    TextTransformerConfig,
    build_model,
)
from pipeline.models.blocks import SelfAttention, TransformerBlock, compile_attention


def test_a_seed_gives_nn_multiheadattention_s_initial_weights_under_the_same_names():
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    torch.manual_seed(0)
    attention = SelfAttention(16, 4, dropout=0.1)
    ours, theirs = attention.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


@pytest.mark.parametrize("padded", [False, True])
def test_eval_outputs_equal_nn_multiheadattention_s_with_its_weights(padded):
    torch.manual_seed(1)
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    attention = SelfAttention(16, 4, dropout=0.2).eval()
    attention.load_state_dict(reference.state_dict())  # a checkpoint of the old blocks, strict
    x = torch.randn(3, 5, 16)
    padding = torch.zeros(3, 5)
    if padded:
        padding[1, 3:] = float("-inf")  # the text kind's additive key-padding mask
    expected, _ = reference(x, x, x, key_padding_mask=padding if padded else None, need_weights=False)
    got = attention(x, padding[:, None, None, :] if padded else None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_dropkey_keeps_training_outputs_finite_even_when_almost_every_key_is_dropped():
    torch.manual_seed(0)
    block = TransformerBlock(16, 4, 2.0, attention_dropout=0.99, ffn_dropout=0.1, residual_dropout=0.1).train()
    x = torch.randn(8, 6, 16, requires_grad=True)
    out = block(x)
    out.sum().backward()
    assert out.isfinite().all() and x.grad is not None and x.grad.isfinite().all()
    block.eval()
    assert torch.equal(block(x), block(x))  # no dropout in eval


NETWORKS = {
    "ft_transformer": (
        lambda: FTTransformerConfig(n_numeric=3, cardinalities=(5, 4), n_classes=3, d_token=16, heads=2, layers=2),
        lambda: (torch.randn(32, 3), torch.randint(0, 4, (32, 2))),
    ),
    "seq_transformer": (
        lambda: SeqTransformerConfig(input_size=2, n_outputs=1, lookback=12, d_model=16, heads=2),
        lambda: (torch.randn(32, 12, 2),),
    ),
    "text_transformer": (
        lambda: TextTransformerConfig(vocab_size=30, n_classes=2, max_length=10, d_model=16, heads=2),
        lambda: (torch.cat([torch.randint(1, 30, (32, 6)), torch.zeros(32, 4, dtype=torch.int64)], dim=1),),
    ),
}


@pytest.mark.parametrize("family", NETWORKS)
def test_bf16_autocast_trains_and_its_eval_outputs_stay_close_to_fp32(family):
    make_config, make_inputs = NETWORKS[family]
    torch.manual_seed(0)
    model = build_model(make_config())
    inputs = make_inputs()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*inputs)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        fp32 = model(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(*inputs).float()
    assert (bf16 - fp32).abs().max().item() < 0.1 * fp32.abs().max().item() + 0.05


@pytest.mark.parametrize("padded", [False, True])
def test_the_compiled_attention_trains_like_the_flash_kernel(padded):
    """compile_attention: in training, short sequences through the compiled math attention give the
    flash kernel's outputs and gradients (no dropout, so both see the same attention)."""
    torch.manual_seed(0)
    flash = TransformerBlock(16, 4, 2.0, attention_dropout=0.0, ffn_dropout=0.0, residual_dropout=0.0).train()
    compiled = TransformerBlock(16, 4, 2.0, attention_dropout=0.0, ffn_dropout=0.0, residual_dropout=0.0).train()
    compiled.load_state_dict(flash.state_dict())
    assert compile_attention(compiled) == 1
    x = torch.randn(8, 6, 16)
    mask = torch.zeros(8, 1, 1, 6)
    if padded:
        mask[2, ..., 4:] = float("-inf")  # the text kind's padding
    outputs, grads = [], []
    for block in (flash, compiled):
        xi = x.clone().requires_grad_()
        out = block(xi, mask if padded else None)
        out.square().sum().backward()
        outputs.append(out)
        grads.append(xi.grad)
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-4, rtol=1e-4)
    compiled.eval()  # eval (and the exported graph) is the plain SDPA attention
    torch.testing.assert_close(compiled(x), flash.eval()(x))


def test_under_bf16_autocast_the_attention_itself_runs_in_fp32(monkeypatch):
    """The projections run in bf16, the flash kernel gets fp32 inputs (it is slower in bf16 on the CPU)."""
    attention = SelfAttention(16, 4, dropout=0.1).train()
    original, seen = torch.nn.functional.scaled_dot_product_attention, []

    def recording(q, k, v, **kwargs):
        seen.append(q.dtype)
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(torch.randn(4, 5, 16))
    assert seen == [torch.float32] and out.dtype == torch.bfloat16
