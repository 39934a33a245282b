"""Benchmark: Evergreen's training loop against hand-written PyTorch loops and Lightning's Trainer, and bf16 vs fp32.

Same model (the params' MLP), same data (the GSS training split encoded by the fitted encoder),
same optimizer (AdamW, the params' lr and weight decay), batch size, gradient clipping and torch
threads; every contender runs a fixed number of epochs with a validation pass per epoch:

- bare loop: shuffle an index, slice the in-memory tensors, forward, loss, backward, step;
- DataLoader loop: the same loop over ``DataLoader(TensorDataset)`` (per-row indexing and collation);
- Evergreen ``fit`` in fp32 and with bf16 autocast (early stopping kept from firing);
- Lightning's ``Trainer`` (a LightningModule wrapping the same TabularMLP and AdamW) over the same
  ``DataLoader(TensorDataset)``, and over a batch-indexed DataLoader (a ``BatchSampler`` as sampler:
  one tensor slice per batch, like the bare loop) to separate Lightning's own cost from the
  DataLoader's. No checkpoints, logger, progress bar, model summary or sanity validation; cpu, 1 device.

One untimed warm-up epoch each, then interleaved rounds (the machine is shared: compare the
ratios, medians of the per-round ratios). Then both precisions train to early stopping with the
params' settings and report their best validation accuracy and loss.

    python bench/train_throughput.py      (after `dvc repro`; Lightning: pip install -e ".[bench]")
    python bench/train_throughput.py --epochs 2 --rounds 9 --hidden 256 256
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OtherLoad, Setup, input_width, load_setup  # noqa: E402
from pipeline.engine import fit
from pipeline.models import build_model

VAL_BATCH = 4096  # what Evergreen's evaluate uses for a split this size


# ---------------------------------------------------------------- contenders (each returns seconds)


def hand_loop(s: Setup, epochs: int, train_batches: Callable[[], Iterable], val_batches: Callable[[], Iterable]) -> float:
    """What a practitioner writes by hand over some batches ``(inputs, y)``: forward, loss, backward,
    clip, step; a validation pass per epoch."""
    cfg = s.cfg
    torch.manual_seed(s.params.seed)
    model = build_model(s.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for inputs, y in train_batches():
            loss = loss_fn(model(*inputs), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for inputs, y in val_batches():
                loss_fn(model(*inputs), y)
    return time.perf_counter() - started


def bare_loop(s: Setup, epochs: int) -> float:
    """The hand-written loop over index slices of in-memory tensors, the whole validation split at once."""
    train, val = s.train, s.val
    generator = torch.Generator().manual_seed(s.params.seed)

    def shuffled():
        order = torch.randperm(len(train), generator=generator)
        # A trailing one-row batch is dropped, as Evergreen's loop does: batch norm cannot normalise it.
        return ((train.rows(idx), train.y[idx]) for idx in order.split(s.cfg.batch_size) if len(idx) > 1)

    return hand_loop(s, epochs, shuffled, lambda: [(val.inputs, val.y)])


def loaders(s: Setup, batched: bool) -> tuple[DataLoader, DataLoader]:
    """Training (shuffled, seeded) and validation DataLoaders over TensorDatasets.

    ``batched``: BatchSamplers as the samplers and ``batch_size=None``, so TensorDataset is indexed
    once per batch with a list of indices instead of once per row (and nothing is collated).
    """
    train = TensorDataset(s.train.inputs[0], s.train.inputs[1], s.train.y)
    val = TensorDataset(s.val.inputs[0], s.val.inputs[1], s.val.y)
    generator = torch.Generator().manual_seed(s.params.seed)
    if batched:
        shuffled = BatchSampler(RandomSampler(train, generator=generator), s.cfg.batch_size, drop_last=False)
        in_order = BatchSampler(SequentialSampler(val), VAL_BATCH, drop_last=False)
        return DataLoader(train, sampler=shuffled, batch_size=None), DataLoader(val, sampler=in_order, batch_size=None)
    return DataLoader(train, batch_size=s.cfg.batch_size, shuffle=True, generator=generator), DataLoader(
        val, batch_size=VAL_BATCH
    )


def dataloader_loop(s: Setup, epochs: int) -> float:
    """The hand-written loop over ``DataLoader(TensorDataset)``: what most tutorials write."""
    train_loader, val_loader = loaders(s, batched=False)
    return hand_loop(
        s,
        epochs,
        lambda: (((x_num, x_cat), y) for x_num, x_cat, y in train_loader),
        lambda: (((x_num, x_cat), y) for x_num, x_cat, y in val_loader),
    )


def evergreen_fit(s: Setup, epochs: int, precision: str) -> float:
    """Evergreen's ``fit`` for exactly ``epochs`` epochs (no warm-up, early stopping cannot fire)."""
    settings = s.cfg.model_copy(
        update={
            "epochs": epochs,
            "warmup_epochs": 0,
            "precision": precision,
            "early_stopping": s.cfg.early_stopping.model_copy(update={"patience": epochs + 1}),
        }
    )
    started = time.perf_counter()
    fit(s.train, s.val, s.config, settings, s.params.seed, task="classification")
    return time.perf_counter() - started


def lightning_fit(s: Setup, epochs: int, batched: bool, threads_seen: list[int]) -> float:
    """Lightning's Trainer on the same TabularMLP, AdamW, batches, clipping and epochs."""
    import pytorch_lightning as pl

    cfg = s.cfg

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = build_model(s.config)
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            x_num, x_cat, y = batch
            return self.loss_fn(self.model(x_num, x_cat), y)

        def validation_step(self, batch, batch_idx):
            x_num, x_cat, y = batch
            return self.loss_fn(self.model(x_num, x_cat), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def on_train_start(self):
            threads_seen.append(torch.get_num_threads())

    torch.manual_seed(s.params.seed)
    module = Module()
    started = time.perf_counter()
    train_loader, val_loader = loaders(s, batched)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=cfg.grad_clip,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,  # the others validate once per epoch only
    )
    trainer.fit(module, train_loader, val_loader)
    return time.perf_counter() - started


def prepare_lightning() -> None:
    """Offline and quiet: Lightning's info lines (GPU available: False, ...) and num_workers advice are noise here."""
    # Lightning 2.6 has no telemetry of its own; DO_NOT_TRACK as the Makefile sets it for every tool.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # torch 2.13's pytree deprecation, seen by Lightning 2.6
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        sys.exit('pytorch_lightning is missing: pip install -e ".[bench]" (the benchmark-only extra)')
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden sizes (default: the params')")
    args = parser.parse_args()
    prepare_lightning()
    torch.set_num_threads(args.threads)
    load = OtherLoad().start()
    s = load_setup(tuple(args.hidden) if args.hidden else None)
    lightning_threads: list[int] = []

    contenders: dict[str, Callable[[int], float]] = {
        "bare loop": lambda e: bare_loop(s, e),
        "DataLoader loop": lambda e: dataloader_loop(s, e),
        "Evergreen fit": lambda e: evergreen_fit(s, e, "fp32"),
        "Evergreen fit (bf16)": lambda e: evergreen_fit(s, e, "bf16"),
        "Lightning Trainer": lambda e: lightning_fit(s, e, False, lightning_threads),
        "Lightning, batch-indexed": lambda e: lightning_fit(s, e, True, lightning_threads),
    }
    for run in contenders.values():  # warm-up: lazy imports, oneDNN kernels, allocator
        run(1)
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):  # each round starts one contender later: no fixed position in the order
        for name in names[r % len(names) :] + names[: r % len(names)]:
            timings[name].append(contenders[name](args.epochs))

    cfg, config = s.cfg, s.config
    width = input_width(build_model(config))
    samples = args.epochs * len(s.train)
    print(
        f"{len(s.train)} training rows, {len(s.val)} validation rows; MLP {width} -> {list(config.hidden)} -> "
        f"{config.n_classes} (batch norm, dropout {config.dropout}), AdamW, batch {cfg.batch_size}, grad clip {cfg.grad_clip}; "
        f"{torch.get_num_threads()} threads (Lightning saw {sorted(set(lightning_threads))}); "
        f"{args.epochs} epochs x {args.rounds} rounds"
    )
    bare = statistics.median(timings["bare loop"])
    print(f"  {'samples/s:':26s}{'median':>10s}{'best round':>12s}{'median time / bare loop':>26s}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:26s}{samples / median:10,.0f}{samples / min(values):12,.0f}{median / bare:25.2f}x")

    def ratio(slow: str, fast: str) -> str:
        per_round = [a / b for a, b in zip(timings[slow], timings[fast])]
        return f"{statistics.median(per_round):.2f}x (rounds: {min(per_round):.2f}-{max(per_round):.2f})"

    overhead = [a / b - 1 for a, b in zip(timings["Evergreen fit"], timings["bare loop"])]
    print(
        f"Evergreen fit's time over the bare loop's: {statistics.median(overhead):+.1%} "
        f"(rounds: {min(overhead):+.1%} to {max(overhead):+.1%})"
    )
    print("speed ratios (median of the per-round ratios of times):")
    print(f"  Evergreen fit / Lightning Trainer:         {ratio('Lightning Trainer', 'Evergreen fit')}")
    print(f"  Evergreen fit / Lightning, batch-indexed:  {ratio('Lightning, batch-indexed', 'Evergreen fit')}")
    print(f"  Evergreen fit bf16 / fp32:                 {ratio('Evergreen fit', 'Evergreen fit (bf16)')}")

    print("\nto early stopping with the params' settings (validation split):")
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        _, _, history = fit(
            s.train, s.val, config, cfg.model_copy(update={"precision": precision}), s.params.seed, task="classification"
        )
        best = history.epochs[history.best_epoch]
        print(
            f"  {precision}: {time.perf_counter() - started:5.1f} s, {len(history.epochs)} epochs, "
            f"best val accuracy {best['val_accuracy']:.4f}, val loss {best['val_loss']:.4f}"
        )
    print(load.report())


if __name__ == "__main__":
    main()
