"""Batch scoring: a CSV or Parquet file of raw rows in, a Parquet file of predictions out, streamed.

The model card's kind picks the input. Tables are scored here: a tabular model's rows (a classifier's or
a regressor's) and a text model's rows, one text per row in a column of the table (the card's
``text_column``, or ``--text-column``). Image models score a folder of PNG/JPEG files or an ``.npz``,
sequence models a long table's latest window per series (every window with ``--every-window``):
``serving.batch_kinds``, same command, same output conventions.

The input is read in chunks of ``--chunk-rows`` rows (Parquet: only the columns needed, via
``ParquetFile.iter_batches``; CSV: ``pandas.read_csv(chunksize=...)``), each chunk is scored by one
onnxruntime session (in cache-sized slices of ``RUN_ROWS`` rows, ``TEXT_RUN_ROWS`` texts) and appended to
the output with ``ParquetWriter`` as one row group, so a file larger than memory works and peak memory
depends on the chunk size, not the file size. The next chunk is read and turned into model feeds on a
second thread while onnxruntime scores the current one.

Output columns, in order: the ``--keep`` columns (copied through: Parquet keeps their stored type, CSV
gives their text as written), then the model's answer: a classifier's (tabular or text) ``label``
(string) and one float32 ``proba_<class>`` per class of the model card; a tabular regressor's
``prediction`` (float32, in the target's units: the ONNX ``forecast`` output); then ``model_version``
(the registry version, or ``sha256:<12 hex>`` of an explicit ONNX file). A tabular row is always scored
(values its model cannot use are missing by training's rules, counted per column); a text row whose
text is missing (null, or a CSV field pandas reads as missing: empty, ``NA``, ...) is left out and
counted, one warning naming the first, and more than ``MAX_SKIPPED_SHARE`` of the rows stop the run
(``--keep`` an id column to join the output back). The output is written to a temporary file beside
it and renamed when complete, so a failed run never leaves a partial file under the output name.

Inputs:  INPUT (.csv, .parquet or .pq; images: a folder or .npz); the registry's production model
         (``paths.registry``) or an explicit ONNX file and its model card
Outputs: OUTPUT (.parquet or .pq)
Params:  ``paths.registry`` only, and only when scoring with the production model
Command: ``python -m serving.batch INPUT OUTPUT [--model production|PATH.onnx] [--card PATH]
         [--chunk-rows N] [--keep COL]... [--text-column COL] [--registry DIR] [--threads N] [--every-window]``
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.core.errors import DataError
from pipeline.core.io import atomic_path, file_sha256
from pipeline.kinds.tabular.encoder import MISSING_TEXT
from pipeline.kinds.tabular.runtime import OnnxModel, coerced_values, onnx_feed
from pipeline.kinds.text.data import SCORING_BATCH as TEXT_RUN_ROWS
from pipeline.kinds.text.data import TEXT_INPUT
from pipeline.onnxio.card import (
    FORECAST,
    LABEL,
    PROBABILITIES,
    ImageCard,
    ModelCard,
    SequenceCard,
    TabularCard,
    TabularInput,
    TextCard,
)
from pipeline.onnxio.session import ort_session

log = logging.getLogger(__name__)

PRODUCTION = "production"
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
# Rows read, scored and written (one output row group) at a time: bounds memory, and keeps row
# groups a useful size for whoever reads the output. Tuned with bench/batch_scoring.py.
DEFAULT_CHUNK_ROWS = 100_000
# Rows per onnxruntime call: a [8192, 256] float32 activation is 8 MB and stays in cache; one call
# on 100k rows is ~1.8x slower on the 2-core machine (bench/batch_scoring.out). Texts go in slices of
# TEXT_RUN_ROWS (the text kind's scoring batch: a network reads [1024, max_length, width] activations).
RUN_ROWS = 8192
# One intra-op thread: the second core reads and prepares the next chunk meanwhile. On an idle
# 2-core machine --threads 2 is ~15% faster for ~35% more CPU (bench/batch_scoring.out); with
# other work on the machine it was 1.5-2.5x slower in development runs, so 1 is the default.
DEFAULT_THREADS = 1
# Rows left out (a text row without a text) are counted and reported; past this share of the file they
# stop the run (as unreadable images do in serving.batch_kinds, and ingest's default).
MAX_SKIPPED_SHARE = 0.01
LABEL_COLUMN = "label"
PREDICTION_COLUMN = "prediction"
VERSION_COLUMN = "model_version"
PROBA_PREFIX = "proba_"
PROGRESS_EVERY_S = 10.0

T = TypeVar("T")


class _End(enum.Enum):
    """The end of an iterator, as ``next(items, _End.END)`` returns it (a type of its own, so it narrows)."""

    END = enum.auto()


@dataclass(frozen=True)
class Chunk:
    """Rows ready to score: the model's feeds and the passthrough columns, both of the rows it scores only."""

    rows: int
    feed: dict[str, np.ndarray]  # tabular: one [N, 1] array per input; text: strings [N]
    keep: list[pa.Array]
    coerced: dict[str, int] = field(default_factory=dict)  # tabular, per input: values taken as missing
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # rows of the file left out (from 0)


@dataclass(frozen=True)
class Source:
    """An opened input: the passthrough columns' fields, its chunks, and why a row may be left out."""

    keep: list[pa.Field]
    chunks: Iterator[Chunk]
    skip_reason: str = ""  # e.g. "no text in column 'text'"; empty: every row is scored


# ---------------------------------------------------------------- feeds


def chunk_feed(frame: pd.DataFrame, inputs: Sequence[TabularInput]) -> dict[str, np.ndarray]:
    """``onnx_feed(frame, inputs)``, with each categorical column canonicalised once per distinct value.

    Categorical columns hold few distinct values, so ``onnx_feed`` runs on those (a few hundred rows)
    and the result is spread back by integer codes: the same [N, 1] arrays, without per-row text work.
    """
    missing = [spec.name for spec in inputs if spec.name not in frame.columns]
    if missing:
        raise DataError(f"data lacks the model's input column(s) {missing}")
    numeric: list[TabularInput] = [spec for spec in inputs if spec.kind == "numeric"]
    numbers = {}
    for spec in numeric:
        column = frame[spec.name]
        # A Categorical (Parquet strings read as dictionaries) is not accepted by pd.to_numeric.
        numbers[spec.name] = column.astype(object) if isinstance(column.dtype, pd.CategoricalDtype) else column
    feed = onnx_feed(pd.DataFrame(numbers, index=frame.index), numeric)
    for spec in inputs:
        if spec.kind == "numeric":
            continue
        codes, distinct = pd.factorize(frame[spec.name])  # missing values get code -1
        text = onnx_feed(pd.DataFrame({spec.name: pd.Series(distinct)}), [spec])[spec.name][:, 0]
        lookup = np.append(text, np.array([MISSING_TEXT], dtype=object))  # index -1 -> missing
        feed[spec.name] = lookup[codes].reshape(-1, 1)
    return feed


def infer_like_read_csv(text: pd.Series) -> pd.Series:
    """What ``pd.read_csv``'s type inference makes of a text column: numbers if every value parses.

    Categorical inputs are read from CSV as text (they may also be passthrough columns, whose type
    must not change between chunks) and then typed as the training pipeline saw them (``ingest``
    reads with inference), so "10.0" and "10" are both the category "10". Decided on the distinct values.
    """
    codes, distinct = pd.factorize(text)
    parsed = pd.to_numeric(pd.Series(distinct, dtype=object), errors="coerce")
    if parsed.isna().any():
        return text
    return pd.Series(np.append(parsed.to_numpy(dtype=np.float64), np.nan)[codes], index=text.index)


def text_chunk(texts: np.ndarray, keep: list[pa.Array], first_row: int) -> Chunk:
    """A chunk of texts (object [N]: str, or None/NaN where missing): the rows with a text, and the others' numbers."""
    present = ~pd.isna(texts)
    if present.all():
        return Chunk(len(texts), {TEXT_INPUT: texts}, keep)
    mask = pa.array(present)
    skipped = first_row + np.flatnonzero(~present)
    return Chunk(int(present.sum()), {TEXT_INPUT: texts[present]}, [column.filter(mask) for column in keep], skipped=skipped)


# ---------------------------------------------------------------- readers


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


def _check_columns(path: Path, available: list[str], inputs: list[str], keep: list[str]) -> None:
    """One line naming every absent column, before any row is scored."""
    present = set(available)
    absent_inputs = [name for name in inputs if name not in present]
    if absent_inputs:
        raise DataError(f"{path}: missing the model's input column(s) {absent_inputs}; the file has {sorted(present)}")
    absent_keep = [name for name in keep if name not in present]
    if absent_keep:
        raise DataError(f"{path}: --keep column(s) {absent_keep} not in the file; it has {sorted(present)}")


def _table_format(path: Path) -> str:
    """ "parquet" or "csv" for an existing input file; one line naming it otherwise."""
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + CSV_SUFFIXES:
        raise DataError(
            f"{path}: unsupported input file type {path.suffix!r}; use one of {sorted(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return "parquet" if suffix in PARQUET_SUFFIXES else "csv"


def parquet_batches(
    path: Path, names: list[str], keep: list[str], chunk_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The file's schema (columns checked) and its record batches of ``names`` and ``keep`` only."""
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    schema = file.schema_arrow
    _check_columns(path, schema.names, names, keep)
    wanted = set(names) | set(keep)
    columns = [name for name in schema.names if name in wanted]  # file order, each once

    def batches() -> Iterator[pa.RecordBatch]:
        with file:
            yield from file.iter_batches(batch_size=chunk_rows, columns=columns)

    return schema, batches()


def csv_frames(path: Path, names: list[str], keep: list[str], chunk_rows: int, as_text: list[str]) -> Iterator[pd.DataFrame]:
    """Frames of ``chunk_rows`` rows of ``names`` and ``keep`` (the header checked first); ``keep`` and
    ``as_text`` are read as text (so a column's type cannot change from one chunk to the next), the rest
    parsed by ``read_csv`` as in ``ingest``. Missing values are read as ``read_csv`` reads them (NaN)."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header line)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    _check_columns(path, header, names, keep)
    wanted = set(names) | set(keep)
    text = dict.fromkeys([*keep, *as_text], str)

    def frames() -> Iterator[pd.DataFrame]:
        with pd.read_csv(path, usecols=lambda name: name in wanted, dtype=text, chunksize=chunk_rows) as reader:
            yield from reader

    return frames()


def open_parquet(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> Source:
    """A tabular model's rows from Parquet, reading only the needed columns."""
    names = [spec.name for spec in inputs]
    schema, batches = parquet_batches(path, names, keep, chunk_rows)

    def chunks() -> Iterator[Chunk]:
        for batch in batches:
            # Strings arrive as Categoricals: decoded once per distinct value, not per row.
            frame = batch.select(names).to_pandas(strings_to_categorical=True)
            feed = chunk_feed(frame, inputs)
            coerced = coerced_values(frame, feed, inputs, missing_tokens)
            yield Chunk(batch.num_rows, feed, [batch.column(name) for name in keep], coerced)

    return Source([schema.field(name) for name in keep], _reading(path, "Parquet", chunks()))


def open_csv(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> Source:
    """A tabular model's rows from CSV: passthrough columns and categorical inputs read as text, numeric
    inputs parsed by ``read_csv`` as in ``ingest``."""
    names = [spec.name for spec in inputs]
    categorical = [spec.name for spec in inputs if spec.kind == "categorical"]
    frames = csv_frames(path, names, keep, chunk_rows, as_text=categorical)

    def chunks() -> Iterator[Chunk]:
        for frame in frames:
            model_frame = frame[names].assign(**{name: infer_like_read_csv(frame[name]) for name in categorical})
            passthrough = [pa.array(frame[name], type=pa.string(), from_pandas=True) for name in keep]
            feed = chunk_feed(model_frame, inputs)
            yield Chunk(len(frame), feed, passthrough, coerced_values(model_frame, feed, inputs, missing_tokens))

    return Source([pa.field(name, pa.string()) for name in keep], _reading(path, "CSV", chunks()))


def _reading(path: Path, kind: str, chunks: Iterator[T]) -> Iterator[T]:
    """Turn a read failure in the middle of the file into one line naming the file."""
    try:
        yield from chunks
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def open_input(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> Source:
    opener = open_parquet if _table_format(path) == "parquet" else open_csv
    return opener(path, inputs, keep, chunk_rows, missing_tokens)


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _is_text(kind.value_type)
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def open_texts(path: Path, column: str, keep: list[str], chunk_rows: int) -> Source:
    """A text model's rows: the texts of ``column`` (Parquet: a string column, else one line naming its type;
    CSV: read as text) and the passthrough columns; rows without a text are left out and numbered."""
    reason = f"no text in column {column!r}"
    if _table_format(path) == "parquet":
        schema, batches = parquet_batches(path, [column], keep, chunk_rows)
        kind = schema.field(column).type
        if not _is_text(kind):
            raise DataError(f"{path}: column {column!r} holds {kind} values; the text model takes text (strings)")

        def from_parquet() -> Iterator[Chunk]:
            first_row = 0
            for batch in batches:
                texts = batch.column(column)
                if pa.types.is_dictionary(texts.type):
                    texts = texts.dictionary_decode()
                yield text_chunk(texts.to_numpy(zero_copy_only=False), [batch.column(n) for n in keep], first_row)
                first_row += batch.num_rows

        return Source([schema.field(name) for name in keep], _reading(path, "Parquet", from_parquet()), reason)

    frames = csv_frames(path, [column], keep, chunk_rows, as_text=[column])

    def from_csv() -> Iterator[Chunk]:
        first_row = 0
        for frame in frames:
            passthrough = [pa.array(frame[name], type=pa.string(), from_pandas=True) for name in keep]
            yield text_chunk(frame[column].to_numpy(dtype=object), passthrough, first_row)
            first_row += len(frame)

    return Source([pa.field(name, pa.string()) for name in keep], _reading(path, "CSV", from_csv()), reason)


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items`` while the next one is being produced on a second thread (one item ahead)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as pool:
        pending = pool.submit(next, items, _End.END)
        while not isinstance(item := pending.result(), _End):
            pending = pool.submit(next, items, _End.END)
            yield item


# ---------------------------------------------------------------- the model


def open_session(onnx_path: Path, threads: int = DEFAULT_THREADS) -> Any:
    """One onnxruntime CPU session for the whole file; a file onnxruntime cannot load is one line."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is first imported
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile

    try:
        return ort_session(onnx_path, threads, sequential=True)
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:
        raise DataError(f"{onnx_path}: not a loadable ONNX model ({first_line(exc)})") from None


def require_outputs(session: Any, onnx_path: Path, wanted: Sequence[str]) -> None:
    outputs = {output.name for output in session.get_outputs()}
    if not set(wanted) <= outputs:
        raise DataError(f"{onnx_path}: model lacks the {'/'.join(map(repr, wanted))} output(s) (it has {sorted(outputs)})")


def check_card_hash(card: ModelCard, card_path: str | Path, onnx_path: Path) -> None:
    recorded = card.onnx_hashes
    if recorded and file_sha256(onnx_path) not in recorded:
        raise DataError(f"{card_path}: the card describes another model (its onnx_sha256 does not match {onnx_path})")


def is_regressor(model: OnnxModel) -> bool:
    return model.card.task == "regression"


def load_model(onnx_path: str | Path, card_path: str | Path, threads: int = DEFAULT_THREADS) -> OnnxModel:
    """One onnxruntime session for the whole file, checked against its card: a classifier's outputs are
    probabilities and label, a regressor's its one value per row (``forecast`` [N, 1])."""
    onnx_path, card_path = Path(onnx_path), Path(card_path)
    if not onnx_path.is_file():
        raise DataError(f"{onnx_path}: model not found")
    card = TabularCard.load(card_path)
    if not card.inputs:
        raise DataError(f"{card_path}: model card has no 'inputs'")
    if card.task == "classification" and not card.classes:
        raise DataError(f"{card_path}: model card has no 'classes'")
    if card.task == "regression":
        shapes = {output.name: list(output.shape) for output in card.outputs}
        if list(shapes) != [FORECAST] or shapes[FORECAST][1:] != [1]:
            raise DataError(
                f"{card_path}: batch scoring takes tabular regressors with one value per row "
                f"(output {FORECAST!r} [N, 1]); this card names {shapes}"
            )
    check_card_hash(card, card_path, onnx_path)
    session = open_session(onnx_path, threads)
    require_outputs(session, onnx_path, [FORECAST] if card.task == "regression" else [PROBABILITIES, LABEL])
    return OnnxModel(onnx_path, card, session)


def resolve_model(model: str, card: str | None, registry: str | None) -> tuple[Path, Path, str]:
    """(onnx path, card path, version name) for ``--model production`` or an explicit ONNX file."""
    if model == PRODUCTION:
        from pipeline.lifecycle.registry import open_registry

        if card is not None:
            raise DataError("--card goes with --model PATH.onnx; the production model brings its own card")
        if registry is None:
            from pipeline.params import load_params
            from pipeline.params.paths import registry_location

            registry = registry_location(load_params().paths)
        production = open_registry(registry).production()
        if production is None:
            raise DataError(f"registry {registry}: no production model yet; promote one, or pass --model PATH.onnx")
        production.verify()  # the files are exactly what was promoted
        return production.serving_onnx, production.card, production.name  # int8 when the gate chose it
    onnx_path = Path(model)
    card_path = Path(card) if card is not None else onnx_path.with_name("model_card.json")
    if not onnx_path.is_file():
        raise DataError(f"{onnx_path}: model not found (pass --model production or the path of an .onnx file)")
    return onnx_path, card_path, f"sha256:{file_sha256(onnx_path)[:12]}"


# ---------------------------------------------------------------- scoring


def classifier_fields(classes: Sequence[str]) -> list[pa.Field]:
    return [pa.field(LABEL_COLUMN, pa.string()), *(pa.field(f"{PROBA_PREFIX}{name}", pa.float32()) for name in classes)]


REGRESSOR_FIELDS = [pa.field(PREDICTION_COLUMN, pa.float32())]


def output_schema(keep: list[pa.Field], answer: list[pa.Field]) -> pa.Schema:
    """The passthrough fields, the model's answer (``classifier_fields`` or ``REGRESSOR_FIELDS``), the version."""
    fields = [*keep, *answer, pa.field(VERSION_COLUMN, pa.string())]
    names = [field.name for field in fields]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise DataError(f"--keep column(s) {clashes} clash with the output's own columns; rename them in the input")
    return pa.schema(fields)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Text columns only: dictionary-encoding the float probabilities is wasted work (4x slower writes)."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary)
    return [field.name for field in schema if any(is_text(field.type) for is_text in text)]


def run_sliced(session: Any, outputs: list[str], feed: dict[str, np.ndarray], rows: int, size: int) -> list[np.ndarray]:
    """``session.run(outputs, feed)`` in slices of ``size`` rows (activations that stay in cache), joined."""
    parts = [
        session.run(outputs, {name: values[start : start + size] for name, values in feed.items()})
        for start in range(0, rows, size)
    ]
    if len(parts) == 1:
        return list(parts[0])
    return [np.concatenate([part[i] for part in parts]) for i in range(len(outputs))]


def predict(model: OnnxModel, feed: dict[str, np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A classifier's (probabilities [N, K] float32, labels [N]), in slices of RUN_ROWS rows."""
    probabilities, labels = run_sliced(model.session, [PROBABILITIES, LABEL], feed, rows, RUN_ROWS)
    return probabilities, labels


def predict_values(model: OnnxModel, feed: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """A regressor's values [N] float32 in target units (its ``forecast`` [N, 1]), in slices of RUN_ROWS rows."""
    (values,) = run_sliced(model.session, [FORECAST], feed, rows, RUN_ROWS)
    return values[:, 0]


def classifier_columns(probabilities: np.ndarray, labels: np.ndarray) -> list[pa.Array]:
    """The label column and probabilities [N, K] split into K float32 columns."""
    by_class = np.ascontiguousarray(np.asarray(probabilities, dtype=np.float32).T)  # [K, N]: one contiguous column each
    return [pa.array(labels, type=pa.string()), *(pa.array(column) for column in by_class)]


# The model's answer columns for one chunk (between the passthrough columns and the version).
Scorer = Callable[[Chunk], list[pa.Array]]


def tabular_scorer(model: OnnxModel) -> Scorer:
    if is_regressor(model):
        return lambda chunk: [pa.array(predict_values(model, chunk.feed, chunk.rows), type=pa.float32())]
    return lambda chunk: classifier_columns(*predict(model, chunk.feed, chunk.rows))


def text_scorer(session: Any) -> Scorer:
    def score(chunk: Chunk) -> list[pa.Array]:
        probabilities, labels = run_sliced(session, [PROBABILITIES, LABEL], chunk.feed, chunk.rows, TEXT_RUN_ROWS)
        return classifier_columns(probabilities, labels)

    return score


def check_output(input_path: Path, output_path: Path, chunk_rows: int | None = None) -> None:
    if chunk_rows is not None and chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    if output_path.suffix.lower() not in PARQUET_SUFFIXES:
        raise DataError(f"{output_path}: the output is Parquet; name it with one of {list(PARQUET_SUFFIXES)}")
    if output_path.resolve() == input_path.resolve():
        raise DataError(f"{output_path}: the output would overwrite the input")


def write_scores(
    input_path: Path, output_path: Path, schema: pa.Schema, source: Source, score: Scorer, version: str
) -> dict[str, Any]:
    """Score ``source``'s chunks into ``output_path`` (one row group each, written atomically); the summary."""
    start = last_report = time.perf_counter()
    rows = count = skipped = 0
    first_skipped: int | None = None
    coerced: Counter[str] = Counter()
    try:
        with (
            atomic_path(output_path) as temporary,
            pq.ParquetWriter(temporary, schema, use_dictionary=dictionary_columns(schema)) as writer,
        ):
            for chunk in read_ahead(source.chunks):
                if chunk.rows:
                    columns = [*chunk.keep, *score(chunk), pa.repeat(version, chunk.rows)]
                    writer.write_table(pa.Table.from_arrays(columns, schema=schema))
                rows += chunk.rows
                count += 1
                coerced.update(chunk.coerced)
                if len(chunk.skipped):
                    first_skipped = int(chunk.skipped[0]) if first_skipped is None else first_skipped
                    skipped += len(chunk.skipped)
                if time.perf_counter() - last_report >= PROGRESS_EVERY_S:
                    last_report = time.perf_counter()
                    log.info("%s: %d rows scored so far (%.0f rows/s)", input_path, rows, rows / (last_report - start))
            if skipped:  # inside the atomic write: a refusal leaves no output
                report_skipped(input_path, rows, skipped, first_skipped, source.skip_reason)
    except OSError as exc:
        raise DataError(f"{output_path}: cannot write the output ({exc.strerror or first_line(exc)})") from None
    seconds = time.perf_counter() - start
    if coerced:
        log.warning(
            "%s: values taken as missing by the model's rules, per column: %s", input_path, dict(sorted(coerced.items()))
        )
    return {
        "rows": rows,
        "chunks": count,
        "seconds": seconds,
        "rows_per_s": rows / seconds if seconds > 0 else 0.0,
        "coerced": dict(sorted(coerced.items())),
        "skipped": skipped,
    }


def report_skipped(input_path: Path, rows: int, skipped: int, first: int | None, reason: str) -> None:
    """One warning for the rows left out; one error when they are all, or more than MAX_SKIPPED_SHARE, of the file."""
    total = rows + skipped
    message = f"{input_path}: {skipped} of {total} rows have {reason} (the first: row {first}, counting data rows from 0)"
    if not rows or skipped > MAX_SKIPPED_SHARE * total:
        raise DataError(f"{message}: more than {MAX_SKIPPED_SHARE:.0%}; drop or fill them first")
    log.warning("%s; left out of the output", message)


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    model: OnnxModel,
    version: str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score every row of ``input_path`` with a tabular model into ``output_path`` (Parquet), one chunk at a time:
    a classifier's ``label`` and ``proba_<class>``, a regressor's ``prediction``.

    Returns a summary: rows, chunks, seconds, rows_per_s, and per column the values the model took as
    missing by training's rules (``coerced``: unparseable, not finite in float32, out of range, tokens).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_output(input_path, output_path, chunk_rows)
    columns = list(dict.fromkeys(keep))
    source = open_input(input_path, model.card.inputs, columns, chunk_rows, model.card.missing_tokens)
    answer = REGRESSOR_FIELDS if is_regressor(model) else classifier_fields(model.classes)
    schema = output_schema(source.keep, answer)
    return write_scores(input_path, output_path, schema, source, tabular_scorer(model), version)


def score_texts(
    input_path: str | Path,
    output_path: str | Path,
    session: Any,
    card: TextCard,
    version: str,
    *,
    text_column: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score every text of ``input_path``'s ``text_column`` (default: the card's) with a text model into
    ``output_path``: ``label`` and ``proba_<class>``. Rows without a text are left out and counted (``skipped``)."""
    input_path, output_path = Path(input_path), Path(output_path)
    check_output(input_path, output_path, chunk_rows)
    source = open_texts(input_path, text_column or card.text_column, list(dict.fromkeys(keep)), chunk_rows)
    schema = output_schema(source.keep, classifier_fields(card.classes))
    return write_scores(input_path, output_path, schema, source, text_scorer(session), version)


# ---------------------------------------------------------------- command line


def _parser(prog: str = "python -m serving.batch") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Score a file into a Parquet file of predictions with the model's kind: tabular rows (a classifier's "
            "label and proba_<class>, a regressor's prediction) or texts (label, proba_<class>) from CSV/Parquet; "
            "images from a folder or .npz; sequences from a long table."
        ),
    )
    parser.add_argument(
        "input",
        help="rows to score (.csv, .parquet or .pq: tables and texts); images: a folder or .npz; sequences: a long table",
    )
    parser.add_argument("output", help="predictions to write (.parquet or .pq)")
    parser.add_argument(
        "--model", default=PRODUCTION, help="'production' (the registry's production version, default) or an .onnx file"
    )
    parser.add_argument("--card", help="model card of --model PATH.onnx (default: model_card.json beside it)")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"tables and texts: rows per chunk (default {DEFAULT_CHUNK_ROWS})",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COL",
        help="tables and texts: copy this input column to the output (repeatable)",
    )
    parser.add_argument(
        "--text-column", metavar="COL", help="text models: the column holding the texts (default: the card's text_column)"
    )
    parser.add_argument("--registry", help="registry folder (default: paths.registry in params.yaml)")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"onnxruntime intra-op threads (default {DEFAULT_THREADS})"
    )
    parser.add_argument(
        "--every-window", action="store_true", help="sequence models: score every complete window, not each series' latest"
    )
    return parser


def run_other_kind(args: argparse.Namespace, onnx_path: Path, card: ModelCard, version: str) -> dict[str, Any]:
    """A text, image or sequence model: one session, the kind's reader (texts here, the others ``serving.batch_kinds``)."""
    from serving.batch_kinds import score_images, score_windows

    check_card_hash(card, args.card or onnx_path, onnx_path)
    input_path, output_path = Path(args.input), Path(args.output)
    check_output(input_path, output_path)
    session = open_session(onnx_path, args.threads)
    if isinstance(card, TextCard):
        require_outputs(session, onnx_path, [PROBABILITIES, LABEL])
        return score_texts(
            input_path,
            output_path,
            session,
            card,
            version,
            text_column=args.text_column,
            chunk_rows=args.chunk_rows,
            keep=tuple(args.keep),
        )
    if isinstance(card, ImageCard):
        return score_images(input_path, output_path, session, card, version)
    if isinstance(card, SequenceCard):
        return score_windows(input_path, output_path, session, card, version, every_window=args.every_window)
    raise DataError(f"batch scoring takes tabular, text, image and sequence models, not {card.KIND!r} ones")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the model, load it once, score the file; the summary names the model version."""
    if args.threads < 1:
        raise DataError(f"--threads must be at least 1, got {args.threads}")
    onnx_path, card_path, version = resolve_model(args.model, args.card, args.registry)
    card = ModelCard.load(card_path)
    if args.text_column is not None and not isinstance(card, TextCard):
        raise DataError(f"--text-column goes with a text model; this one is a {card.KIND} model")
    if not isinstance(card, TabularCard):
        return {**run_other_kind(args, onnx_path, card, version), "model_version": version}
    model = load_model(onnx_path, card_path, args.threads)
    summary = score_file(args.input, args.output, model, version, chunk_rows=args.chunk_rows, keep=tuple(args.keep))
    return {**summary, "model_version": version}


def main(argv: list[str] | None = None, prog: str = "python -m serving.batch") -> None:
    """CLI entry: progress and the summary are logged; a user error is one line and exit code 1."""
    setup_logging()
    args = _parser(prog).parse_args(argv)
    summary = run_or_exit(lambda: run(args))
    log.info(
        "%s -> %s: %d rows in %d chunks, %.2f s (%.0f rows/s), model %s",
        args.input,
        args.output,
        summary["rows"],
        summary.get("chunks", 1),
        summary["seconds"],
        summary["rows_per_s"],
        summary["model_version"],
    )


if __name__ == "__main__":
    main()
