"""The sequence kind's stages (the ``KindStages`` contract): one function per DVC stage."""

from __future__ import annotations

from pipeline.kinds.sequence.augment import run as augment
from pipeline.kinds.sequence.clean import run as clean
from pipeline.kinds.sequence.evaluate import run as evaluate
from pipeline.kinds.sequence.export import run as export
from pipeline.kinds.sequence.ingest import run as ingest
from pipeline.kinds.sequence.split import run as split
from pipeline.kinds.sequence.train import prepare

__all__ = ["augment", "clean", "evaluate", "export", "ingest", "prepare", "split"]
