"""The data-kind contract: what every kind (tabular, image, sequence, ...) provides.

A kind is a package under ``pipeline/kinds/`` with two halves:

* ``stages``: the seven DVC stages' work for this kind (``KindStages``). It may use torch; a stage
  module loads it through ``kinds.get(name).stages()`` and calls one function.
* ``runtime``: what the lifecycle needs without torch (``KindRuntime``): score an exported model on a
  split (the champion/challenger gate), turn raw records into its ONNX feed and the model's outputs into
  per-record answers and log rows (the service), screen a landed batch (landing), and the frame a drift
  check compares, grouped where groups drift apart (the monitor). The registry, the gate,
  the monitor and the service import only this half, through the kind table. A step a kind does not
  provide yet raises ``NotSupportedYet``: one line naming the kind and the step.

Each kind's encoder (the statistics fitted on the training split that turn raw data into the network's
tensors) keeps one contract, ``Encoder``, whatever the data: ``fit`` learns, ``transform`` applies,
``to_dict``/``from_dict`` save and restore it as JSON (``paths.preprocessor``; the registry keeps it).

Both halves are plain modules whose functions match these protocols (checked by mypy). A kind never
imports a stage module or another kind; what kinds share lives in the lower layers (``pipeline.shared``,
``pipeline.engine``, ``pipeline.models``, ``pipeline.onnxio``, ``pipeline.core``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from pipeline.core.errors import DataError, ParamsError

if TYPE_CHECKING:  # the engine imports torch; the contract itself must not (nor load numpy and pandas)
    import numpy as np
    import pandas as pd

    from pipeline.engine import Prepared
    from pipeline.onnxio.card import ModelCard
    from pipeline.params import (
        AugmentParams,
        CleanParams,
        EvaluateParams,
        ExportParams,
        FeatureParams,
        IngestParams,
        Params,
        Paths,
        SplitParams,
        TrainParams,
    )

Report = dict[str, Any]
T = TypeVar("T")
# Why a landed file cannot be used (empty: it can); built once per screening by ``KindRuntime.landing_screen``.
BatchScreen = Callable[[Path], list[str]]


@dataclass(frozen=True)
class LandingScreen:
    """A kind's whole landing rule, returned by ``KindRuntime.landing_screen`` where plain table files are not
    its batches (a plain ``BatchScreen`` means: CSV/Parquet files, read as tables). Called, it is the check.

    ``suffixes``: the file types a batch may have (anything else is quarantined unread); ``folders``: whether
    a folder is one batch (an ImageFolder tree); ``rows``: the rows (images, steps) of a usable batch;
    ``read``: a batch, or the registry's reference (the training split file), as the frame
    ``KindRuntime.drift_frame`` takes (images: one row of statistics per image, never the pixels)."""

    problems: BatchScreen
    rows: Callable[[Path], int]
    read: Callable[[Path], pd.DataFrame]
    suffixes: frozenset[str]
    folders: bool = False

    def __call__(self, path: Path) -> list[str]:
        return self.problems(path)


# The drift frame's column of the production model's predicted class (classifiers, when the monitor passes the
# model), and the prediction log's column that carries the class the service answered (``serving.predlog.read_log``),
# so logged rows need no rescoring.
PREDICTED = "predicted"
LOGGED_LABEL = "__logged_label__"


TableCheck = Callable[["pd.DataFrame"], list[str]]


def table_landing(check: TableCheck) -> LandingScreen:
    """The landing rule of a kind whose batches are CSV/Parquet tables (sequences' long tables, texts):
    ``check`` gives a read table's problems; an unreadable file is one problem naming why."""
    from pipeline.shared.tables import TABLE_SUFFIXES, read_table_file

    def problems(path: Path) -> list[str]:
        try:
            frame = read_table_file(path)
        except DataError as exc:
            return [str(exc).removeprefix(f"{path}: ")]
        return check(frame)

    return LandingScreen(
        problems=problems,
        rows=lambda path: len(read_table_file(path)),
        read=read_table_file,
        suffixes=frozenset(TABLE_SUFFIXES),
    )


def landed_tables(landing: Path, check: TableCheck) -> list[tuple[Path, pd.DataFrame]]:
    """Every landed table for ingest (``batch_files``: CSV/Parquet, no hidden files, no links), checked as the
    landing screen checks it; a bad one stops ingest naming it (the screen quarantines bad ones before a retrain)."""
    from pipeline.shared.tables import batch_files, read_table_file

    batches = []
    for path in batch_files(landing):
        frame = read_table_file(path)
        problems = check(frame)
        if problems:
            raise DataError(f"{path}: landed batch cannot be used: {'; '.join(problems)}")
        batches.append((path, frame))
    return batches


class NotSupportedYet(DataError):
    """A lifecycle step this kind does not provide yet (serving, landing, drift): one line naming both."""


class RecordError(DataError):
    """A raw record the model cannot take (not an object, a missing, unknown or mistyped field): one line
    naming the record and the field. The service answers it with 422."""


def narrow(section: object, expected: type[T]) -> T:
    """A params section as the variant the kind needs. The stage reads the kind from its input folder
    and the section from params.yaml; they disagree only when data of another kind is left over."""
    if not isinstance(section, expected):
        raise ParamsError(
            f"params.yaml holds {type(section).__name__} but the data in this stage's input is for {expected.__name__}: "
            "ingest.kind changed since the data was made; run the pipeline from ingest (dvc repro)"
        )
    return section


class Encoder(Protocol):
    """A kind's fitted encoder (scikit-learn's contract): learned on the training split only, then applied
    unchanged by training, evaluate, export (inside the ONNX graph) and a warm start.

    Per kind, ``fit(train, schema, features)`` takes the kind's training data, schema and ``features``
    params, and ``transform`` maps raw data to the network's inputs: tabular rows -> (x_num, x_cat),
    images [N, C, H, W] -> normalised images, windows [N, L, F] -> normalised windows.
    """

    @classmethod
    def fit(cls, train: Any, schema: Any, features: Any) -> Self:
        """Learn every statistic from the training data (never from validation, test or serving data)."""
        ...

    def transform(self, data: Any) -> Any:
        """Raw data -> the network's inputs; learns nothing."""
        ...

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in output order (empty for a forecaster); a warm start keeps an encoder only for the same."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``paths.preprocessor``): byte-stable, read back by ``from_dict``."""
        ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...


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


class FeedSchema(Protocol):
    """What the service needs of every kind's feed schema; the rest is the kind's own (its ``build_feed`` reads it)."""

    @property
    def names(self) -> tuple[str, ...]:
        """The record fields the model takes, in the card's order (tabular: the fields the log keeps)."""
        ...

    @property
    def outputs(self) -> tuple[str, ...]:
        """The ONNX outputs the service runs, in the order ``KindRuntime.answer`` takes them."""
        ...


@dataclass(frozen=True)
class Answers:
    """One request's results, record by record (all three lists in record order).

    ``answers``: each record's answer as JSON-ready fields (the service adds ``index``): a classifier's
    ``label`` and ``probabilities`` by class, a numeric prediction's ``value`` (tabular regression) or
    ``forecast`` and ``times`` (sequences), in target units. ``labels`` and ``vectors`` fill the prediction
    log's ``label`` (text) and ``probabilities`` (JSON list) columns: a classifier's label and its
    probabilities in class order; a numeric prediction's first value as text and the whole output vector
    (a forecast's H values), so the log's schema is the same for every kind.
    """

    answers: list[dict[str, Any]]
    labels: list[str]
    vectors: list[list[float]]


SchemaT = TypeVar("SchemaT", bound=FeedSchema)


class KindRuntime(Protocol[SchemaT]):
    """The torch-free half: what the lifecycle (gate, registry, monitor, serving) needs of a kind.

    ``SchemaT`` is the kind's own feed schema: what ``feed_schema`` returns, ``build_feed`` takes.
    """

    def score_split(self, onnx_path: str | Path, card: ModelCard, split_dir: str | Path) -> dict[str, float]:
        """The exported model's gate metrics on the test split in ``split_dir`` (onnxruntime only); a card
        of another kind is a one-line error."""
        ...

    def feed_schema(self, card: ModelCard) -> SchemaT:
        """What ``build_feed`` checks records against, worked out once, when the service loads the model;
        a card of another kind is a one-line error, and so (``NotSupportedYet``) is a kind the service cannot serve."""
        ...

    def build_feed(self, records: Sequence[Any], schema: SchemaT) -> dict[str, np.ndarray]:
        """Raw JSON records (objects of field -> value) -> the model's ONNX feed, on every request;
        a record the model cannot take is a ``RecordError``."""
        ...

    def answer(self, outputs: Sequence[np.ndarray], records: Sequence[Any], schema: SchemaT) -> Answers:
        """The model's outputs (``schema.outputs``, in that order) for ``records`` (which ``build_feed``
        accepted) as per-record answers and log values."""
        ...

    def log_inputs(self, records: Sequence[Any], feed: dict[str, np.ndarray], schema: SchemaT) -> list[str]:
        """What the prediction log keeps of each record, as JSON text, in a form the drift monitor can read
        (tabular: the model's fields; images: summary statistics and a hash, never the pixels)."""
        ...

    def landing_screen(self, params: Params) -> BatchScreen:
        """The check of one landed file for this pipeline: its problems, empty when the batch is usable (a
        ``LandingScreen`` where the kind's batches are not plain tables: it says which entries it takes and reads them).
        What every batch is checked against (e.g. the source's columns) is read once, here; a kind that
        takes no landed data raises ``NotSupportedYet``."""
        ...

    def drift_frame(self, frame: pd.DataFrame, card: ModelCard, params: Params, model: Path | None = None) -> pd.DataFrame:
        """The columns of raw rows ``frame`` (a ``LandingScreen.read`` frame, or the prediction log's rows) that a
        drift check compares, prepared as training prepared them:
        numbers float64, categories pandas strings (the check picks each column's test by its dtype);
        ``NotSupportedYet`` for a kind whose drift is not checked yet.

        ``model`` is the production model's ONNX file (the monitor passes it; the card is its card): a kind may
        add columns the model gives, such as the predicted class (``PREDICTED``; rows from the prediction log
        carry it in ``LOGGED_LABEL``) or, for text, the share of words unseen in training."""
        ...

    def score_rows(self, onnx_path: Path, card: ModelCard, frame: pd.DataFrame, params: Params) -> dict[str, float]:
        """The production model's metrics on the labelled rows of ``frame`` (landed batches, or the log's rows with
        late labels joined into the target), for performance drift: the gate's metric names (``accuracy`` for a
        classifier, ``mae`` for a numeric prediction) and ``rows`` (how many were scored); empty when no row
        carries a usable label."""
        ...

    def drift_groups(self, card: ModelCard) -> str | None:
        """The raw rows' column whose groups the monitor also checks one by one, each group's new rows against
        the same group's reference rows (sequences: the series column, as one series' shift is diluted among
        the others); None: rows are compared all together."""
        ...


@dataclass(frozen=True)
class Kind:
    """A registered kind: its name, its runtime module and a loader for its stages (which import torch)."""

    name: str
    runtime: KindRuntime[Any]
    load_stages: Callable[[], KindStages]

    def stages(self) -> KindStages:
        return self.load_stages()
