"""Benchmark: the Transformers' training epochs before and after issue 13, side by side in one run.

What changed (pipeline/models): attention through ``F.scaled_dot_product_attention`` (one fused QKV
projection, nn.MultiheadAttention's parameter names) with DropKey as attention dropout, so training
stays on the CPU flash kernel; dropout masks from 16-bit draws (four per 64-bit random number)
instead of ``bernoulli_``; under bf16 autocast the projections and feed-forward in bf16, the flash
kernel in fp32 (it is several times slower in bf16 here); in training (``train.compile: attention``;
``train.precision: auto`` and ``train.compile: auto`` pick bf16 and it for the Transformers on this
CPU), the attention of short sequences (the FT-Transformer's 15 feature tokens) as one
``torch.compile``d math kernel and of longer ones (the sequence Transformer's 96 steps) as chunked
batched bf16 matrix products with a backward of their own (``pipeline.models.blocks``); the last
block computing only the token the head reads ([CLS], the last step: the same outputs, fewer
products, so the after trees' GFLOP/step are lower and their FLOP/s count only the products they
do); and the train stage's process settings (``pipeline.engine.configure_torch``): no NaN fill of new tensors
under deterministic algorithms, and glibc keeping freed memory for the next step instead of
mapping fresh pages. Families:

- FT-Transformer (``train.model`` defaults for ``ft_transformer``) on the GSS training split, as the
  pipeline encodes it (needs ``dvc repro``'s data/ and models/preprocessor.json);
- the sequence Transformer (``seq_transformer`` defaults) on elecdemand windows: examples/elecdemand's
  params (lookback 96, horizon 1, stride 2, batch 256, lr 0.005) through the sequence kind's ingest,
  clean, split and augment in a temporary folder, the first ``--seq-rows`` half-hours;
- the MLP (params.yaml's ``train.model``) for reference (its dropout is the new one too).

Before = the models and engine of commit ``--before`` (the commit preceding this work), checked out
in a temporary ``git worktree``; after = this checkout. Each contender is a worker process importing
``pipeline`` from its own tree, configured by its tree's ``configure_torch`` (``fill+mmap``: the
after tree's code under the before tree's process settings, to tell the kernels' share from the
allocator's and the fill's) and training with the engine's own ``setup``, ``train_epoch`` and
``validate`` on the same encoded tensors (saved by this process), the same params and seed. The
parent hands out epochs round-robin (one worker computes at a time), so every contender sees the
same load on the shared machine: compare ratios. Per contender: seconds per training epoch (median
over epochs; validation timed apart; the first epoch's apart too: it includes the compilation),
the validation metric after ``--epochs`` epochs (the cosine schedule spans exactly those epochs),
and the training step's achieved FLOP/s (FlopCounterMode over one forward + backward, attention
counted through SDPA's math backend) against the fp32 or bf16 matmul peak measured here with the
same thread count.

    python bench/transformer_speed.py > bench/transformer_speed.out
    python bench/transformer_speed.py --epochs 3 --seq-rows 6000 --families ft seq
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BEFORE = "bed4d22"  # the last commit with nn.MultiheadAttention and nn.Dropout in pipeline/models
METRIC = {"classification": "accuracy", "regression": "mae"}
VAL_BATCH = 4096  # fit's validation batch for splits this size


# ---------------------------------------------------------------- the worker (imports pipeline from --root)


def worker(args: argparse.Namespace) -> None:
    """Train one contender an epoch per ``epoch`` line on stdin, answering one JSON line each."""
    sys.path.insert(0, args.root)
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.engine import Distributed, Tensors, TrainState, configure_torch, training
    from pipeline.models import config_from_dict
    from pipeline.params import TrainParams

    saved = torch.load(args.data, weights_only=True)
    compile_mode = {"none": False, "attention": "attention"}[args.compile]
    cfg = TrainParams.model_validate_json(json.dumps({**saved["cfg"], "precision": args.precision, "compile": compile_mode}))
    if args.fill_mmap:  # bed4d22's configure_torch: deterministic kernels, PyTorch's NaN fill, glibc's defaults
        torch.use_deterministic_algorithms(True)
    else:
        configure_torch(cfg)  # the tree's own process settings, as its train stage makes them
    torch.set_num_threads(args.threads)
    train, val = Tensors(saved["train_inputs"], saved["train_y"]), Tensors(saved["val_inputs"], saved["val_y"])
    state = TrainState.start(saved["seed"])
    run = training.setup(train, val, config_from_dict(saved["config"]), cfg, saved["task"], Distributed(), None)

    # FLOPs of one training step (a full batch) on a copy, the random-number state put back after;
    # the copy's attention through SDPA's math backend (the compiled attention computes the same products).
    rng = torch.get_rng_state()
    model = copy.deepcopy(run.model).train()
    for module in model.modules():
        if getattr(module, "compiled", False):
            setattr(module, "compiled", False)  # noqa: B010 (the before tree's blocks have no such attribute)
    rows = train.rows(slice(0, cfg.batch_size))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        outputs = model(*rows).float().reshape(len(rows[0]), -1)
        target = train.y[: cfg.batch_size]
        loss = run.loss_fn(outputs if saved["task"] == "classification" else outputs.reshape(target.shape), target)
        loss.backward()
    torch.set_rng_state(rng)
    print(json.dumps({"step_flops": counter.get_total_flops(), "steps": run.batches_per_epoch}), flush=True)

    for line in sys.stdin:
        if line.strip() != "epoch":
            break
        started = time.perf_counter()
        train_values, _ = training.train_epoch(run, state)
        trained = time.perf_counter()
        values = training.validate(run.model, run.val, saved["task"], run.val_loss_fn, VAL_BATCH)
        done = time.perf_counter()
        print(json.dumps({"train_s": trained - started, "val_s": done - trained, **values}), flush=True)


# ---------------------------------------------------------------- the parent: data, workers, report


def tabular_data(architecture: str) -> tuple[dict[str, Any], Any]:
    """GSS train/val tensors and the network config: the params' MLP, or the FT-Transformer's defaults."""
    from bench.common import load_setup
    from pipeline.models import FTTransformerConfig
    from pipeline.params import FTTransformerParams

    s = load_setup()
    config: Any = s.config
    if architecture == "ft_transformer":
        network = FTTransformerParams(architecture="ft_transformer").model_dump(exclude={"architecture"})
        config = FTTransformerConfig(s.config.n_numeric, s.config.cardinalities, s.config.n_classes, **network)
    cfg = s.cfg.model_dump(mode="json") | {"model": {"architecture": architecture}}
    data = {"train": s.train, "val": s.val, "task": "classification", "seed": s.params.seed}
    return data, (config, cfg)


def sequence_data(rows: int, folder: Path) -> tuple[dict[str, Any], Any]:
    """elecdemand's first ``rows`` half-hours through the sequence kind's stages; the seq_transformer's config."""
    import yaml

    from pipeline.kinds.sequence import stages
    from pipeline.params import parse_params

    raw = yaml.safe_load((REPO / "examples/elecdemand/params.yaml").read_text())
    raw["paths"] = {key: str(folder / value) for key, value in raw["paths"].items()}
    raw["ingest"]["max_rows"] = rows
    raw["train"]["model"] = {"architecture": "seq_transformer"}
    params = parse_params(raw)
    p = params.paths
    stages.ingest(params.ingest, p, params.seed)  # type: ignore[arg-type]
    stages.clean(params.clean, p)  # type: ignore[arg-type]
    stages.split(params.split, p, params.seed)  # type: ignore[arg-type]
    stages.augment(params.augment, p, params.seed)  # type: ignore[arg-type]
    prepared = stages.prepare(params.features, params.train, p)  # type: ignore[arg-type]
    data = {"train": prepared.train, "val": prepared.val, "task": prepared.task, "seed": params.seed}
    return data, (prepared.config, params.train.model_dump(mode="json"))


def save_data(path: Path, data: dict[str, Any], config: Any, cfg: dict[str, Any], epochs: int) -> None:
    import torch

    # The schedule spans the benchmark's epochs; early stopping never fires.
    cfg = {**cfg, "epochs": epochs, "warmup_epochs": min(cfg["warmup_epochs"], epochs - 1)}
    cfg["early_stopping"] = {**cfg["early_stopping"], "patience": epochs + 1}
    torch.save(
        {
            "train_inputs": data["train"].inputs,
            "train_y": data["train"].y,
            "val_inputs": data["val"].inputs,
            "val_y": data["val"].y,
            "task": data["task"],
            "seed": data["seed"],
            "config": config.to_dict(),
            "cfg": cfg,
        },
        path,
    )


class Contender:
    """A worker process: one tree (before/after), one precision, one thread count."""

    def __init__(
        self,
        label: str,
        root: Path,
        data: Path,
        precision: str,
        threads: int,
        max_epochs: int | None = None,
        compile: str = "none",
        fill_mmap: bool = False,
    ):
        self.label, self.precision, self.threads, self.max_epochs = label, precision, threads, max_epochs
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--root", str(root), "--data", str(data)]
        command += ["--precision", precision, "--threads", str(threads), "--compile", compile]
        command += ["--fill-mmap"] if fill_mmap else []
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        self.info = self._read()
        self.epochs: list[dict[str, float]] = []

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.label} ended early (its error is above)")
        return json.loads(line)

    def epoch(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("epoch\n")
        self.process.stdin.flush()
        self.epochs.append(self._read())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def compare(
    name: str, data_file: Path, old: Path, epochs: int, task: str, peaks: dict[tuple[str, int], float], attention: bool
) -> list[str]:
    """Train every contender ``epochs`` epochs, round-robin; one report line per contender."""
    contenders = [
        Contender("before fp32, 1 thread", old, data_file, "fp32", 1),
        Contender("after  fp32, 1 thread", REPO, data_file, "fp32", 1),
        Contender("before bf16, 1 thread", old, data_file, "bf16", 1),
        Contender("after  bf16, 1 thread", REPO, data_file, "bf16", 1),
    ]
    if attention:  # what precision: auto and compile: auto choose here
        contenders.append(Contender("after  bf16+c.attn, 1 thr", REPO, data_file, "bf16", 1, compile="attention"))
    # The same under bed4d22's process settings: what the kernels gained without the allocator and the NaN fill.
    if attention:
        contenders.append(
            Contender("after  bf16+c.attn, fill+mmap", REPO, data_file, "bf16", 1, compile="attention", fill_mmap=True)
        )
    else:
        contenders.append(Contender("after  fp32, fill+mmap", REPO, data_file, "fp32", 1, fill_mmap=True))
    # Two threads share the two cores with everything else: one epoch tells (its metric is not comparable).
    if attention:
        contenders.append(
            Contender("after  bf16+c.attn, 2 thr", REPO, data_file, "bf16", 2, max_epochs=1, compile="attention")
        )
    else:
        contenders.append(Contender("after  fp32, 2 threads", REPO, data_file, "fp32", 2, max_epochs=1))
    for epoch in range(epochs):
        for c in contenders:
            if c.max_epochs is None or epoch < c.max_epochs:
                c.epoch()
    for c in contenders:
        c.close()
    metric = METRIC[task]
    base = statistics.median(e["train_s"] for e in contenders[0].epochs)
    lines = [f"\n{name}: {contenders[0].info['steps']} steps/epoch, {contenders[1].info['step_flops'] / 1e9:.2f} GFLOP/step"]
    lines.append(
        f"  {'contender':30s}{'s/epoch':>9s}{'1st ep':>8s}{'speed-up':>10s}{'val s':>7s}{'val ' + metric:>13s}"
        f"{'GFLOP/s':>9s}{'of peak':>9s}{'GFLOP/step':>12s}"
    )
    for c in contenders:
        seconds = statistics.median(e["train_s"] for e in c.epochs)
        achieved = c.info["step_flops"] * c.info["steps"] / seconds / 1e9
        peak = peaks[c.precision, c.threads]
        lines.append(
            f"  {c.label:30s}{seconds:9.2f}{c.epochs[0]['train_s']:8.2f}{base / seconds:9.2f}x{statistics.median(e['val_s'] for e in c.epochs):7.2f}"
            f"{c.epochs[-1][metric] if c.max_epochs is None else float('nan'):13.4f}{achieved:9.1f}{achieved / peak:9.1%}{c.info['step_flops'] / 1e9:12.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per contender (the cosine schedule spans them)")
    parser.add_argument("--seq-rows", type=int, default=8000, help="elecdemand half-hours used (17,520 in all)")
    parser.add_argument("--families", nargs="+", default=["ft", "seq", "mlp"], choices=["ft", "seq", "mlp"])
    parser.add_argument("--before", default=BEFORE, help="the commit whose models are 'before'")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--compile", default="none", choices=["none", "attention"], help=argparse.SUPPRESS)
    parser.add_argument("--fill-mmap", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    os.environ.setdefault("DO_NOT_TRACK", "1")
    sys.path.insert(0, str(REPO))
    import torch

    from bench.common import OtherLoad
    from bench.gflops import matmul_peak

    load = OtherLoad().start()
    peaks: dict[tuple[str, int], float] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        best = matmul_peak([1024, 2048], 3)
        for precision in ("fp32", "bf16"):
            peaks[precision, threads] = max(v for (p, _), v in best.items() if p == precision)
    print(
        f"torch {torch.__version__}; before = {args.before} (git worktree), after = this checkout; {args.epochs} epochs each"
    )
    print("matmul peak, GFLOP/s (1024 and 2048 square, best of 3):")
    for threads in (1, 2):
        print(f"  {threads} thread(s): fp32 {peaks['fp32', threads]:,.0f}, bf16 {peaks['bf16', threads]:,.0f}")

    with tempfile.TemporaryDirectory(prefix="transformer_speed_") as tmp:
        folder = Path(tmp)
        old = folder / "before"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True, capture_output=True
        )
        try:
            for family in args.families:
                if family == "seq":
                    data, (config, cfg) = sequence_data(args.seq_rows, folder / "elecdemand")
                    name = f"sequence Transformer, elecdemand {args.seq_rows} rows ({len(data['train'])} train windows)"
                else:
                    architecture = "ft_transformer" if family == "ft" else "mlp"
                    data, (config, cfg) = tabular_data(architecture)
                    name = f"{'FT-Transformer' if family == 'ft' else 'MLP'}, GSS ({len(data['train'])} train rows)"
                data_file = folder / f"{family}.pt"
                save_data(data_file, data, config, cfg, args.epochs)
                lines = compare(name, data_file, old, args.epochs, data["task"], peaks, attention=family != "mlp")
                print("\n".join(lines), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    print(f"\n{load.report()}")


if __name__ == "__main__":
    main()
