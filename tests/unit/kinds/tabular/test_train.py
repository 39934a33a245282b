"""Tabular prepare (pipeline/kinds/tabular/train.py): the encoder fitted a column at a time and the splits
encoded chunk by chunk into memory-mapped arrays give exactly what whole frames gave."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.errors import DataError
from pipeline.core.io import SCHEMA_FILE, read_column, read_table, split_file, write_json, write_table
from pipeline.engine import Tensors, fit
from pipeline.engine.data import host_array
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.kinds.tabular.train import FileColumns, encode, encode_file, prepare
from pipeline.params import TabularFeatures, TrainParams
from tests.conftest import make_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tricky_table(n: int = 500, seed: int = 1) -> pd.DataFrame:
    """Missing numbers and categories, missing-value tokens, rare categories, an all-missing column of each
    kind, a constant column, and a target for either task."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x[rng.choice(n, n // 7, replace=False)] = np.nan
    whole = rng.integers(0, 5, size=n).astype("float64")  # ties: most_frequent has to pick one
    city = rng.choice(["oslo", "rome", "lima", "nuuk", "NA", ""], size=n, p=[0.45, 0.3, 0.15, 0.03, 0.04, 0.03])
    frame = pd.DataFrame(
        {
            "x": x,
            "whole": whole,
            "empty_num": np.full(n, np.nan),
            "constant": np.full(n, 3.0),
            "city": pd.array(city, dtype="string"),
            "empty_cat": pd.array([None] * n, dtype="string"),
            # Categories Parquet stores as numbers and as a dictionary: counted through pandas, as text.
            "code": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 30, size=n)), dtype="Int64"),
            "grade": pd.Categorical(rng.choice(["x", "y", "z"], size=n)),
            "label": pd.array(rng.choice(["a", "b", "c"], size=n), dtype="string"),
            "price": rng.normal(1e5, 2e4, size=n),
        }
    )
    frame.loc[rng.choice(n, n // 9, replace=False), "city"] = None
    return frame


def tricky_schema(task: str = "classification") -> Schema:
    numeric = ("x", "whole", "empty_num", "constant")
    return Schema(
        target="price" if task == "regression" else "label",
        features=(
            *(Feature(n, "numeric") for n in numeric),
            Feature("city", "categorical"),
            Feature("empty_cat", "categorical"),
            Feature("code", "categorical"),
            Feature("grade", "categorical"),
        ),
        classes=() if task == "regression" else ("a", "b", "c"),
        missing_tokens=("", "NA"),
        valid_ranges=(("x", -1.5, None),),
        task=task,  # type: ignore[arg-type]
    )


def features_cases() -> list[TabularFeatures]:
    return [
        TabularFeatures(),
        TabularFeatures(numeric_impute="mean", categorical_impute="most_frequent", rare_min_count=1),
        TabularFeatures(numeric_impute="most_frequent", rare_min_count=100, missing_indicators=False),
        TabularFeatures(numeric_impute="constant", numeric_fill_value=-2.0, scale=False, rare_min_count=10_000),
    ]


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("features", features_cases())
def test_fit_column_by_column_from_parquet_equals_the_whole_frame_fit(tmp_path, task, features):
    path = tmp_path / "train.parquet"
    write_table(path, tricky_table())
    schema = tricky_schema(task)
    by_columns = Preprocessor.fit(FileColumns(path, rows=64), schema, features)  # text counted 64 rows at a time
    whole = Preprocessor.fit(read_table(path), schema, features)
    assert by_columns.to_dict() == whole.to_dict()  # every statistic exactly, floats to the last bit
    assert by_columns.regression == (task == "regression")
    # The tricky parts are what they should be.
    empty_num, constant = by_columns.numeric[2], by_columns.numeric[3]
    assert empty_num.std == 1.0 and constant.std == 1.0
    assert by_columns.categorical[1].vocabulary == ()
    assert "" not in by_columns.categorical[0].vocabulary  # missing, never a category


def test_read_column_is_the_column_of_the_whole_table_and_names_a_missing_one(tmp_path):
    path = tmp_path / "t.parquet"
    table = tricky_table(50)
    write_table(path, table)
    whole = read_table(path)
    for name in table.columns:
        column = read_column(path, name)
        assert column.dtype == whole[name].dtype and column.equals(whole[name]) and column.name == name
    for read in (functools.partial(read_column, path), FileColumns(path).column, FileColumns(path).category_counts):
        with pytest.raises(DataError, match=r"t\.parquet: no column 'nope'"):
            read("nope")
    with pytest.raises(DataError, match=r"missing\.parquet: file not found"):
        read_column(tmp_path / "missing.parquet", "x")


def assert_same_tensors(got: Tensors, expected: Tensors) -> None:
    for a, b in zip((*got.inputs, got.y), (*expected.inputs, expected.y), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("rows", [1, 7, 64, 10_000])  # one row, chunks that do not divide the table, one chunk
def test_chunked_encoding_equals_the_whole_frame_encoding(tmp_path, task, rows):
    path = tmp_path / "val.parquet"
    table = tricky_table(300, seed=2)
    table.loc[5, "city"] = "never-seen"
    write_table(path, table)
    pre = Preprocessor.fit(tricky_table(), tricky_schema(task), TabularFeatures(rare_min_count=5))
    chunked = encode_file(path, pre, rows=rows)
    assert_same_tensors(chunked, encode(read_table(path), pre))
    assert chunked.inputs[0].shape == (300, pre.n_numeric_inputs) and chunked.inputs[1].shape == (300, 4)
    assert chunked.y.shape == ((300, 1) if task == "regression" else (300,))


def test_an_empty_split_and_a_table_without_categories_encode(tmp_path):
    pre = Preprocessor.fit(tricky_table(), tricky_schema(), TabularFeatures())
    path = tmp_path / "empty.parquet"
    write_table(path, tricky_table().iloc[:0])
    empty = encode_file(path, pre, rows=8)
    assert len(empty) == 0 and empty.inputs[0].shape == (0, pre.n_numeric_inputs)
    numbers_only = Schema(target="label", features=(Feature("x", "numeric"),), classes=("a", "b", "c"))
    pre = Preprocessor.fit(tricky_table(), numbers_only, TabularFeatures())
    write_table(path, tricky_table(40))
    assert_same_tensors(encode_file(path, pre, rows=16), encode(read_table(path), pre))


def test_a_label_outside_the_classes_is_refused_in_any_chunk(tmp_path):
    pre = Preprocessor.fit(tricky_table(), tricky_schema(), TabularFeatures())
    table = tricky_table(100)
    table.loc[90, "label"] = "zzz"
    path = tmp_path / "val.parquet"
    write_table(path, table)
    with pytest.raises(DataError, match=r"labels \['zzz'\]"):
        encode_file(path, pre, rows=16)


def test_host_arrays_are_nameless_zeroed_memory_maps(tmp_path):
    array = host_array((1000, 3), np.float32, tmp_path)
    assert isinstance(array, np.memmap) and array.dtype == np.float32 and not array.any()
    assert list(tmp_path.iterdir()) == []  # nothing to clean up, even after a crash
    array[:] = 2.0
    tensor = Tensors.from_numpy((array,), array[:, 0]).inputs[0]
    assert float(tensor.sum()) == 6000.0
    assert host_array((0, 3), np.int64, tmp_path).shape == (0, 3)  # an empty file cannot be mapped: plain
    assert host_array((10, 0), np.int64, tmp_path).shape == (10, 0)


def test_read_only_arrays_become_tensors_without_a_warning(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(6, dtype=np.float32).reshape(3, 2))
    mapped = np.load(path, mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = Tensors.from_numpy((mapped,), np.zeros(3, np.int64))
    assert data.rows(torch.tensor([2, 0]))[0].tolist() == [[4.0, 5.0], [0.0, 1.0]]


@pytest.fixture
def split_folders(tmp_path, raw_params):
    """The train stage's inputs in a temp folder: a classification table's train, augmented train and val."""
    params = make_params(raw_params, tmp_path, train={"epochs": 1, "model": {"hidden": [16]}, "warmup_epochs": 0})
    table = tricky_table(700, seed=3)
    frames = {"train": table.iloc[:400], "val": table.iloc[400:550], "test": table.iloc[550:]}
    for name, frame in frames.items():
        write_table(split_file(params.paths.split, name), frame)
    write_json(f"{params.paths.split}/{SCHEMA_FILE}", tricky_schema().to_dict())
    # Augmented rows differ from the real ones: the encoder must not see them.
    augmented = pd.concat([frames["train"], frames["train"].assign(x=frames["train"]["x"] * 50)], ignore_index=True)
    write_table(split_file(params.paths.augmented, "train"), augmented)
    return params, frames, augmented


def test_prepare_gives_what_whole_frames_gave(split_folders):
    params, frames, augmented = split_folders
    prepared = prepare(params.features, params.train, params.paths)
    pre = Preprocessor.fit(frames["train"].reset_index(drop=True), tricky_schema(), params.features)
    assert prepared.encoder == pre.to_dict()
    assert_same_tensors(prepared.train, Tensors.encode(augmented, pre))
    assert_same_tensors(prepared.val, Tensors.encode(frames["val"], pre))


def test_both_batch_paths_train_the_same_on_mapped_splits(split_folders):
    """Index slices of the split (workers 0) and DataLoader workers reading the mapped arrays: the same weights,
    and the same as tensors built in memory."""
    params, frames, augmented = split_folders
    prepared = prepare(params.features, params.train, params.paths)
    pre = Preprocessor.from_dict(prepared.encoder)
    in_memory = Tensors.encode(augmented, pre), Tensors.encode(frames["val"], pre)
    states = []
    for train, val, workers in [(*in_memory, 0), (prepared.train, prepared.val, 0), (prepared.train, prepared.val, 1)]:
        cfg = TrainParams.model_validate({**params.train.model_dump(), "loader": {"workers": workers}})
        _, best, _ = fit(train, val, prepared.config, cfg, params.seed, task=prepared.task)
        states.append(best["model_state"])
    for state in states[1:]:
        for name, tensor in states[0].items():
            torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
