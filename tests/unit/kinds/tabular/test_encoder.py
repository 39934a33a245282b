import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds.tabular.encoder import RARE_INDEX, Preprocessor
from pipeline.params import TabularFeatures


def test_numeric_imputation_indicator_and_scaling_come_from_training_rows(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures(numeric_impute="median"))
    x = pre.numeric[0]
    assert x.name == "x"
    assert x.fill == pytest.approx(table["x"].median())
    imputed = table["x"].fillna(table["x"].median())
    assert x.mean == pytest.approx(imputed.mean())
    assert x.std == pytest.approx(imputed.std(ddof=0))
    assert x.indicator is True  # x has missing values in training
    assert pre.numeric[1].indicator is False  # noise has none


@pytest.mark.parametrize(
    "strategy, expected",
    [("mean", lambda s: s.mean()), ("most_frequent", lambda s: s.mode().iloc[0]), ("constant", lambda s: -7.0)],
)
def test_numeric_strategies(strategy, expected, schema):
    frame = pd.DataFrame({"x": [1.0, 2.0, 2.0, 9.0, np.nan], "noise": [0.0] * 5, "colour": ["a"] * 5, "label": ["high"] * 5})
    pre = Preprocessor.fit(frame, schema, TabularFeatures(numeric_impute=strategy, numeric_fill_value=-7.0))
    assert pre.numeric[0].fill == pytest.approx(expected(frame["x"]))


def test_transform_applies_the_fitted_statistics(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    x_num, x_cat = pre.transform(table)
    assert x_num.dtype == np.float32 and x_cat.dtype == np.int64
    assert x_num.shape == (len(table), pre.n_numeric_inputs) == (len(table), 3)
    missing = table["x"].isna().to_numpy()
    col = pre.numeric[0]
    np.testing.assert_allclose(x_num[missing, 0], (col.fill - col.mean) / col.std, rtol=1e-5)
    np.testing.assert_array_equal(x_num[:, 2], missing.astype(np.float32))  # the indicator column
    assert abs(x_num[:, 1].mean()) < 1e-4 and x_num[:, 1].std() == pytest.approx(1.0, abs=1e-3)


def test_rare_unseen_and_missing_categories(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures(rare_min_count=30, categorical_impute="constant"))
    colour = pre.categorical[0]
    assert "violet" not in colour.vocabulary  # ~12 rows < 30: grouped as rare
    assert colour.vocabulary == ("blue", "green", "red")
    probe = table.head(4).assign(colour=pd.array(["violet", "never-seen", None, "red"], dtype="string"))
    _, x_cat = pre.transform(probe)
    assert x_cat[:, 0].tolist() == [RARE_INDEX, RARE_INDEX, colour.missing_index, colour.vocabulary.index("red") + 1]
    assert colour.missing_index == len(colour.vocabulary) + 1


def test_most_frequent_category_imputation(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures(categorical_impute="most_frequent"))
    colour = pre.categorical[0]
    top = table["colour"].value_counts().idxmax()
    assert colour.missing_index == colour.vocabulary.index(top) + 1


def test_fit_and_transform_do_not_mutate_input(table, schema):
    copy = table.copy(deep=True)
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    pre.transform(table)
    pd.testing.assert_frame_equal(table, copy)


def test_round_trip_through_json(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    again = Preprocessor.from_dict(pre.to_dict())
    assert again == pre
    np.testing.assert_array_equal(again.transform(table)[0], pre.transform(table)[0])


def test_labels_outside_the_classes_are_refused(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    with pytest.raises(DataError, match="'unknown'.*'label'"):
        pre.encode_labels(pd.Series(["high", "unknown"]))


def test_missing_feature_column_is_named(table, schema):
    pre = Preprocessor.fit(table, schema, TabularFeatures())
    with pytest.raises(DataError, match=r"\['colour'\]"):
        pre.transform(table.drop(columns="colour"))
