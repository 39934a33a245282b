"""Neural networks. A model is rebuilt from its ``ModelConfig`` (saved in every checkpoint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**{**data, "cardinalities": tuple(data["cardinalities"]), "hidden": tuple(data["hidden"])})


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


def build_model(config: ModelConfig) -> TabularMLP:
    return TabularMLP(config)


def penalised_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Weights that L1 applies to: linear and embedding weights, not biases or batch-norm scales."""
    return [p for name, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
