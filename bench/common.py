"""Shared pieces of the benchmarks: the pipeline's training setup and a meter of the machine's other load."""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.core.io import read_table, split_file
from pipeline.engine import Tensors
from pipeline.kinds.tabular.encoder import load_preprocessor
from pipeline.models import ModelConfig
from pipeline.params import MLPParams, TabularParams, TrainParams, load_params

BUSY = 0.25  # other processes' share of the CPUs above which the figures are flagged


@dataclass(frozen=True)
class Setup:
    """The params, the encoded training and validation splits, and the MLP's config."""

    params: TabularParams
    train: Tensors
    val: Tensors
    config: ModelConfig

    @property
    def cfg(self) -> TrainParams:
        return self.params.train


def load_setup(hidden: tuple[int, ...] | None = None) -> Setup:
    """The pipeline's training data and model, after `dvc repro` (``hidden`` overrides the params' sizes)."""
    params = load_params(REPO / "params.yaml")
    network = params.train.model
    if not (isinstance(params, TabularParams) and isinstance(network, MLPParams)):
        raise SystemExit(
            "these benchmarks time the tabular MLP: params.yaml needs ingest.kind tabular and train.model.architecture mlp"
        )
    paths = params.paths
    pre = load_preprocessor(REPO / paths.preprocessor)
    train = Tensors.encode(read_table(REPO / split_file(paths.augmented, "train")), pre)
    val = Tensors.encode(read_table(REPO / split_file(paths.split, "val")), pre)
    config = ModelConfig(
        n_numeric=pre.n_numeric_inputs,
        cardinalities=tuple(pre.cardinalities),
        n_classes=len(pre.classes),
        hidden=tuple(hidden or network.hidden),
        dropout=network.dropout,
        batch_norm=network.batch_norm,
        categorical_encoding=network.categorical_encoding,
        embedding_dim=network.embedding_dim,
    )
    return Setup(params, train, val, config)


def input_width(model: nn.Module) -> int:
    """Width of the first Linear layer's input (numeric features + embeddings for the MLP)."""
    return next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features


class OtherLoad:
    """How busy the CPUs were with other processes between start() and report(): the machine is shared.

    Busy CPU time from /proc/stat (steal included) minus this process's and its children's CPU time,
    as a share of all the CPUs' wall time, plus the load averages at start and end.
    """

    def start(self) -> OtherLoad:
        self._load = os.getloadavg()
        self._stat, self._own, self._wall = self._busy(), self._own_seconds(), time.perf_counter()
        return self

    def report(self) -> str:
        wall = time.perf_counter() - self._wall
        busy, own = self._busy() - self._stat, self._own_seconds() - self._own
        cpus = os.cpu_count() or 1
        others = math.nan if math.isnan(busy) else max(0.0, busy - own) / (wall * cpus)
        fmt = lambda loads: " ".join(f"{x:.2f}" for x in loads)  # noqa: E731
        warning = " (busy: treat these figures with caution)" if others > BUSY else ""
        return (
            f"machine: {cpus} CPUs; other processes used {others:.0%} of them during the run{warning}; "
            f"load average {fmt(self._load)} at start, {fmt(os.getloadavg())} at end"
        )

    @staticmethod
    def _busy() -> float:
        """Non-idle CPU seconds since boot (user nice system irq softirq steal), NaN off Linux."""
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        except OSError:
            return math.nan
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_seconds() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system
