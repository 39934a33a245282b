"""serving.batch: streamed batch scoring equals the ONNX model row for row, in any chunking.

The fixture is a real exported model (``dvc repro`` on a slice, the service tests' shared
workspace) and 2,500 real rows of its split data, copied into ``tmp_path``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.core.errors import DataError
from pipeline.core.io import read_json, write_json
from pipeline.kinds.tabular.runtime import OnnxModel, onnx_feed
from pipeline.lifecycle.registry import Registry
from pipeline.params import load_params
from serving.batch import chunk_feed, load_model, score_file
from tests.conftest import tool_env

# The module's fixture builds a real model with the pipeline (about 30 s).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROWS = 2500


@pytest.fixture(scope="module")
def workspace(served_workspace, tmp_path_factory) -> dict[str, Path]:
    """The slice's exported model, its card and 2,500 of its split rows (as Parquet and CSV) in a temp dir."""
    paths = load_params(served_workspace / "params.yaml").paths
    root = tmp_path_factory.mktemp("batch")
    shutil.copy(served_workspace / paths.onnx, root / "model.onnx")
    shutil.copy(served_workspace / paths.model_card, root / "model_card.json")
    splits = [pd.read_parquet(served_workspace / paths.split / f"{name}.parquet") for name in ("test", "val", "train")]
    rows = pd.concat(splits, ignore_index=True).head(ROWS)
    assert len(rows) == ROWS, f"the slice has only {len(rows)} rows"
    rows.to_parquet(root / "rows.parquet", index=False)
    rows.to_csv(root / "rows.csv", index=False)
    return {
        "root": root,
        "onnx": root / "model.onnx",
        "card": root / "model_card.json",
        "parquet": root / "rows.parquet",
        "csv": root / "rows.csv",
    }


@pytest.fixture(scope="module")
def rows(workspace) -> pd.DataFrame:
    return pd.read_parquet(workspace["parquet"])


@pytest.fixture(scope="module")
def model(workspace):
    return load_model(workspace["onnx"], workspace["card"])


@pytest.fixture(scope="module")
def expected(workspace, rows) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities [N, K], labels [N]) from the reference scorer, pipeline.kinds.tabular.runtime.OnnxModel."""
    return OnnxModel.load(workspace["onnx"], workspace["card"]).predict_proba(rows)


def assert_matches(output: pd.DataFrame, expected: tuple[np.ndarray, np.ndarray], classes: list[str]) -> None:
    probabilities, labels = expected
    assert output["label"].tolist() == list(labels)
    np.testing.assert_allclose(output[[f"proba_{c}" for c in classes]].to_numpy(), probabilities, rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["parquet", "csv"])
def test_output_equals_the_onnx_model(workspace, model, expected, tmp_path, source):
    summary = score_file(workspace[source], tmp_path / "out.parquet", model, "v0042")

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["rows"] == len(output) == ROWS
    assert list(output.columns) == ["label", *[f"proba_{c}" for c in model.classes], "model_version"]
    types = pq.read_schema(tmp_path / "out.parquet")
    assert str(types.field("label").type) == "string"
    assert {str(types.field(f"proba_{c}").type) for c in model.classes} == {"float"}
    assert set(output["model_version"]) == {"v0042"}
    assert_matches(output, expected, model.classes)


@pytest.mark.parametrize("source", ["parquet", "csv"])
def test_chunking_does_not_change_the_output(workspace, model, tmp_path, source):
    small = score_file(workspace[source], tmp_path / "small.parquet", model, "v1", chunk_rows=333, keep=("year",))
    whole = score_file(workspace[source], tmp_path / "whole.parquet", model, "v1", chunk_rows=100_000, keep=("year",))

    assert (small["chunks"], whole["chunks"]) == (-(-ROWS // 333), 1)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "small.parquet"), pd.read_parquet(tmp_path / "whole.parquet"))


def test_keep_passes_columns_through(workspace, model, rows, tmp_path):
    score_file(workspace["parquet"], tmp_path / "out.parquet", model, "v1", chunk_rows=1000, keep=("year", "wrkstat"))

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert list(output.columns[:3]) == ["year", "wrkstat", "label"]
    assert output["year"].dtype == rows["year"].dtype  # Parquet keeps the stored type
    pd.testing.assert_series_equal(output["year"], rows["year"])
    pd.testing.assert_series_equal(output["wrkstat"].astype("string"), rows["wrkstat"])


def test_csv_keeps_text_as_written_and_reads_categories_as_training_did(workspace, model, rows, expected, tmp_path):
    # An id with leading zeros stays text; a categorical code written as a float ("9720.0", as
    # pandas writes a float column with gaps) is still the category "9720" the model knows.
    frame = rows.assign(row_id=[f"{i:07d}" for i in range(ROWS)], occ10=pd.to_numeric(rows["occ10"]).astype("float64"))
    frame.to_csv(tmp_path / "rows.csv", index=False)
    assert "9720.0" in (tmp_path / "rows.csv").read_text()

    score_file(tmp_path / "rows.csv", tmp_path / "out.parquet", model, "v1", chunk_rows=700, keep=("row_id",))

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert output["row_id"].tolist() == frame["row_id"].tolist()
    assert_matches(output, expected, model.classes)


def test_csv_chunks_whose_types_differ_score_like_the_whole_file(workspace, model, rows, tmp_path):
    # Only the last chunk has text in a numeric column and gaps in an id: pandas types those
    # chunks differently (object, float) from the others (float, int).
    frame = rows.assign(row_id=np.arange(ROWS)).astype({"age": object, "row_id": object})
    frame.loc[ROWS - 5, "age"] = "unknown"
    frame.loc[ROWS - 3, "row_id"] = None
    frame.to_csv(tmp_path / "rows.csv", index=False)

    summary = score_file(tmp_path / "rows.csv", tmp_path / "out.parquet", model, "v1", chunk_rows=1000, keep=("row_id",))

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["chunks"] == 3 and pq.read_schema(tmp_path / "out.parquet").field("row_id").type == "string"
    assert output["row_id"].iloc[0] == "0" and output["row_id"].iloc[ROWS - 3] is None
    assert_matches(output, model.predict_proba(frame), model.classes)  # the reference scorer on the whole frame


def test_chunk_feed_equals_onnx_feed_for_any_column_types(model, rows):
    """The per-distinct-value shortcut builds exactly what onnx_feed builds, whatever the dtypes."""
    inputs = model.card.inputs
    variants = {
        "as read": rows,
        "codes as floats with gaps": rows.assign(occ10=pd.to_numeric(rows["occ10"]).astype("float64")),
        "codes as nullable integers": rows.assign(occ10=pd.to_numeric(rows["occ10"])),
        "categoricals": rows.astype({"gender": "category", "educcat": "category"}),
        "padded and numeric text": rows.assign(gender=" " + rows["gender"].astype(object) + " ", age=rows["age"].astype(str)),
    }
    for name, frame in variants.items():
        fast, reference = chunk_feed(frame, inputs), onnx_feed(frame, inputs)
        assert fast.keys() == reference.keys(), name
        for column, values in reference.items():
            assert fast[column].shape == values.shape and fast[column].dtype == values.dtype, (name, column)
            if values.dtype == object:
                assert fast[column].tolist() == values.tolist(), (name, column)
            else:
                np.testing.assert_array_equal(fast[column], values, err_msg=f"{name}: {column}")


@pytest.mark.parametrize("source", ["parquet", "csv"])
def test_missing_input_column_is_one_line_naming_it(rows, model, tmp_path, source):
    path = tmp_path / f"rows.{source}"
    frame = rows.drop(columns=["age"])
    frame.to_parquet(path) if source == "parquet" else frame.to_csv(path, index=False)

    with pytest.raises(DataError) as error:
        score_file(path, tmp_path / "out.parquet", model, "v1")

    message = str(error.value)
    assert "\n" not in message and str(path) in message and "['age']" in message
    assert not (tmp_path / "out.parquet").exists()


def test_edge_errors_name_the_file_or_column(workspace, model, tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    clashing = tmp_path / "clashing.csv"
    pd.read_csv(workspace["csv"]).assign(label="x").to_csv(clashing, index=False)
    cases = [
        (dict(input_path=workspace["parquet"], keep=("customer_id",)), ["customer_id", "--keep"]),
        (dict(input_path=tmp_path / "rows.json"), ["rows.json", "unsupported", "'.json'"]),
        (dict(input_path=tmp_path / "absent.csv"), ["absent.csv", "no such file"]),
        (dict(input_path=garbage), ["garbage.parquet", "not a readable Parquet file"]),
        (dict(input_path=workspace["csv"], output_path=tmp_path / "out.csv"), ["out.csv", "Parquet"]),
        (dict(input_path=clashing, keep=("label",)), ["'label'", "clash"]),
        (dict(input_path=workspace["csv"], chunk_rows=0), ["--chunk-rows", "0"]),
    ]
    (tmp_path / "rows.json").write_text("[]")
    for arguments, fragments in cases:
        arguments = {"output_path": tmp_path / "out.parquet", **arguments}
        with pytest.raises(DataError) as error:
            score_file(model=model, version="v1", **arguments)
        message = str(error.value)
        assert "\n" not in message and all(f in message for f in fragments), (arguments, message)


def test_a_failure_mid_file_leaves_the_previous_output_untouched(workspace, model, tmp_path):
    text = workspace["csv"].read_bytes().splitlines(keepends=True)
    text[2000] = b"\xff\xfe" + text[2000]  # invalid UTF-8 far past the first chunk
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"".join(text))
    output = tmp_path / "out.parquet"
    output.write_bytes(b"yesterday's scores")

    with pytest.raises(DataError, match="broken.csv: not a readable CSV file"):
        score_file(broken, output, model, "v1", chunk_rows=500)

    assert output.read_bytes() == b"yesterday's scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv", "out.parquet"]  # no temp file left


def test_a_card_of_another_model_is_refused(workspace, tmp_path):
    card = read_json(workspace["card"])
    card["hashes"]["onnx_sha256"] = "0" * 64
    write_json(tmp_path / "other_card.json", card)

    with pytest.raises(DataError, match="describes another model"):
        load_model(workspace["onnx"], tmp_path / "other_card.json")


# ---------------------------------------------------------------- the command


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**tool_env(), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "serving.batch", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def production_registry(workspace, root: Path) -> Path:
    """A registry holding the workspace model as v0001, promoted."""
    sources = workspace["root"] / "sources"
    sources.mkdir(exist_ok=True)
    write_json(sources / "metrics.json", {"accuracy": 0.68})
    (sources / "dvc.lock").write_text("schema: '2.0'\n")
    registry = Registry(root)
    version = registry.register(
        onnx=workspace["onnx"],
        model_card=workspace["card"],
        metrics=sources / "metrics.json",
        params=REPO / "params.yaml",
        dvc_lock=sources / "dvc.lock",
        reference=workspace["parquet"],
        git_revision="test",
    )
    registry.promote(version.number, reason="test")
    return root


def test_cli_scores_with_the_production_model_of_the_params_registry(workspace, expected, model, tmp_path):
    registry = production_registry(workspace, tmp_path / "registry")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"]["registry"] = str(registry)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    result = run_cli(workspace["parquet"], tmp_path / "out.parquet", "--keep", "year", "--chunk-rows", "1000", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    output = pd.read_parquet(tmp_path / "out.parquet")
    assert set(output["model_version"]) == {"v0001"} and output.columns[0] == "year"
    assert_matches(output, expected, model.classes)
    assert f"{ROWS} rows in 3 chunks" in result.stderr


def test_cli_with_an_explicit_model_file(workspace, expected, model, tmp_path):
    result = run_cli(workspace["csv"], tmp_path / "out.parquet", "--model", workspace["onnx"], "--card", workspace["card"])

    assert result.returncode == 0, result.stderr
    output = pd.read_parquet(tmp_path / "out.parquet")
    assert output["model_version"].iloc[0].startswith("sha256:")
    assert_matches(output, expected, model.classes)


@pytest.mark.parametrize(
    "arguments, fragments",
    [
        (["--model", "{onnx}"], ["age", "missing the model's input column"]),
        (["--registry", "{empty}"], ["no production model"]),
        (["--model", "{root}/absent.onnx"], ["absent.onnx", "model not found"]),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(workspace, rows, tmp_path, arguments, fragments):
    rows.drop(columns=["age"]).to_parquet(tmp_path / "no_age.parquet")
    (tmp_path / "empty").mkdir()
    names = {"onnx": workspace["onnx"], "empty": tmp_path / "empty", "root": workspace["root"]}

    result = run_cli(tmp_path / "no_age.parquet", tmp_path / "out.parquet", *(a.format(**names) for a in arguments))

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "ERROR" in lines[0] and all(f in lines[0] for f in fragments), lines[0]
    assert not (tmp_path / "out.parquet").exists()
