"""pipeline.kinds.tabular.augment: synthetic training rows; everything off changes nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.kinds.tabular.augment import augment
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.params import MixupParams, NoiseParams, OversampleParams, TabularAugment

SCHEMA = Schema(
    target="label",
    features=(Feature("x", "numeric"), Feature("y", "numeric"), Feature("colour", "categorical")),
)


def train_table(n_a: int = 20, n_b: int = 5, n_c: int = 3) -> pd.DataFrame:
    """Clean-stage shaped rows: float numerics (one NaN), text categories, a row id kept alongside."""
    n = n_a + n_b + n_c
    rng = np.random.default_rng(99)
    labels = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    offset = {"a": 0.0, "b": 100.0, "c": 200.0}
    frame = pd.DataFrame(
        {
            "rid": [f"r{i}" for i in range(n)],
            "x": [offset[label] + v for label, v in zip(labels, rng.uniform(0, 10, size=n))],
            "y": rng.normal(50.0, 5.0, size=n),
            "colour": pd.array(rng.choice(["red", "green", "blue"], size=n), dtype="string"),
            "label": pd.array(labels, dtype="string"),
        }
    )
    frame.loc[1, "y"] = np.nan
    return frame


def params(noise: bool = False, over: bool = False, mix: bool = False, **sections) -> TabularAugment:
    return TabularAugment(
        gaussian_noise=sections.get("gaussian_noise", NoiseParams(enabled=noise)),
        oversample=sections.get("oversample", OversampleParams(enabled=over)),
        mixup=sections.get("mixup", MixupParams(enabled=mix)),
    )


def added_rows(out: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    return out.iloc[len(train) :].reset_index(drop=True)


def test_all_techniques_off_returns_the_training_rows_unchanged():
    train = train_table()

    out, added = augment(train, SCHEMA, TabularAugment(), seed=0)

    pd.testing.assert_frame_equal(out, train)
    assert added == {}


# ---------------------------------------------------------------- oversample


@pytest.mark.parametrize("ratio", [0.33, 0.5, 1.0])
def test_oversample_raises_minorities_to_ratio_of_majority(ratio):
    train = train_table(20, 5, 3)

    out, added = augment(train, SCHEMA, params(oversample=OversampleParams(enabled=True, ratio=ratio)), seed=0)

    goal = int(np.ceil(ratio * 20))
    counts = out["label"].value_counts()
    assert counts["a"] == 20
    assert counts["b"] == max(5, goal)
    assert counts["c"] == max(3, goal)
    assert counts["b"] >= ratio * 20 and counts["c"] >= ratio * 20
    assert added == {"oversample": len(out) - len(train)}
    # Added rows are copies of existing minority rows.
    extra = added_rows(out, train)
    assert set(extra["label"]) <= {"b", "c"}
    pd.testing.assert_frame_equal(extra, train.set_index("rid").loc[extra["rid"]].reset_index()[train.columns])


# ---------------------------------------------------------------- gaussian noise


@pytest.mark.parametrize("fraction", [0.5, 1.0, 2.0])
def test_gaussian_noise_adds_fraction_of_rows(fraction):
    train = train_table()

    out, added = augment(train, SCHEMA, params(gaussian_noise=NoiseParams(enabled=True, fraction=fraction)), seed=0)

    assert added == {"gaussian_noise": round(fraction * len(train))}
    assert len(out) == len(train) + round(fraction * len(train))


def test_gaussian_noise_changes_only_numeric_features_and_keeps_nan():
    train = train_table()

    out, _ = augment(train, SCHEMA, params(gaussian_noise=NoiseParams(enabled=True, fraction=3.0, std=0.1)), seed=1)

    pd.testing.assert_frame_equal(out.iloc[: len(train)], train)  # originals first, unchanged
    noisy = added_rows(out, train)
    source = train.set_index("rid").loc[noisy["rid"]].reset_index()
    pd.testing.assert_frame_equal(noisy[["rid", "colour", "label"]], source[["rid", "colour", "label"]])
    assert (noisy["x"] != source["x"]).all()
    assert noisy["y"].isna().equals(source["y"].isna())
    assert (noisy["rid"] == "r1").any()  # the row with a NaN was drawn at least once
    observed = noisy["y"].notna()
    assert (noisy.loc[observed, "y"] != source.loc[observed, "y"]).all()


def test_gaussian_noise_scales_with_the_column_spread():
    train = train_table()
    std = 0.05

    out, _ = augment(train, SCHEMA, params(gaussian_noise=NoiseParams(enabled=True, fraction=10.0, std=std)), seed=2)

    noisy = added_rows(out, train)
    source = train.set_index("rid").loc[noisy["rid"]].reset_index()
    ratio = (noisy["x"] - source["x"]).std() / (std * train["x"].std(ddof=0))
    assert ratio == pytest.approx(1.0, abs=0.2)


# ---------------------------------------------------------------- mixup


def test_mixup_rows_stay_inside_their_class():
    train = train_table().assign(y=lambda f: f["y"].fillna(50.0))

    out, added = augment(train, SCHEMA, params(mixup=MixupParams(enabled=True, fraction=3.0)), seed=4)

    mixed = added_rows(out, train)
    assert added == {"mixup": round(3.0 * len(train))}
    anchors = train.set_index("rid").loc[mixed["rid"]].reset_index()
    assert mixed["label"].tolist() == anchors["label"].tolist()
    for label, rows in mixed.groupby("label"):
        members = train[train["label"] == label]
        for column in ("x", "y"):
            # lam * a + (1 - lam) * a can differ from a in the last bit, hence the tolerance.
            low, high = members[column].min(), members[column].max()
            slack = 1e-9 * max(abs(low), abs(high))
            assert rows[column].between(low - slack, high + slack).all()
        assert set(rows["colour"]) <= set(members["colour"])
    # Interpolation makes new values, not only copies.
    assert not mixed["x"].isin(train["x"]).all()


def test_mixup_keeps_the_anchors_missing_values():
    train = train_table()

    out, _ = augment(train, SCHEMA, params(mixup=MixupParams(enabled=True, fraction=5.0)), seed=5)

    mixed = added_rows(out, train)
    anchors = train.set_index("rid").loc[mixed["rid"]].reset_index()
    assert (mixed["rid"] == "r1").any()
    assert mixed["y"].isna().equals(anchors["y"].isna())


# ---------------------------------------------------------------- seeds and the caller's frame


def test_augment_is_deterministic_for_a_seed_and_changes_with_it():
    train = train_table()
    cfg = params(noise=True, over=True, mix=True)

    first, _ = augment(train, SCHEMA, cfg, seed=42)
    again, _ = augment(train, SCHEMA, cfg, seed=42)
    other, _ = augment(train, SCHEMA, cfg, seed=43)

    pd.testing.assert_frame_equal(first, again)
    assert len(other) == len(first)
    assert not first.equals(other)


def test_augment_does_not_mutate_its_input():
    train = train_table()
    before = train.copy(deep=True)

    augment(train, SCHEMA, params(noise=True, over=True, mix=True), seed=0)

    pd.testing.assert_frame_equal(train, before)


def test_enabling_one_technique_does_not_change_another():
    train = train_table()

    noise_only, _ = augment(train, SCHEMA, params(noise=True), seed=0)
    with_oversample, added = augment(train, SCHEMA, params(noise=True, over=True), seed=0)

    noise_rows = noise_only.iloc[len(train) :].reset_index(drop=True)
    start = len(train) + added["oversample"]
    pd.testing.assert_frame_equal(with_oversample.iloc[start:].reset_index(drop=True), noise_rows)
