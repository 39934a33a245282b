"""The base of every params section: frozen, no unknown keys, no silent type coercion, finite numbers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_SOURCE = "default"


class Section(BaseModel):
    """Base for every params section: immutable, no unknown keys, no silent coercion of types."""

    # allow_inf_nan=False: "lr: .inf" or ".nan" is an error naming the key, not a silently broken run.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
