"""A split as tensors, and the batches of an epoch: index slices in memory, or DataLoader workers."""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from pipeline.core.errors import ParamsError
from pipeline.engine.distributed import Distributed
from pipeline.params import LoaderParams, TrainParams

Task = Literal["classification", "regression"]

# The per-epoch metrics of each task: the first is also shown for the training batches.
TASK_METRICS: dict[str, tuple[str, str]] = {"classification": ("accuracy", "macro_f1"), "regression": ("mae", "rmse")}


class RowEncoder(Protocol):
    """A fitted tabular encoder (``pipeline.kinds.tabular.encoder.Preprocessor``): rows -> arrays."""

    @property
    def target(self) -> str: ...

    def transform(self, frame: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def encode_labels(self, labels: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class Tensors:
    """One split, encoded: the network's inputs (each [N, ...], passed as ``model(*inputs)``) and the
    target ``y``: int64 [N] class indices (classification) or float32 [N, H] values (regression).

    Tabular data has inputs (x_num float32 [N, F], x_cat int64 [N, C]); other data kinds bring
    their own inputs, and the engine never looks inside them.
    """

    inputs: tuple[torch.Tensor, ...]
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device, non_blocking: bool = False) -> Tensors:
        return Tensors(
            tuple(x.to(device, non_blocking=non_blocking) for x in self.inputs), self.y.to(device, non_blocking=non_blocking)
        )

    def pin_memory(self) -> Tensors:
        """A copy in page-locked host memory, so copies to a GPU can be asynchronous (needs CUDA)."""
        return Tensors(tuple(x.pin_memory() for x in self.inputs), self.y.pin_memory())

    def rows(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, ...]:
        return tuple(x[idx] for x in self.inputs)

    @classmethod
    def from_numpy(cls, inputs: Sequence[np.ndarray], y: np.ndarray) -> Tensors:
        """Arrays (``host_array``s or any others) -> a split, without copying them."""
        return cls(tuple(_view(x) for x in inputs), _view(y))

    @classmethod
    def encode(cls, frame, preprocessor: RowEncoder) -> Tensors:
        """Tabular rows through the fitted encoder."""
        x_num, x_cat = preprocessor.transform(frame)
        y = preprocessor.encode_labels(frame[preprocessor.target])
        return cls((torch.from_numpy(x_num), torch.from_numpy(x_cat)), torch.from_numpy(y))


def host_array(shape: tuple[int, ...], dtype: Any, directory: str | Path | None = None) -> np.ndarray:
    """A zeroed array for an encoded split, memory-mapped from a nameless temporary file in ``directory``
    (else ``TMPDIR``). Under memory pressure the kernel writes its pages out and drops them rather than
    failing, so a split larger than free memory still trains (an epoch re-reads the pages it needs). The
    file has no name and disappears with the last array or tensor viewing it, crash or not."""
    if math.prod(shape) == 0:
        return np.zeros(shape, dtype)  # an empty file cannot be mapped
    with tempfile.TemporaryFile(dir=directory) as handle:  # the map keeps its own descriptor
        return np.memmap(handle, dtype=dtype, mode="w+", shape=shape)


def _view(array: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy``; a read-only array (a memmap opened "r") without torch's warning that writing
    to the tensor is undefined: the engine only reads a split (batches are gathered copies)."""
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


def use_pinned_memory(loader: LoaderParams, device: torch.device) -> bool:
    """``train.loader.pin_memory``: ``auto`` pins exactly when training on CUDA (pinning needs it)."""
    if loader.pin_memory == "auto":
        return device.type == "cuda"
    if loader.pin_memory and device.type != "cuda":
        raise ParamsError(f"train.loader.pin_memory = true needs a CUDA device, training runs on {device.type}; use auto")
    return loader.pin_memory


def on_device(data: Tensors, device: torch.device, pin: bool) -> Tensors:
    """The whole split on ``device`` once (through pinned memory when ``pin``)."""
    return (data.pin_memory() if pin else data).to(device, non_blocking=pin)


def batch_count(n: int, batch_size: int, has_batch_norm: bool, dist: Distributed) -> int:
    """Batches per epoch. BatchNorm cannot normalise a batch of one: a trailing batch too small to
    give every rank two rows (one row per rank without batch norm) is dropped."""
    smallest = dist.world * (2 if has_batch_norm else 1)
    return n // batch_size + (1 if n % batch_size >= smallest else 0)


class _SplitRows(torch.utils.data.Dataset):
    """A split for a DataLoader whose every item is a whole batch: ``__getitems__`` slices all rows at once."""

    def __init__(self, data: Tensors):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, idx: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return self.data.rows(idx), self.data.y[idx]


class _EpochBatches:
    """A DataLoader batch sampler: the current epoch's shuffled ``order``, cut into its batches (this
    rank's share of each under DDP)."""

    def __init__(self, batch_size: int, count: int, dist: Distributed):
        self.batch_size, self.count, self.dist = batch_size, count, dist
        self.order = torch.arange(0)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        for b in range(self.count):
            yield self.order[b * self.batch_size : (b + 1) * self.batch_size][self.dist.rank :: self.dist.world]


def _whole_batch(batch):
    return batch  # _SplitRows already returns collated batches


def batch_loader(data: Tensors, cfg: TrainParams, count: int, pin: bool, dist: Distributed) -> torch.utils.data.DataLoader:
    """``train.loader.workers`` processes gathering the batches of a split kept in host memory; pinned
    batches when ``pin``. The batches, and so the results, are those of the in-memory path."""
    return torch.utils.data.DataLoader(
        _SplitRows(data),
        batch_sampler=_EpochBatches(cfg.batch_size, count, dist),
        collate_fn=_whole_batch,
        num_workers=cfg.loader.workers,
        pin_memory=pin,
        persistent_workers=True,
        # The workers' seeds come from their own generator: drawing them from the global one would
        # shift the dropout masks and make the results differ from the in-memory path's.
        generator=torch.Generator().manual_seed(0),
    )


def epoch_batches(
    data: Tensors,
    order: torch.Tensor,
    count: int,
    batch_size: int,
    loader=None,
    device=None,
    dist: Distributed = Distributed(),
):
    """The epoch's ``count`` batches ``(inputs, target)`` in ``order``: index slices of the split where it
    lies, or, with a ``batch_loader``, its workers' batches copied to ``device`` (asynchronously if pinned).

    ``batch_size`` is the global batch: under DDP each rank takes every world-th row of it."""
    if loader is None:
        for b in range(count):
            idx = order[b * batch_size : (b + 1) * batch_size][dist.rank :: dist.world]
            yield data.rows(idx), data.y[idx]
        return
    loader.batch_sampler.order = order.cpu()
    for inputs, target in loader:
        yield tuple(x.to(device, non_blocking=True) for x in inputs), target.to(device, non_blocking=True)
