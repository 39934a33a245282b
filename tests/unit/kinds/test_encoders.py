"""Every kind's encoder keeps the contract (pipeline/kinds/base.py ``Encoder``): ``fit`` on the training data,
``transform``, and a JSON round trip (``to_dict`` -> file -> ``from_dict``) that transforms identically."""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
import pytest

from pipeline.core.io import read_json, write_json
from pipeline.kinds.base import Encoder
from pipeline.kinds.image.data import ImageSchema
from pipeline.kinds.image.encoder import ImageNormaliser
from pipeline.kinds.sequence.data import SequenceSchema
from pipeline.kinds.sequence.encoder import SequenceEncoder
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.params import ImageFeatures, SequenceFeatures, TabularFeatures

KINDS = ("tabular", "image", "sequence")


def _tabular(table, schema):
    """(encoder class, training data, schema, features params, data to transform)."""
    return Preprocessor, table.iloc[:400], schema, TabularFeatures(), table.iloc[400:]


def _image(table, schema):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (30, 3, 4, 5)).astype(np.float32)
    x[:, 1] = 9.0  # a constant channel
    return ImageNormaliser, x[:20], ImageSchema("animal", 3, 4, 5, (0.0, 255.0), ("cat", "dog")), ImageFeatures(), x[20:]


def _sequence(table, schema):
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "series": "a",
            "time": np.arange(200),
            "Demand": rng.normal(5, 1, 200),
            "Temperature": rng.normal(15, 4, 200),
            "WorkDay": 1.0,  # constant: centred, not divided by zero
        }
    )
    sequence = SequenceSchema(
        series_column="series",
        time_column="time",
        target="Demand",
        features=("Demand", "Temperature", "WorkDay"),
        task="forecast",
        lookback=6,
        horizon=1,
        stride=1,
        season_length=3,
        frequency=1,
    )
    windows = rng.normal(10, 3, (7, 6, 3))
    return SequenceEncoder, rows.iloc[:150], sequence, SequenceFeatures(), windows


CASES = {"tabular": _tabular, "image": _image, "sequence": _sequence}


def _same(a, b) -> None:
    for left, right in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
        assert left.dtype == right.dtype
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("kind", KINDS)
def test_the_encoder_has_every_member_of_the_contract(kind, table, schema):
    encoder_class, train, data_schema, features, _ = CASES[kind](table, schema)
    fitted = encoder_class.fit(train, data_schema, features)
    for name, member in inspect.getmembers(Encoder):
        if name.startswith("_"):
            continue
        assert hasattr(fitted, name), f"{encoder_class.__name__} lacks Encoder.{name}"
        if inspect.isfunction(member) or inspect.ismethod(member):  # the same arity (names may say more, e.g. frame)
            wanted = [p for p in inspect.signature(member).parameters if p != "self"]
            provided = [p for p in inspect.signature(getattr(encoder_class, name)).parameters if p != "self"]
            assert len(provided) == len(wanted), (
                f"{encoder_class.__name__}.{name}{inspect.signature(getattr(encoder_class, name))}"
            )
            assert inspect.ismethod(getattr(encoder_class, name)) == inspect.ismethod(member), f"{name}: classmethod or not"


@pytest.mark.parametrize("kind", KINDS)
def test_fit_then_a_json_round_trip_transforms_identically(kind, table, schema, tmp_path):
    encoder_class, train, data_schema, features, data = CASES[kind](table, schema)
    fitted = encoder_class.fit(train, data_schema, features)
    assert fitted.classes == tuple(data_schema.classes)
    write_json(tmp_path / "preprocessor.json", fitted.to_dict())
    restored = encoder_class.from_dict(read_json(tmp_path / "preprocessor.json"))
    assert restored == fitted
    _same(restored.transform(data), fitted.transform(data))
    write_json(tmp_path / "again.json", restored.to_dict())  # the registry's copy stays byte-identical
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "preprocessor.json").read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_fit_learns_from_the_training_data_only(kind, table, schema):
    encoder_class, train, data_schema, features, data = CASES[kind](table, schema)
    fitted = encoder_class.fit(train, data_schema, features)
    fitted.transform(data)
    assert encoder_class.fit(train, data_schema, features) == fitted  # transforming other data changed nothing
    if kind != "tabular":  # tabular: vocabularies and statistics are checked in tests/unit/test_features.py
        other_train = data if kind == "image" else train.assign(Demand=train["Demand"] + 1)
        assert encoder_class.fit(other_train, data_schema, features) != fitted


def test_the_sequence_encoder_without_scaling_is_the_identity():
    _, train, sequence, _, windows = _sequence(None, None)
    encoder = SequenceEncoder.fit(train, sequence, SequenceFeatures(scale=False))
    assert encoder.means == (0.0, 0.0, 0.0) and encoder.stds == (1.0, 1.0, 1.0) and encoder.target_std == 1.0
    np.testing.assert_array_equal(encoder.transform(windows), windows.astype(np.float32))


def test_the_image_normaliser_keeps_the_json_of_earlier_versions():
    """The keys and values ``preprocessor.json`` held when the normaliser was a dict (the registry keeps those)."""
    _, x, image_schema, features, _ = _image(None, None)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    std[1] = 1.0  # the constant channel
    assert ImageNormaliser.fit(x, image_schema, features).to_dict() == {
        "kind": "image",
        "target": "animal",
        "classes": ["cat", "dog"],
        "shape": [3, 4, 5],
        "value_range": [0.0, 255.0],
        "mean": x.mean(axis=(0, 2, 3), dtype=np.float64).tolist(),
        "std": std.tolist(),
    }
