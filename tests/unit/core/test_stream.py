"""pipeline.core.stream: chunked Parquet, exact duplicates by row hash, distinct counts, the content hash."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_leftovers, frame_sha256, iter_table
from pipeline.core.stream import (
    EXACT_DISTINCT,
    ContentHash,
    DistinctCounter,
    ParquetSink,
    first_occurrences,
    row_hashes,
)


def frame(n: int = 100) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "x": rng.integers(0, 3, n).astype(float),
            "s": pd.array(rng.choice(["a", "b", None], n), dtype="string"),
            "o": rng.choice(["p", "q"], n).astype(object),
        }
    )


def test_a_sink_writes_one_row_group_per_chunk_and_reads_back_whole(tmp_path):
    table = frame()
    with ParquetSink(tmp_path / "t.parquet") as sink:
        for start in range(0, 100, 30):
            sink.write(table.iloc[start : start + 30])

    assert pq.ParquetFile(tmp_path / "t.parquet").metadata.num_row_groups == 4
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), table)
    assert pd.concat(list(iter_table(tmp_path / "t.parquet", rows=17)), ignore_index=True).equals(table)


def test_one_chunk_gives_the_bytes_a_whole_write_gives(tmp_path):
    table = frame()
    table.to_parquet(tmp_path / "whole.parquet", index=False)
    with ParquetSink(tmp_path / "sink.parquet") as sink:
        sink.write(table)

    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "sink.parquet").read_bytes()


def test_a_text_column_empty_in_the_first_chunk_takes_text_later(tmp_path):
    first = pd.DataFrame({"o": [None, None]}, dtype=object)
    with ParquetSink(tmp_path / "t.parquet") as sink:
        sink.write(first)
        sink.write(pd.DataFrame({"o": ["a", "b"]}, dtype=object))

    assert pd.read_parquet(tmp_path / "t.parquet")["o"].tolist() == [None, None, "a", "b"]


def test_a_chunk_of_another_type_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(DataError, match=r"t\.parquet: a chunk's column types differ") as info:
        with ParquetSink(tmp_path / "t.parquet") as sink:
            sink.write(pd.DataFrame({"n": [1, 2]}))
            sink.write(pd.DataFrame({"n": ["x", "y"]}))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "t.parquet").exists() and not atomic_leftovers(tmp_path / "t.parquet")


def test_an_error_inside_the_block_leaves_the_old_file(tmp_path):
    path = tmp_path / "t.parquet"
    frame().to_parquet(path, index=False)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with ParquetSink(path) as sink:
            sink.write(frame(10))
            raise RuntimeError("stage failed half-way")
    assert path.read_bytes() == before and not atomic_leftovers(path)


def test_first_occurrences_match_pandas_duplicated_across_chunks():
    table = pd.concat([frame(), frame(40)], ignore_index=True)  # repeats, missing values included
    hashes = np.concatenate([row_hashes(table.iloc[i : i + 13]) for i in range(0, len(table), 13)])

    assert (first_occurrences(hashes) == ~table.duplicated().to_numpy()).all()


def test_the_content_hash_of_chunks_is_the_whole_frames():
    table = frame()
    content = ContentHash()
    for start in range(0, 100, 33):
        content.update(table.iloc[start : start + 33])

    assert content.hexdigest() == frame_sha256(table)


def test_distinct_counts_are_exact_below_the_threshold_and_sketched_above():
    small = DistinctCounter()
    for start in range(0, 5000, 700):
        small.update(pd.Series(np.arange(start, start + 700) % 1234, dtype=float))
    small.update(pd.Series([np.nan, None]))
    assert (small.count(), small.estimated) == (1234, False)

    n = 4 * EXACT_DISTINCT
    large = DistinctCounter()
    values = np.random.default_rng(1).permutation(n).astype(str)
    for start in range(0, n, 50_000):
        large.update(pd.Series(values[start : start + 50_000]))
        large.update(pd.Series(values[:100]))  # repeats never count twice
    assert large.estimated
    assert abs(large.count() / n - 1) < 0.04  # 5 standard errors of the 2^14-register sketch


def test_an_empty_first_chunk_does_not_fix_the_types(tmp_path):
    # A time window or cutoff often empties the first chunks: the first chunk with rows types the file.
    with ParquetSink(tmp_path / "t.parquet") as sink:
        sink.write(pd.DataFrame({"flag": pd.Series([], dtype=object)}))
        sink.write(pd.DataFrame({"flag": pd.Series([True, None], dtype=object)}))
    assert pd.read_parquet(tmp_path / "t.parquet")["flag"].tolist() == [True, None]

    with ParquetSink(tmp_path / "none.parquet") as sink:
        sink.write(pd.DataFrame({"x": pd.Series([], dtype="float64")}))
    assert list(pd.read_parquet(tmp_path / "none.parquet").columns) == ["x"]


def test_row_hashes_are_two_different_hashes_and_count_minus_zero_as_zero():
    hashes = row_hashes(pd.DataFrame({"a": [1.5, 2.0], "b": [3.0, 4.0]}))
    assert (hashes[:, 0] != hashes[:, 1]).all()  # numbers too: 128 bits, not one hash twice

    signed = pd.DataFrame({"a": [0.0, -0.0, 1.0], "b": ["x", "x", "x"]})
    assert (first_occurrences(row_hashes(signed)) == ~signed.duplicated().to_numpy()).all()
