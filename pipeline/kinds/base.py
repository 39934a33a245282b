"""The data-kind contract: what every kind (tabular, image, sequence, ...) provides.

A kind is a package under ``pipeline/kinds/`` with two halves:

* ``stages``: the seven DVC stages' work for this kind (``KindStages``). It may use torch; a stage
  module loads it through ``kinds.get(name).stages()`` and calls one function.
* ``runtime``: what the lifecycle needs without torch (``KindRuntime``): score an exported model on a
  split for the champion/challenger gate. The registry, the gate, the monitor and the service import
  only this half.

Both halves are plain modules whose functions match these protocols (checked by mypy). A kind never
imports a stage module or another kind; what kinds share lives in the lower layers (``pipeline.shared``,
``pipeline.engine``, ``pipeline.models``, ``pipeline.onnxio``, ``pipeline.core``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pipeline.core.errors import ParamsError

if TYPE_CHECKING:  # the engine imports torch; the contract itself must not
    from pipeline.engine import Prepared
    from pipeline.params import (
        AugmentParams,
        CleanParams,
        EvaluateParams,
        ExportParams,
        FeatureParams,
        IngestParams,
        Paths,
        SplitParams,
        TrainParams,
    )

Report = dict[str, Any]
T = TypeVar("T")


def narrow(section: object, expected: type[T]) -> T:
    """A params section as the variant the kind needs. The stage reads the kind from its input folder
    and the section from params.yaml; they disagree only when data of another kind is left over."""
    if not isinstance(section, expected):
        raise ParamsError(
            f"params.yaml holds {type(section).__name__} but the data in this stage's input is for {expected.__name__}: "
            "ingest.kind changed since the data was made; run the pipeline from ingest (dvc repro)"
        )
    return section


class KindStages(Protocol):
    """One function per DVC stage; each reads its input folder in ``paths`` and writes its outputs and report."""

    def ingest(self, cfg: IngestParams, paths: Paths, seed: int) -> Report: ...

    def clean(self, cfg: CleanParams, paths: Paths) -> Report: ...

    def split(self, cfg: SplitParams, paths: Paths, seed: int) -> Report: ...

    def augment(self, cfg: AugmentParams, paths: Paths, seed: int) -> Report: ...

    def prepare(
        self, features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None
    ) -> Prepared:
        """Training inputs: encoded splits, the network config, the fitted encoder (a warm start's when reusable)."""
        ...

    def evaluate(self, cfg: EvaluateParams, paths: Paths, seed: int) -> Report: ...

    def export(self, cfg: ExportParams, paths: Paths) -> Report: ...


class KindRuntime(Protocol):
    """The torch-free half: what the lifecycle (gate, registry, monitor, serving) needs of a kind."""

    def score_split(self, onnx_path: str | Path, card: dict[str, Any], split_dir: str | Path) -> dict[str, float]:
        """The exported model's gate metrics on the test split in ``split_dir`` (onnxruntime only)."""
        ...


@dataclass(frozen=True)
class Kind:
    """A registered kind: its name, its runtime module and a loader for its stages (which import torch)."""

    name: str
    runtime: KindRuntime
    load_stages: Callable[[], KindStages]

    def stages(self) -> KindStages:
        return self.load_stages()
