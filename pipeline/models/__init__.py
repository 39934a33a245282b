"""Neural networks. A model is rebuilt from its config (saved in every checkpoint as a dict with a
``family`` key): ``config_from_dict`` -> ``build_model``.

Tabular families take ``(x_num float32 [N, F], x_cat int64 [N, C])`` and return logits
``[N, n_classes]``: ``mlp`` (TabularMLP) and ``ft_transformer`` (FTTransformer). The image family
``cnn`` (ImageCNN) takes normalised images ``float32 [N, C, H, W]``.
Sequence families take one window ``x float32 [N, L, F]`` and return ``[N, n_outputs]`` (forecast
steps or class logits): ``rnn`` (SequenceRNN: LSTM or GRU) and ``seq_transformer`` (SequenceTransformer).
Text families take token ids ``int64 [N, L]`` (0 = padding, [CLS] first) and return class logits:
``text_transformer`` (TextTransformer) and ``text_lstm`` (TextLSTM).
"""

from __future__ import annotations

from pipeline.models.cnn import CNNConfig, ImageCNN
from pipeline.models.families import FAMILIES, NetworkConfig, build_model, config_from_dict, load_model, penalised_parameters
from pipeline.models.sequence import RNNConfig, SeqTransformerConfig, SequenceRNN, SequenceTransformer
from pipeline.models.tabular import FTTransformer, FTTransformerConfig, ModelConfig, TabularMLP
from pipeline.models.text import TextLSTM, TextLSTMConfig, TextTransformer, TextTransformerConfig

__all__ = [
    "FAMILIES",
    "CNNConfig",
    "FTTransformer",
    "FTTransformerConfig",
    "ImageCNN",
    "ModelConfig",
    "NetworkConfig",
    "RNNConfig",
    "SeqTransformerConfig",
    "SequenceRNN",
    "SequenceTransformer",
    "TabularMLP",
    "TextLSTM",
    "TextLSTMConfig",
    "TextTransformer",
    "TextTransformerConfig",
    "build_model",
    "config_from_dict",
    "load_model",
    "penalised_parameters",
]
