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

Under bf16 autocast the projections and the feed-forward run in bf16 (AMX tiles on this CPU) but
the flash kernel gets fp32 inputs: at head sizes 8-16 it is 2-8x slower in bf16 than in fp32 here.

Short sequences (the FT-Transformer's feature tokens: L = 15 on GSS) spend most of the flash
kernel's time on per-(sample, head) overhead: [512, 8, 15, 8] costs 40-55 ms forward + backward,
three quarters of the training step under bf16. ``compile_attention`` switches such blocks to a
``torch.compile``d math attention (QK^T, fp32 softmax, PV in the input's dtype), one fused C++
kernel: 11-15 ms. Only in training; eval and the exported graph keep
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.dropout import Dropout, dropkey_mask

COMPILED_MAX_LENGTH = 32  # sequences up to this long use the compiled attention when switched on


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(QK^T / sqrt(d) + mask) V for q, k, v [N, H, L, d/H], the softmax in fp32 -> [N, H, L, d/H]."""
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5  # [N, H, L, L]
    if mask is not None:
        scores = scores + mask
    return torch.matmul(torch.softmax(scores, -1).to(v.dtype), v)


_compiled_attention = None


def compiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``math_attention`` through ``torch.compile`` (compiled on the first call, shared by every block)."""
    global _compiled_attention
    if _compiled_attention is None:
        _compiled_attention = torch.compile(math_attention)
    return _compiled_attention(q, k, v, mask)


def compile_attention(model: nn.Module) -> int:
    """Let the model's attention blocks use ``compiled_attention`` in training on sequences up to
    ``COMPILED_MAX_LENGTH`` long; returns how many blocks were switched."""
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
        self.compiled = False  # see compile_attention
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        # nn.MultiheadAttention's order of draws (out_proj's default init, then Xavier for Q, K, V),
        # so a seed gives the same initial weights as before.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, L, d]; mask: additive, broadcastable to [N, heads, L, L] (-inf on keys to ignore) -> [N, L, d]."""
        n, length, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # [N, L, 3d]
        q, k, v = qkv.view(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [N, H, L, d/H]
        if self.training and self.dropout > 0:
            drop = dropkey_mask((n, self.heads, 1, length), self.dropout, torch.float32, x.device)  # [N, H, 1, L]
            mask = drop if mask is None else mask + drop
        if self.compiled and self.training and length <= COMPILED_MAX_LENGTH and not torch.compiler.is_compiling():
            h = compiled_attention(q, k, v, mask)  # [N, H, L, d/H]
        elif q.dtype != torch.float32:  # bf16 autocast: the flash kernel in fp32 (see the module)
            with torch.autocast(x.device.type, enabled=False):
                h = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask).to(q.dtype)
        else:
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [N, H, L, d/H]
        return self.out_proj(h.transpose(1, 2).reshape(n, length, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LN(x)), then x + FFN(LN(x)) with a ReGLU feed-forward.

    ``mask`` (additive, broadcastable to [N, heads, L, L]) hides keys, e.g. the text kind's padding."""

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

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.residual_dropout(self.attention(self.attention_norm(x), mask))  # [N, L, d]
        value, gate = self.ffn_in(self.ffn_norm(x)).chunk(2, dim=-1)  # 2 x [N, L, hidden]
        h = self.ffn_out(self.ffn_dropout(value * torch.relu(gate)))
        return x + self.residual_dropout(h)
