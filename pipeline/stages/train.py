"""Stage train: the data kind prepares its tensors (fitting its encoder on the training split), the
engine trains the network and saves it.

The kind is the one ``paths.split`` holds (its schema says). The engine (``pipeline.engine``) does
the rest: early stopping on one validation metric, a self-describing best model and a last
checkpoint to resume from, curves to DVCLive (``dvc plots``) and TensorBoard, and, with
``train.ddp.nproc_per_node`` > 1, this command re-run as DDP ranks under torchrun.

Inputs:  ``paths.split`` (train/val split and schema.json), ``paths.augmented`` (the training rows
         trained on), ``paths.init_model`` (a warm start's model and encoder, optional)
Outputs: ``paths.preprocessor``, ``paths.model`` (best), ``paths.checkpoints`` (last),
         ``paths.train_live`` (DVCLive metrics and plots), ``paths.tensorboard``
Params:  ``features``, ``train``, ``seed``
Command: ``python -m pipeline.stages.train``
"""

from __future__ import annotations

import functools
from typing import Any

from pipeline import engine, kinds
from pipeline.engine import Distributed, Prepared
from pipeline.params import FeatureParams, Paths, TrainParams
from pipeline.stages.common import stage_main

COMMAND = "pipeline.stages.train"  # the module torchrun re-runs as every DDP rank


def prepare(features: FeatureParams, cfg: TrainParams, paths: Paths, encoder: dict[str, Any] | None = None) -> Prepared:
    """The training inputs of the data kind found in ``paths.split`` (``encoder``: a warm start's)."""
    return kinds.get(kinds.data_kind(paths.split)).stages().prepare(features, cfg, paths, encoder)


def run(
    features: FeatureParams, cfg: TrainParams, paths: Paths, seed: int, dist: Distributed = Distributed()
) -> dict[str, Any]:
    return engine.train_and_save(functools.partial(prepare, features, cfg, paths), cfg, paths, seed, dist)


def main() -> None:
    stage_main(lambda p: engine.train_command(functools.partial(run, p.features, p.train, p.paths, p.seed), p.train, COMMAND))


if __name__ == "__main__":
    main()
