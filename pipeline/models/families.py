"""Model families: a network is rebuilt from its config, which every checkpoint stores as a dict with a ``family`` key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from pipeline.core.errors import DataError
from pipeline.models.cnn import CNNConfig, ImageCNN
from pipeline.models.sequence import RNNConfig, SeqTransformerConfig, SequenceRNN, SequenceTransformer
from pipeline.models.tabular import FTTransformer, FTTransformerConfig, ModelConfig, TabularMLP
from pipeline.models.text import TextLSTM, TextLSTMConfig, TextTransformer, TextTransformerConfig


class NetworkConfig(Protocol):
    """What every network config provides: its family name and a plain-dict round trip for checkpoints."""

    family: ClassVar[str]

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig: ...


# family name -> (config class, network class); checkpoints store the family with the config.
FAMILIES: dict[str, tuple[type[NetworkConfig], type[nn.Module]]] = {
    ModelConfig.family: (ModelConfig, TabularMLP),
    FTTransformerConfig.family: (FTTransformerConfig, FTTransformer),
    CNNConfig.family: (CNNConfig, ImageCNN),
    RNNConfig.family: (RNNConfig, SequenceRNN),
    SeqTransformerConfig.family: (SeqTransformerConfig, SequenceTransformer),
    TextTransformerConfig.family: (TextTransformerConfig, TextTransformer),
    TextLSTMConfig.family: (TextLSTMConfig, TextLSTM),
}


def config_from_dict(data: dict[str, Any]) -> NetworkConfig:
    """The config of a saved model; checkpoints from before families existed are MLPs."""
    family = data.get("family", ModelConfig.family)
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family][0].from_dict(data)


def build_model(config: NetworkConfig) -> nn.Module:
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
    broken = [
        name for name, tensor in model.state_dict().items() if tensor.is_floating_point() and not tensor.isfinite().all()
    ]
    if broken:  # a diverged run's weights: evaluating or exporting them would publish nonsense
        raise DataError(
            f"{path}: weight(s) {broken[:3]} hold NaN or infinity (a diverged training); retrain with a lower train.lr"
        )
    return model.eval()
