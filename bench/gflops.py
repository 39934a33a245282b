"""Benchmark: achieved GFLOP/s of the MLP and CNN training steps, against this machine's matmul peak.

1. The CPU: AMX flags in /proc/cpuinfo, torch's CPU capability and oneDNN (mkldnn) availability,
   and the kernel oneDNN picks for a bf16 matmul (``ONEDNN_VERBOSE=1`` in a child process).
2. The matrix-multiply peak: square fp32 and bf16 ``torch.mm`` at several sizes, best of the
   repeats (fp32 and bf16 interleaved), with torch's intra-op threads = the training threads.
3. FLOPs per training step, counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
   forward + backward (matmuls and convolutions only: batch norm, activations, loss and the
   optimizer add time but no counted FLOPs). For the MLP, cross-checked against the analytic
   count: 2*N*in*out per Linear forward, twice that backward (input and weight gradients).
4. Training steps timed as Evergreen's loop does them (random batch slice of in-memory tensors,
   forward under autocast when bf16, fp32 loss, backward, grad-norm clip, AdamW step), fp32 and
   bf16 autocast, in interleaved rounds (medians). Models: the params' MLP on the training split,
   and the project's CNN (the defaults of ``train.model`` with ``architecture: cnn``: conv 32-64-128,
   as the digits example trains it) on 8x8x1 digit images (sklearn's bundled digits).

Prints GFLOP/s and the fraction of the measured fp32 and bf16 matmul peaks.

    python bench/gflops.py      (after `dvc repro`: the MLP's data and encoder)
    python bench/gflops.py --sizes 1024 2048 4096 --repeats 5 --steps 100 --rounds 5 --batch 512
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import OtherLoad, input_width, load_setup  # noqa: E402
from pipeline.models import CNNConfig, build_model
from pipeline.params import CNNParams

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---------------------------------------------------------------- the CPU and its matmul peak


def cpu_report() -> list[str]:
    """AMX flags, torch's CPU capability, oneDNN availability and its kernel for a bf16 matmul."""
    flags = set()
    if Path("/proc/cpuinfo").exists():
        flags = {
            f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags") for f in line.split()
        }
    probe = "import torch; a = torch.ones(256, 256, dtype=torch.bfloat16); a @ a"
    verbose = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "ONEDNN_VERBOSE": "1"}, capture_output=True, text=True
    ).stdout
    kernels = sorted(set(re.findall(r",matmul,([^,]+),", verbose))) or ["none reported (not oneDNN)"]
    return [
        f"CPU flags: {' '.join(sorted(f for f in flags if f.startswith(('amx', 'avx512_bf16', 'avx512f')))) or 'no AMX/AVX-512 flags'}",
        f"torch {torch.__version__}: CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"mkldnn available {torch.backends.mkldnn.is_available()}, enabled {torch.backends.mkldnn.enabled}; "
        f"{torch.get_num_threads()} threads",
        f"oneDNN kernel for a bf16 matmul: {', '.join(kernels)}",
    ]


def matmul_peak(sizes: list[int], repeats: int) -> dict[tuple[str, int], float]:
    """Best GFLOP/s of an n x n @ n x n product per (dtype, n); fp32 and bf16 repeats interleaved."""
    best: dict[tuple[str, int], float] = {}
    for n in sizes:
        pairs = {name: (torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)) for name, dtype in DTYPES.items()}
        for a, b in pairs.values():  # warm-up: packing buffers, kernel selection
            torch.mm(a, b)
        for _ in range(repeats):
            for name, (a, b) in pairs.items():
                started = time.perf_counter()
                torch.mm(a, b)
                gflops = 2 * n**3 / (time.perf_counter() - started) / 1e9
                best[name, n] = max(best.get((name, n), 0.0), gflops)
    return best


# ---------------------------------------------------------------- models and their FLOPs


def counted_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> int:
    """Matmul and convolution FLOPs of one forward + backward, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(*inputs), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def mlp_analytic_flops(model: nn.Module, n: int) -> int:
    """2*N*in*out per Linear forward; backward twice that, less the first layer's input gradient
    when nothing before it is trained (numeric inputs only, or frozen one-hot embeddings)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    forward = [2 * n * m.in_features * m.out_features for m in linears]
    trained_below_first = any(p.requires_grad for e in getattr(model, "embeddings", []) for p in e.parameters())
    return 3 * sum(forward) - (0 if trained_below_first else forward[0])


@dataclass
class Workload:
    """One model and a way to draw a training batch: batch() -> (inputs, labels)."""

    name: str
    model: nn.Module
    batch: Callable[[], tuple[tuple[torch.Tensor, ...], torch.Tensor]]
    flops: int = 0


def mlp_workload(batch_size: int, seed: int, hidden: tuple[int, ...] | None) -> Workload:
    s = load_setup(hidden)
    torch.manual_seed(seed)
    model = build_model(s.config)
    generator = torch.Generator().manual_seed(seed)
    train = s.train

    def batch():
        idx = torch.randint(len(train), (batch_size,), generator=generator)
        return (train.inputs[0][idx], train.inputs[1][idx]), train.y[idx]

    name = f"MLP {input_width(model)}->{'->'.join(map(str, s.config.hidden))}->{s.config.n_classes}"
    return Workload(name, model, batch)


def cnn_workload(batch_size: int, seed: int) -> Workload:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # [1797, 1, 8, 8] in [0, 1]
    y = torch.from_numpy(digits.target).long()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    def batch():
        idx = torch.randint(len(y), (batch_size,), generator=generator)
        return (x[idx],), y[idx]

    # The project's CNN as examples/digits/params.yaml trains it (train.model's defaults for a cnn).
    network = CNNParams(architecture="cnn").model_dump(exclude={"architecture"})
    config = CNNConfig(in_channels=1, height=8, width=8, n_classes=10, **network)
    return Workload(f"CNN 8x8x1 conv{'-conv'.join(map(str, config.channels))}", build_model(config), batch)


def training_step(w: Workload, precision: str) -> Callable[[], None]:
    """One step as Evergreen's fit takes it: autocast forward, fp32 loss, backward, clip, AdamW."""
    optimizer = torch.optim.AdamW(w.model.parameters(), lr=1e-3, weight_decay=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    w.model.train()

    def step() -> None:
        inputs, y = w.batch()
        with autocast:
            logits = w.model(*inputs)
        loss = nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(w.model.parameters(), 1.0)
        optimizer.step()

    return step


def seconds_per_step(step: Callable[[], None], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


# ---------------------------------------------------------------- the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="square matmul sizes")
    parser.add_argument("--repeats", type=int, default=5, help="matmul repeats per size (best kept)")
    parser.add_argument("--batch", type=int, default=512, help="training batch size")
    parser.add_argument("--steps", type=int, default=100, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="MLP hidden sizes (default: the params')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = OtherLoad().start()
    print("\n".join(cpu_report()))

    peak = matmul_peak(args.sizes, args.repeats)
    print(f"\nmatmul peak, GFLOP/s (n x n @ n x n, best of {args.repeats}):")
    print(f"  {'n':>6s}{'fp32':>10s}{'bf16':>10s}{'bf16/fp32':>11s}")
    for n in args.sizes:
        print(f"  {n:6d}{peak['fp32', n]:10,.0f}{peak['bf16', n]:10,.0f}{peak['bf16', n] / peak['fp32', n]:10.2f}x")
    top = {name: max(v for (d, _), v in peak.items() if d == name) for name in DTYPES}
    print(f"  peak: fp32 {top['fp32']:,.0f}, bf16 {top['bf16']:,.0f} GFLOP/s; bf16/fp32 {top['bf16'] / top['fp32']:.2f}x")

    workloads = [
        mlp_workload(args.batch, args.seed, tuple(args.hidden) if args.hidden else None),
        cnn_workload(args.batch, args.seed),
    ]
    print(f"\nFLOPs per training step (batch {args.batch}, forward + backward, FlopCounterMode):")
    for w in workloads:
        inputs, y = w.batch()
        w.flops = counted_flops(w.model, inputs, y)
        check = ""
        if w.name.startswith("MLP"):
            analytic = mlp_analytic_flops(w.model, args.batch)
            check = f"; analytic {analytic / 1e6:,.1f} M ({'equal' if analytic == w.flops else 'DIFFERENT'})"
        print(f"  {w.name:26s}{w.flops / 1e6:10,.1f} MFLOP{check}")

    steps = {(w.name, p): training_step(w, p) for w in workloads for p in DTYPES}
    for step in steps.values():  # warm-up: oneDNN kernels, optimizer state
        seconds_per_step(step, 10)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            times[key].append(seconds_per_step(step, args.steps))

    flops = {w.name: w.flops for w in workloads}
    print(f"\ntraining steps, {args.steps} steps x {args.rounds} rounds, median; {torch.get_num_threads()} threads:")
    print(
        f"  {'model':26s}{'precision':>10s}{'ms/step':>9s}{'samples/s':>11s}{'GFLOP/s':>9s}{'of fp32 peak':>14s}{'of bf16 peak':>14s}"
    )
    for (name, precision), values in times.items():
        seconds = statistics.median(values)
        achieved = flops[name] / seconds / 1e9
        print(
            f"  {name:26s}{precision:>10s}{seconds * 1e3:9.2f}{args.batch / seconds:11,.0f}{achieved:9.1f}"
            f"{achieved / top['fp32']:13.1%}{achieved / top['bf16']:14.1%}"
        )
    print(load.report())


if __name__ == "__main__":
    main()
