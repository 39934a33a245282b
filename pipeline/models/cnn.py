"""The image CNN: conv-BN-ReLU stages with optional residual blocks, global average pooling, a linear head."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn


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

    family: ClassVar[str] = "cnn"

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
        self.body = nn.Sequential(
            *conv_bn(channels, channels, batch_norm), nn.ReLU(), *conv_bn(channels, channels, batch_norm)
        )

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
            # Module.to accepts memory_format; torch's type stubs do not list it.
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: float [N, C, H, W], normalised -> logits [N, n_classes]."""
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        features = self.body(image).mean(dim=(2, 3))  # global average pooling: [N, C_last]
        return self.head(self.dropout(features))
