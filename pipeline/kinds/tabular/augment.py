"""Tabular augment: add synthetic rows to the training split only; validation and test are never touched.

Techniques, each switched on in ``augment``:
- ``gaussian_noise``: copies of random training rows with N(0, (std x column std)^2) noise on numeric
  features (missing stays missing);
- ``oversample``: random duplicates of minority-class rows until each class has at least
  ``ratio`` x the majority count;
- ``mixup``: within-class mixup for tabular rows - numeric features interpolated between a row and a
  random partner of the same class with lambda ~ Beta(alpha, alpha) folded so the anchor dominates,
  categories taken from the partner with probability 1 - lambda. Mixing within a class keeps hard
  labels valid (the SMOTE idea, without nearest neighbours, which missing values make ill-defined).
All off: the training table is written out unchanged. A regression target has no classes, so only
``gaussian_noise`` applies to it (oversample and mixup are refused, naming the key).

Inputs:  ``paths.split``/train.parquet and schema.json
Outputs: ``paths.augmented``/train.parquet, ``paths.augment_report``
Params:  ``augment``, ``seed``
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import ParamsError
from pipeline.core.io import iter_table, read_table, split_file, write_json, write_table
from pipeline.core.stream import CHUNK_ROWS, ParquetSink
from pipeline.kinds.tabular.schema import Schema, read_schema
from pipeline.params import MixupParams, NoiseParams, OversampleParams, Paths, TabularAugment

log = logging.getLogger(__name__)


def gaussian_noise(train: pd.DataFrame, schema: Schema, cfg: NoiseParams, rng: np.random.Generator) -> pd.DataFrame:
    """Noisy copies of randomly chosen training rows (numeric features only)."""
    count = int(round(cfg.fraction * len(train)))
    if count == 0 or not schema.numeric:
        return train.iloc[:0]
    rows = train.iloc[rng.choice(len(train), size=count, replace=True)].reset_index(drop=True)
    numeric = rows[schema.numeric].to_numpy(dtype="float64")
    scale = np.nan_to_num(train[schema.numeric].std(ddof=0).to_numpy(dtype="float64")) * cfg.std
    noisy = numeric + rng.normal(size=numeric.shape) * scale  # NaN + noise stays NaN
    return rows.assign(**{name: noisy[:, i] for i, name in enumerate(schema.numeric)})


def oversample(train: pd.DataFrame, schema: Schema, cfg: OversampleParams, rng: np.random.Generator) -> pd.DataFrame:
    """Duplicates of minority-class rows, drawn with replacement, up to ``ratio`` x the majority count."""
    counts = train[schema.target].value_counts()
    goal = int(np.ceil(cfg.ratio * counts.max()))
    labels = train[schema.target].to_numpy()
    picks = [
        rng.choice(np.flatnonzero(labels == cls), size=goal - int(n), replace=True)
        for cls, n in sorted(counts.items())
        if n < goal
    ]
    if not picks:
        return train.iloc[:0]
    return train.iloc[np.concatenate(picks)].reset_index(drop=True)


def mixup(train: pd.DataFrame, schema: Schema, cfg: MixupParams, rng: np.random.Generator) -> pd.DataFrame:
    """Within-class mixup rows: anchor-dominated interpolation of numeric features, categories swapped."""
    count = int(round(cfg.fraction * len(train)))
    if count == 0:
        return train.iloc[:0]
    labels = train[schema.target].to_numpy()
    anchors = rng.choice(len(train), size=count, replace=True)
    members = {cls: np.flatnonzero(labels == cls) for cls in np.unique(labels)}
    partners = np.array([members[labels[a]][rng.integers(len(members[labels[a]]))] for a in anchors])
    lam = rng.beta(cfg.alpha, cfg.alpha, size=count)
    lam = np.maximum(lam, 1 - lam)  # the anchor dominates, so its label (shared anyway) and shape lead
    a_rows = train.iloc[anchors].reset_index(drop=True)
    b_rows = train.iloc[partners].reset_index(drop=True)
    columns: dict[str, Any] = {}
    for name in schema.numeric:
        a = a_rows[name].to_numpy(dtype="float64")
        b = b_rows[name].to_numpy(dtype="float64")
        mixed = lam * a + (1 - lam) * np.where(np.isnan(b), a, b)  # the anchor's missingness is kept
        columns[name] = mixed
    for name in schema.categorical:
        take_partner = rng.random(count) >= lam
        columns[name] = a_rows[name].where(~take_partner, b_rows[name])
    return a_rows.assign(**columns)


def augment(train: pd.DataFrame, schema: Schema, cfg: TabularAugment, seed: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """The training rows first and unchanged, then the rows each enabled technique adds."""
    added: dict[str, pd.DataFrame] = {}
    if schema.regression:
        by_class = [name for name in ("oversample", "mixup") if getattr(cfg, name).enabled]
        if by_class:
            raise ParamsError(
                f"augment.{by_class[0]}.enabled: works within classes, and regression target {schema.target!r} has none;"
                " switch it off (augment.gaussian_noise applies)"
            )
    # Each technique has its own stream derived from (seed, technique) and draws from the original
    # rows, so switching one technique on or off never changes what another one adds.
    if cfg.oversample.enabled:
        added["oversample"] = oversample(train, schema, cfg.oversample, np.random.default_rng([seed, 0]))
    if cfg.gaussian_noise.enabled:
        added["gaussian_noise"] = gaussian_noise(train, schema, cfg.gaussian_noise, np.random.default_rng([seed, 1]))
    if cfg.mixup.enabled:
        added["mixup"] = mixup(train, schema, cfg.mixup, np.random.default_rng([seed, 2]))
    if not added:
        return train, {}
    out = pd.concat([train, *added.values()], ignore_index=True)
    return out, {name: len(rows) for name, rows in added.items()}


def class_balance(counts: dict[str, int], labels: pd.Series) -> None:
    for label, n in labels.value_counts().items():
        counts[str(label)] = counts.get(str(label), 0) + int(n)


def run(cfg: TabularAugment, paths: Paths, seed: int, rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """Augment the training split and report what was added.

    With every technique off (the default) the training rows are copied chunk by chunk, so memory holds one
    chunk; a technique draws rows from anywhere in the split, and reads the split whole."""
    schema = read_schema(paths.split)
    source, target = split_file(paths.split, "train"), split_file(paths.augmented, "train")
    enabled = cfg.gaussian_noise.enabled or cfg.oversample.enabled or cfg.mixup.enabled
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    if enabled:
        train = read_table(source)
        out, added = augment(train, schema, cfg, seed)
        write_table(target, out)
        rows_in, rows_out = len(train), len(out)
        class_balance(before, train[schema.target])
        class_balance(after, out[schema.target])
    else:
        added, rows_in = {}, 0
        with ParquetSink(target) as sink:
            for chunk in iter_table(source, rows):
                sink.write(chunk)
                rows_in += len(chunk)
                if not schema.regression:  # a regression target's values are no balance (one entry per value)
                    class_balance(before, chunk[schema.target])
        rows_out, after = rows_in, before
    report: dict[str, Any] = {"rows_in": rows_in, "rows_out": rows_out, "added": added}
    if not schema.regression:  # a regression target's values are no balance to report
        report["class_balance_before"] = dict(sorted(before.items()))
        report["class_balance_after"] = dict(sorted(after.items()))
    write_json(paths.augment_report, report)
    log.info("augment: %d -> %d training rows (%s)", rows_in, rows_out, added or "no technique enabled")
    return report
