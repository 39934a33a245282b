"""The tabular kind's stages (the ``KindStages`` contract): one function per DVC stage."""

from __future__ import annotations

from pipeline.kinds.tabular.augment import run as augment
from pipeline.kinds.tabular.clean import run as clean
from pipeline.kinds.tabular.evaluate import run as evaluate
from pipeline.kinds.tabular.export import run as export
from pipeline.kinds.tabular.ingest import run as ingest
from pipeline.kinds.tabular.split import run as split
from pipeline.kinds.tabular.train import prepare_tabular as prepare

__all__ = ["augment", "clean", "evaluate", "export", "ingest", "prepare", "split"]
