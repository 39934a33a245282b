"""The network section ``train.model``, one variant per architecture (the ``architecture`` key selects it).

Each variant holds only its own keys; which architectures fit which data kind is checked when the
whole file is validated (``pipeline.params.Params``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.params.base import Section


class MLPParams(Section):
    """Tabular MLP: embeddings (or one-hot) for categories, then Linear-BN-ReLU-Dropout blocks."""

    architecture: Literal["mlp"]
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    batch_norm: bool = True
    categorical_encoding: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int | None = Field(default=None, ge=1)  # null: min(32, 1.6 * cardinality^0.56)

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if any(width < 1 for width in hidden):
            raise ValueError(f"every layer width must be >= 1, got {list(hidden)}")
        return hidden


class FTTransformerParams(Section):
    """The FT-Transformer: one token per feature, a [CLS] token reads them."""

    architecture: Literal["ft_transformer"]
    d_token: int = Field(default=64, ge=8)
    layers: int = Field(default=3, ge=1)
    heads: int = Field(default=8, ge=1)
    ffn_factor: float = Field(default=4 / 3, gt=0)
    # DropKey: the share of keys each head ignores for a sample while training (before the softmax, so the
    # fused attention kernel still runs); not a dropout of the attention weights after it.
    attention_dropout: float = Field(default=0.2, ge=0, lt=1)
    ffn_dropout: float = Field(default=0.1, ge=0, lt=1)
    residual_dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> FTTransformerParams:
        if self.d_token % self.heads:
            raise ValueError(f"train.model.d_token ({self.d_token}) must be a multiple of heads ({self.heads})")
        return self


class CNNParams(Section):
    """Per stage conv-BN-ReLU, an optional residual block and 2x2 max pooling; global average pooling, dropout, a head."""

    architecture: Literal["cnn"]
    channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry
    residual: bool = False
    dropout: float = Field(default=0.2, ge=0, lt=1)
    batch_norm: bool = True
    channels_last: bool = False  # weights and activations in NHWC memory order (faster convolutions on GPUs)

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, channels: tuple[int, ...]) -> tuple[int, ...]:
        if not channels or any(width < 1 for width in channels):
            raise ValueError(f"needs at least one stage and every width >= 1, got {list(channels)}")
        return channels


class RNNParams(Section):
    """LSTM or GRU over a window; the last hidden state feeds a linear head."""

    architecture: Literal["lstm", "gru"]
    hidden: int = Field(default=64, ge=1)
    layers: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)  # between stacked layers
    bidirectional: bool = False


class SeqTransformerParams(Section):
    """A Transformer encoder over the time steps of a window (pre-norm blocks as in the FT-Transformer)."""

    architecture: Literal["seq_transformer"]
    d_model: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    ffn_factor: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    positional: Literal["learned", "sinusoidal"] = "sinusoidal"
    pooling: Literal["last", "mean"] = "last"

    @model_validator(mode="after")
    def _heads_divide(self) -> SeqTransformerParams:
        if self.d_model % self.heads:
            raise ValueError(f"train.model.d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self


class TextTransformerParams(Section):
    """Text: token embeddings + positions -> pre-norm Transformer blocks (padding masked) -> [CLS] or mean -> head."""

    architecture: Literal["text_transformer"]
    d_model: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    ffn_factor: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    pooling: Literal["cls", "mean"] = "cls"

    @model_validator(mode="after")
    def _heads_divide(self) -> TextTransformerParams:
        if self.d_model % self.heads:
            raise ValueError(f"train.model.d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self


class TextLSTMParams(Section):
    """Text: token embeddings -> LSTM (bidirectional: a second LSTM reads each text backwards) -> masked mean -> head."""

    architecture: Literal["text_lstm"]
    embedding_dim: int = Field(default=64, ge=1)
    hidden: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)  # on the embeddings and the pooled state
    bidirectional: bool = True


ModelParams = Annotated[
    MLPParams | FTTransformerParams | CNNParams | RNNParams | SeqTransformerParams | TextTransformerParams | TextLSTMParams,
    Field(discriminator="architecture"),
]

# The architectures each data kind can train (checked against ingest.kind when params load).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "tabular": ("mlp", "ft_transformer"),
    "image": ("cnn",),
    "sequence": ("lstm", "gru", "seq_transformer"),
    "text": ("text_transformer", "text_lstm"),
}
