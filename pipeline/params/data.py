"""The data sections, one variant per kind: ``ingest``, ``clean``, ``augment`` and ``features``.

``ingest.kind`` selects the variant of every section (see ``pipeline.params.Params``), so a section
holds only the active kind's keys: a key of another kind is an unknown key, named in the error.
``split`` is shared; which methods a kind allows is checked when the whole file is validated.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.params.base import DEFAULT_SOURCE, Section

MISSING_TOKENS = ("", "NA", "N/A", "NaN", "nan", "null", "None", "?")
Range = tuple[float | None, float | None]


def _ordered_ranges(ranges: dict[str, Range]) -> dict[str, Range]:
    for column, (low, high) in ranges.items():
        if low is not None and high is not None and low > high:
            raise ValueError(f"range for {column!r} has min {low} > max {high}")
    return ranges


# ---------------------------------------------------------------- ingest


class TabularIngest(Section):
    """A table of rows (CSV/Parquet file or folder, or the GSS default) and what its columns mean."""

    kind: Literal["tabular"] = "tabular"
    source: str = DEFAULT_SOURCE
    target: str
    # What the target poses: classes, a number, or auto (regression when the target's values are numbers
    # with at least ingest.regression_min_distinct distinct values; text labels are always classes).
    task: Literal["classification", "regression", "auto"] = "auto"
    regression_min_distinct: int = Field(default=30, ge=3)
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
    max_rows: int | None = Field(default=None, ge=10)  # a seeded random slice for quick runs
    # A text column is numeric when at least this share of its values (missing tokens aside) are numbers;
    # clean then turns the rest ("12k", "-") into missing and counts them. Below it, the column is a category.
    min_numeric_share: float = Field(default=0.8, gt=0, le=1)
    # strftime format of a text time column (e.g. "%d/%m/%Y"); null: ISO dates, or pandas' guess from the values.
    time_format: str | None = None

    @model_validator(mode="after")
    def _overrides_disjoint(self) -> TabularIngest:
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
        if self.time_column is None and (self.time_cutoff is not None or self.window_periods is not None):
            raise ValueError("ingest.time_cutoff and ingest.window_periods need ingest.time_column")
        return self


class ImageIngest(Section):
    """Labelled images: a class-per-folder tree, an .npz (x, y), or ``default`` (scikit-learn's digits)."""

    kind: Literal["image"]
    source: str = DEFAULT_SOURCE
    target: str = "label"  # the label's name (reports, model card)
    mode: Literal["grayscale", "rgb"] = "grayscale"  # 1 or 3 channels, converted as Pillow does
    size: tuple[int, int] | None = None  # [height, width] every image is resized to; null: all must match
    # Unreadable image files are listed in the ingest report and skipped up to this share of the files;
    # beyond it the stage fails naming them.
    max_unreadable_share: float = Field(default=0.01, ge=0, le=1)
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = Field(default=None, ge=10)  # a seeded random slice for quick runs

    @field_validator("size")
    @classmethod
    def _positive_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and min(size) < 1:
            raise ValueError(f"height and width must be >= 1, got {list(size)}")
        return size

    @model_validator(mode="after")
    def _rows(self) -> ImageIngest:
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"ingest.max_rows ({self.max_rows}) is below ingest.min_rows ({self.min_rows})")
        return self


class SequenceIngest(Section):
    """Time series: a long table of (series, time, values) or ``default`` (elecdemand), and its windows.

    Written into the data's ``schema.json`` by ingest, so every later stage reads the same windowing
    from its input folder (as it reads the kind) and no stage re-declares these keys.
    """

    kind: Literal["sequence"]
    source: str = DEFAULT_SOURCE
    target: str  # forecast: the value forecast; classify: a label constant per series
    time_column: str
    series_column: str | None = None  # null: the whole table is one series
    drop_columns: tuple[str, ...] = ()
    # Input value columns (numeric); null: every numeric column but series, time and a class label.
    # For forecasting the target's own history is always an input (added first if not listed).
    features: tuple[str, ...] | None = None
    task: Literal["forecast", "classify"] = "forecast"
    lookback: int = Field(default=96, ge=2)  # input steps per window (96 half-hours = 2 days)
    horizon: int = Field(default=1, ge=1)  # steps forecast after each window (forecast only)
    stride: int = Field(default=1, ge=1)  # steps between consecutive training windows (evaluation uses every window)
    season_length: int = Field(default=48, ge=1)  # the seasonal-naive baseline's period (48: daily, half-hourly)
    frequency: str | None = None  # pandas offset alias of the time grid, e.g. "30min"; null: the most common step
    time_cutoff: int | float | str | None = None  # source rows later than this are left out (they land later)
    time_format: str | None = None  # strftime format of a text time column; null: ISO dates, or pandas' guess
    min_rows: int = Field(default=100, ge=1)
    max_rows: int | None = Field(default=None, ge=10)  # the first rows of each series, for quick runs

    @model_validator(mode="after")
    def _distinct_roles(self) -> SequenceIngest:
        roles = {"ingest.time_column": self.time_column, "ingest.target": self.target}
        if self.series_column is not None:
            roles["ingest.series_column"] = self.series_column
        if len(set(roles.values())) < len(roles):
            raise ValueError(f"{', '.join(roles)} must name different columns, got {list(roles.values())}")
        if self.series_column is not None and self.features is not None and self.series_column in self.features:
            raise ValueError(f"ingest.series_column {self.series_column!r} is also in ingest.features")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError(f"ingest.features lists a column twice: {list(self.features)}")
        if self.target in self.drop_columns:
            raise ValueError(f"ingest.target {self.target!r} is also in ingest.drop_columns")
        if self.max_rows is not None and self.max_rows < self.min_rows:
            raise ValueError(f"ingest.max_rows ({self.max_rows}) is below ingest.min_rows ({self.min_rows})")
        return self


IngestParams = TabularIngest | ImageIngest | SequenceIngest

# ---------------------------------------------------------------- clean


class TabularClean(Section):
    """Row-level cleaning of a table: nothing here is learned from the data."""

    drop_duplicates: bool = True
    labels: tuple[str, ...] | None = None  # an allow-list of valid labels; rows with others are dropped
    missing_tokens: tuple[str, ...] = MISSING_TOKENS
    valid_ranges: dict[str, Range] = {}  # values outside [min, max] are impossible: they become missing
    # A feature with no value left after cleaning (all missing, all infinite, all out of range) teaches nothing
    # and breaks imputation: drop it (with a warning in the clean report) or refuse the data.
    empty_columns: Literal["drop", "refuse"] = "drop"
    # Every class needs rows in train, val and test: a class with fewer rows is refused naming it
    # (list the classes to keep in clean.labels), or its rows are dropped ("drop").
    min_class_rows: int = Field(default=10, ge=1)
    rare_classes: Literal["refuse", "drop"] = "refuse"
    # More distinct labels than this means the target is not a set of classes (a continuous column?).
    max_classes: int = Field(default=200, ge=2)

    @field_validator("valid_ranges")
    @classmethod
    def _ranges_ordered(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        return _ordered_ranges(ranges)


class ImageClean(Section):
    """Cleaning labelled images: invalid or missing labels and exact duplicate images."""

    drop_duplicates: bool = True
    labels: tuple[str, ...] | None = None
    missing_tokens: tuple[str, ...] = MISSING_TOKENS  # label values meaning "no label"


class SequenceClean(Section):
    """Time series: impossible values become missing, then gaps are filled within each series, never across."""

    labels: tuple[str, ...] | None = None  # classify: an allow-list of series labels
    missing_tokens: tuple[str, ...] = MISSING_TOKENS
    valid_ranges: dict[str, Range] = {}
    impute: Literal["interpolate", "ffill"] = "interpolate"  # linear in time, or the last value carried forward
    limit: int | None = Field(default=48, ge=1)  # the longest run of missing steps filled; null: any run
    max_missing_share: float = Field(default=0.2, ge=0, le=1)  # a series missing more than this is bad
    bad_series: Literal["fail", "drop"] = "fail"  # a bad series stops the stage (naming it) or is dropped and reported

    @field_validator("valid_ranges")
    @classmethod
    def _ranges_ordered(cls, ranges: dict[str, Range]) -> dict[str, Range]:
        return _ordered_ranges(ranges)


CleanParams = TabularClean | ImageClean | SequenceClean

# ---------------------------------------------------------------- split


class SplitParams(Section):
    """How records are assigned to train / validation / test (the methods a kind allows are checked with the kind)."""

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
                f"split.train + split.val + split.test must sum to 1, got {self.train} + {self.val} + {self.test} = {total:g}"
            )
        if self.method == "group" and not self.group_column:
            raise ValueError("split.method 'group' needs split.group_column")
        return self


# ---------------------------------------------------------------- augment


class NoiseParams(Section):
    enabled: bool = False
    std: float = Field(default=0.05, gt=0)
    fraction: float = Field(default=0.5, gt=0, le=10)


class OversampleParams(Section):
    enabled: bool = False
    ratio: float = Field(default=0.5, gt=0, le=1)


class MixupParams(Section):
    enabled: bool = False
    fraction: float = Field(default=0.3, gt=0, le=10)
    alpha: float = Field(default=0.4, gt=0)


class TabularAugment(Section):
    """Synthetic training rows; every technique off leaves the training table unchanged."""

    gaussian_noise: NoiseParams = NoiseParams()
    oversample: OversampleParams = OversampleParams()
    mixup: MixupParams = MixupParams()


class RotationParams(Section):
    enabled: bool = False
    max_degrees: float = Field(default=10.0, gt=0, le=180)


class ShiftParams(Section):
    enabled: bool = False
    max_pixels: int = Field(default=1, ge=1)


class FlipParams(Section):
    enabled: bool = False  # horizontal; wrong for digits and text (a mirrored 2 is no 2)


class PixelNoiseParams(Section):
    enabled: bool = False
    std: float = Field(default=0.02, gt=0)  # as a share of the pixel value range


class ImageAugment(Section):
    """``copies`` transformed copies of every training image, each with every enabled transform drawn afresh;
    all off or ``copies: 0``: unchanged."""

    rotation: RotationParams = RotationParams()
    shift: ShiftParams = ShiftParams()
    flip: FlipParams = FlipParams()
    noise: PixelNoiseParams = PixelNoiseParams()
    copies: int = Field(default=1, ge=0)


class JitterParams(Section):
    enabled: bool = False
    std: float = Field(default=0.03, gt=0)  # Gaussian noise, in units of each feature's training std


class ScalingParams(Section):
    enabled: bool = False
    std: float = Field(default=0.1, gt=0, lt=1)  # each window's features times N(1, std)


class WindowSlicingParams(Section):
    enabled: bool = False
    ratio: float = Field(default=0.9, gt=0, lt=1)  # the share of the window kept, then stretched back


class SequenceAugment(Section):
    """``copies`` augmented copies of every training window, each with every enabled technique."""

    jitter: JitterParams = JitterParams()
    scaling: ScalingParams = ScalingParams()
    window_slicing: WindowSlicingParams = WindowSlicingParams()
    copies: int = Field(default=1, ge=0, le=20)


AugmentParams = TabularAugment | ImageAugment | SequenceAugment

# ---------------------------------------------------------------- features (the encoder, fitted in train)


class TabularFeatures(Section):
    """How raw columns become model inputs; fitted on the training split only (in train)."""

    numeric_impute: Literal["median", "mean", "most_frequent", "constant"] = "median"
    numeric_fill_value: float = 0.0
    categorical_impute: Literal["constant", "most_frequent"] = "constant"
    missing_indicators: bool = True
    rare_min_count: int = Field(default=10, ge=1)
    scale: bool = True


class ImageFeatures(Section):
    """The image encoder (per-channel mean and std of the training pixels) has no knobs."""


class SequenceFeatures(Section):
    """The window encoder: per-feature standardisation with training statistics."""

    scale: bool = True


FeatureParams = TabularFeatures | ImageFeatures | SequenceFeatures
