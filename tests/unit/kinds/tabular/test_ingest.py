"""pipeline.kinds.tabular.ingest: reading files and batch folders, schema inference, row selection, profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds.tabular.ingest import infer_schema, ingest, load_default, profile, read_source
from pipeline.kinds.tabular.schema import Feature, Schema
from pipeline.params import TabularIngest
from pipeline.shared.tables import read_table_file


def one_line_error(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def small_frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rid": np.arange(n),
            "year": np.repeat([2000, 2001, 2002, 2003], n // 4),
            "age": np.linspace(20.0, 60.0, n),
            "colour": ["red", "blue"] * (n // 2),
            "label": ["yes", "no", "no", "no"] * (n // 4),
        }
    )


def kinds(schema: Schema) -> dict[str, str]:
    return {f.name: f.kind for f in schema.features}


# ---------------------------------------------------------------- read_table_file


def test_read_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,x\n2,y\n")

    frame = read_table_file(path)

    pd.testing.assert_frame_equal(frame, pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))


def test_read_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    expected = pd.DataFrame({"a": [1.5, 2.5], "b": ["x", "y"]})
    expected.to_parquet(path, index=False)

    pd.testing.assert_frame_equal(read_table_file(path), expected)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "empty" in message


def test_header_only_csv_is_refused(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("a,b,label\n")

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "no rows" in message


def test_blank_lines_csv_has_no_columns(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "no columns" in message


def test_corrupt_parquet_is_refused(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(np.random.default_rng(0).bytes(512))

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "not a readable parquet file" in message


def test_csv_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"a,b\n\xff\xfe,1\n")

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "not a readable CSV file" in message


def test_unsupported_suffix_is_refused(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("a\n1\n")

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "'.xlsx'" in message
    assert ".csv" in message and ".parquet" in message


def test_missing_file_is_refused(tmp_path):
    path = tmp_path / "absent.csv"

    message = one_line_error(read_table_file, path)

    assert str(path) in message
    assert "no such file" in message


# ---------------------------------------------------------------- read_source


def test_folder_of_batches_is_concatenated_in_name_order(tmp_path):
    (tmp_path / "2024-01.csv").write_text("a,label\n1,x\n2,y\n")
    (tmp_path / "2024-02.csv").write_text("label,a\nz,3\n")  # same columns, other order
    (tmp_path / "notes.txt").write_text("not a batch")

    frame = read_source(str(tmp_path))

    pd.testing.assert_frame_equal(frame, pd.DataFrame({"a": [1, 2, 3], "label": ["x", "y", "z"]}))


def test_batch_with_other_columns_is_refused_by_name(tmp_path):
    (tmp_path / "2024-01.csv").write_text("a,label\n1,x\n")
    (tmp_path / "2024-02.csv").write_text("a,b,label\n2,5,y\n")

    message = one_line_error(read_source, str(tmp_path))

    assert str(tmp_path / "2024-02.csv") in message
    assert "2024-01.csv" in message
    assert "unexpected ['b']" in message


def test_folder_without_batches_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")

    message = one_line_error(read_source, str(tmp_path))

    assert str(tmp_path) in message
    assert "no .csv or .parquet files" in message


def test_missing_source_names_ingest_source(tmp_path):
    path = tmp_path / "nowhere"

    message = one_line_error(read_source, str(path))

    assert str(path) in message
    assert "ingest.source" in message


# ---------------------------------------------------------------- infer_schema


def test_numeric_and_categorical_are_inferred():
    frame = pd.DataFrame(
        {
            "age": [30.0, 40.0, None],
            "count": [1, 2, 3],
            "city": ["a", "b", "c"],
            "flag": [True, False, True],
            "label": ["x", "y", "x"],
        }
    )

    schema = infer_schema(frame, TabularIngest(target="label"))

    assert schema.target == "label"
    assert kinds(schema) == {"age": "numeric", "count": "numeric", "city": "categorical", "flag": "categorical"}


def test_text_of_numbers_with_a_little_junk_is_numeric():
    values = [str(v) for v in range(19)] + ["n/a?"]  # 95% parse as numbers
    frame = pd.DataFrame({"income": values, "label": ["x", "y"] * 10})

    assert kinds(infer_schema(frame, TabularIngest(target="label"))) == {"income": "numeric"}


def test_text_with_more_junk_than_min_numeric_share_allows_is_categorical():
    values = [str(v) for v in range(18)] + ["junk", "more junk"]  # 90% parse as numbers
    frame = pd.DataFrame({"income": values, "label": ["x", "y"] * 10})

    assert kinds(infer_schema(frame, TabularIngest(target="label"))) == {"income": "numeric"}
    assert kinds(infer_schema(frame, TabularIngest(target="label", min_numeric_share=0.95))) == {"income": "categorical"}
    mostly_text = pd.DataFrame({"income": values[:6] + ["x"] * 14, "label": ["x", "y"] * 10})
    assert kinds(infer_schema(mostly_text, TabularIngest(target="label"))) == {"income": "categorical"}


def test_params_override_inferred_kinds():
    frame = pd.DataFrame({"occ10": [441.0, 5620.0, 441.0], "score": ["1", "2", "three"], "label": ["x", "y", "x"]})
    cfg = TabularIngest(target="label", categorical=("occ10",), numeric=("score",))

    assert kinds(infer_schema(frame, cfg)) == {"occ10": "categorical", "score": "numeric"}


def test_drop_columns_are_not_features():
    frame = small_frame()
    cfg = TabularIngest(target="label", drop_columns=("rid",))

    schema = infer_schema(frame, cfg)

    assert "rid" not in schema.feature_names
    assert "label" not in schema.feature_names


def test_time_column_is_not_a_feature_by_default():
    cfg = TabularIngest(target="label", time_column="year", drop_columns=("rid",))

    schema = infer_schema(small_frame(), cfg)

    assert schema.feature_names == ["age", "colour"]
    assert schema.time_column == "year"
    assert schema.extra_columns == ("year",)


def test_time_column_is_a_feature_when_asked():
    cfg = TabularIngest(target="label", time_column="year", time_as_feature=True, drop_columns=("rid",))

    schema = infer_schema(small_frame(), cfg)

    assert schema.features == (Feature("year", "numeric"), Feature("age", "numeric"), Feature("colour", "categorical"))
    assert schema.time_column == "year"
    assert schema.extra_columns == ()


def test_missing_target_names_the_key_and_column():
    message = one_line_error(infer_schema, small_frame(), TabularIngest(target="wrkstat"))

    assert "ingest.target" in message
    assert "'wrkstat'" in message


@pytest.mark.parametrize(
    ("field", "key"),
    [("drop_columns", "ingest.drop_columns"), ("categorical", "ingest.categorical"), ("numeric", "ingest.numeric")],
)
def test_missing_override_columns_name_the_key(field, key):
    cfg = TabularIngest(target="label", **{field: ("ghost",)})

    message = one_line_error(infer_schema, small_frame(), cfg)

    assert key in message
    assert "'ghost'" in message


def test_missing_time_column_names_the_key():
    message = one_line_error(infer_schema, small_frame(), TabularIngest(target="label", time_column="when"))

    assert "ingest.time_column" in message
    assert "'when'" in message


# ---------------------------------------------------------------- ingest


def test_ingest_keeps_rows_and_drops_columns():
    frame = small_frame()
    cfg = TabularIngest(target="label", time_column="year", drop_columns=("rid",), min_rows=1)

    out, schema = ingest(frame, cfg, seed=0)

    assert list(out.columns) == ["year", "age", "colour", "label"]
    assert len(out) == len(frame)
    assert schema.feature_names == ["age", "colour"]


def test_min_rows_is_enforced():
    frame = small_frame(40)

    message = one_line_error(ingest, frame, TabularIngest(target="label", min_rows=41), 0)

    assert "ingest.min_rows" in message
    assert "40 rows" in message and "41" in message


def test_min_rows_is_checked_on_the_ingested_rows():
    message = one_line_error(ingest, small_frame(16), TabularIngest(target="label", min_rows=20), 0)

    assert "only 16 rows" in message
    assert "ingest.min_rows" in message


def test_max_rows_below_min_rows_is_refused_when_params_load():
    with pytest.raises(ValueError, match=r"ingest\.max_rows \(10\) is below ingest\.min_rows \(20\)"):
        TabularIngest(target="label", min_rows=20, max_rows=10)


def test_max_rows_gives_a_seeded_slice_in_original_order():
    frame = small_frame(400)
    cfg = TabularIngest(target="label", max_rows=50, min_rows=1)

    first, _ = ingest(frame, cfg, seed=1)
    again, _ = ingest(frame, cfg, seed=1)
    other, _ = ingest(frame, cfg, seed=2)

    assert len(first) == 50
    pd.testing.assert_frame_equal(first, again)
    assert list(first["rid"]) != list(other["rid"])
    assert first["rid"].is_monotonic_increasing
    assert first["rid"].is_unique
    # Each kept row is an unchanged row of the input.
    pd.testing.assert_frame_equal(first, frame.set_index("rid").loc[first["rid"]].reset_index())


def test_ingest_does_not_mutate_its_input():
    frame = small_frame().assign(year=lambda f: f["year"].astype(str) + "-06-01")
    before = frame.copy(deep=True)
    cfg = TabularIngest(target="label", time_column="year", drop_columns=("rid",), min_rows=1, max_rows=10)

    out, _ = ingest(frame, cfg, seed=0)

    pd.testing.assert_frame_equal(frame, before)
    assert pd.api.types.is_datetime64_any_dtype(out["year"])


def test_unusable_time_values_are_counted():
    frame = small_frame().assign(year=["2001-01-01"] * 39 + ["someday"])

    message = one_line_error(ingest, frame, TabularIngest(target="label", time_column="year", min_rows=1), 0)

    assert "ingest.time_column 'year'" in message
    assert "1 row(s) have no usable time" in message and "'someday'" in message


def test_target_without_values_is_refused():
    frame = small_frame().assign(label=None)

    message = one_line_error(ingest, frame, TabularIngest(target="label", min_rows=1), 0)

    assert "'label'" in message
    assert "no values" in message


# ---------------------------------------------------------------- default data and profile


def test_default_source_is_the_embedded_gss_extract():
    frame = load_default()

    assert len(frame) == pytest.approx(61_697, abs=50)
    assert {"wrkstat", "year", "rownames"} <= set(frame.columns)
    assert frame["wrkstat"].nunique() >= 2
    assert frame["year"].min() < frame["year"].max()


def test_profile_reports_missing_share_and_class_balance():
    frame = pd.DataFrame(
        {
            "year": [2001, 2001, 2002, 2003],
            "age": [30.0, None, None, 50.0],
            "city": ["a", "b", None, "a"],
            "label": ["x", "y", "x", None],
        }
    )
    schema = Schema(
        target="label",
        features=(Feature("age", "numeric"), Feature("city", "categorical")),
        time_column="year",
        extra_columns=("year",),
    )

    report = profile(frame, schema, source="memory")

    assert report["source"] == "memory"
    assert report["rows"] == 4
    assert report["columns"] == 4
    assert report["column_profile"]["age"] == {"dtype": "float64", "role": "numeric", "missing_share": 0.5, "distinct": 2}
    assert report["column_profile"]["city"]["missing_share"] == 0.25
    assert report["column_profile"]["city"]["role"] == "categorical"
    assert report["column_profile"]["year"]["role"] == "time"
    assert report["column_profile"]["label"]["role"] == "target"
    assert report["class_balance"] == {"<missing>": 1, "x": 2, "y": 1}
    assert report["time_range"] == ["2001", "2003"]
