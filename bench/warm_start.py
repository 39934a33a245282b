"""Benchmark: warm start against cold start, the time to reach the cold model's final validation loss.

The situation a warm retrain meets: a production model trained on the older part of the
training data (the earliest 60% of rows in time, with the encoder fitted on them), and new data
(the whole training split, encoder re-fitted on it). Cold trains a fresh network on the new data
with the params' settings; warm fine-tunes the production model's weights on it
(``train.warm_start``: matching tensors loaded, loaded tensors at ``pretrained_lr_scale`` x lr).
Both run to early stopping; printed: the validation loss after the first epoch, epochs and seconds
until each first reaches the cold run's best validation loss and that loss + 1%, and both runs'
best validation loss and accuracy.

    python bench/warm_start.py [--rounds 2]      (after `dvc repro`)
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.io import read_table, split_file
from pipeline.engine import History, Tensors, fit
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.schema import read_schema
from pipeline.kinds.tabular.train import tabular_config
from pipeline.params import load_params

OLD_SHARE = 0.6
NEAR = 1.01  # "near the cold best": within 1% of its validation loss


def time_to_reach(history: History, target: float) -> tuple[int | None, float | None]:
    """(epochs, seconds) until val_loss first reaches ``target``; (None, None) if it never does."""
    seconds = 0.0
    for epoch, values in enumerate(history.epochs):
        seconds += values["epoch_seconds"]
        if values["val_loss"] <= target + 1e-12:
            return epoch + 1, seconds
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lr-scale", type=float, default=None, help="override train.warm_start.pretrained_lr_scale")
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    paths, cfg, seed = params.paths, params.train, params.seed
    if args.lr_scale is not None:
        cfg = cfg.model_copy(update={"warm_start": cfg.warm_start.model_copy(update={"pretrained_lr_scale": args.lr_scale})})
    schema = read_schema(REPO / paths.split)
    train_rows = read_table(REPO / split_file(paths.split, "train"))
    val_rows = read_table(REPO / split_file(paths.split, "val"))
    # The older share of the training data, by time (rows are in time order within the split).
    ordered = train_rows.sort_values(schema.time_column, kind="stable") if schema.time_column else train_rows
    old_rows = ordered.iloc[: int(OLD_SHARE * len(ordered))]

    old_pre = Preprocessor.fit(old_rows, schema, params.features)
    production, production_best, _ = fit(
        Tensors.encode(old_rows, old_pre),
        Tensors.encode(val_rows, old_pre),
        tabular_config(old_pre, cfg),
        cfg,
        seed,
        task="classification",
    )
    new_pre = Preprocessor.fit(train_rows, schema, params.features)
    train, val, config = Tensors.encode(train_rows, new_pre), Tensors.encode(val_rows, new_pre), tabular_config(new_pre, cfg)

    # A warm start keeps the production model's encoder, so every input means what it meant in training.
    warm_train, warm_val, warm_config = (
        Tensors.encode(train_rows, old_pre),
        Tensors.encode(val_rows, old_pre),
        tabular_config(old_pre, cfg),
    )
    results: dict[str, list[dict]] = {"cold": [], "warm": []}
    for round_ in range(args.rounds):
        for name in ("cold", "warm"):
            if name == "warm":
                _, best, history = fit(
                    warm_train,
                    warm_val,
                    warm_config,
                    cfg,
                    seed + round_,
                    task="classification",
                    init_state=production_best["model_state"],
                )
            else:
                _, best, history = fit(train, val, config, cfg, seed + round_, task="classification")
            results[name].append({"history": history, "best": history.epochs[history.best_epoch]})

    print(
        f"{len(old_rows):,} older rows -> production model; fine-tune / train on {len(train_rows):,} rows; "
        f"validation {len(val_rows):,} rows; {args.rounds} rounds (medians); lr {cfg.lr}, pretrained_lr_scale {cfg.warm_start.pretrained_lr_scale}"
    )
    print(
        f"{'start':<6} {'epochs run':>10} {'val loss ep 1':>14} {'best val loss':>14} {'best val acc':>13} "
        f"{'epochs/s to cold best':>22} {'epochs/s to cold best+1%':>25}"
    )
    reach: dict[str, list[float]] = {"cold": [], "warm": []}
    for index in range(args.rounds):
        target = results["cold"][index]["best"]["val_loss"]
        for name in ("cold", "warm"):
            history = results[name][index]["history"]
            epochs, seconds = time_to_reach(history, target)
            near_epochs, near_seconds = time_to_reach(history, target * NEAR)
            results[name][index].update(
                epochs_to=epochs, seconds_to=seconds, near_epochs=near_epochs, near_seconds=near_seconds
            )
            if seconds is not None:
                reach[name].append(seconds)

    def median_of(runs: list[dict], key: str) -> float:
        found = [r[key] for r in runs if r[key] is not None]
        return statistics.median(found) if found else float("nan")

    for name in ("cold", "warm"):
        runs = results[name]
        print(
            f"{name:<6} {statistics.median(len(r['history'].epochs) for r in runs):>10} "
            f"{statistics.median(r['history'].epochs[0]['val_loss'] for r in runs):>14.4f} "
            f"{statistics.median(r['best']['val_loss'] for r in runs):>14.4f} {statistics.median(r['best']['val_accuracy'] for r in runs):>13.4f} "
            f"{median_of(runs, 'epochs_to'):>12} / {median_of(runs, 'seconds_to'):>6.2f}s "
            f"{median_of(runs, 'near_epochs'):>15} / {median_of(runs, 'near_seconds'):>6.2f}s"
        )
    reached = sum(r["epochs_to"] is not None for r in results["warm"])
    if reach["warm"] and reach["cold"]:
        print(
            f"warm reaches the cold model's best validation loss in {reached}/{args.rounds} rounds, "
            f"{statistics.median(reach['cold']) / statistics.median(reach['warm']):.1f}x sooner (median seconds)"
        )
    else:
        print(f"warm reached the cold model's best validation loss in {reached}/{args.rounds} rounds")


if __name__ == "__main__":
    main()
