"""Issue 9, bad pipeline inputs: each case reproduced, and each ends in one line naming the real problem
(or a counted, reported rule), never in a crash three stages later or a silently different model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds.tabular.clean import clean
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.evaluate import baseline_proba, fit_baseline
from pipeline.kinds.tabular.ingest import infer_schema, ingest, numeric_text_columns
from pipeline.kinds.tabular.landing import batch_problems
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.params import EvaluateParams, TabularClean, TabularFeatures, TabularIngest
from pipeline.shared.tables import sortable_time
from tests.conftest import make_table

SCHEMA = Schema(
    target="label",
    features=(Feature("x", "numeric"), Feature("noise", "numeric"), Feature("colour", "categorical")),
    time_column="period",
    extra_columns=("period",),
)


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_an_all_nan_or_all_inf_feature_is_dropped_with_a_warning_in_the_clean_report(poison):
    raw = make_table().assign(noise=poison)

    out, schema, report = clean(raw, SCHEMA, TabularClean())

    assert "noise" not in out.columns and "noise" not in schema.feature_names
    assert report["dropped_columns"] == {"noise": "no usable value after cleaning"}
    # The case that crashed: evaluate's gradient-boosting baseline on the training rows.
    pre = Preprocessor.fit(out.iloc[:400], schema, TabularFeatures())
    baseline = fit_baseline(out.iloc[:400], pre, EvaluateParams(baseline_max_iter=5), seed=0, regression=False)
    proba = baseline_proba(baseline, out.iloc[400:], pre)
    assert np.isfinite(proba).all() and proba.shape == (len(out) - 400, 3)


def test_an_all_empty_feature_is_refused_by_params_naming_it():
    raw = make_table().assign(noise=np.nan)
    with pytest.raises(DataError, match=r"feature column\(s\) \['noise'\] have no usable value after cleaning"):
        clean(raw, SCHEMA, TabularClean(empty_columns="refuse"))


def test_a_numeric_column_with_ten_percent_text_stays_numeric_and_the_text_is_counted():
    raw = make_table()
    text = raw["x"].map(lambda v: "" if pd.isna(v) else f"{v:.6f}").astype(object)
    text.iloc[::10] = np.array(["12k", "n/a", "\u2014"] * 100, dtype=object)[: len(text.iloc[::10])]
    raw = raw.assign(x=text)
    cfg = TabularIngest(target="label", time_column="period", min_rows=10)

    out, schema = ingest(raw, cfg, seed=0)
    assert dict((f.name, f.kind) for f in schema.features)["x"] == "numeric"
    report = numeric_text_columns(out, schema, cfg)
    present = int((text != "").sum())  # "" is a missing token, not an unparseable value
    assert report["x"]["unparseable_share"] == pytest.approx(60 / present, abs=1e-6)
    assert report["x"]["rule"].startswith("numeric (at least ingest.min_numeric_share = 0.8 are numbers)")

    cleaned, _, clean_report = clean(out, schema, TabularClean())
    assert clean_report["set_missing"]["unparseable_or_infinite"]["x"] == 60  # "12k", "n/a" and the dash, counted
    assert cleaned["x"].dtype == "float64"


def test_a_class_too_small_for_the_split_is_named_not_the_split_fractions():
    raw = make_table()
    raw.loc[raw.index[:2], "label"] = "rare"
    with pytest.raises(DataError, match=r"class\(es\) 'rare' \(2\) have fewer than clean.min_class_rows = 10 rows"):
        clean(raw, SCHEMA, TabularClean())

    out, schema, report = clean(raw, SCHEMA, TabularClean(rare_classes="drop"))
    assert "rare" not in schema.classes and report["dropped"]["rare_class"] == {"rare": 2}


def test_a_continuous_target_is_named_as_such():
    raw = make_table().assign(label=np.random.default_rng(0).normal(size=600))
    with pytest.raises(DataError, match=r"target 'label' has 600 distinct values.*it looks continuous"):
        clean(raw, SCHEMA, TabularClean())


@pytest.mark.parametrize("name", ["probabilities", "label", "x_num", "prep/raw", "net/input"])
def test_a_feature_named_like_a_tensor_of_the_onnx_graph_is_refused_at_ingest(name):
    raw = make_table().rename(columns={"noise": name, "label": "target"})
    with pytest.raises(DataError, match=rf"feature column\(s\) \[{name!r}\] take names reserved inside the exported ONNX"):
        infer_schema(raw, TabularIngest(target="target"))


def test_dates_are_parsed_with_ingest_time_format_not_guessed_from_the_first_value():
    days = pd.Series(["03/04/2021", "13/04/2021", "25/12/2021"])
    parsed = sortable_time(days, "day", "%d/%m/%Y")
    assert list(parsed.dt.month) == [4, 4, 12]
    with pytest.raises(DataError, match=r"ingest.time_column 'day': 1 row\(s\) have no usable time with ingest.time_format"):
        sortable_time(pd.Series(["03/04/2021", "2021-04-13"]), "day", "%d/%m/%Y")
    assert TabularIngest(target="label", time_column="day", time_format="%d/%m/%Y").time_format == "%d/%m/%Y"


def test_a_landed_batch_is_screened_with_ingest_time_format_too(tmp_path):
    """A day-first batch that ingest reads with ingest.time_format must not be quarantined by the screen."""
    batch = tmp_path / "batch.csv"
    batch.write_text("day,x,label\n01/04/2021,1.5,a\n13/04/2021,2.5,b\n")
    day_first = TabularIngest(target="label", time_column="day", time_format="%d/%m/%Y", min_rows=1)
    assert batch_problems(batch, ["day", "x", "label"], ["x"], day_first) == []
    guessed = batch_problems(batch, ["day", "x", "label"], ["x"], day_first.model_copy(update={"time_format": None}))
    assert guessed and "ingest.time_column 'day'" in guessed[0]
