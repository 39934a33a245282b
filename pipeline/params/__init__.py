"""Typed, validated view of ``params.yaml``.

The YAML file is parsed once into frozen pydantic models. Unknown keys, wrong types and
impossible values fail fast with a one-line message naming the key, the value and what
is allowed; stage code only ever sees these objects, never the raw dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.core.errors import ParamsError

DEFAULT_PARAMS_FILE = Path("params.yaml")
DEFAULT_SOURCE = "default"


class _Section(BaseModel):
    """Base for every params section: immutable, no unknown keys, no silent coercion of types."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Paths(_Section):
    """Every file and folder the pipeline reads or writes, defined once (dvc.yaml templates them)."""

    ingested: str
    clean: str
    split: str
    augmented: str
    preprocessor: str
    model: str
    checkpoints: str
    onnx: str
    onnx_int8: str
    model_card: str
    ingest_report: str
    clean_report: str
    split_report: str
    augment_report: str
    train_live: str
    tensorboard: str
    eval_metrics: str
    eval_per_class: str
    eval_plots: str
    export_report: str
    raw: str
    landing: str
    quarantine: str
    registry: str
    drift_reports: str
    monitor_state: str
    init_model: str  # folder: a model.pt here warm-starts training (the retrain flow's start=warm puts production's there)
    tune: str  # folder: optuna.db (the default study storage), best_params.yaml, summary.json


class ImageIngestParams(_Section):
    """How image files become arrays (``ingest.kind: image``, pipeline/images.py)."""

    mode: Literal["grayscale", "rgb"] = "grayscale"  # 1 or 3 channels, converted as Pillow does
    size: tuple[int, int] | None = None  # [height, width] every image is resized to; null: all must match
    # Unreadable image files are listed in the ingest report and skipped up to this share of the files;
    # beyond it the stage fails naming them.
    max_unreadable_share: float = Field(default=0.01, ge=0, le=1)

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int] | None):
        if size is not None and min(size) < 1:
            raise ValueError(f"height and width must be >= 1, got {list(size)}")
        return size


class SequenceParams(_Section):
    """Time series (``ingest.kind: sequence``): a long table of (series, time, values) and its windows.

    Written into the data's ``schema.json`` by ingest, so every later stage reads the same windowing
    from its input folder (as it reads the kind) and no stage re-declares these keys.
    """

    series_column: str | None = None  # null: the whole table is one series
    # Input value columns (numeric); null: every numeric column but series, time and a class label.
    # For forecasting the target's own history is always an input (added first if not listed).
    features: tuple[str, ...] | None = None
    task: Literal["forecast", "classify"] = "forecast"  # classify: ingest.target is a label constant per series
    lookback: int = Field(default=96, ge=2)  # input steps per window (96 half-hours = 2 days)
    horizon: int = Field(default=1, ge=1)  # steps forecast after each window (forecast only)
    stride: int = Field(default=1, ge=1)  # steps between consecutive training windows (evaluation uses every window)
    season_length: int = Field(default=48, ge=1)  # the seasonal-naive baseline's period (48: daily, half-hourly)
    frequency: str | None = None  # pandas offset alias of the time grid, e.g. "30min"; null: the most common step

    @model_validator(mode="after")
    def _distinct_roles(self) -> SequenceParams:
        if self.series_column is not None and self.features is not None and self.series_column in self.features:
            raise ValueError(f"ingest.sequence.series_column {self.series_column!r} is also in ingest.sequence.features")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError(f"ingest.sequence.features lists a column twice: {list(self.features)}")
        return self


class IngestParams(_Section):
    """Where the data comes from and what its columns mean."""

    # tabular: a table of rows; image: labelled images; sequence: time series (pipeline/kinds.py)
    kind: Literal["tabular", "image", "sequence"] = "tabular"
    source: str = DEFAULT_SOURCE
    target: str
    time_column: str | None = None
    drop_columns: tuple[str, ...] = ()
    # Identifiers kept beside the features but never used as one (e.g. split.group_column).
    id_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    time_as_feature: bool = False
    # Rows of ingest.source later than this time are left out (they arrive later as landed batches).
    time_cutoff: int | float | str | None = None  # a number, or a date such as "2021-06-30" for date columns
    # Train on the most recent K periods of the time column only (null: all periods).
    window_periods: int | None = Field(default=None, ge=3)
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = Field(default=None, ge=10)  # tabular: a seeded random slice; sequence: the first rows of each series
    image: ImageIngestParams = ImageIngestParams()
    sequence: SequenceParams = SequenceParams()

    @model_validator(mode="after")
    def _overrides_disjoint(self) -> IngestParams:
        both = sorted(set(self.categorical) & set(self.numeric))
        if both:
            raise ValueError(f"columns {both} are listed in both ingest.categorical and ingest.numeric")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"ingest.max_rows ({self.max_rows}) is below ingest.min_rows ({self.min_rows})")
        both = sorted(set(self.id_columns) & set(self.drop_columns))
        if both:
            raise ValueError(f"columns {both} are listed in both ingest.id_columns and ingest.drop_columns")
        if self.target in self.drop_columns:
            raise ValueError(f"ingest.target {self.target!r} is also in ingest.drop_columns")
        if self.kind == "sequence":
            self._sequence_roles()
        return self

    def _sequence_roles(self) -> None:
        """Series, time and target are three different columns; tabular-only options are not set."""
        if self.time_column is None:
            raise ValueError("ingest.time_column is required for ingest.kind 'sequence'")
        roles = {"ingest.time_column": self.time_column, "ingest.target": self.target}
        if self.sequence.series_column is not None:
            roles["ingest.sequence.series_column"] = self.sequence.series_column
        if len(set(roles.values())) < len(roles):
            raise ValueError(f"{', '.join(roles)} must name different columns, got {list(roles.values())}")
        for key in ("categorical", "numeric", "id_columns"):
            if getattr(self, key):
                raise ValueError(f"ingest.{key} applies to tabular data only; leave it empty for ingest.kind 'sequence'")
        if self.window_periods is not None or self.time_as_feature:
            raise ValueError("ingest.window_periods and ingest.time_as_feature apply to tabular data only")


class SequenceCleanParams(_Section):
    """Gaps in a time series (``ingest.kind: sequence``): filled within each series, never across."""

    impute: Literal["interpolate", "ffill"] = "interpolate"  # linear in time, or the last value carried forward
    limit: int | None = Field(default=48, ge=1)  # the longest run of missing steps filled; null: any run
    max_missing_share: float = Field(default=0.2, ge=0, le=1)  # a series missing more than this is bad
    bad_series: Literal["fail", "drop"] = "fail"  # a bad series stops the stage (naming it) or is dropped and reported


class CleanParams(_Section):
    """Row-level cleaning: nothing here is learned from the data."""

    drop_duplicates: bool = True
    labels: tuple[str, ...] | None = None
    missing_tokens: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "null", "None", "?")
    valid_ranges: dict[str, tuple[float | None, float | None]] = {}
    sequence: SequenceCleanParams = SequenceCleanParams()

    @field_validator("valid_ranges")
    @classmethod
    def _ranges_ordered(cls, ranges: dict[str, tuple[float | None, float | None]]):
        for column, (low, high) in ranges.items():
            if low is not None and high is not None and low > high:
                raise ValueError(f"range for {column!r} has min {low} > max {high}")
        return ranges


class SplitParams(_Section):
    """How rows are assigned to train / validation / test."""

    method: Literal["stratified", "time", "group"] = "stratified"
    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)
    group_column: str | None = None

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"split.train + split.val + split.test must sum to 1, got "
                f"{self.train} + {self.val} + {self.test} = {total:g}"
            )
        if self.method == "group" and not self.group_column:
            raise ValueError("split.method 'group' needs split.group_column")
        return self


class NoiseParams(_Section):
    enabled: bool = False
    std: float = Field(default=0.05, gt=0)
    fraction: float = Field(default=0.5, gt=0, le=10)


class OversampleParams(_Section):
    enabled: bool = False
    ratio: float = Field(default=0.5, gt=0, le=1)


class MixupParams(_Section):
    enabled: bool = False
    fraction: float = Field(default=0.3, gt=0, le=10)
    alpha: float = Field(default=0.4, gt=0)


class RotationParams(_Section):
    enabled: bool = False
    max_degrees: float = Field(default=10.0, gt=0, le=180)


class ShiftParams(_Section):
    enabled: bool = False
    max_pixels: int = Field(default=1, ge=1)


class FlipParams(_Section):
    enabled: bool = False  # horizontal; wrong for digits and text (a mirrored 2 is no 2)


class PixelNoiseParams(_Section):
    enabled: bool = False
    std: float = Field(default=0.02, gt=0)  # as a share of the pixel value range


class ImageAugmentParams(_Section):
    """Image augmentation (``ingest.kind: image``): ``copies`` transformed copies of every training
    image, each with every enabled transform drawn afresh; all off or ``copies: 0``: unchanged."""

    rotation: RotationParams = RotationParams()
    shift: ShiftParams = ShiftParams()
    flip: FlipParams = FlipParams()
    noise: PixelNoiseParams = PixelNoiseParams()
    copies: int = Field(default=1, ge=0)
class JitterParams(_Section):
    enabled: bool = False
    std: float = Field(default=0.03, gt=0)  # Gaussian noise, in units of each feature's training std


class ScalingParams(_Section):
    enabled: bool = False
    std: float = Field(default=0.1, gt=0, lt=1)  # each window's features times N(1, std)


class WindowSlicingParams(_Section):
    enabled: bool = False
    ratio: float = Field(default=0.9, gt=0, lt=1)  # the share of the window kept, then stretched back


class SequenceAugmentParams(_Section):
    """Training windows of time series: ``copies`` augmented copies of every window, each with every enabled technique."""

    jitter: JitterParams = JitterParams()
    scaling: ScalingParams = ScalingParams()
    window_slicing: WindowSlicingParams = WindowSlicingParams()
    copies: int = Field(default=1, ge=0, le=20)


class AugmentParams(_Section):
    """Training-split augmentation; every technique off leaves the data unchanged."""

    gaussian_noise: NoiseParams = NoiseParams()
    oversample: OversampleParams = OversampleParams()
    mixup: MixupParams = MixupParams()
    image: ImageAugmentParams = ImageAugmentParams()
    sequence: SequenceAugmentParams = SequenceAugmentParams()


class FeatureParams(_Section):
    """How raw columns become model inputs; fitted on the training split only (in train)."""

    numeric_impute: Literal["median", "mean", "most_frequent", "constant"] = "median"
    numeric_fill_value: float = 0.0
    categorical_impute: Literal["constant", "most_frequent"] = "constant"
    missing_indicators: bool = True
    rare_min_count: int = Field(default=10, ge=1)
    scale: bool = True


class EarlyStoppingParams(_Section):
    # val_accuracy and val_macro_f1 for classification, val_mae and val_rmse for regression
    metric: Literal["val_loss", "val_accuracy", "val_macro_f1", "val_mae", "val_rmse"] = "val_loss"
    patience: int = Field(default=5, ge=1)
    min_delta: float = Field(default=0.0, ge=0)


class TransformerParams(_Section):
    """The FT-Transformer (``train.architecture: ft_transformer``): one token per feature."""

    d_token: int = Field(default=64, ge=8)
    layers: int = Field(default=3, ge=1)
    heads: int = Field(default=8, ge=1)
    ffn_factor: float = Field(default=4 / 3, gt=0)
    attention_dropout: float = Field(default=0.2, ge=0, lt=1)
    ffn_dropout: float = Field(default=0.1, ge=0, lt=1)
    residual_dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.d_token % self.heads:
            raise ValueError(f"train.transformer.d_token ({self.d_token}) must be a multiple of heads ({self.heads})")
        return self


class WarmStartParams(_Section):
    """Fine-tuning from the checkpoint in ``paths.init_model`` (when there is one)."""

    # Parameter-name prefixes kept fixed, e.g. ["embeddings", "body.0"] (MLP) or ["tokenizer"] (FT-Transformer).
    freeze: tuple[str, ...] = ()
    pretrained_lr_scale: float = Field(default=0.1, gt=0, le=1)  # loaded tensors learn at lr x this, new ones at lr


class DDPParams(_Section):
    """Distributed data parallel: the train stage re-launches itself under torchrun."""

    nproc_per_node: int = Field(default=1, ge=1)  # 1: a single process
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl on CUDA, gloo on the CPU


class CNNParams(_Section):
    """The CNN (``train.architecture: cnn``, image data): per stage conv-BN-ReLU, an optional residual
    block and 2x2 max pooling; then global average pooling, dropout and a linear head."""

    channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry
    residual: bool = False
    dropout: float = Field(default=0.2, ge=0, lt=1)
    batch_norm: bool = True

    @field_validator("channels")
    @classmethod
    def _positive_channels(cls, channels: tuple[int, ...]):
        if not channels or any(width < 1 for width in channels):
            raise ValueError(f"needs at least one stage and every width >= 1, got {list(channels)}")
        return channels


class LoaderParams(_Section):
    """How training batches reach the device. ``workers: 0``: the split is moved to the device once and
    batches are index slices of it. ``workers: N``: the split stays in host memory and N worker
    processes gather the batches. Pinned (page-locked) host memory makes the host-to-GPU copies
    asynchronous; ``auto`` pins exactly when training on CUDA."""

    workers: int = Field(default=0, ge=0)
    pin_memory: bool | Literal["auto"] = "auto"
class RNNParams(_Section):
    """LSTM or GRU over a window (``train.architecture: lstm | gru``); the last state feeds a linear head."""

    hidden: int = Field(default=64, ge=1)
    layers: int = Field(default=1, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)  # between stacked layers
    bidirectional: bool = False


class SeqTransformerParams(_Section):
    """A Transformer encoder over the time steps of a window (``train.architecture: seq_transformer``)."""

    d_model: int = Field(default=64, ge=8)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=4, ge=1)
    ffn_factor: float = Field(default=2.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    positional: Literal["learned", "sinusoidal"] = "sinusoidal"
    pooling: Literal["last", "mean"] = "last"

    @model_validator(mode="after")
    def _heads_divide(self) -> SeqTransformerParams:
        if self.d_model % self.heads:
            raise ValueError(f"train.seq_transformer.d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self


class TrainParams(_Section):
    """The network and the training loop."""

    # tabular: mlp | ft_transformer; image: cnn; sequence: lstm | gru | seq_transformer
    architecture: Literal["mlp", "ft_transformer", "cnn", "lstm", "gru", "seq_transformer"] = "mlp"
    transformer: TransformerParams = TransformerParams()
    cnn: CNNParams = CNNParams()
    channels_last: bool = False  # CNNs: weights and activations in NHWC memory order (faster convolutions on GPUs)
    loader: LoaderParams = LoaderParams()
    rnn: RNNParams = RNNParams()
    seq_transformer: SeqTransformerParams = SeqTransformerParams()
    hidden: tuple[int, ...] = (256, 256)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    batch_norm: bool = True
    categorical_encoding: Literal["embedding", "onehot"] = "embedding"
    embedding_dim: int | None = Field(default=None, ge=1)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    lr: float = Field(default=1e-3, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    l1: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "step", "cosine", "onecycle", "plateau"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0)
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.5, gt=0, lt=1)
    plateau_patience: int = Field(default=2, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=512, ge=1)
    epochs: int = Field(default=30, ge=1)
    grad_clip: float | None = Field(default=None, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    class_weight: Literal["none", "balanced"] = "none"
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    num_threads: int | None = Field(default=None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast for the forward pass, fp32 weights and loss
    grad_accum_steps: int = Field(default=1, ge=1)  # effective batch = batch_size x grad_accum_steps
    regression_loss: Literal["mse", "mae", "huber"] = "mse"
    compile: bool = False  # torch.compile the training step (see bench/train_throughput.py for when it pays)
    ddp: DDPParams = DDPParams()
    warm_start: WarmStartParams = WarmStartParams()

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: tuple[int, ...]):
        if any(width < 1 for width in hidden):
            raise ValueError(f"every layer width must be >= 1, got {list(hidden)}")
        return hidden

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainParams:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"train.warmup_epochs ({self.warmup_epochs}) must be smaller than train.epochs ({self.epochs})"
            )
        return self


# Train keys a search may not vary: the objective is the early-stopping metric, which must be the
# same for every trial to compare them, and the epochs of a trial are capped by tune.epochs.
UNSEARCHABLE_TRAIN_KEYS = ("early_stopping", "epochs")


def numeric_kind(annotation: Any) -> type | None:
    """int or float for a numeric train field (optional or not), else None."""
    kinds = {arg for arg in get_args(annotation) or (annotation,) if arg is not type(None)}
    if kinds == {int}:
        return int
    if kinds == {float}:
        return float
    return None


class SearchDimension(_Section):
    """One train key's search space: a range ``{low, high, log}`` or a list ``{choices: [...]}``."""

    low: float | None = None
    high: float | None = None
    log: bool = False  # sample on a log scale (learning rates, weight decay)
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            if not self.choices:
                raise ValueError("choices must not be empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high, or choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low:g}")
        return self


class PrunerParams(_Section):
    """Stop a trial early when its validation metric trails the median of earlier trials at that epoch."""

    method: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(default=5, ge=0)  # trials that always finish before any is pruned
    n_warmup_steps: int = Field(default=5, ge=0)  # epochs a trial always runs before it can be pruned


def _default_space() -> dict[str, SearchDimension]:
    return {
        "lr": SearchDimension(low=3e-4, high=1e-2, log=True),
        "batch_size": SearchDimension(choices=(256, 512, 1024)),
        "dropout": SearchDimension(low=0.0, high=0.5),
        "weight_decay": SearchDimension(low=1e-6, high=1e-2, log=True),
        "hidden": SearchDimension(choices=((128, 64), (256, 128), (512, 256))),
    }


class TuneParams(_Section):
    """The Optuna search over train params (``python -m pipeline.tune``; outside ``dvc repro``)."""

    trials: int = Field(default=20, ge=1)  # per search command (each worker adds this many)
    timeout_seconds: float | None = Field(default=None, gt=0)
    # Study storage: any SQLAlchemy URL; null: SQLite in paths.tune. One with a password goes in
    # $EVERGREEN_TUNE_STORAGE, never here.
    storage: str | None = None
    study: str = Field(default="evergreen", min_length=1)
    epochs: int | None = Field(default=None, ge=1)  # cap on each trial's epochs (null: train.epochs)
    pruner: PrunerParams = PrunerParams()
    space: dict[str, SearchDimension] = Field(default_factory=_default_space)

    @field_validator("space")
    @classmethod
    def _space_names_train_keys(cls, space: dict[str, SearchDimension]) -> dict[str, SearchDimension]:
        if not space:
            raise ValueError("name at least one train key to search")
        searchable = sorted(set(TrainParams.model_fields) - set(UNSEARCHABLE_TRAIN_KEYS))
        for key, dimension in space.items():
            if key in UNSEARCHABLE_TRAIN_KEYS:
                raise ValueError(
                    f"train.{key} cannot be searched (the objective is train.early_stopping.metric; "
                    "tune.epochs caps each trial's epochs)"
                )
            if key not in TrainParams.model_fields:
                raise ValueError(f"unknown train key {key!r}; searchable: {', '.join(searchable)}")
            if dimension.choices is not None:
                continue
            kind = numeric_kind(TrainParams.model_fields[key].annotation)
            if kind is None:
                raise ValueError(f"{key}: a low/high range needs a numeric train key; list the values as choices")
            if kind is int and not (float(dimension.low).is_integer() and float(dimension.high).is_integer()):
                raise ValueError(f"{key}: train.{key} is an integer, so low and high must be integers")
        return space


class EvaluateParams(_Section):
    calibration_bins: int = Field(default=15, ge=2)
    curve_points: int = Field(default=101, ge=3)
    baseline_max_iter: int = Field(default=200, ge=1)


class ExportParams(_Section):
    opset: int = Field(default=17, ge=13)
    tolerance: float = Field(default=1e-4, gt=0)
    int8: bool = True  # also write a dynamically quantised int8 model, with its size, accuracy and agreement


class GateParams(_Section):
    """Champion/challenger: promote only if the challenger is at least as good, within a tolerance."""

    # accuracy | balanced_accuracy | macro_f1 (higher is better); mae | rmse (regression, lower is better)
    metric: Literal["accuracy", "balanced_accuracy", "macro_f1", "mae", "rmse"] = "accuracy"
    tolerance: float = Field(default=0.005, ge=0, lt=1)
    # Serve the int8 model when its test accuracy is at most this far below the fp32 model's.
    int8_max_accuracy_loss: float = Field(default=0.005, ge=0, lt=1)


class MonitorParams(_Section):
    """When the drift monitor asks for a retrain."""

    source: Literal["landing", "prediction_log", "both"] = "landing"
    reference_sample: int = Field(default=20000, ge=100)
    current_sample: int = Field(default=20000, ge=100)
    drift_share: float = Field(default=0.5, gt=0, le=1)
    min_rows: int = Field(default=500, ge=1)
    accuracy_tolerance: float = Field(default=0.05, ge=0, lt=1)
    cooldown_hours: float = Field(default=24.0, ge=0)
    # Evidently drift methods; null: its defaults (which switch with sample size, so verdicts come from its tests).
    method: str | None = None  # for every column, e.g. "psi" or "jensenshannon"
    num_method: str | None = None  # numeric columns only, e.g. "wasserstein", "ks"
    cat_method: str | None = None  # categorical columns only, e.g. "chisquare"
    threshold: float | None = Field(default=None, gt=0)


class ServeParams(_Section):
    """The prediction service (``python -m serving``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Any SQLAlchemy URL; one with a password goes in $EVERGREEN_DATABASE_URL, never here.
    database_url: str = "sqlite:///data/predictions.sqlite"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_records: int = Field(default=1000, ge=1)
    reload_interval_seconds: float = Field(default=2.0, gt=0)
    onnx_threads: int = Field(default=1, ge=1)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"  # NORMAL: survives SIGKILL, not power loss


DATABASE_URL_ENV = "EVERGREEN_DATABASE_URL"


def prediction_log_url(serve: ServeParams) -> str:
    """The prediction log's URL: $EVERGREEN_DATABASE_URL when set (credentials belong there, not in
    params.yaml, which is committed), else ``serve.database_url``."""
    import os

    return os.environ.get(DATABASE_URL_ENV) or serve.database_url


TUNE_STORAGE_ENV = "EVERGREEN_TUNE_STORAGE"
TUNE_DATABASE_FILE = "optuna.db"


def tune_storage_url(tune: TuneParams, paths: Paths) -> str:
    """Where the Optuna study lives: $EVERGREEN_TUNE_STORAGE when set (a shared database for several
    workers, credentials included), else ``tune.storage``, else SQLite in ``paths.tune``."""
    import os

    return os.environ.get(TUNE_STORAGE_ENV) or tune.storage or f"sqlite:///{Path(paths.tune) / TUNE_DATABASE_FILE}"


class Params(_Section):
    """The whole ``params.yaml``."""

    seed: int = Field(ge=0)
    paths: Paths
    ingest: IngestParams
    clean: CleanParams = CleanParams()
    split: SplitParams
    augment: AugmentParams = AugmentParams()
    features: FeatureParams = FeatureParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    gate: GateParams = GateParams()
    monitor: MonitorParams = MonitorParams()
    serve: ServeParams = ServeParams()
    tune: TuneParams = TuneParams()


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if key and isinstance(error.get("input"), dict):  # a whole section: the message names what is wrong
        return f"{key}: {message}"
    if key:
        return f"{key} = {error.get('input')!r}: {message}"
    return message


def _allowed_keys(error: dict[str, Any]) -> str:
    """For an unknown key, name the keys that section does accept."""
    model: type[BaseModel] = Params
    for part in error["loc"][:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return f"; allowed: {', '.join(sorted(model.model_fields))}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line per problem, naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    # YAML gives lists where the models hold tuples; lax mode only for that conversion.
    try:
        return Params.model_validate(_listy_to_tuples(raw))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line = _describe(error)
            if error["type"] == "extra_forbidden":
                line += _allowed_keys(error)
            problems.append(line)
        raise ParamsError(f"{source}: " + "; ".join(problems)) from None


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
        raise ParamsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    return parse_params(raw, str(path))
