"""Text networks over token ids [N, L] (int64; 0 = padding, position 0 = [CLS]): a Transformer encoder
and a (bi-)LSTM, both trained from scratch.

Both are exact under padding: a text's output does not depend on how many padding ids follow it (the
ONNX graph pads a batch to its longest text, training pads every text to ``max_length``), because
attention masks the padding keys and the LSTMs pool only over the text's own positions, the backward
one reading each text reversed within its own length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from pipeline.models.blocks import FIRST, TransformerBlock, encode
from pipeline.models.dropout import Dropout
from pipeline.models.sequence import sinusoidal_positions

PAD_ID = 0


@dataclass(frozen=True)
class TextTransformerConfig:
    vocab_size: int  # ids 0..vocab_size-1, special ids included
    n_classes: int
    max_length: int  # the positional table's rows
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ffn_factor: float = 2.0
    dropout: float = 0.1
    pooling: str = "cls"  # cls | mean

    family: ClassVar[str] = "text_transformer"

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> TextTransformerConfig:
        return cls(**{k: v for k, v in data.items() if k != "family"})


@dataclass(frozen=True)
class TextLSTMConfig:
    vocab_size: int
    n_classes: int
    embedding_dim: int = 64
    hidden: int = 64
    dropout: float = 0.1
    bidirectional: bool = True

    family: ClassVar[str] = "text_lstm"

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> TextLSTMConfig:
        return cls(**{k: v for k, v in data.items() if k != "family"})


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h [N, L, D] over the positions where mask [N, L] is true (every text has [CLS]: never empty)."""
    weights = mask.unsqueeze(-1).to(h.dtype)
    return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class TextTransformer(nn.Module):
    """ids [N, L] -> embeddings + sinusoidal positions -> pre-norm blocks (padding keys masked) -> LayerNorm -> [CLS] or mean -> logits."""

    positions: torch.Tensor  # [max_length, d_model], a buffer

    def __init__(self, config: TextTransformerConfig):
        super().__init__()
        if config.d_model % config.heads:
            raise ValueError(f"train.model.d_model ({config.d_model}) must be a multiple of heads ({config.heads})")
        if config.pooling not in ("cls", "mean"):
            raise ValueError(f"unknown pooling {config.pooling!r}; choose cls or mean")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=PAD_ID)
        self.register_buffer("positions", sinusoidal_positions(config.max_length, config.d_model), persistent=False)
        self.dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.heads, config.ffn_factor, config.dropout, config.dropout, config.dropout)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        padding = ids == PAD_ID  # [N, L]; position 0 is [CLS], never padding, so no row is all masked
        # a float mask (-inf on padding) keeps the exported graph free of boolean-mask quirks
        mask = torch.zeros_like(ids, dtype=torch.float32).masked_fill(padding, float("-inf"))[:, None, None, :]  # [N, 1, 1, L]
        h = self.dropout(self.embedding(ids) + self.positions[: ids.shape[1]])  # [N, L, d]
        h = encode(self.blocks, h, mask, read=FIRST if self.config.pooling == "cls" else None)
        h = self.norm(h)
        pooled = h[:, 0] if self.config.pooling == "cls" else masked_mean(h, ~padding)  # [N, d]
        return self.head(pooled)


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row of x [N, L, D] with its first lengths[n] steps reversed and the padding left in place."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # [1, L]
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)  # [N, L]
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class TextLSTM(nn.Module):
    """ids [N, L] -> embeddings -> LSTM (and a backward LSTM over each text reversed within its length)
    -> mean over the text's positions -> logits."""

    def __init__(self, config: TextLSTMConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        self.dropout = Dropout(config.dropout)
        self.forward_lstm = nn.LSTM(config.embedding_dim, config.hidden, batch_first=True)
        # nn.LSTM(bidirectional=True) would read the padding first in its backward pass, so the answer
        # would depend on the batch's longest text; this one starts each text at its own last token.
        self.backward_lstm = nn.LSTM(config.embedding_dim, config.hidden, batch_first=True) if config.bidirectional else None
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.hidden, config.n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        valid = ids != PAD_ID  # [N, L]
        x = self.dropout(self.embedding(ids))  # [N, L, E]
        forward_states, _ = self.forward_lstm(x)  # [N, L, H]: step t has read only steps <= t
        pooled = [masked_mean(forward_states, valid)]
        if self.backward_lstm is not None:
            lengths = valid.sum(dim=1)
            backward_states, _ = self.backward_lstm(reverse_within_length(x, lengths))
            pooled.append(masked_mean(backward_states, valid))
        return self.head(self.dropout(torch.cat(pooled, dim=1)))
