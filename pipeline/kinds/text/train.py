"""Text prepare: fit the tokeniser on the real training texts, encode the splits as ids, size the network.

Inputs:  ``paths.split`` (train, val, schema), ``paths.augmented``/train.parquet
Outputs: the tokeniser (saved by the train stage at ``paths.preprocessor``)
Params:  ``features``, ``train``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import ParamsError
from pipeline.core.io import split_file
from pipeline.engine import Prepared, Tensors, keeps_encoder
from pipeline.kinds.text import tokenizer as tokenizer_module
from pipeline.kinds.text.data import TextSchema, read_split, read_text_schema
from pipeline.kinds.text.tokenizer import TextTokenizer, label_codes
from pipeline.models import TextLSTMConfig, TextTransformerConfig
from pipeline.params import Paths, TextFeatures, TextLSTMParams, TextTransformerParams, TrainParams

TEXT_ARCHITECTURES = ("text_transformer", "text_lstm")


def text_config(cfg: TrainParams, tokenizer: TextTokenizer) -> TextTransformerConfig | TextLSTMConfig:
    """The network ``train.model`` describes, sized for the vocabulary, the length and the classes."""
    model = cfg.model
    vocab_size, n_classes = tokenizer.vocab_size, len(tokenizer.classes)
    if isinstance(model, TextTransformerParams):
        return TextTransformerConfig(vocab_size, n_classes, tokenizer.max_length, **model.model_dump(exclude={"architecture"}))
    if isinstance(model, TextLSTMParams):
        return TextLSTMConfig(vocab_size, n_classes, **model.model_dump(exclude={"architecture"}))
    raise ParamsError(
        f"train.model.architecture = {model.architecture!r} is not a text model; choose one of {list(TEXT_ARCHITECTURES)}"
    )


def encode(texts: list[str], labels: list[str], tokenizer: TextTokenizer) -> Tensors:
    """Tensors for the training loop: inputs (ids int64 [N, max_length],), labels int64 [N]."""
    return Tensors((torch.from_numpy(tokenizer.transform(texts)),), torch.from_numpy(label_codes(labels, tokenizer.classes)))


def settings(tokenizer: TextTokenizer) -> tuple[Any, ...]:
    return (tokenizer.text_column, tokenizer.lowercase, tokenizer.max_length)


def prepare(features: TextFeatures, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """Fit the tokeniser on the real training texts (or keep a warm start's ``encoder``: its vocabulary
    is what the embedding rows mean), encode the augmented training and the validation texts."""
    schema: TextSchema = read_text_schema(paths.split)
    train_texts, _ = read_split(paths.split, "train", schema)
    fitted = TextTokenizer.fit(train_texts, schema, features)
    old = TextTokenizer.from_dict(encoder) if encoder is not None else None
    if old is not None and keeps_encoder(old.classes, fitted.classes, settings(old), settings(fitted)):
        fitted = old
    augmented = read_split(paths.augmented, "train", schema)
    val = read_split(paths.split, "val", schema)
    return Prepared(
        train=encode(*augmented, fitted),
        val=encode(*val, fitted),
        task="classification",
        config=text_config(cfg, fitted),
        encoder=fitted.to_dict(),
        config_for=lambda other: text_config(other, fitted),
        # The code that turns texts into ids is part of what a resumed run must match.
        data_files=[
            split_file(paths.split, "train"),
            split_file(paths.split, "val"),
            split_file(paths.augmented, "train"),
            Path(tokenizer_module.__file__),
            Path(__file__),
        ],
    )
