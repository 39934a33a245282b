"""Small shared pieces every stage uses: the data schema, file I/O, hashing, logging, stage entry."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pipeline.config import DEFAULT_PARAMS_FILE, Params, load_params
from pipeline.errors import DataError, EvergreenError

log = logging.getLogger(__name__)

FeatureKind = Literal["numeric", "categorical"]
DATA_FILE = "data.parquet"
SCHEMA_FILE = "schema.json"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind


@dataclass(frozen=True)
class Schema:
    """What the columns of a table mean: the label, the time column, the features and the classes."""

    target: str
    features: tuple[Feature, ...]
    time_column: str | None = None
    classes: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = field(default=())  # kept for splitting (time, group), not features

    @property
    def numeric(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [f.name for f in self.features if f.kind == "categorical"]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def with_classes(self, classes: tuple[str, ...]) -> Schema:
        return replace(self, classes=classes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        return cls(
            target=data["target"],
            features=tuple(Feature(**f) for f in data["features"]),
            time_column=data.get("time_column"),
            classes=tuple(data.get("classes", ())),
            extra_columns=tuple(data.get("extra_columns", ())),
        )


# ---------------------------------------------------------------- files


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON deterministically (sorted keys) so unchanged results give unchanged files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet file written by an upstream stage."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run the upstream stage first: dvc repro)")
    return pd.read_parquet(path)


def write_table(path: str | Path, frame: pd.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def write_dataset(directory: str | Path, frame: pd.DataFrame, schema: Schema) -> None:
    """A stage's data output: ``data.parquet`` plus the ``schema.json`` that describes it."""
    directory = Path(directory)
    write_table(directory / DATA_FILE, frame)
    write_json(directory / SCHEMA_FILE, schema.to_dict())


def read_dataset(directory: str | Path) -> tuple[pd.DataFrame, Schema]:
    directory = Path(directory)
    return read_table(directory / DATA_FILE), read_schema(directory)


def read_schema(directory: str | Path) -> Schema:
    return Schema.from_dict(read_json(Path(directory) / SCHEMA_FILE))


def split_file(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.parquet"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def frame_sha256(frame: pd.DataFrame) -> str:
    """Content hash of a table, independent of how it was stored on disk."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- stage entry point


def setup_logging() -> None:
    level = os.environ.get("EVERGREEN_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_or_exit(command: Callable[[], Any]) -> Any:
    """Run a command-line action: a user error (EvergreenError) becomes one logged line and exit code 1."""
    try:
        return command()
    except EvergreenError as exc:
        log.error("%s", exc)
        sys.exit(1)


def stage_main(run: Callable[[Params], Any], params_file: str | Path = DEFAULT_PARAMS_FILE) -> None:
    """Run a stage from the command line: load params once, report user errors as one line, exit 1."""
    setup_logging()
    run_or_exit(lambda: run(load_params(params_file)))
