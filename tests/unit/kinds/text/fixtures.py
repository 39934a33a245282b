"""A small real text model for tests and ``bench/drift_kinds.py``: tweets by device (the kind's default source,
``dslabs::trump_tweets``), cleaned as clean cleans them, the tokeniser fitted on the training texts, a narrow
LSTM trained by the engine for a few epochs and exported to ONNX as the export stage exports it (raw
strings in, the tokeniser inside the graph). Its card is a ``TextCard`` with the model's classes and test scores."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from pipeline.core.io import SCHEMA_FILE, file_sha256, split_file, write_json
from pipeline.engine import fit
from pipeline.kinds.text.clean import clean_texts
from pipeline.kinds.text.data import TextSchema
from pipeline.kinds.text.export import build_text_onnx
from pipeline.kinds.text.ingest import read_source, text_rows
from pipeline.kinds.text.runtime import score_split
from pipeline.kinds.text.tokenizer import TextTokenizer
from pipeline.kinds.text.train import encode, text_config
from pipeline.onnxio.card import TextCard, parse_card
from pipeline.params import DEFAULT_SOURCE, TextParams, TrainParams, parse_params
from tests.conftest import REPO
from tests.unit.onnxio.fixtures import old_card_data

EXAMPLE = REPO / "examples/tweets/params.yaml"
SCHEMA = TextSchema("text", "source", "created_at")
# A narrow network and a few quick epochs: a real model that learned something (on 2,000 tweets: test accuracy
# 0.63 against the majority class's 0.54) in a few seconds of one CPU.
QUICK_TRAIN = {
    "epochs": 3,
    "batch_size": 64,
    "lr": 0.02,
    "warmup_epochs": 0,
    "num_threads": 1,
    "device": "cpu",
    "early_stopping": {"metric": "val_macro_f1", "patience": 3},
    "model": {"architecture": "text_lstm", "embedding_dim": 16, "hidden": 16, "bidirectional": False},
}


@functools.cache
def tweets_params() -> TextParams:
    """The tweets example's params with the quick training above (paths unused here)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["features"] = {**raw["features"], "max_length": 32}
    raw["train"] = {**raw["train"], **{k: v for k, v in QUICK_TRAIN.items() if k != "model"}, "model": QUICK_TRAIN["model"]}
    params = parse_params(raw)
    assert isinstance(params, TextParams)
    return params


@functools.cache
def _raw_tweets() -> pd.DataFrame:
    raw, _ = read_source(DEFAULT_SOURCE)
    return raw


def raw_tweets() -> pd.DataFrame:
    """The default source as read: every column of dslabs::trump_tweets (ids and counts beside the text)."""
    return _raw_tweets().copy()


@functools.cache
def _tweets() -> pd.DataFrame:
    rows = text_rows(_raw_tweets(), tweets_params().ingest, SCHEMA)
    return rows.sort_values("created_at", kind="stable").reset_index(drop=True)


def tweets() -> pd.DataFrame:
    """Every tweet of the default source as ingest reads it (text, source, created_at parsed), oldest first."""
    return _tweets().copy()


@dataclass(frozen=True)
class TextModel:
    onnx: Path
    card: TextCard
    tokenizer: TextTokenizer
    train: pd.DataFrame  # the cleaned training rows (text, source, created_at): the drift reference


def train_text_model(
    rows: pd.DataFrame, folder: Path, seed: int = 0, *, network: dict[str, Any] | None = None, epochs: int | None = None
) -> TextModel:
    """Clean ``rows`` (text, source, created_at), split them 70/15/15 (seeded), fit the tokeniser on the training
    texts, train (``network``: another ``train.model``; ``epochs``: another count), export to ``folder``/model.onnx
    with its split files and write a card beside it."""
    params = tweets_params()
    train_cfg = TrainParams.model_validate(
        {
            **params.train.model_dump(),
            **({"model": network} if network is not None else {}),
            **({"epochs": epochs} if epochs is not None else {}),
        }
    )
    cleaned, _ = clean_texts(rows, SCHEMA, params.clean)
    classes = tuple(sorted(cleaned["source"].unique()))
    shuffled = cleaned.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n = len(shuffled)
    parts = {"train": shuffled.iloc[: int(0.7 * n)], "val": shuffled.iloc[int(0.7 * n) : int(0.85 * n)]}
    parts["test"] = shuffled.iloc[int(0.85 * n) :]
    schema = TextSchema("text", "source", "created_at", classes)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        part.to_parquet(split_file(folder, name), index=False)
    write_json(folder / SCHEMA_FILE, schema.to_dict())
    tokenizer = TextTokenizer.fit(parts["train"]["text"].tolist(), schema, params.features)
    torch.manual_seed(seed)
    encoded = {name: encode(part["text"].tolist(), part["source"].tolist(), tokenizer) for name, part in parts.items()}
    model, _, _ = fit(
        encoded["train"], encoded["val"], text_config(train_cfg, tokenizer), train_cfg, seed, task="classification"
    )
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(build_text_onnx(model.eval(), tokenizer, params.export.opset).SerializeToString())
    card = text_model_card(tokenizer, classes, onnx_path)
    scores = score_split(onnx_path, card, folder)
    card = text_model_card(tokenizer, classes, onnx_path, scores)
    (folder / "model_card.json").write_text(card.model_dump_json())
    return TextModel(onnx_path, card, tokenizer, parts["train"].reset_index(drop=True))


def text_model_card(
    tokenizer: TextTokenizer, classes: tuple[str, ...], onnx_path: Path, scores: dict[str, float] | None = None
) -> TextCard:
    """A text card for ``onnx_path``: the common fields of a committed card, this model's classes, input and test scores."""
    data = copy.deepcopy(old_card_data("image"))
    data.update(
        kind="text",
        target=tokenizer.target,
        text_column=tokenizer.text_column,
        classes=list(classes),
        outputs=[
            {"name": "probabilities", "onnx_type": "float32", "shape": ["N", len(classes)]},
            {"name": "label", "onnx_type": "string", "shape": ["N"]},
        ],
        inputs=[
            {
                "name": "text",
                "onnx_type": "string",
                "shape": ["N"],
                "tokenisation": {
                    "pattern": tokenizer.pattern,
                    "lowercase": tokenizer.lowercase,
                    "max_length": tokenizer.max_length,
                    "vocab_size": tokenizer.vocab_size,
                },
            }
        ],
        int8=None,
    )
    data["metrics"] = {"test": dict(scores or {})}
    data["hashes"] = {**data["hashes"], "onnx_sha256": file_sha256(onnx_path)}
    card = parse_card(data)
    assert isinstance(card, TextCard)
    return card
