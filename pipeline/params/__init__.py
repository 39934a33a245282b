"""Typed, validated view of ``params.yaml``, discriminated by data kind and by architecture.

The YAML file is parsed once into frozen pydantic models. ``ingest.kind`` selects the variant of
every data section (``ingest``, ``clean``, ``augment``, ``features``: each holds only that kind's
keys) and ``train.model.architecture`` the network's section; the combination (kind x architecture
x split method x tuning keys) is checked once, here. Unknown keys, wrong types, non-finite numbers
and impossible values fail fast with a one-line message naming the key, the value and what is
allowed; stage code only ever sees these objects, never the raw dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from pipeline.core.errors import ParamsError
from pipeline.params import data
from pipeline.params.base import DEFAULT_SOURCE, Section
from pipeline.params.data import (
    MISSING_TOKENS,
    FlipParams,
    ImageAugment,
    ImageClean,
    ImageFeatures,
    ImageIngest,
    JitterParams,
    MixupParams,
    NoiseParams,
    OversampleParams,
    PixelNoiseParams,
    RotationParams,
    ScalingParams,
    SequenceAugment,
    SequenceClean,
    SequenceFeatures,
    SequenceIngest,
    ShiftParams,
    SplitParams,
    TabularAugment,
    TabularClean,
    TabularFeatures,
    TabularIngest,
    WindowSlicingParams,
)
from pipeline.params.lifecycle import (
    AUTO_WORKERS_MAX,
    DATABASE_URL_ENV,
    DEFAULT_SPACES,
    TUNE_DATABASE_FILE,
    TUNE_STORAGE_ENV,
    UNSEARCHABLE_TRAIN_KEYS,
    EvaluateParams,
    ExportParams,
    GateParams,
    MonitorParams,
    PrunerParams,
    SearchDimension,
    ServeParams,
    TuneParams,
    numeric_kind,
    prediction_log_url,
    serve_workers,
    tune_storage_url,
    usable_cpus,
)
from pipeline.params.models import (
    ARCHITECTURES,
    CNNParams,
    FTTransformerParams,
    MLPParams,
    ModelParams,
    RNNParams,
    SeqTransformerParams,
    TextLSTMParams,
    TextTransformerParams,
)
from pipeline.params.paths import Paths
from pipeline.params.text import TextAugment, TextClean, TextFeatures, TextIngest, TokenDropoutParams, TokenSwapParams
from pipeline.params.train import DDPParams, EarlyStoppingParams, LoaderParams, TrainParams, WarmStartParams

# Each data section's variants: the kinds of pipeline.params.data and the text kind (pipeline.params.text).
IngestParams = data.IngestParams | TextIngest
CleanParams = data.CleanParams | TextClean
AugmentParams = data.AugmentParams | TextAugment
FeatureParams = data.FeatureParams | TextFeatures

DEFAULT_PARAMS_FILE = Path("params.yaml")
KINDS = tuple(ARCHITECTURES)
# Split methods each kind supports: images have no time or group column; a series is split in time
# (forecasts) or kept whole in one split (classification by series, split.group_column = the series).
SPLIT_METHODS = {
    "tabular": ("stratified", "time", "group"),
    "image": ("stratified",),
    "sequence": ("time", "group"),
    "text": ("time", "stratified"),
}


class _Common(Section):
    """The sections every kind has; each kind's class adds its data sections."""

    seed: int = Field(ge=0)
    paths: Paths
    split: SplitParams
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    gate: GateParams = GateParams()
    monitor: MonitorParams = MonitorParams()
    serve: ServeParams = ServeParams()
    tune: TuneParams = TuneParams()

    @model_validator(mode="before")
    @classmethod
    def _default_model(cls, data: Any) -> Any:
        """Without ``train.model``, the kind's first architecture with its defaults."""
        if isinstance(data, dict) and isinstance(data.get("train", {}), dict) and "model" not in data.get("train", {}):
            kind = _kind_of(data)
            if kind in ARCHITECTURES:
                data = {**data, "train": {**data.get("train", {}), "model": {"architecture": ARCHITECTURES[kind][0]}}}
        return data

    @model_validator(mode="after")
    def _combination(self) -> _Common:
        kind = self.ingest.kind  # type: ignore[attr-defined]
        architecture = self.train.model.architecture
        if architecture not in ARCHITECTURES[kind]:
            raise ValueError(
                f"train.model.architecture {architecture!r} does not fit ingest.kind {kind!r}; "
                f"choose {' or '.join(ARCHITECTURES[kind])}"
            )
        if self.split.method not in SPLIT_METHODS[kind]:
            raise ValueError(
                f"split.method {self.split.method!r} does not apply to ingest.kind {kind!r}; choose {' or '.join(SPLIT_METHODS[kind])}"
            )
        for key, dimension in self.tune.space_for(architecture).items():
            check_search_key(key, dimension, self.train)
        return self


class TabularParams(_Common):
    ingest: TabularIngest
    clean: TabularClean = TabularClean()
    augment: TabularAugment = TabularAugment()
    features: TabularFeatures = TabularFeatures()


class ImageParams(_Common):
    ingest: ImageIngest
    clean: ImageClean = ImageClean()
    augment: ImageAugment = ImageAugment()
    features: ImageFeatures = ImageFeatures()


class SequenceParams(_Common):
    ingest: SequenceIngest
    clean: SequenceClean = SequenceClean()
    augment: SequenceAugment = SequenceAugment()
    features: SequenceFeatures = SequenceFeatures()


class TextParams(_Common):
    ingest: TextIngest
    clean: TextClean = TextClean()
    augment: TextAugment = TextAugment()
    features: TextFeatures = TextFeatures()


Params = TabularParams | ImageParams | SequenceParams | TextParams
_BY_KIND: dict[str, type[_Common]] = {
    "tabular": TabularParams,
    "image": ImageParams,
    "sequence": SequenceParams,
    "text": TextParams,
}


def _kind_of(data: Any) -> str:
    if isinstance(data, BaseModel):
        return str(data.ingest.kind)  # type: ignore[attr-defined]
    ingest = data.get("ingest") if isinstance(data, dict) else None
    return str(ingest.get("kind", "tabular")) if isinstance(ingest, dict) else "tabular"


_ADAPTER: TypeAdapter[Params] = TypeAdapter(
    Annotated[
        Annotated[TabularParams, Tag("tabular")]
        | Annotated[ImageParams, Tag("image")]
        | Annotated[SequenceParams, Tag("sequence")]
        | Annotated[TextParams, Tag("text")],
        Discriminator(_kind_of),
    ]
)


def check_search_key(key: str, dimension: SearchDimension, train: TrainParams) -> None:
    """A tuning key names a searchable train key (``lr``) or a key of the active network (``model.hidden``)."""
    model_keys = sorted(f"model.{name}" for name in type(train.model).model_fields if name != "architecture")
    train_keys = sorted(name for name in _searchable_train_keys() if name not in UNSEARCHABLE_TRAIN_KEYS)
    searchable = train_keys + model_keys
    if key in UNSEARCHABLE_TRAIN_KEYS:
        raise ValueError(
            f"tune.space: train.{key} cannot be searched (the objective is train.early_stopping.metric; "
            "tune.epochs caps each trial's epochs)"
        )
    head, _, name = key.partition(".")
    if head == "model" and name:
        fields = type(train.model).model_fields
        if name not in fields or name == "architecture":
            raise ValueError(
                f"tune.space: {key!r} is not a key of train.model ({train.model.architecture}); searchable: {', '.join(searchable)}"
            )
        annotation = fields[name].annotation
    elif key in train_keys:
        annotation = TrainParams.model_fields[key].annotation
    else:
        raise ValueError(f"tune.space: unknown train key {key!r}; searchable: {', '.join(searchable)}")
    if dimension.choices is not None:
        return
    kind = numeric_kind(annotation)
    if kind is None:
        raise ValueError(f"tune.space: {key}: a low/high range needs a numeric key; list the values as choices")
    if kind is int and not (float(dimension.low).is_integer() and float(dimension.high).is_integer()):  # type: ignore[arg-type]
        raise ValueError(f"tune.space: {key} is an integer, so low and high must be integers")


_ARCHITECTURE_TAGS = {name for names in ARCHITECTURES.values() for name in names}


def _key_path(loc: Any) -> list[str]:
    """The params key of an error location, without the tags pydantic adds for the chosen variants."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in _BY_KIND:  # the kind's variant
        parts = parts[1:]
    # train.model's variant: pydantic puts the architecture right after "model"
    parts = [part for i, part in enumerate(parts) if not (i > 0 and parts[i - 1] == "model" and part in _ARCHITECTURE_TAGS)]
    # a value that may be one of several types (time_cutoff: number or date text): pydantic tags each try
    return [part for part in parts if part not in _TYPE_TAGS]


_TYPE_TAGS = {"int", "float", "str", "bool", "none"}


def _one_error_per_key(errors: list[Any]) -> list[Any]:
    """One error per key: a value tried against several types fails each; the finite-number one says most."""
    by_key: dict[str, Any] = {}
    for error in errors:
        key = ".".join(_key_path(error["loc"]))
        if key not in by_key or error["type"] == "finite_number":
            by_key[key] = error
    return list(by_key.values())


def _searchable_train_keys() -> list[str]:
    """Train keys holding one value (sub-sections such as ddp or warm_start are not searched as a whole)."""
    return [
        name
        for name, field in TrainParams.model_fields.items()
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))
    ]


def _check_architecture(raw: dict[str, Any], kind: str, source: str) -> None:
    """The network must be one the kind trains; said in one line before the keys are checked one by one."""
    train = raw.get("train")
    model = train.get("model") if isinstance(train, dict) else None
    if not isinstance(model, dict):
        return
    allowed = " or ".join(ARCHITECTURES[kind])
    architecture = model.get("architecture")
    if architecture is None:
        raise ParamsError(f"{source}: train.model.architecture: required key is missing; choose {allowed}")
    if architecture not in ARCHITECTURES[kind]:
        raise ParamsError(
            f"{source}: train.model.architecture = {architecture!r} does not fit ingest.kind {kind!r}; choose {allowed}"
        )


def _describe(error: Any) -> str:
    key = ".".join(_key_path(error["loc"]))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if error["type"] == "finite_number":
        return f"{key} = {error.get('input')!r}: must be a finite number"
    if key and isinstance(error.get("input"), dict):  # a whole section: the message names what is wrong
        return f"{key}: {message}"
    if key:
        return f"{key} = {error.get('input')!r}: {message}"
    return message


def _allowed_keys(error: Any, root: type[BaseModel], train: Any) -> str:
    """For an unknown key, name the keys that section does accept."""
    model: type[BaseModel] = root
    for part in _key_path(error["loc"])[:-1]:
        if model is TrainParams and part == "model":
            architecture = train.get("model", {}).get("architecture") if isinstance(train, dict) else None
            found = _MODEL_BY_ARCHITECTURE.get(str(architecture))
            if found is None:
                return ""
            model = found
            continue
        annotation = getattr(model.model_fields.get(part), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    if not model.model_fields:
        return "; this section takes no keys"
    return f"; allowed: {', '.join(sorted(model.model_fields))}"


_MODEL_BY_ARCHITECTURE: dict[str, type[BaseModel]] = {
    name: variant
    for variant in (
        MLPParams,
        FTTransformerParams,
        CNNParams,
        RNNParams,
        SeqTransformerParams,
        TextTransformerParams,
        TextLSTMParams,
    )
    for name in get_args(variant.model_fields["architecture"].annotation)
}


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line per problem, naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    kind = _kind_of(raw)
    if kind not in _BY_KIND:
        raise ParamsError(f"{source}: ingest.kind = {kind!r}: unknown data kind; choose one of {', '.join(KINDS)}")
    _check_architecture(raw, kind, source)
    # YAML gives lists where the models hold tuples; lax mode only for that conversion.
    try:
        return _ADAPTER.validate_python(_listy_to_tuples(raw))
    except ValidationError as exc:
        problems = []
        for error in _one_error_per_key(exc.errors()):
            line = _describe(error)
            if error["type"] == "extra_forbidden":
                line += _allowed_keys(error, _BY_KIND[kind], raw.get("train"))
            problems.append(line)
        raise ParamsError(f"{source}: " + "; ".join(dict.fromkeys(problems))) from None


def _listy_to_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _listy_to_tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_listy_to_tuples(item) for item in value)
    return value


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read and validate ``params.yaml`` once; the only place the file is opened."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ParamsError(f"{path}: not valid YAML{where} ({problem})") from None
    return parse_params(raw, str(path))


__all__ = [
    "MISSING_TOKENS",
    "ARCHITECTURES",
    "AUTO_WORKERS_MAX",
    "DATABASE_URL_ENV",
    "DEFAULT_PARAMS_FILE",
    "DEFAULT_SOURCE",
    "DEFAULT_SPACES",
    "KINDS",
    "SPLIT_METHODS",
    "TUNE_DATABASE_FILE",
    "TUNE_STORAGE_ENV",
    "UNSEARCHABLE_TRAIN_KEYS",
    "AugmentParams",
    "CNNParams",
    "CleanParams",
    "DDPParams",
    "EarlyStoppingParams",
    "EvaluateParams",
    "ExportParams",
    "FTTransformerParams",
    "FeatureParams",
    "FlipParams",
    "GateParams",
    "ImageAugment",
    "ImageClean",
    "ImageFeatures",
    "ImageIngest",
    "ImageParams",
    "IngestParams",
    "JitterParams",
    "LoaderParams",
    "MLPParams",
    "MixupParams",
    "ModelParams",
    "MonitorParams",
    "NoiseParams",
    "OversampleParams",
    "Params",
    "Paths",
    "PixelNoiseParams",
    "PrunerParams",
    "RNNParams",
    "RotationParams",
    "ScalingParams",
    "SearchDimension",
    "Section",
    "SeqTransformerParams",
    "SequenceAugment",
    "SequenceClean",
    "SequenceFeatures",
    "SequenceIngest",
    "SequenceParams",
    "ServeParams",
    "ShiftParams",
    "SplitParams",
    "TabularAugment",
    "TabularClean",
    "TabularFeatures",
    "TabularIngest",
    "TabularParams",
    "TextAugment",
    "TextClean",
    "TextFeatures",
    "TextIngest",
    "TextLSTMParams",
    "TextParams",
    "TextTransformerParams",
    "TokenDropoutParams",
    "TokenSwapParams",
    "TrainParams",
    "TuneParams",
    "WarmStartParams",
    "WindowSlicingParams",
    "check_search_key",
    "load_params",
    "numeric_kind",
    "parse_params",
    "prediction_log_url",
    "serve_workers",
    "tune_storage_url",
    "usable_cpus",
]
