"""``python -m serving.batch`` with a real tabular regressor (ames house prices) and a real text model (tweets by
device): each streamed output equals the ONNX model's own answer row for row, in any chunking, from Parquet
and CSV; bad inputs are one line naming the file and the column."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import DataError
from pipeline.core.io import read_json, write_json
from pipeline.kinds.tabular.runtime import onnx_feed
from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.card import TextCard
from pipeline.onnxio.session import ort_session
from pipeline.params import load_params
from serving.batch import load_model, open_session, score_file, score_texts
from tests.conftest import REPO, tool_env

pytestmark = pytest.mark.slow


def batch(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.batch", *map(str, args)],
        cwd=REPO,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "ERROR" in lines[0] and all(f in lines[0] for f in fragments), lines[0]


def production(workspace: Path) -> Registry:
    return Registry(workspace / load_params(workspace / "params.yaml").paths.registry)


def every_split(workspace: Path) -> pd.DataFrame:
    split = workspace / load_params(workspace / "params.yaml").paths.split
    frames = [pd.read_parquet(split / f"{name}.parquet") for name in ("test", "val", "train")]
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------- a tabular regressor


@pytest.fixture(scope="module")
def regressor(regression_workspace):
    version = production(regression_workspace).get("v0001")
    rows = every_split(regression_workspace).assign(house=lambda f: [f"h{i:04d}" for i in range(len(f))])
    model = load_model(version.onnx, version.card)
    (values,) = ort_session(version.onnx).run(["forecast"], onnx_feed(rows, model.card.inputs))
    return model, rows, values[:, 0]


@pytest.mark.parametrize("source", ["parquet", "csv"])
def test_a_regressor_writes_its_prediction_in_target_units_as_the_onnx_model_does(regressor, tmp_path, source):
    model, rows, expected = regressor
    path = tmp_path / f"rows.{source}"
    rows.to_parquet(path) if source == "parquet" else rows.to_csv(path, index=False)

    summary = score_file(path, tmp_path / "out.parquet", model, "v7", chunk_rows=97, keep=("house", "Sale_Price"))

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["rows"] == len(rows) and summary["chunks"] == -(-len(rows) // 97) and summary["coerced"] == {}
    assert list(output.columns) == ["house", "Sale_Price", "prediction", "model_version"]
    assert str(pq.read_schema(tmp_path / "out.parquet").field("prediction").type) == "float"
    assert output["house"].tolist() == rows["house"].tolist() and set(output["model_version"]) == {"v7"}
    np.testing.assert_allclose(output["prediction"].to_numpy(), expected, rtol=1e-6)
    # Dollars, not training stds: the slice's model is far better than a constant.
    error = np.abs(output["prediction"] - rows["Sale_Price"]).mean()
    assert error < 0.6 * np.abs(rows["Sale_Price"] - rows["Sale_Price"].mean()).mean()


def test_the_regressor_cli_uses_the_production_model_and_counts_coerced_values(regression_workspace, regressor, tmp_path):
    model, rows, expected = regressor
    frame = rows.astype({"Lot_Area": object})
    frame.loc[3, "Lot_Area"] = "unknown"  # no number: missing, as training reads it (counted, never silent)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    registry = production(regression_workspace).root

    result = batch(tmp_path / "rows.csv", tmp_path / "out.parquet", "--registry", registry, "--keep", "house")

    assert result.returncode == 0, result.stderr
    assert "values taken as missing by the model's rules, per column: {'Lot_Area': 1}" in result.stderr
    output = pd.read_parquet(tmp_path / "out.parquet")
    assert list(output.columns) == ["house", "prediction", "model_version"] and set(output["model_version"]) == {"v0001"}
    (row3,) = ort_session(model.path).run(["forecast"], onnx_feed(frame.iloc[[3]], model.card.inputs))
    np.testing.assert_allclose(output["prediction"].iloc[3], row3[0, 0], rtol=1e-6)
    np.testing.assert_allclose(output["prediction"].drop(index=3), np.delete(expected, 3), rtol=1e-6)

    rows.drop(columns=["Lot_Area"]).to_parquet(tmp_path / "no_area.parquet")
    result = batch(tmp_path / "no_area.parquet", tmp_path / "bad.parquet", "--registry", registry)
    assert_one_line_error(result, "no_area.parquet", "missing the model's input column(s) ['Lot_Area']")
    result = batch(tmp_path / "rows.csv", tmp_path / "bad.parquet", "--registry", registry, "--text-column", "x")
    assert_one_line_error(result, "--text-column goes with a text model", "tabular")
    assert not (tmp_path / "bad.parquet").exists()


def test_a_regressor_with_several_values_per_row_is_refused_naming_its_outputs(regressor, tmp_path):
    model, _, _ = regressor
    card = read_json(model.path.with_name("model_card.json"))
    card["outputs"][0]["shape"] = ["N", 3]
    write_json(tmp_path / "card.json", card)
    with pytest.raises(DataError, match=r"one value per row \(output 'forecast' \[N, 1\]\); this card names \{'forecast'"):
        load_model(model.path, tmp_path / "card.json")


# ---------------------------------------------------------------- a text model


@pytest.fixture(scope="module")
def texts(text_workspace):
    version = production(text_workspace).get("v0001")
    card = TextCard.load(version.card)
    rows = every_split(text_workspace).assign(id=lambda f: np.arange(len(f)))
    session = ort_session(version.onnx)
    probabilities, labels = session.run(["probabilities", "label"], {"text": rows[card.text_column].to_numpy(object)})
    return version, card, rows, probabilities, labels


def assert_scored_like_the_model(output: pd.DataFrame, card: TextCard, probabilities, labels, rows=slice(None)) -> None:
    assert output["label"].tolist() == list(labels[rows])
    columns = [f"proba_{name}" for name in card.classes]
    np.testing.assert_allclose(output[columns].to_numpy(), probabilities[rows], rtol=0, atol=1e-6)


@pytest.mark.parametrize("source", ["parquet", "categorical parquet", "csv"])
def test_texts_are_scored_as_the_onnx_model_scores_them_in_any_chunking(texts, tmp_path, source):
    version, card, rows, probabilities, labels = texts
    path = tmp_path / ("rows.csv" if source == "csv" else "rows.parquet")
    if source == "csv":
        rows.to_csv(path, index=False)  # commas, quotes, newlines and emoji in tweets: quoted as pandas writes them
    else:
        (rows.astype({"text": "category"}) if source == "categorical parquet" else rows).to_parquet(path)

    summary = score_texts(path, tmp_path / "out.parquet", open_session(version.onnx), card, "v3", chunk_rows=400, keep=("id",))

    output = pd.read_parquet(tmp_path / "out.parquet")
    assert summary["rows"] == len(rows) and summary["chunks"] == -(-len(rows) // 400) and summary["skipped"] == 0
    assert list(output.columns) == ["id", "label", *[f"proba_{c}" for c in card.classes], "model_version"]
    assert output["id"].astype(int).tolist() == rows["id"].tolist() and set(output["model_version"]) == {"v3"}
    assert_scored_like_the_model(output, card, probabilities, labels)


def test_rows_without_a_text_are_left_out_counted_and_named(texts, tmp_path, caplog):
    version, card, rows, probabilities, labels = texts
    frame = rows.astype({"text": object})
    frame.loc[[5, 900], "text"] = None  # 2 of 1,500: under the 1% that stops the run
    frame.to_parquet(tmp_path / "rows.parquet")

    with caplog.at_level(logging.WARNING, logger="serving.batch"):
        summary = score_texts(
            tmp_path / "rows.parquet",
            tmp_path / "out.parquet",
            open_session(version.onnx),
            card,
            "v1",
            chunk_rows=400,
            keep=("id",),
        )

    assert summary["skipped"] == 2 and summary["rows"] == len(rows) - 2
    assert f"2 of {len(rows)} rows have no text in column 'text' (the first: row 5" in caplog.text
    output = pd.read_parquet(tmp_path / "out.parquet")
    kept = ~rows["id"].isin([5, 900]).to_numpy()
    assert output["id"].tolist() == rows["id"][kept].tolist()
    assert_scored_like_the_model(output, card, probabilities, labels, kept)


def test_a_missing_or_non_text_column_is_one_line_naming_it(texts, tmp_path):
    version, card, rows, _, _ = texts
    rows.rename(columns={"text": "tweet"}).to_csv(tmp_path / "tweets.csv", index=False)
    rows.assign(text=np.arange(len(rows))).to_parquet(tmp_path / "numbers.parquet")
    cases = [
        ("tweets.csv", ["tweets.csv", "missing the model's input column(s) ['text']", "'tweet'"]),
        ("numbers.parquet", ["numbers.parquet", "column 'text' holds int64 values", "takes text"]),
    ]
    for name, fragments in cases:
        with pytest.raises(DataError) as error:
            score_texts(tmp_path / name, tmp_path / "out.parquet", open_session(version.onnx), card, "v1")
        assert "\n" not in str(error.value) and all(f in str(error.value) for f in fragments), str(error.value)
    assert not (tmp_path / "out.parquet").exists()


def test_the_text_cli_takes_another_column_name_and_refuses_many_missing_texts_in_one_line(text_workspace, texts, tmp_path):
    _, card, rows, probabilities, labels = texts
    registry = production(text_workspace).root
    rows.rename(columns={"text": "tweet"}).to_csv(tmp_path / "tweets.csv", index=False)

    result = batch(tmp_path / "tweets.csv", tmp_path / "out.parquet", "--registry", registry, "--text-column", "tweet")
    assert result.returncode == 0, result.stderr
    output = pd.read_parquet(tmp_path / "out.parquet")
    assert output.columns[0] == "label" and set(output["model_version"]) == {"v0001"}
    assert_scored_like_the_model(output, card, probabilities, labels)

    sparse = rows.astype({"text": object})
    missing = sparse.index[::10]  # 10%: too many to leave out quietly
    sparse.loc[missing, "text"] = None
    sparse.to_csv(tmp_path / "sparse.csv", index=False)  # written as empty fields, which read_csv reads as missing
    (tmp_path / "old.parquet").write_bytes(b"yesterday's scores")
    result = batch(tmp_path / "sparse.csv", tmp_path / "old.parquet", "--registry", registry, "--chunk-rows", "500")
    assert_one_line_error(
        result, "sparse.csv", f"{len(missing)} of {len(rows)} rows have no text in column 'text'", "row 0", "more than 1%"
    )
    assert (tmp_path / "old.parquet").read_bytes() == b"yesterday's scores"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.parquet", "out.parquet", "sparse.csv", "tweets.csv"]
