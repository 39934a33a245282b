"""Sequence networks over one window [N, L, F]: LSTM/GRU (last hidden state) and a Transformer encoder."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from pipeline.models.blocks import LAST, TransformerBlock, encode


@dataclass(frozen=True)
class RNNConfig:
    """An LSTM or GRU reading a window step by step; its last hidden state feeds a linear head."""

    input_size: int
    n_outputs: int  # forecast steps (regression) or classes
    cell: str = "lstm"  # lstm | gru
    hidden: int = 64
    layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False

    family: ClassVar[str] = "rnn"

    @property
    def n_classes(self) -> int:  # the training loop's name for the output width of a classifier
        return self.n_outputs

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> RNNConfig:
        return cls(**{k: v for k, v in data.items() if k != "family"})


@dataclass(frozen=True)
class SeqTransformerConfig:
    """A Transformer encoder over the time steps of a window (the FT-Transformer's pre-norm blocks)."""

    input_size: int
    n_outputs: int
    lookback: int  # the learned positional table has one row per step
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ffn_factor: float = 2.0
    dropout: float = 0.1
    positional: str = "sinusoidal"  # sinusoidal | learned
    pooling: str = "last"  # last | mean

    family: ClassVar[str] = "seq_transformer"

    @property
    def n_classes(self) -> int:
        return self.n_outputs

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> SeqTransformerConfig:
        return cls(**{k: v for k, v in data.items() if k != "family"})


class SequenceRNN(nn.Module):
    """Window [N, L, F] -> LSTM/GRU -> the last layer's final hidden state(s) -> Linear -> [N, n_outputs]."""

    def __init__(self, config: RNNConfig):
        super().__init__()
        if config.cell not in ("lstm", "gru"):
            raise ValueError(f"unknown recurrent cell {config.cell!r}; choose lstm or gru")
        self.config = config
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = rnn(
            config.input_size,
            config.hidden,
            config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        directions = 2 if config.bidirectional else 1
        self.head = nn.Linear(directions * config.hidden, config.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        h_n = state[0] if self.config.cell == "lstm" else state  # [layers * directions, N, hidden]
        directions = 2 if self.config.bidirectional else 1
        last = h_n[-directions:].transpose(0, 1).reshape(x.shape[0], -1)  # [N, directions * hidden]
        return self.head(last)


def sinusoidal_positions(length: int, d: int) -> torch.Tensor:
    """Vaswani et al.'s fixed encoding [length, d]: sin on even, cos on odd dimensions."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(length, d)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d // 2])
    return table


class SequenceTransformer(nn.Module):
    """Window [N, L, F] -> Linear to d_model + positions -> pre-norm blocks -> LayerNorm -> pool -> Linear.

    The blocks are the FT-Transformer's own (``TransformerBlock``): plain modules that the legacy
    ONNX exporter traces as is, where nn.TransformerEncoder's fused fast path can get in the way.
    No causal mask: every step of the window is in the past of the forecast.
    """

    def __init__(self, config: SeqTransformerConfig):
        super().__init__()
        if config.d_model % config.heads:
            raise ValueError(f"train.model.d_model ({config.d_model}) must be a multiple of heads ({config.heads})")
        if config.positional not in ("sinusoidal", "learned") or config.pooling not in ("last", "mean"):
            raise ValueError(f"unknown positional {config.positional!r} or pooling {config.pooling!r}")
        self.config = config
        self.project = nn.Linear(config.input_size, config.d_model)
        if config.positional == "learned":
            self.positions = nn.Parameter(torch.zeros(config.lookback, config.d_model))
            nn.init.normal_(self.positions, std=0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(config.lookback, config.d_model), persistent=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_model, config.heads, config.ffn_factor, config.dropout, config.dropout, config.dropout)
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x) + self.positions[: x.shape[1]]  # [N, L, d]
        h = encode(self.blocks, h, read=LAST if self.config.pooling == "last" else None)
        h = self.norm(h)
        pooled = h[:, -1] if self.config.pooling == "last" else h.mean(dim=1)  # [N, d]
        return self.head(pooled)
