"""The model card: what every exported model carries beside it (inputs, outputs, classes, metrics, hashes,
versions), as one typed, frozen contract. Torch-free: the registry, the gate, the monitor and the service read it.

A card is ``model_card.json`` beside ``model.onnx``; one class per data kind, told apart by ``kind``
(absent on tabular cards, which never wrote it), with the kind's own ``inputs``:

* ``TabularCard``: one [N, 1] input per raw column, ``NumericInput`` (float32, NaN = missing) or
  ``CategoricalInput`` (string, "" = missing, with the categories seen in training);
* ``ImageCard``: one ``ImageInput``, raw pixels float32 [N, C, H, W] (the normalisation is inside the graph);
* ``SequenceCard``: one ``WindowInput``, raw windows float32 [N, lookback, features], and the windowing;
* ``TextCard``: one ``TextInput``, raw strings [N] (the tokeniser is inside the graph).

``ModelCard.load(path)`` validates a card of any version written so far (the registry keeps old ones) and
fails with one line naming the file and the field; ``card.write(path)`` writes the same deterministic JSON
as before (``core.io.write_json``), so the card's bytes depend only on the model and its data.
Exporters build the fields shared by every kind with ``pipeline.onnxio.describe.card_fields`` (torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from pipeline.core.errors import DataError
from pipeline.core.io import read_json, write_json

TABULAR: Final = "tabular"  # the kind of a card that names none (tabular cards never did)
# Names inside every exported graph: its outputs and the prefixes of its internal tensors. A raw input
# (a table's feature column) may not take one, or the merged graph would wire it to the wrong tensor.
PROBABILITIES: Final = "probabilities"
LABEL: Final = "label"
FORECAST: Final = "forecast"  # a forecaster's or regressor's values [N, H], in target units
NET_PREFIX: Final = "net/"
GRAPH_PREFIXES: Final = ("prep/", "post/", NET_PREFIX)
GRAPH_NAMES: Final = frozenset({PROBABILITIES, LABEL, "x_num", "x_cat"})


def graph_name_clashes(names: list[str]) -> list[str]:
    """The input names that an exported graph cannot take (see ``GRAPH_NAMES``, ``GRAPH_PREFIXES``)."""
    return sorted(name for name in names if name in GRAPH_NAMES or name.startswith(GRAPH_PREFIXES))


# JSON numbers that are written back as they came (an int stays an int: the card's bytes must not change).
Number = int | float
Dim = str | int  # "N" (the batch axis) or a fixed size
Task = Literal["classification", "regression"]


def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: tuple) -> bool:
    return not value


class _Frozen(BaseModel):
    """Immutable, and unknown keys are errors: a card holds exactly the fields described here."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- inputs, per kind


class NumericInput(_Frozen):
    """A numeric column: float32 [N, 1], NaN for missing (imputed inside the graph)."""

    name: str
    kind: Literal["numeric"]
    onnx_type: Literal["float32"]
    shape: tuple[Dim, ...]
    missing: str
    # clean.valid_ranges: the graph makes values outside [min, max] missing (null: no bound); absent: none.
    valid_range: tuple[Number | None, Number | None] | None = Field(default=None, exclude_if=_is_none)

    @classmethod
    def of(cls, name: str, low: float | None = None, high: float | None = None) -> NumericInput:
        bounds = None if low is None and high is None else (low, high)
        return cls(name=name, kind="numeric", onnx_type="float32", shape=("N", 1), missing="NaN", valid_range=bounds)


class CategoricalInput(_Frozen):
    """A categorical column: string [N, 1], "" for missing; values outside ``known_values`` share the rare slot."""

    name: str
    kind: Literal["categorical"]
    onnx_type: Literal["string"]
    shape: tuple[Dim, ...]
    missing: str
    known_values: tuple[str, ...]

    @classmethod
    def of(cls, name: str, known_values: tuple[str, ...]) -> CategoricalInput:
        return cls(
            name=name,
            kind="categorical",
            onnx_type="string",
            shape=("N", 1),
            missing="empty string",
            known_values=known_values,
        )


TabularInput = Annotated[NumericInput | CategoricalInput, Field(discriminator="kind")]
INPUT_KINDS = ("numeric", "categorical")


class Normalisation(_Frozen):
    """Per-channel mean and std, applied inside the graph (callers feed raw pixels)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class ImageInput(_Frozen):
    """Raw images float32 [N, C, H, W] in ``value_range``; ``channels`` names the mode (grayscale | rgb)."""

    name: str
    kind: Literal["image"]
    onnx_type: Literal["float32"]
    shape: tuple[Dim, ...]
    layout: Literal["NCHW"]
    value_range: tuple[Number, Number]
    channels: Literal["grayscale", "rgb"]
    normalisation: Normalisation

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        _, channels, height, width = self.shape
        return int(channels), int(height), int(width)


class WindowInput(_Frozen):
    """Raw windows float32 [N, lookback, features] in the features' own units (no gaps)."""

    name: str
    onnx_type: Literal["float32"]
    shape: tuple[Dim, ...]
    features: tuple[str, ...]
    units: str
    missing: str


class Tokenisation(_Frozen):
    """How the graph cuts a text into token ids (the saved tokeniser's settings, not its vocabulary)."""

    pattern: str  # the RE2 / Python regular expression whose every match is a token
    lowercase: bool  # A-Z -> a-z first (ASCII only)
    max_length: int  # ids the network reads per text, [CLS] included; longer texts are cut
    vocab_size: int  # special ids included


class TextInput(_Frozen):
    """Raw texts, string [N]: one UTF-8 string per record, tokenised inside the graph."""

    name: str
    onnx_type: Literal["string"]
    shape: tuple[Dim, ...]
    tokenisation: Tokenisation


# ---------------------------------------------------------------- the fields every kind shares


class Output(_Frozen):
    """One graph output; a forecast's carries its ``units``."""

    name: str
    onnx_type: str
    shape: tuple[Dim, ...]
    units: str | None = Field(default=None, exclude_if=_is_none)


class BestMetric(_Frozen):
    name: str
    value: float


class TrainedModel(_Frozen):
    """The network's config (``NetworkConfig.to_dict``) and where training stopped."""

    config: dict[str, Any]
    best_epoch: int
    best_metric: BestMetric


class Parity(_Frozen):
    """The export's ONNX-vs-PyTorch check on the test split (classifiers: probabilities; forecasters: values)."""

    rows: int
    tolerance: float
    label_mismatches: int
    max_abs_probability_diff: float | None = Field(default=None, exclude_if=_is_none)
    max_abs_diff: float | None = Field(default=None, exclude_if=_is_none)
    max_scaled_diff: float | None = Field(default=None, exclude_if=_is_none)
    # A table's test split larger than export.parity_max_rows: the rows it was sampled from (``rows`` were run).
    test_rows: int | None = Field(default=None, exclude_if=_is_none)


class Int8Report(_Frozen):
    """The int8 twin against the fp32 model on the test split: a classifier's accuracy, label agreement and
    largest probability difference; or a numeric model's (a forecaster's) MAE in target units and largest
    difference of its values."""

    bytes: int
    fp32_bytes: int
    accuracy: float | None = Field(default=None, exclude_if=_is_none)
    fp32_accuracy: float | None = Field(default=None, exclude_if=_is_none)
    label_agreement: float | None = Field(default=None, exclude_if=_is_none)
    max_abs_probability_diff: float | None = Field(default=None, exclude_if=_is_none)
    mae: float | None = Field(default=None, exclude_if=_is_none)
    fp32_mae: float | None = Field(default=None, exclude_if=_is_none)
    max_abs_diff: float | None = Field(default=None, exclude_if=_is_none)

    @model_validator(mode="after")
    def _one_kind_of_model(self) -> Self:
        classifier = (self.accuracy, self.fp32_accuracy, self.label_agreement, self.max_abs_probability_diff)
        numeric = (self.mae, self.fp32_mae, self.max_abs_diff)
        if not (_all_set(classifier) and not any(v is not None for v in numeric)) and not (
            _all_set(numeric) and not any(v is not None for v in classifier)
        ):
            raise ValueError(
                "int8 holds a classifier's accuracy, fp32_accuracy, label_agreement and max_abs_probability_diff, "
                "or a numeric model's mae, fp32_mae and max_abs_diff"
            )
        return self

    @property
    def accuracy_loss(self) -> float:
        """What the int8 model loses, as a share (the retrain flow serves it when this is at most
        ``gate.int8_max_accuracy_loss``): a classifier's test accuracy points; a numeric model's MAE increase
        over the fp32 model's, relative to it (0.01: a 1% larger MAE; negative: smaller)."""
        if self.mae is not None and self.fp32_mae is not None:
            if self.fp32_mae > 0:
                return (self.mae - self.fp32_mae) / self.fp32_mae
            return 0.0 if self.mae <= self.fp32_mae else float("inf")
        assert self.accuracy is not None and self.fp32_accuracy is not None  # the validator's invariant
        return self.fp32_accuracy - self.accuracy


def _all_set(values: tuple[float | None, ...]) -> bool:
    return all(v is not None for v in values)


class Versions(_Frozen):
    torch: str
    onnx: str
    onnxruntime: str


class ModelCard(_Frozen):
    """The fields of every kind's card; ``load`` returns the card of the kind the file names."""

    KIND: ClassVar[str] = "any"

    task: Task
    target: str
    classes: tuple[str, ...]  # empty for a forecaster
    outputs: tuple[Output, ...]
    model: TrainedModel
    # "test": the model's test metrics; "baseline_<name>": each baseline's, as evaluate reported them.
    metrics: dict[str, dict[str, Any]]
    parity: Parity
    int8: Int8Report | None = None  # None: no int8 twin (cards before int8 existed have no key)
    # onnx_sha256 (+ onnx_int8_sha256), <split>_data_sha256, preprocessor_sha256, train_params_sha256
    hashes: dict[str, str]
    versions: Versions

    @property
    def test_metrics(self) -> dict[str, Any]:
        return self.metrics["test"]

    @property
    def onnx_hashes(self) -> set[str]:
        """The sha256 of the fp32 model and of its int8 twin, as far as the card records them."""
        return {self.hashes[key] for key in ("onnx_sha256", "onnx_int8_sha256") if key in self.hashes}

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """The card at ``path``, of the class asked for (``ModelCard``: any kind); one line naming the
        file and the field when it is missing, malformed, or of another kind."""
        card = parse_card(read_json(path), path)
        if not isinstance(card, cls):
            raise DataError(f"{path}: the card of a model of kind {card.kind!r}; this needs a {cls.KIND} model")
        return card

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready data: the keys and values ``model_card.json`` holds."""
        return self.model_dump()

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


class TabularCard(ModelCard):
    KIND: ClassVar[str] = TABULAR
    # Not written: tabular cards never had a kind, and a card's bytes must not change.
    kind: Literal["tabular"] = Field(default=TABULAR, exclude=True)
    inputs: tuple[TabularInput, ...]
    # clean.missing_tokens: texts that mean "missing" in any field (the graph maps them in categorical
    # inputs; a service maps them to NaN in numeric ones). Absent on cards written before.
    missing_tokens: tuple[str, ...] = Field(default=(), exclude_if=_is_empty)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def numeric_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs if spec.kind == "numeric")

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs if spec.kind == "categorical")


class ImageCard(ModelCard):
    KIND: ClassVar[str] = "image"
    kind: Literal["image"]
    inputs: tuple[ImageInput]


class SequenceCard(ModelCard):
    KIND: ClassVar[str] = "sequence"
    kind: Literal["sequence"]
    inputs: tuple[WindowInput]
    sequence_task: Literal["forecast", "classify"]
    lookback: int
    horizon: int
    season_length: int
    frequency: str | int  # a pandas offset alias for datetimes, a number of units for numeric times
    series_column: str
    time_column: str
    features: tuple[str, ...]
    int8_note: str


class TextCard(ModelCard):
    KIND: ClassVar[str] = "text"
    kind: Literal["text"]
    inputs: tuple[TextInput]
    text_column: str


def _card_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", TABULAR))
    return str(getattr(value, "kind", TABULAR))


AnyCard = Annotated[
    Annotated[TabularCard, Tag("tabular")]
    | Annotated[ImageCard, Tag("image")]
    | Annotated[SequenceCard, Tag("sequence")]
    | Annotated[TextCard, Tag("text")],
    Discriminator(_card_kind),
]
KINDS = ("tabular", "image", "sequence", "text")
_CARDS: TypeAdapter[TabularCard | ImageCard | SequenceCard | TextCard] = TypeAdapter(AnyCard)


def parse_card(data: Any, source: str | Path = "model card") -> TabularCard | ImageCard | SequenceCard | TextCard:
    """A card from its JSON data (``source`` names it in errors)."""
    if not isinstance(data, dict):
        raise DataError(f"{source}: a model card is a JSON object, not {type(data).__name__}")
    kind = data.get("kind", TABULAR)
    if kind not in KINDS:
        raise DataError(f"{source}: model card field 'kind': unknown kind {kind!r}; known: {list(KINDS)}")
    try:
        return _CARDS.validate_python(data)
    except ValidationError as exc:
        raise DataError(f"{source}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    """One line: the first bad field as a dotted path (list items by index), what is wrong, how many more."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    # loc[0] is the card's kind tag; a tabular input's own tag (numeric | categorical) follows its index.
    parts = [
        part for i, part in enumerate(first["loc"][1:]) if not (i and isinstance(first["loc"][i], int) and part in INPUT_KINDS)
    ]
    location = ".".join(str(part) for part in parts)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "missing":
        return f"model card has no field {location!r}{more}"
    if first["type"] == "extra_forbidden":
        return f"model card has an unknown field {location!r}{more}"
    return f"model card field {location!r}: {first['msg']} (got {first['input']!r:.60}){more}"
