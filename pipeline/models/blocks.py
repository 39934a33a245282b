"""Building blocks shared by the Transformer families: self-attention through
``F.scaled_dot_product_attention`` and the pre-norm encoder block.

Attention dropout is DropKey (Li et al., "DropKey for Vision Transformer", CVPR 2023): keys are
dropped from the softmax (an additive mask on the logits) instead of zeroing the softmax's outputs,
here with one draw per (sample, head, key), shared by the queries: a [N, H, 1, L] mask. PyTorch's CPU
flash-attention kernel takes a mask but no dropout (``dropout_p > 0`` falls back to the unfused
math path: a [N, H, L, L] softmax, Bernoulli draws and two batched matmuls). Measured on this
2-core CPU (1 thread, other jobs loading it), forward + backward of one attention (bench/transformer_speed.py
has whole epochs):
FT-Transformer shape [512, 8, 14, 8]: math path with dropout 129 ms, flash with a [N, H, L, L]
DropKey mask 80 ms, with the [N, H, 1, L] mask 70 ms, no mask 49 ms; sequence shape
[256, 4, 96, 16]: 736, 257, 129 and 130 ms. In eval mode, and so in the exported graph, there is no
dropout and the block is plain attention.

Under bf16 autocast the projections and the feed-forward run in bf16 (AVX512-BF16 on this CPU) but
the flash kernel gets fp32 inputs: at head sizes 8-16 it is 2-8x slower in bf16 than in fp32 here.

``compile_attention`` (``train.compile: attention``) switches the training attention to the faster
kernel for the batch, measured forward + backward from the QKV projection's bf16 output on this CPU
(1 thread, ms, the range of 2-3 runs with other jobs on the machine; scores = the [N, H, L, L] bf16
probabilities one layer keeps for its backward):

    shape [N, H, L, d/H]   scores   flash (fp32 inputs)   compiled math   batched bf16
    [512, 8, 15, 8]        1.8 MB          45                 13-14           22-26     FT-Transformer, GSS
    [256, 4, 32, 16]         2 MB         13-20               10-17            8-12
    [256, 4, 64, 16]         8 MB         42-46                44             31-34
    [256, 4, 96, 16]        18 MB         62-75               81-111          43-63     sequence Transformer
    [128, 4, 192, 16]       36 MB         92-130             211-307          64-83
    [64, 4, 384, 16]        72 MB        169-189             456-539         128-151
    [32, 4, 768, 16]       144 MB        368-432             767-913         250-273

- up to ``COMPILED_MAX_LENGTH`` tokens (the FT-Transformer's feature tokens) most of the flash
  kernel's time is per-(sample, head) overhead: ``compiled_attention``, a ``torch.compile``d math
  attention (QK^T, fp32 softmax, PV in the input's dtype), one fused C++ kernel;
- longer sequences under bf16 autocast, while one layer's probabilities fit in
  ``BATCHED_MAX_SCORES``: ``BatchedAttention``, batched bf16 matrix products (oneDNN, AVX512-BF16)
  around PyTorch's softmax in cache-sized chunks, with a backward of its own that reuses the saved
  probabilities instead of recomputing them (the profile of the sequence Transformer's bf16 step
  had the flash kernel's forward at 10% and its fp32 backward at 24%); the compiled math attention
  loses there because inductor writes the fp32 exponentials to memory and reads them back;
- beyond that memory, in fp32, and on GPUs, the flash kernel (its memory is linear in L).

Only in training; eval and the exported graph keep ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import functools
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.dropout import Dropout, dropkey_mask

COMPILED_MAX_LENGTH = 32  # sequences up to this long use the compiled attention when switched on
BATCHED_MAX_SCORES = 128 << 20  # longer ones in bf16 the batched attention while one layer's probabilities fit
CHUNK_SCORES = 2 << 20  # the batched attention's scores per chunk of (sample, head) pairs, in bytes
FIRST, LAST = slice(0, 1), slice(-1, None)  # the positions a head reads: [CLS], or a sequence's last step


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d) + mask) V for q, k, v [N, H, L, d/H], the softmax in fp32 -> [N, H, L, d/H]."""
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5  # [N, H, L, L]
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, -1).to(v.dtype), v)


def split_heads(
    projected: torch.Tensor, kv: torch.Tensor | None, heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K and V [N, H, L, d/H] (views) from the projections: the packed qkv [N, L, 3d] (``kv`` None), or
    the queries' [N, Lq, d] and the keys' and values' [N, L, 2d]."""
    n, wanted, width = projected.shape
    if kv is None:
        q, k, v = projected.view(n, wanted, 3, heads, width // 3 // heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v
    q = projected.view(n, wanted, heads, width // heads).transpose(1, 2)
    k, v = kv.view(n, kv.shape[1], 2, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


_compiled_attention = None


def compiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``math_attention`` through ``torch.compile`` (compiled on the first call, shared by every block).
    (Handing it the packed projection instead, so the heads' split and merge fuse into its kernels, was
    no faster on the FT-Transformer's step.)"""
    global _compiled_attention
    if _compiled_attention is None:
        _compiled_attention = torch.compile(math_attention)
    return _compiled_attention(q, k, v, mask)


class BatchedAttention(torch.autograd.Function):
    """Multi-head attention from the QKV projection's output as batched matrix products in its dtype:
    qkv [N, L, 3d] (Q, K and V, each [N, L, heads, d/H]), an additive mask [N * heads, 1 or L, L] in
    qkv's dtype or None -> [N, L, d] (the heads side by side, as ``out_proj`` reads them).

    The softmax runs in fp32 inside PyTorch's kernel and is stored in qkv's dtype. The backward
    reuses the saved probabilities P: dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)) (FlashAttention's
    identity: rowsum(P * dP) = rowsum(dO * O); V and O centred over the tokens), dQ = dS K, dK = dS^T Q,
    laid out as d(qkv) in one copy, so no unbind, stack or permute is left for autograd. The (sample, head) pairs go
    through in chunks of about ``CHUNK_SCORES`` bytes of scores, so each chunk's [L, L] scores, mask,
    softmax and gradient stay in the core's cache between the products (10-15% faster than whole)."""

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        n, length, width = qkv.shape
        d = width // 3
        size, batch = d // heads, n * heads
        scale = size**-0.5
        chunk = max(1, CHUNK_SCORES // (length * length * qkv.element_size()))
        parts = qkv.view(n, length, 3, heads, size)
        q = torch.empty(n, heads, length, size, dtype=qkv.dtype, device=qkv.device)
        torch.mul(parts[:, :, 0].transpose(1, 2), scale, out=q)  # the scale folded into Q's copy
        q = q.view(batch, length, size)
        k_t = parts[:, :, 1].permute(0, 2, 3, 1).contiguous().view(batch, size, length)  # K^T [NH, d/H, L]
        v = parts[:, :, 2].transpose(1, 2).contiguous().view(batch, length, size)
        # V centred over the tokens, its mean added back to the output: P's rows sum to 1, so P V = P (V - mean)
        # + mean. The backward's dO V^T - rowsum(dO * O) then no longer cancels V's common part: with V offset
        # by a bias, that difference was mostly bf16 rounding (dQ and dK 8% off float64 at 16 standard deviations,
        # 3% now; the math attention's 4%).
        # Any constant per (sample, head) would do; the mean and the centring as products with a column of ones:
        # PyTorch's broadcasting subtraction in bf16 took 7 ms here, the products 0.4 ms.
        ones = qkv.new_ones(batch, length, 1)
        mean = torch.bmm(ones.transpose(1, 2), v).div_(length)  # [NH, 1, d/H]
        v = torch.baddbmm(v, ones, mean, alpha=-1)  # V - mean
        o = torch.empty_like(v)  # O - mean
        scores = qkv.new_empty(min(chunk, batch), length, length)  # one chunk's, reused
        probabilities = []  # [chunk, L, L] each, kept for the backward
        for i in range(0, batch, chunk):
            j = min(i + chunk, batch)
            s = torch.bmm(q[i:j], k_t[i:j], out=scores[: j - i])
            if mask is not None:
                s.add_(mask[i:j])
            p = torch.softmax(s, -1)  # fp32 inside the kernel, stored in qkv's dtype
            torch.bmm(p, v[i:j], out=o[i:j])
            probabilities.append(p)
        ctx.save_for_backward(q, k_t, v, o, *probabilities)
        ctx.heads, ctx.scale, ctx.chunk = heads, scale, chunk
        out = torch.baddbmm(o, ones, mean)  # O
        return out.view(n, heads, length, size).transpose(1, 2).reshape(n, length, d)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        q, k_t, v, o, *probabilities = ctx.saved_tensors
        heads, scale, chunk = ctx.heads, ctx.scale, ctx.chunk
        n, length, d = grad.shape
        size, batch = d // heads, n * heads
        g = grad.view(n, length, heads, size).transpose(1, 2).contiguous().view(batch, length, size)  # dO
        grads = q.new_empty(3, batch, length, size)  # dQ, dK, dV, each [NH, L, d/H]
        ds = q.new_empty(min(chunk, batch), length, length)  # one chunk's dS, reused
        for p, i in zip(probabilities, range(0, batch, chunk), strict=True):
            j = min(i + chunk, batch)
            delta = (g[i:j] * o[i:j]).sum(-1, keepdim=True)  # rowsum(dO * O) [c, L, 1], summed in fp32
            s = torch.bmm(g[i:j], v[i:j].transpose(1, 2), out=ds[: j - i]).sub_(delta).mul_(p)  # dS [c, L, L]
            torch.bmm(s, k_t[i:j].transpose(1, 2), out=grads[0, i:j])  # d(scaled Q)
            torch.bmm(s.transpose(1, 2), q[i:j], out=grads[1, i:j])
            torch.bmm(p.transpose(1, 2), g[i:j], out=grads[2, i:j])
        grads[0].mul_(scale)
        # [3, N, H, L, d/H] -> [N, L, 3, H, d/H]: the layout of d(qkv), one copy
        return grads.view(3, n, heads, length, size).permute(1, 3, 0, 2, 4).reshape(n, length, 3 * d), None, None


def batched_attention(qkv: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
    """``BatchedAttention`` for qkv [N, L, 3d] and an additive mask broadcastable to [N, heads, L, L] -> [N, L, d]."""
    n, length, _ = qkv.shape
    if mask is not None:  # [N, H, 1 or L, L] -> [NH, 1 or L, L], in qkv's dtype (-1e4 and -inf survive bf16)
        mask = mask.to(qkv.dtype).expand(n, heads, mask.shape[-2], length).reshape(n * heads, -1, length)
    with torch.autocast(qkv.device.type, enabled=False):  # every product in qkv's dtype, whatever autocast says
        return BatchedAttention.apply(qkv, mask, heads)


@functools.cache
def can_compile() -> bool:
    """Whether ``torch.compile`` can build CPU kernels here: inductor compiles them as Python extensions,
    so it needs a C++ compiler and Python's headers (slim images often have neither)."""
    compiler = any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "c++", "clang++"))
    return compiler and Path(sysconfig.get_path("include"), "Python.h").is_file()


def training_kernel(n: int, heads: int, queries: int, length: int, dtype: torch.dtype, device: torch.device) -> str:
    """The switched-on training attention for ``queries`` of ``length`` tokens: ``compiled``, ``batched`` or
    ``flash`` (see the module; the batched kernel was measured on a CPU, in bf16, for every token's query:
    on a GPU, in fp32 and for a subset of queries the flash kernel stays). Without a compiler
    (``can_compile``) nothing is compiled: the batched or the flash kernel."""
    if queries * length <= COMPILED_MAX_LENGTH**2 and can_compile():  # each (sample, head)'s scores within 32 x 32
        return "compiled"
    probabilities = n * heads * length * length * torch.finfo(dtype).bits // 8  # bytes one layer keeps
    low_precision = dtype in (torch.bfloat16, torch.float16)
    if device.type == "cpu" and low_precision and queries == length and probabilities <= BATCHED_MAX_SCORES:
        return "batched"
    return "flash"


def compile_attention(model: nn.Module) -> int:
    """Let the model's attention blocks train on the faster kernels (``training_kernel``: the compiled
    attention up to ``COMPILED_MAX_LENGTH`` tokens, the batched one for longer sequences in bf16 while
    their probabilities fit in ``BATCHED_MAX_SCORES``); returns how many blocks were switched."""
    blocks = [m for m in model.modules() if isinstance(m, SelfAttention)]
    for block in blocks:
        block.compiled = True
    return len(blocks)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameters (``in_proj_weight``
    [3d, d] holding Q, K and V, ``in_proj_bias``, ``out_proj``) and its initialisation, so
    checkpoints saved with ``nn.MultiheadAttention`` load unchanged; one fused QKV projection,
    then ``F.scaled_dot_product_attention``."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        if d % heads:
            raise ValueError(f"the width ({d}) must be a multiple of the heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.compiled = False  # the faster training kernels (see compile_attention)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        # nn.MultiheadAttention's order of draws (out_proj's default init, then Xavier for Q, K, V),
        # so a seed gives the same initial weights as before.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, queries: slice | None = None) -> torch.Tensor:
        """x [N, L, d]; mask: additive, broadcastable to [N, heads, L, L] (-inf on keys to ignore); queries: the
        positions whose outputs are wanted (all by default) -> [N, L or the queries' count, d]."""
        n, length, d = x.shape
        kv = None
        if queries is None:
            projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # qkv [N, L, 3d]
        else:  # keys and values from every token, queries from the wanted ones only
            projected = F.linear(x[:, queries], self.in_proj_weight[:d], self.in_proj_bias[:d])  # [N, Lq, d]
            kv = F.linear(x, self.in_proj_weight[d:], self.in_proj_bias[d:])  # [N, L, 2d]
        if self.training and self.dropout > 0:
            drop = dropkey_mask((n, self.heads, 1, length), self.dropout, torch.float32, x.device)  # [N, H, 1, L]
            mask = drop if mask is None else mask + drop
        kernel = "flash"
        if self.compiled and self.training and not torch.compiler.is_compiling():
            wanted = projected.shape[1]
            kernel = training_kernel(n, self.heads, wanted, length, projected.dtype, x.device)
        if kernel == "batched" and kv is None:
            return self.out_proj(batched_attention(projected, mask, self.heads))  # [N, L, d]
        q, k, v = split_heads(projected, kv, self.heads)  # [N, H, Lq or L, d/H]
        if kernel == "compiled":
            h = compiled_attention(q, k, v, mask)  # [N, H, Lq, d/H]
        elif q.dtype != torch.float32:  # bf16 autocast: the flash kernel in fp32 (see the module)
            with torch.autocast(x.device.type, enabled=False):
                h = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
        else:
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, H, Lq, d/H]
        return self.out_proj(h.transpose(1, 2).reshape(n, q.shape[2], d))  # -1 would fail for 0 rows


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LN(x)), then x + FFN(LN(x)) with a ReGLU feed-forward.

    ``mask`` (additive, broadcastable to [N, heads, L, L]) hides keys, e.g. the text kind's padding.
    ``queries`` keeps only those positions: the last block of a network whose head reads one token
    ([CLS] or the last step) computes that token's attention and feed-forward alone, the same numbers
    as the whole block's at that token (rtdl's FT-Transformer does the same). In the FT-Transformer on
    GSS (15 tokens, 3 layers) that is 1/4 of the blocks' products."""

    def __init__(
        self, d: int, heads: int, ffn_factor: float, attention_dropout: float, ffn_dropout: float, residual_dropout: float
    ):
        super().__init__()
        hidden = max(1, int(d * ffn_factor))
        self.attention_norm = nn.LayerNorm(d)
        self.attention = SelfAttention(d, heads, attention_dropout)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn_in = nn.Linear(d, 2 * hidden)
        self.ffn_dropout = Dropout(ffn_dropout)
        self.ffn_out = nn.Linear(hidden, d)
        self.residual_dropout = Dropout(residual_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, queries: slice | None = None) -> torch.Tensor:
        kept = x if queries is None else x[:, queries]
        x = kept + self.residual_dropout(self.attention(self.attention_norm(x), mask, queries))  # [N, L or Lq, d]
        value, gate = self.ffn_in(self.ffn_norm(x)).chunk(2, dim=-1)  # 2 x [N, L, hidden]
        h = self.ffn_out(self.ffn_dropout(value * torch.relu(gate)))
        return x + self.residual_dropout(h)


def encode(
    blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor | None = None, read: slice | None = None
) -> torch.Tensor:
    """x [N, L, d] through the blocks; ``read``: the only positions the head reads ([CLS], the last step),
    which the last block then computes alone (``TransformerBlock``'s ``queries``) -> [N, L or the read's count, d]."""
    for i, block in enumerate(blocks):
        x = block(x, mask, queries=read if i == len(blocks) - 1 else None)
    return x
