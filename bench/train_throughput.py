"""Benchmark: Evergreen's training loop against a minimal hand-written PyTorch loop, and bf16 vs fp32.

Same model (the params' MLP), same data (the GSS training split encoded by the fitted encoder),
same optimizer, batch size and threads; each loop runs a fixed number of epochs with a
validation pass per epoch, interleaved over several rounds (the machine is shared: compare
ratios). Then both precisions train to early stopping with the params' settings and report
their best validation accuracy and loss.

    python bench/train_throughput.py      (after `dvc repro`)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.common import read_table, split_file  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.inference import load_preprocessor  # noqa: E402
from pipeline.model import ModelConfig, build_model  # noqa: E402
from pipeline.train import Tensors, fit  # noqa: E402

EPOCHS, ROUNDS = 3, 3


def bare_loop(train: Tensors, val: Tensors, config: ModelConfig, batch_size: int, lr: float, epochs: int, seed: int) -> float:
    """What a practitioner writes by hand: shuffle, slice, forward, loss, backward, step; eval per epoch."""
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train) - 1, batch_size):
            idx = order[start : start + batch_size]
            loss = loss_fn(model(train.x_num[idx], train.x_cat[idx]), train.y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            loss_fn(model(val.x_num, val.x_cat), val.y)
    return time.perf_counter() - started


def main() -> None:
    params = load_params(REPO / "params.yaml")
    paths, cfg = params.paths, params.train
    pre = load_preprocessor(REPO / paths.preprocessor)
    train = Tensors.encode(read_table(REPO / split_file(paths.augmented, "train")), pre)
    val = Tensors.encode(read_table(REPO / split_file(paths.split, "val")), pre)
    config = ModelConfig(
        n_numeric=pre.n_numeric_inputs, cardinalities=tuple(pre.cardinalities), n_classes=len(pre.classes),
        hidden=cfg.hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm,
        categorical_encoding=cfg.categorical_encoding, embedding_dim=cfg.embedding_dim,
    )
    fixed = {"epochs": EPOCHS, "early_stopping": {"patience": EPOCHS + 1}, "warmup_epochs": 0}
    fp32 = cfg.model_copy(update=fixed | {"early_stopping": cfg.early_stopping.model_copy(update={"patience": EPOCHS + 1})})
    bf16 = fp32.model_copy(update={"precision": "bf16"})
    threads = torch.get_num_threads()

    timings: dict[str, list[float]] = {"bare loop (fp32)": [], "Evergreen fit (fp32)": [], "Evergreen fit (bf16)": []}
    for _ in range(ROUNDS):
        timings["bare loop (fp32)"].append(bare_loop(train, val, config, cfg.batch_size, cfg.lr, EPOCHS, params.seed))
        for name, settings in (("Evergreen fit (fp32)", fp32), ("Evergreen fit (bf16)", bf16)):
            started = time.perf_counter()
            fit(train, val, config, settings, params.seed)
            timings[name].append(time.perf_counter() - started)

    samples = EPOCHS * len(train)
    print(f"{len(train)} training rows, {len(val)} validation rows, MLP {config.n_numeric}+emb -> {list(cfg.hidden)} -> "
          f"{config.n_classes}, batch {cfg.batch_size}, {cfg.optimizer}, {threads} threads; {EPOCHS} epochs x {ROUNDS} rounds, median")
    bare = statistics.median(timings["bare loop (fp32)"])
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:24s}{samples / median:12,.0f} samples/s   {median / bare:5.2f}x the bare loop's time")

    print("\nto early stopping with the params' settings (validation split):")
    for name, settings in (("fp32", cfg), ("bf16", cfg.model_copy(update={"precision": "bf16"}))):
        started = time.perf_counter()
        _, _, history = fit(train, val, config, settings, params.seed)
        best = history.epochs[history.best_epoch]
        print(f"  {name}: {time.perf_counter() - started:5.1f} s, {len(history.epochs)} epochs, "
              f"best val accuracy {best['val_accuracy']:.4f}, val loss {best['val_loss']:.4f}")


if __name__ == "__main__":
    main()
