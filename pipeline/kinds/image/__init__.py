"""The image data kind (see ``pipeline/kinds/base.py`` for the contract)."""

from __future__ import annotations

from pipeline.kinds.base import Kind, KindStages
from pipeline.kinds.image import runtime


def _stages() -> KindStages:
    from pipeline.kinds.image import stages

    return stages


KIND = Kind(name="image", runtime=runtime, load_stages=_stages)
