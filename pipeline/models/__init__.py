"""Neural networks. A model is rebuilt from its config (saved in every checkpoint as a dict with a
``family`` key): ``config_from_dict`` -> ``build_model``.

Tabular families take ``(x_num float32 [N, F], x_cat int64 [N, C])`` and return logits
``[N, n_classes]``: ``mlp`` (TabularMLP) and ``ft_transformer`` (FTTransformer). The image family
``cnn`` (ImageCNN) takes normalised images ``float32 [N, C, H, W]``.
Sequence families take one window ``x float32 [N, L, F]`` and return ``[N, n_outputs]`` (forecast
steps or class logits): ``rnn`` (SequenceRNN: LSTM or GRU) and ``seq_transformer`` (SequenceTransformer).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core.errors import DataError


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored inside each checkpoint."""

    n_numeric: int
    cardinalities: tuple[int, ...]
    n_classes: int
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = 0.1
    batch_norm: bool = True
    categorical_encoding: str = "embedding"  # embedding | onehot
    embedding_dim: int | None = None

    family = "mlp"

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        return cls(**{**data, "cardinalities": tuple(data["cardinalities"]), "hidden": tuple(data["hidden"])})


@dataclass(frozen=True)
class FTTransformerConfig:
    """FT-Transformer (Gorishniy et al., 2021): every feature becomes a token, a [CLS] token reads them."""

    n_numeric: int
    cardinalities: tuple[int, ...]
    n_classes: int
    d_token: int = 64
    layers: int = 3
    heads: int = 8
    ffn_factor: float = 4 / 3
    attention_dropout: float = 0.2
    ffn_dropout: float = 0.1
    residual_dropout: float = 0.0

    family = "ft_transformer"

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> FTTransformerConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        return cls(**{**data, "cardinalities": tuple(data["cardinalities"])})


def embedding_size(cardinality: int, fixed: int | None) -> int:
    """fast.ai's rule of thumb, capped at 32, unless a size is fixed in params."""
    if fixed is not None:
        return fixed
    return int(min(32, round(1.6 * cardinality**0.56)))


class TabularMLP(nn.Module):
    """Categorical embeddings (or one-hot) + numeric features -> [Linear, BatchNorm, ReLU, Dropout]* -> logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.ModuleList()
        for cardinality in config.cardinalities:
            if config.categorical_encoding == "onehot":
                # One-hot as a frozen identity embedding: the same Gather in ONNX, no sparse ops.
                embedding = nn.Embedding(cardinality, cardinality)
                embedding.weight.data = torch.eye(cardinality)
                embedding.weight.requires_grad_(False)
            else:
                embedding = nn.Embedding(cardinality, embedding_size(cardinality, config.embedding_dim))
            self.embeddings.append(embedding)
        width = config.n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for hidden in config.hidden:
            layers.append(nn.Linear(width, hidden, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.n_classes)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """x_num: float [N, n_numeric], x_cat: int64 [N, n_categorical] -> logits [N, n_classes]."""
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))


class FeatureTokenizer(nn.Module):
    """Numeric feature j -> x_j * W_j + b_j; categorical feature c -> E_c[x_c] + b_c: tokens [N, F + C, d]."""

    def __init__(self, n_numeric: int, cardinalities: tuple[int, ...], d_token: int):
        super().__init__()
        self.numeric_weight = nn.Parameter(torch.empty(n_numeric, d_token))
        self.numeric_bias = nn.Parameter(torch.empty(n_numeric, d_token))
        # One table for all categorical columns, each column offset into its own range of rows.
        offsets = torch.tensor([0, *cardinalities[:-1]], dtype=torch.int64).cumsum(0) if cardinalities else torch.zeros(0, dtype=torch.int64)
        self.register_buffer("category_offsets", offsets, persistent=False)
        self.categories = nn.Embedding(max(1, sum(cardinalities)), d_token)
        self.categorical_bias = nn.Parameter(torch.empty(len(cardinalities), d_token))
        bound = d_token**-0.5  # the paper's uniform(-1/sqrt(d), 1/sqrt(d)) initialisation
        for parameter in (self.numeric_weight, self.numeric_bias, self.categories.weight, self.categorical_bias):
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        tokens = x_num.unsqueeze(-1) * self.numeric_weight + self.numeric_bias  # [N, F, d]
        if self.categorical_bias.shape[0]:
            categorical = self.categories(x_cat + self.category_offsets) + self.categorical_bias  # [N, C, d]
            tokens = torch.cat([tokens, categorical], dim=1)
        return tokens


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LN(x)), then x + FFN(LN(x)) with a ReGLU feed-forward."""

    def __init__(self, d: int, heads: int, ffn_factor: float, attention_dropout: float, ffn_dropout: float, residual_dropout: float):
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


class FTTransformer(nn.Module):
    """Feature tokens + [CLS] -> pre-norm Transformer blocks -> LayerNorm, ReLU, Linear on [CLS] -> logits."""

    def __init__(self, config: FTTransformerConfig):
        super().__init__()
        if config.d_token % config.heads:
            raise ValueError(f"train.transformer.d_token ({config.d_token}) must be a multiple of heads ({config.heads})")
        self.config = config
        self.tokenizer = FeatureTokenizer(config.n_numeric, config.cardinalities, config.d_token)
        self.cls = nn.Parameter(torch.empty(1, 1, config.d_token))
        nn.init.uniform_(self.cls, -(config.d_token**-0.5), config.d_token**-0.5)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.d_token, config.heads, config.ffn_factor, config.attention_dropout, config.ffn_dropout, config.residual_dropout)
            for _ in range(config.layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(config.d_token), nn.ReLU(), nn.Linear(config.d_token, config.n_classes))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """x_num: float [N, n_numeric], x_cat: int64 [N, n_categorical] -> logits [N, n_classes]."""
        tokens = self.tokenizer(x_num, x_cat)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # [N, 1 + F + C, d]
        for block in self.blocks:
            x = block(x)
        return self.head(x[:, 0])


@dataclass(frozen=True)
class CNNConfig:
    """A small CNN for images of one fixed size; ``channels`` gives one stage per entry."""

    in_channels: int
    height: int
    width: int
    n_classes: int
    channels: tuple[int, ...] = (32, 64, 128)
    residual: bool = False
    dropout: float = 0.2
    batch_norm: bool = True
    # NHWC memory order for weights and activations (faster convolutions on GPUs); the maths is unchanged.
    channels_last: bool = False

    family = "cnn"

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> CNNConfig:
        data = {k: v for k, v in data.items() if k != "family"}
        return cls(**{**data, "channels": tuple(data["channels"])})


def conv_bn(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    """3x3 convolution (same size) and batch norm, which makes the convolution's bias redundant."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(c_out)] if batch_norm else [conv]


class ResidualBlock(nn.Module):
    """x + conv-BN-ReLU-conv-BN(x), then ReLU (He et al., 2016), at a constant width and size."""

    def __init__(self, channels: int, batch_norm: bool):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels, channels, batch_norm), nn.ReLU(), *conv_bn(channels, channels, batch_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


class ImageCNN(nn.Module):
    """Per stage: conv-BN-ReLU, an optional residual block, 2x2 max pooling (while the feature map is
    at least 2x2); then global average pooling, dropout and a linear head."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in, h, w = config.in_channels, config.height, config.width
        for c_out in config.channels:
            layers += [*conv_bn(c_in, c_out, config.batch_norm), nn.ReLU()]
            if config.residual:
                layers.append(ResidualBlock(c_out, config.batch_norm))
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(c_in, config.n_classes)
        if config.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: float [N, C, H, W], normalised -> logits [N, n_classes]."""
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        features = self.body(image).mean(dim=(2, 3))  # global average pooling: [N, C_last]
        return self.head(self.dropout(features))


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

    family = "rnn"

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

    family = "seq_transformer"

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
            config.input_size, config.hidden, config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0, bidirectional=config.bidirectional,
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
            raise ValueError(f"train.seq_transformer.d_model ({config.d_model}) must be a multiple of heads ({config.heads})")
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
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        pooled = h[:, -1] if self.config.pooling == "last" else h.mean(dim=1)  # [N, d]
        return self.head(pooled)


# family name -> (config class, network class); checkpoints store the family with the config.
FAMILIES: dict[str, tuple[type, type[nn.Module]]] = {
    ModelConfig.family: (ModelConfig, TabularMLP),
    FTTransformerConfig.family: (FTTransformerConfig, FTTransformer),
    CNNConfig.family: (CNNConfig, ImageCNN),
    RNNConfig.family: (RNNConfig, SequenceRNN),
    SeqTransformerConfig.family: (SeqTransformerConfig, SequenceTransformer),
}


def config_from_dict(data: dict[str, Any]):
    """The config of a saved model; checkpoints from before families existed are MLPs."""
    family = data.get("family", ModelConfig.family)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family][0].from_dict(data)


def build_model(config) -> nn.Module:
    """A freshly initialised network for ``config`` (any family's config)."""
    return FAMILIES[config.family][1](config)


def penalised_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Weights that L1 applies to: linear and embedding weights, not biases or batch-norm scales."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]


def load_model(path: str | Path) -> torch.nn.Module:
    """Rebuild the network from its self-describing checkpoint (tensors and plain values only)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: model checkpoint not found (run the train stage first: dvc repro)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(config_from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()
