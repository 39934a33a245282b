"""Attention through scaled_dot_product_attention: the same function and the same parameters as
nn.MultiheadAttention (old checkpoints load), DropKey in training, bf16 autocast, and the faster
training kernels of compile_attention (the compiled and the batched attention) against it."""

import pytest
import torch
from torch import nn

from pipeline.models import (
    FTTransformerConfig,
    SeqTransformerConfig,
    TextTransformerConfig,
    blocks,
    build_model,
)
from pipeline.models.blocks import (
    BATCHED_MAX_SCORES,
    COMPILED_MAX_LENGTH,
    SelfAttention,
    TransformerBlock,
    batched_attention,
    compile_attention,
    training_kernel,
)
from pipeline.onnxio.build import torch_graph


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


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("mask", ["none", "dropkey", "padding"])
def test_the_batched_attention_and_its_backward_compute_the_attention_s_formula(mask, chunked, monkeypatch):
    """In float64 the batched attention and its own backward are autograd through softmax(QK^T/sqrt(d) + mask) V
    to rounding, with each kind of mask (SDPA's CPU kernels round at ~1e-7 even in float64), whole or in
    chunks of (sample, head) pairs (here 4 + 2)."""
    torch.manual_seed(0)
    n, heads, length, size = 3, 2, 9, 4
    if chunked:
        monkeypatch.setattr(blocks, "CHUNK_SCORES", 4 * length * length * 8)
    qkv = torch.randn(n, length, 3 * heads * size, dtype=torch.float64)
    additive = {
        "none": None,
        "dropkey": (torch.rand(n, heads, 1, length) < 0.3).double() * -1e4,  # dropkey_mask's values
        "padding": torch.zeros(n, 1, 1, length, dtype=torch.float64).index_fill_(-1, torch.tensor([7, 8]), float("-inf")),
    }[mask]
    weights = torch.randn(n, length, heads * size, dtype=torch.float64)  # a loss that weighs every output differently

    reference = qkv.clone().requires_grad_()
    q, k, v = reference.view(n, length, 3, heads, size).permute(2, 0, 3, 1, 4).unbind(0)
    scores = q @ k.transpose(-2, -1) / size**0.5 + (0 if additive is None else additive)
    expected = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(n, length, heads * size)
    (expected * weights).sum().backward()
    batched = qkv.clone().requires_grad_()
    got = batched_attention(batched, additive, heads)
    (got * weights).sum().backward()
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(batched.grad, reference.grad, atol=1e-12, rtol=1e-10)


def test_in_bf16_the_batched_backward_keeps_its_precision_when_v_carries_a_large_offset():
    """dO V^T - rowsum(dO * O) cancels V's common part (a bias): the batched kernel centres V, so its dQ and dK
    stay as near the float64 formula's as the bf16 math attention's (they were 2x farther: 8% vs 4%)."""
    torch.manual_seed(0)
    n, heads, length, size = 16, 4, 48, 16
    d = heads * size
    qkv = torch.randn(n, length, 3 * d, dtype=torch.float64)
    qkv[..., 2 * d :] += 16.0  # V offset by 16 standard deviations
    weights = torch.randn(n, length, d, dtype=torch.float64)

    def math(x: torch.Tensor) -> torch.Tensor:
        q, k, v = x.view(n, length, 3, heads, size).permute(2, 0, 3, 1, 4).unbind(0)
        p = torch.softmax((q @ k.transpose(-2, -1)).float() * size**-0.5, -1).to(v.dtype)
        return (p @ v).transpose(1, 2).reshape(n, length, d)

    gradients = {}
    for name, dtype, attention in [
        ("float64", torch.float64, math),
        ("math bf16", torch.bfloat16, math),
        ("batched bf16", torch.bfloat16, lambda x: batched_attention(x, None, heads)),
    ]:
        x = qkv.to(dtype, copy=True).requires_grad_()
        (attention(x).double() * weights).sum().backward()
        gradients[name] = x.grad.double()
    exact = gradients["float64"]
    for part in (slice(0, d), slice(d, 2 * d)):  # dQ, dK
        error = {name: ((g - exact)[..., part].norm() / exact[..., part].norm()).item() for name, g in gradients.items()}
        assert error["batched bf16"] <= error["math bf16"], error


def test_the_training_kernel_is_chosen_by_length_precision_device_and_memory():
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    assert training_kernel(512, 8, 15, 15, bf16, cpu) == "compiled"  # the FT-Transformer's feature tokens
    assert training_kernel(512, 8, 1, 15, bf16, cpu) == "compiled"  # its last block: [CLS] alone
    assert training_kernel(512, 8, COMPILED_MAX_LENGTH, COMPILED_MAX_LENGTH, torch.float32, cpu) == "compiled"
    assert training_kernel(256, 4, 96, 96, bf16, cpu) == "batched"  # the sequence Transformer on elecdemand
    assert training_kernel(256, 4, 1, 96, bf16, cpu) == "compiled"  # its last block: the last step alone
    assert training_kernel(256, 4, 1, 2048, bf16, cpu) == "flash"  # the batched kernel takes every query only
    assert training_kernel(32, 4, 768, 768, bf16, cpu) == "flash"  # 144 MiB of probabilities
    assert training_kernel(16, 4, 768, 768, bf16, cpu) == "batched"  # 72 MiB
    assert training_kernel(256, 4, 96, 96, torch.float32, cpu) == "flash"  # bf16 products only
    assert training_kernel(256, 4, 96, 96, bf16, torch.device("cuda")) == "flash"  # measured on a CPU only
    rows = BATCHED_MAX_SCORES // (4 * 96 * 96 * 2)  # one layer's bf16 probabilities at the cap
    assert training_kernel(rows, 4, 96, 96, bf16, cpu) == "batched"
    assert training_kernel(rows + 1, 4, 96, 96, bf16, cpu) == "flash"  # their memory grows as L^2


def _every_token(model: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """The model's output with every block computing every token (no ``queries``), the head reading its token."""
    calls = [block.forward for block in model.blocks]
    for block, forward in zip(model.blocks, calls, strict=True):
        block.forward = lambda x, mask=None, queries=None, forward=forward: forward(x, mask)
    try:
        return model(*inputs)
    finally:
        for block in model.blocks:
            del block.forward


TRANSFORMERS = {
    "ft_transformer": (
        FTTransformerConfig(
            n_numeric=3,
            cardinalities=(4, 5),
            n_classes=3,
            d_token=16,
            layers=2,
            heads=4,
            attention_dropout=0.0,
            ffn_dropout=0.0,
        ),
        lambda: (torch.randn(6, 3), torch.stack([torch.randint(0, 4, (6,)), torch.randint(0, 5, (6,))], 1)),
    ),
    "sequence_last": (
        SeqTransformerConfig(input_size=2, n_outputs=2, lookback=12, d_model=16, heads=4, layers=2, dropout=0.0),
        lambda: (torch.randn(6, 12, 2),),
    ),
    "text_cls": (
        TextTransformerConfig(vocab_size=30, n_classes=2, max_length=10, d_model=16, heads=4, layers=2, dropout=0.0),
        # [CLS] (2) first, the last two positions padding (0)
        lambda: (torch.cat([torch.full((6, 1), 2), torch.randint(4, 30, (6, 9))], 1).index_fill_(1, torch.tensor([8, 9]), 0),),
    ),
}


@pytest.mark.parametrize("switched", [False, pytest.param(True, marks=pytest.mark.slow)])  # True compiles
@pytest.mark.parametrize("family", sorted(TRANSFORMERS))
def test_the_last_block_computes_only_the_token_the_head_reads_with_the_same_numbers(family, switched):
    """[CLS] or the last step alone through the last block: the outputs and every parameter's gradient of
    the whole computation, in float64 (the flash kernel, or with compile_attention the compiled one)."""
    config, inputs = TRANSFORMERS[family]
    torch.manual_seed(0)
    model = build_model(config).double().train()  # no dropout: both computations see the same network
    if switched:
        assert compile_attention(model) == 2
    args = [a.double() if a.is_floating_point() else a for a in inputs()]
    results = []
    for forward in (model, lambda *a: _every_token(model, *a)):
        model.zero_grad(set_to_none=True)
        out = forward(*args)
        (out * torch.arange(1.0, out.shape[-1] + 1, dtype=out.dtype)).square().sum().backward()
        results.append((out, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}))
    (got, got_grads), (expected, expected_grads) = results
    # SDPA's CPU kernel rounds at ~1e-7 even in float64; a wrong token would be off by the whole value
    assert (got - expected).norm() <= 1e-6 * expected.norm()
    assert got_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        assert (got_grads[name] - grad).norm() <= 1e-6 * grad.norm(), name


def _train_step(block, x, seed):
    """One bf16 forward + backward of ``block`` with the global generator at ``seed`` (the dropout masks)."""
    torch.manual_seed(seed)
    xi = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(xi)
    out.float().square().sum().backward()
    grads = {name: p.grad.clone() for name, p in block.named_parameters()}
    block.zero_grad(set_to_none=True)
    return out.float(), xi.grad, grads


def test_the_batched_attention_trains_like_the_flash_kernel_under_bf16_and_deterministically():
    """Past COMPILED_MAX_LENGTH, in bf16, the switched-on block draws the same DropKey and dropout masks and gives
    the flash kernel's outputs and gradients up to bf16 rounding; a seed gives them bit for bit; eval is SDPA."""
    torch.manual_seed(0)
    dropout = dict(attention_dropout=0.1, ffn_dropout=0.1, residual_dropout=0.1)
    flash = TransformerBlock(32, 4, 2.0, **dropout).train()
    batched = TransformerBlock(32, 4, 2.0, **dropout).train()
    batched.load_state_dict(flash.state_dict())
    assert compile_attention(batched) == 1
    x = torch.randn(8, 40, 32)
    assert training_kernel(8, 4, 40, 40, torch.bfloat16, x.device) == "batched"

    out_f, dx_f, grads_f = _train_step(flash, x, seed=1)
    out_b, dx_b, grads_b = _train_step(batched, x, seed=1)
    torch.testing.assert_close(out_b, out_f, atol=0.03, rtol=0.02)
    assert (dx_b - dx_f).norm() < 0.02 * dx_f.norm()
    for name, grad in grads_f.items():
        assert (grads_b[name] - grad).norm() < 0.03 * grad.norm() + 1e-6, name

    again = _train_step(batched, x, seed=1)
    assert torch.equal(again[0], out_b) and torch.equal(again[1], dx_b)
    assert all(torch.equal(again[2][name], grad) for name, grad in grads_b.items())

    batched.eval()
    flash.eval()
    assert torch.equal(batched(x), flash(x))


def test_the_switched_on_kernels_leave_the_exported_graph_as_it_was():
    """compile_attention changes training only: a sequence Transformer that trained a step on the batched
    attention exports the same ONNX graph as the same weights without the switch."""
    config = SeqTransformerConfig(input_size=2, n_outputs=1, lookback=40, d_model=16, heads=2)
    torch.manual_seed(0)
    plain = build_model(config)
    switched = build_model(config)
    switched.load_state_dict(plain.state_dict())
    compile_attention(switched)
    x = torch.randn(4, 40, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        switched.train()(x).float().sum().backward()  # through the batched attention
    graphs = [torch_graph(model, (x,), ["x"], ["y"], opset=17).graph for model in (plain, switched)]
    assert graphs[0].SerializeToString() == graphs[1].SerializeToString()
