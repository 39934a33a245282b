"""Building blocks shared by the Transformer families: the pre-norm encoder block."""

from __future__ import annotations

import torch
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LN(x)), then x + FFN(LN(x)) with a ReGLU feed-forward."""

    def __init__(
        self, d: int, heads: int, ffn_factor: float, attention_dropout: float, ffn_dropout: float, residual_dropout: float
    ):
        super().__init__()
        hidden = max(1, int(d * ffn_factor))
        self.attention_norm = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, heads, dropout=attention_dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn_in = nn.Linear(d, 2 * hidden)
        self.ffn_dropout = nn.Dropout(ffn_dropout)
        self.ffn_out = nn.Linear(hidden, d)
        self.residual_dropout = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attention_norm(x)
        h, _ = self.attention(h, h, h, need_weights=False)
        x = x + self.residual_dropout(h)
        value, gate = self.ffn_in(self.ffn_norm(x)).chunk(2, dim=-1)
        h = self.ffn_out(self.ffn_dropout(value * torch.relu(gate)))
        return x + self.residual_dropout(h)
