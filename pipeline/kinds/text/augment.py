"""Text augment: ``copies`` copies of every training text with tokens dropped and neighbours swapped.

Inputs:  ``paths.split``/train.parquet and schema.json.
Outputs: ``paths.augmented``/train.parquet (the originals first, then the copies), ``paths.augment_report``.
Params:  ``augment`` (the text variant: token_dropout, token_swap, copies), ``seed``.
Validation and test texts are never touched. A copy is its tokens joined by spaces, cut by the
tokeniser's pattern without lower-casing (the tokeniser, fitted in train, lower-cases them as any text).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import read_table, split_file, write_json, write_table
from pipeline.kinds.text.data import class_balance, read_text_schema
from pipeline.kinds.text.tokenizer import split_tokens
from pipeline.params import Paths, TextAugment

log = logging.getLogger(__name__)


def drop_tokens(tokens: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Each token dropped with probability ``rate``; a text keeps at least one token."""
    kept = [token for token, draw in zip(tokens, rng.random(len(tokens))) if draw >= rate]
    return kept or tokens[:1]


def swap_tokens(tokens: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """round(rate x tokens) swaps of a random token with its right neighbour."""
    out = list(tokens)
    if len(out) < 2:
        return out
    for i in rng.integers(0, len(out) - 1, int(round(rate * len(out)))):
        out[i], out[i + 1] = out[i + 1], out[i]
    return out


def augment_texts(texts: list[str], cfg: TextAugment, seed: int) -> list[list[str]]:
    """``copies`` lists of augmented texts (each aligned with ``texts``). Each technique draws from its
    own stream of (seed, technique, copy), so switching one never changes another's draws."""
    if not (cfg.token_dropout.enabled or cfg.token_swap.enabled) or cfg.copies == 0:
        return []
    copies = []
    for k in range(cfg.copies):
        drop_rng, swap_rng = np.random.default_rng([seed, 0, k]), np.random.default_rng([seed, 1, k])
        out = []
        for text in texts:
            tokens = split_tokens(text)
            if cfg.token_dropout.enabled:
                tokens = drop_tokens(tokens, cfg.token_dropout.rate, drop_rng)
            if cfg.token_swap.enabled:
                tokens = swap_tokens(tokens, cfg.token_swap.rate, swap_rng)
            out.append(" ".join(tokens))
        copies.append(out)
    return copies


def run(cfg: TextAugment, paths: Paths, seed: int) -> dict[str, Any]:
    """Augment the training texts (``augment``); validation and test are never touched."""
    schema = read_text_schema(paths.split)
    train = read_table(split_file(paths.split, "train"))
    texts = train[schema.text_column].astype(str).tolist()
    copies = augment_texts(texts, cfg, seed)
    out = pd.concat([train, *(train.assign(**{schema.text_column: copy}) for copy in copies)], ignore_index=True)
    write_table(split_file(paths.augmented, "train"), out)
    report = {
        "rows_in": len(train),
        "rows_out": len(out),
        "copies": len(copies),
        "token_dropout": cfg.token_dropout.model_dump(),
        "token_swap": cfg.token_swap.model_dump(),
        "class_balance_after": class_balance(out[schema.target]),
    }
    write_json(paths.augment_report, report)
    log.info("augment: %d -> %d training texts", len(train), len(out))
    return report
