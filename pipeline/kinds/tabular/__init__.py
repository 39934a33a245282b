"""The tabular data kind (see ``pipeline/kinds/base.py`` for the contract)."""

from __future__ import annotations

from pipeline.kinds.base import Kind, KindStages
from pipeline.kinds.tabular import runtime


def _stages() -> KindStages:
    from pipeline.kinds.tabular import stages

    return stages


KIND = Kind(name="tabular", runtime=runtime, load_stages=_stages)
