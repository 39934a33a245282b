"""Tabular networks: the MLP with embeddings or one-hot categories, and the FT-Transformer (one token per feature)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from pipeline.models.blocks import FIRST, TransformerBlock, encode
from pipeline.models.dropout import Dropout


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

    family: ClassVar[str] = "mlp"

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

    family: ClassVar[str] = "ft_transformer"

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
        embeddings: list[nn.Embedding] = []
        for cardinality in config.cardinalities:
            if config.categorical_encoding == "onehot":
                # One-hot as a frozen identity embedding: the same Gather in ONNX, no sparse ops.
                embedding = nn.Embedding(cardinality, cardinality)
                embedding.weight.data = torch.eye(cardinality)
                embedding.weight.requires_grad_(False)
            else:
                embedding = nn.Embedding(cardinality, embedding_size(cardinality, config.embedding_dim))
            embeddings.append(embedding)
        self.embeddings = nn.ModuleList(embeddings)
        width = config.n_numeric + sum(e.embedding_dim for e in embeddings)
        layers: list[nn.Module] = []
        for hidden in config.hidden:
            layers.append(nn.Linear(width, hidden, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(Dropout(config.dropout))
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.n_classes)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """x_num: float [N, n_numeric], x_cat: int64 [N, n_categorical] -> logits [N, n_classes]."""
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.head(self.body(torch.cat(parts, dim=1)))


class FeatureTokenizer(nn.Module):
    """Numeric feature j -> x_j * W_j + b_j; categorical feature c -> E_c[x_c] + b_c: tokens [N, F + C, d]."""

    categorical_bias: nn.Parameter
    category_offsets: torch.Tensor  # a buffer: where each column's rows start in the shared table

    def __init__(self, n_numeric: int, cardinalities: tuple[int, ...], d_token: int):
        super().__init__()
        self.numeric_weight = nn.Parameter(torch.empty(n_numeric, d_token))
        self.numeric_bias = nn.Parameter(torch.empty(n_numeric, d_token))
        # One table for all categorical columns, each column offset into its own range of rows.
        offsets = (
            torch.tensor([0, *cardinalities[:-1]], dtype=torch.int64).cumsum(0)
            if cardinalities
            else torch.zeros(0, dtype=torch.int64)
        )
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


class FTTransformer(nn.Module):
    """Feature tokens + [CLS] -> pre-norm Transformer blocks -> LayerNorm, ReLU, Linear on [CLS] -> logits."""

    def __init__(self, config: FTTransformerConfig):
        super().__init__()
        if config.d_token % config.heads:
            raise ValueError(f"train.model.d_token ({config.d_token}) must be a multiple of heads ({config.heads})")
        self.config = config
        self.tokenizer = FeatureTokenizer(config.n_numeric, config.cardinalities, config.d_token)
        self.cls = nn.Parameter(torch.empty(1, 1, config.d_token))
        nn.init.uniform_(self.cls, -(config.d_token**-0.5), config.d_token**-0.5)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                config.d_token,
                config.heads,
                config.ffn_factor,
                config.attention_dropout,
                config.ffn_dropout,
                config.residual_dropout,
            )
            for _ in range(config.layers)
        )
        self.head = nn.Sequential(nn.LayerNorm(config.d_token), nn.ReLU(), nn.Linear(config.d_token, config.n_classes))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        """x_num: float [N, n_numeric], x_cat: int64 [N, n_categorical] -> logits [N, n_classes]."""
        tokens = self.tokenizer(x_num, x_cat)
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # [N, 1 + F + C, d]
        x = encode(self.blocks, x, read=FIRST)  # the head reads [CLS] alone
        return self.head(x[:, 0])
