"""Batch scoring: a CSV or Parquet file of raw rows in, a Parquet file of predictions out, streamed.

The model card's kind picks the input: this module scores tables (below); image models score a folder
of PNG/JPEG files or an ``.npz``, sequence models a long table's latest window per series (every window
with ``--every-window``): ``serving.batch_kinds``, same command, same output conventions.

The input is read in chunks of ``--chunk-rows`` rows (Parquet: only the columns needed, via
``ParquetFile.iter_batches``; CSV: ``pandas.read_csv(chunksize=...)``), each chunk is scored by one
onnxruntime session (in cache-sized slices of ``RUN_ROWS``) and appended to the output with
``ParquetWriter`` as one row group, so a file larger than memory works and peak memory depends on
the chunk size, not the file size. The next chunk is read and turned into model feeds on a second
thread while onnxruntime scores the current one.

Output columns, in order: the ``--keep`` columns (copied through: Parquet keeps their stored type,
CSV gives their text as written), ``label`` (string), one float32 ``proba_<class>`` per class of
the model card, ``model_version`` (the registry version, or ``sha256:<12 hex>`` of an explicit
ONNX file). The output is written to a temporary file beside it and renamed when complete, so a
failed run never leaves a partial file under the output name.

Inputs:  INPUT (.csv, .parquet or .pq); the registry's production model (``paths.registry``) or
         an explicit ONNX file and its model card
Outputs: OUTPUT (.parquet or .pq)
Params:  ``paths.registry`` only, and only when scoring with the production model
Command: ``python -m serving.batch INPUT OUTPUT [--model production|PATH.onnx] [--card PATH]
         [--chunk-rows N] [--keep COL]... [--registry DIR] [--threads N] [--every-window]``
"""

from __future__ import annotations

import argparse
import enum
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from pipeline.onnxio.card import ImageCard, ModelCard, SequenceCard, TabularCard, TabularInput

log = logging.getLogger(__name__)

PRODUCTION = "production"
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
# Rows read, scored and written (one output row group) at a time: bounds memory, and keeps row
# groups a useful size for whoever reads the output. Tuned with bench/batch_scoring.py.
DEFAULT_CHUNK_ROWS = 100_000
# Rows per onnxruntime call: a [8192, 256] float32 activation is 8 MB and stays in cache; one call
# on 100k rows is ~1.8x slower on the 2-core machine (bench/batch_scoring.out).
RUN_ROWS = 8192
# One intra-op thread: the second core reads and prepares the next chunk meanwhile. On an idle
# 2-core machine --threads 2 is ~15% faster for ~35% more CPU (bench/batch_scoring.out); with
# other work on the machine it was 1.5-2.5x slower in development runs, so 1 is the default.
DEFAULT_THREADS = 1
LABEL_COLUMN = "label"
VERSION_COLUMN = "model_version"
PROBA_PREFIX = "proba_"
PROGRESS_EVERY_S = 10.0

T = TypeVar("T")


class _End(enum.Enum):
    """The end of an iterator, as ``next(items, _End.END)`` returns it (a type of its own, so it narrows)."""

    END = enum.auto()


@dataclass(frozen=True)
class Chunk:
    """Rows ready to score: the model's feeds ([N, 1] arrays) and the passthrough columns."""

    rows: int
    feed: dict[str, np.ndarray]
    keep: list[pa.Array]
    coerced: dict[str, int]  # per input: present values the model takes as missing (coerced_values)


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


def open_parquet(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> tuple[list[pa.Field], Iterator[Chunk]]:
    """The passthrough fields and an iterator of chunks, reading only the needed columns."""
    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(exc)})") from None
    schema = file.schema_arrow
    names = [spec.name for spec in inputs]
    _check_columns(path, schema.names, names, keep)
    wanted = set(names) | set(keep)
    columns = [name for name in schema.names if name in wanted]  # file order, each once

    def chunks() -> Iterator[Chunk]:
        with file:
            for batch in file.iter_batches(batch_size=chunk_rows, columns=columns):
                # Strings arrive as Categoricals: decoded once per distinct value, not per row.
                frame = batch.select(names).to_pandas(strings_to_categorical=True)
                feed = chunk_feed(frame, inputs)
                coerced = coerced_values(frame, feed, inputs, missing_tokens)
                yield Chunk(batch.num_rows, feed, [batch.column(name) for name in keep], coerced)

    return [schema.field(name) for name in keep], _reading(path, "Parquet", chunks())


def open_csv(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> tuple[list[pa.Field], Iterator[Chunk]]:
    """The passthrough fields (text) and an iterator of chunks.

    Passthrough columns and categorical inputs are read as text (so a column's type cannot change
    from one chunk to the next); numeric inputs are parsed by ``read_csv`` as in ``ingest``.
    """
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (no header line)") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({first_line(exc)})") from None
    names = [spec.name for spec in inputs]
    _check_columns(path, header, names, keep)
    categorical = [spec.name for spec in inputs if spec.kind == "categorical"]

    as_text = {name: str for name in [*keep, *categorical]}

    def chunks() -> Iterator[Chunk]:
        wanted = set(names) | set(keep)
        with pd.read_csv(path, usecols=lambda name: name in wanted, dtype=as_text, chunksize=chunk_rows) as reader:
            for frame in reader:
                model_frame = frame[names].assign(**{name: infer_like_read_csv(frame[name]) for name in categorical})
                passthrough = [pa.array(frame[name], type=pa.string(), from_pandas=True) for name in keep]
                feed = chunk_feed(model_frame, inputs)
                yield Chunk(len(frame), feed, passthrough, coerced_values(model_frame, feed, inputs, missing_tokens))

    return [pa.field(name, pa.string()) for name in keep], _reading(path, "CSV", chunks())


def _reading(path: Path, kind: str, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """Turn a read failure in the middle of the file into one line naming the file."""
    try:
        yield from chunks
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def open_input(
    path: Path, inputs: Sequence[TabularInput], keep: list[str], chunk_rows: int, missing_tokens: Sequence[str] = ()
) -> tuple[list[pa.Field], Iterator[Chunk]]:
    suffix = path.suffix.lower()
    if suffix not in PARQUET_SUFFIXES + CSV_SUFFIXES:
        raise DataError(
            f"{path}: unsupported input file type {path.suffix!r}; use one of {sorted(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
        )
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = open_parquet if suffix in PARQUET_SUFFIXES else open_csv
    return opener(path, inputs, keep, chunk_rows, missing_tokens)


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items`` while the next one is being produced on a second thread (one item ahead)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-read") as pool:
        pending = pool.submit(next, items, _End.END)
        while not isinstance(item := pending.result(), _End):
            pending = pool.submit(next, items, _End.END)
            yield item


# ---------------------------------------------------------------- the model


def load_model(onnx_path: str | Path, card_path: str | Path, threads: int = DEFAULT_THREADS) -> OnnxModel:
    """One onnxruntime session for the whole file, checked against its card."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is first imported
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile

    onnx_path, card_path = Path(onnx_path), Path(card_path)
    if not onnx_path.is_file():
        raise DataError(f"{onnx_path}: model not found")
    card = TabularCard.load(card_path)
    for key, values in (("inputs", card.inputs), ("classes", card.classes)):
        if not values:
            raise DataError(f"{card_path}: model card has no {key!r}")
    recorded = card.onnx_hashes
    if recorded and file_sha256(onnx_path) not in recorded:
        raise DataError(f"{card_path}: the card describes another model (its onnx_sha256 does not match {onnx_path})")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:
        raise DataError(f"{onnx_path}: not a loadable ONNX model ({first_line(exc)})") from None
    outputs = {output.name for output in session.get_outputs()}
    if not {"probabilities", "label"} <= outputs:
        raise DataError(f"{onnx_path}: model lacks the 'probabilities'/'label' outputs (it has {sorted(outputs)})")
    return OnnxModel(onnx_path, card, session)


def resolve_model(model: str, card: str | None, registry: str | None) -> tuple[Path, Path, str]:
    """(onnx path, card path, version name) for ``--model production`` or an explicit ONNX file."""
    if model == PRODUCTION:
        from pipeline.lifecycle.registry import Registry

        if card is not None:
            raise DataError("--card goes with --model PATH.onnx; the production model brings its own card")
        if registry is None:
            from pipeline.params import load_params

            registry = load_params().paths.registry
        production = Registry(registry).production()
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


def output_schema(keep: list[pa.Field], classes: list[str]) -> pa.Schema:
    fields = [*keep, pa.field(LABEL_COLUMN, pa.string())]
    fields += [pa.field(f"{PROBA_PREFIX}{name}", pa.float32()) for name in classes]
    fields.append(pa.field(VERSION_COLUMN, pa.string()))
    names = [field.name for field in fields]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise DataError(f"--keep column(s) {clashes} clash with the output's own columns; rename them in the input")
    return pa.schema(fields)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Text columns only: dictionary-encoding the float probabilities is wasted work (4x slower writes)."""
    text = (pa.types.is_string, pa.types.is_large_string, pa.types.is_dictionary)
    return [field.name for field in schema if any(is_text(field.type) for is_text in text)]


def predict(model: OnnxModel, feed: dict[str, np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K] float32, labels [N]) in slices of RUN_ROWS rows, whose activations stay in cache."""
    parts = [
        model.session.run(
            ["probabilities", "label"], {name: values[start : start + RUN_ROWS] for name, values in feed.items()}
        )
        for start in range(0, rows, RUN_ROWS)
    ]
    if len(parts) == 1:
        return parts[0][0], parts[0][1]
    return np.concatenate([p for p, _ in parts]), np.concatenate([labels for _, labels in parts])


def score_chunk(model: OnnxModel, chunk: Chunk, schema: pa.Schema, version: str) -> pa.Table:
    """One output table: passthrough columns, the label, probabilities [N, K] split into K columns."""
    probabilities, labels = predict(model, chunk.feed, chunk.rows)
    by_class = np.ascontiguousarray(probabilities.T, dtype=np.float32)  # [K, N]: one contiguous column each
    columns = [*chunk.keep, pa.array(labels, type=pa.string()), *by_class, pa.repeat(version, chunk.rows)]
    return pa.Table.from_arrays(columns, schema=schema)


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    model: OnnxModel,
    version: str,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Score every row of ``input_path`` into ``output_path`` (Parquet), one chunk at a time.

    Returns a summary: rows, chunks, seconds, rows_per_s, and per column the values the model took as
    missing by training's rules (``coerced``: unparseable, not finite in float32, out of range, tokens).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if chunk_rows < 1:
        raise DataError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    if output_path.suffix.lower() not in PARQUET_SUFFIXES:
        raise DataError(f"{output_path}: the output is Parquet; name it with one of {list(PARQUET_SUFFIXES)}")
    if output_path.resolve() == input_path.resolve():
        raise DataError(f"{output_path}: the output would overwrite the input")
    columns = list(dict.fromkeys(keep))
    keep_fields, chunks = open_input(input_path, model.card.inputs, columns, chunk_rows, model.card.missing_tokens)
    schema = output_schema(keep_fields, model.classes)

    start = last_report = time.perf_counter()
    rows = count = 0
    coerced: Counter[str] = Counter()
    try:
        with (
            atomic_path(output_path) as temporary,
            pq.ParquetWriter(temporary, schema, use_dictionary=dictionary_columns(schema)) as writer,
        ):
            for chunk in read_ahead(chunks):
                writer.write_table(score_chunk(model, chunk, schema, version))
                rows += chunk.rows
                count += 1
                coerced.update(chunk.coerced)
                if time.perf_counter() - last_report >= PROGRESS_EVERY_S:
                    last_report = time.perf_counter()
                    log.info("%s: %d rows scored so far (%.0f rows/s)", input_path, rows, rows / (last_report - start))
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
    }


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.batch", description="Score a CSV or Parquet file into a Parquet file of predictions."
    )
    parser.add_argument(
        "input", help="rows to score (.csv, .parquet or .pq); images: a folder or .npz; sequences: a long table"
    )
    parser.add_argument("output", help="predictions to write (.parquet or .pq)")
    parser.add_argument(
        "--model", default=PRODUCTION, help="'production' (the registry's production version, default) or an .onnx file"
    )
    parser.add_argument("--card", help="model card of --model PATH.onnx (default: model_card.json beside it)")
    parser.add_argument(
        "--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help=f"rows per chunk (default {DEFAULT_CHUNK_ROWS})"
    )
    parser.add_argument(
        "--keep", action="append", default=[], metavar="COL", help="copy this input column to the output (repeatable)"
    )
    parser.add_argument("--registry", help="registry folder (default: paths.registry in params.yaml)")
    parser.add_argument(
        "--threads", type=int, default=DEFAULT_THREADS, help=f"onnxruntime intra-op threads (default {DEFAULT_THREADS})"
    )
    parser.add_argument(
        "--every-window", action="store_true", help="sequence models: score every complete window, not each series' latest"
    )
    return parser


def check_output(input_path: Path, output_path: Path) -> None:
    if output_path.suffix.lower() not in PARQUET_SUFFIXES:
        raise DataError(f"{output_path}: the output is Parquet; name it with one of {list(PARQUET_SUFFIXES)}")
    if output_path.resolve() == input_path.resolve():
        raise DataError(f"{output_path}: the output would overwrite the input")


def run_other_kind(args: argparse.Namespace, onnx_path: Path, card: ModelCard, version: str) -> dict[str, Any]:
    """An image or sequence model: one session, the kind's reader (``serving.batch_kinds``)."""
    from pipeline.onnxio.session import ort_session
    from serving.batch_kinds import score_images, score_windows

    recorded = card.onnx_hashes
    if recorded and file_sha256(onnx_path) not in recorded:
        raise DataError(
            f"{args.card or onnx_path}: the card describes another model (its onnx_sha256 does not match {onnx_path})"
        )
    input_path, output_path = Path(args.input), Path(args.output)
    check_output(input_path, output_path)
    session = ort_session(onnx_path, args.threads)
    if isinstance(card, ImageCard):
        return score_images(input_path, output_path, session, card, version)
    if isinstance(card, SequenceCard):
        return score_windows(input_path, output_path, session, card, version, every_window=args.every_window)
    raise DataError(f"batch scoring takes tabular, image and sequence models, not {card.KIND!r} ones")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the model, load it once, score the file; the summary names the model version."""
    if args.threads < 1:
        raise DataError(f"--threads must be at least 1, got {args.threads}")
    onnx_path, card_path, version = resolve_model(args.model, args.card, args.registry)
    card = ModelCard.load(card_path)
    if not isinstance(card, TabularCard):
        return {**run_other_kind(args, onnx_path, card, version), "model_version": version}
    model = load_model(onnx_path, card_path, args.threads)
    summary = score_file(args.input, args.output, model, version, chunk_rows=args.chunk_rows, keep=tuple(args.keep))
    return {**summary, "model_version": version}


def main(argv: list[str] | None = None) -> None:
    """CLI entry: progress and the summary are logged; a user error is one line and exit code 1."""
    setup_logging()
    args = _parser().parse_args(argv)
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
