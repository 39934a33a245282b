"""``python -m serving.batch`` with real image and sequence models: an ImageFolder, a flat folder and an .npz of
digits; a long table's latest window per series and every window. Each scored as the ONNX model scores it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.session import ort_session
from pipeline.params import load_params
from tests.conftest import REPO, tool_env

pytestmark = pytest.mark.slow

LOOKBACK = 96
FEATURES = ["Demand", "WorkDay", "Temperature"]


def batch(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.batch", *map(str, args)], cwd=REPO, env=tool_env(), capture_output=True, text=True
    )


def production(workspace):
    params = load_params(workspace / "params.yaml")
    return Registry(workspace / params.paths.registry)


@pytest.fixture(scope="module")
def digits(image_workspace):
    with np.load(image_workspace / "data/split/test.npz") as archive:
        return archive["x"][:12], archive["y"][:12]


def test_an_image_folder_a_flat_folder_and_an_npz_are_scored(image_workspace, digits, tmp_path):
    registry = production(image_workspace)
    x, y = digits
    # Bytes as PNG files: the batch scorer maps 0..255 back to the model's 0..16, as the service does.
    as_bytes = np.round(x[:, 0] * (255 / 16)).astype(np.uint8)
    for i, (pixels, label) in enumerate(zip(as_bytes, y)):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "folder" / label / f"{i:02d}.png")
        (tmp_path / "flat").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "flat" / f"{i:02d}.png")
    np.savez(tmp_path / "digits.npz", x=x, y=y)

    session = ort_session(registry.get("v0001").onnx)
    (_, from_bytes) = session.run(["probabilities", "label"], {"image": as_bytes[:, None].astype(np.float32) * (16 / 255)})
    (probabilities, labels) = session.run(["probabilities", "label"], {"image": x})

    result = batch(tmp_path / "folder", tmp_path / "folder.parquet", "--registry", registry.root)
    assert result.returncode == 0, result.stderr
    folder = pd.read_parquet(tmp_path / "folder.parquet")
    assert list(folder.columns[:3]) == ["file", "class", "label"] and folder["model_version"].eq("v0001").all()
    by_file = dict(zip(folder["file"], folder["label"]))
    assert all(by_file[f"{label}/{i:02d}.png"] == expected for i, (label, expected) in enumerate(zip(y, from_bytes)))

    assert batch(tmp_path / "flat", tmp_path / "flat.parquet", "--registry", registry.root).returncode == 0
    flat = pd.read_parquet(tmp_path / "flat.parquet")
    assert "class" not in flat.columns and list(flat["label"]) == list(from_bytes)

    assert batch(tmp_path / "digits.npz", tmp_path / "npz.parquet", "--registry", registry.root).returncode == 0
    npz = pd.read_parquet(tmp_path / "npz.parquet")
    assert list(npz["index"]) == list(range(12)) and list(npz["class"]) == list(y) and list(npz["label"]) == list(labels)
    assert np.allclose(npz[[f"proba_{c}" for c in registry.get("v0001").card_data()["classes"]]].to_numpy(), probabilities)


def test_an_unreadable_image_among_few_stops_the_run_naming_it(image_workspace, digits, tmp_path):
    registry = production(image_workspace)
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "flat" / "good.png")
    (tmp_path / "flat" / "broken.png").write_bytes(b"not a png")
    result = batch(tmp_path / "flat", tmp_path / "out.parquet", "--registry", registry.root)
    assert result.returncode == 1 and "1 of 2 images unreadable (e.g. broken.png)" in result.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_a_long_table_is_scored_by_each_series_latest_window_or_every_window(sequence_workspace, tmp_path):
    registry = production(sequence_workspace)
    steps = pd.read_parquet(sequence_workspace / "data/split/test.parquet")
    other = steps.iloc[:100].assign(series="copy")  # a second series; a gap in its latest window skips it
    table = pd.concat([steps, other.drop(index=other.index[-3])], ignore_index=True)
    table.to_csv(tmp_path / "steps.csv", index=False)  # times as text, parsed like the service's
    session = ort_session(registry.get("v0001").onnx)

    result = batch(tmp_path / "steps.csv", tmp_path / "latest.parquet", "--registry", registry.root)
    assert result.returncode == 0, result.stderr
    assert "1 series without a complete window of 96 steps on the 30min grid" in result.stderr
    latest = pd.read_parquet(tmp_path / "latest.parquet")
    (expected,) = session.run(["forecast"], {"window": steps[FEATURES].to_numpy(np.float32)[-LOOKBACK:][None]})
    assert list(latest["series"]) == ["elecdemand"] and latest["window_end"].iloc[0] == steps["time"].iloc[-1]
    assert np.isclose(latest["forecast_1"].iloc[0], expected[0, 0], rtol=1e-6)
    assert latest["time_1"].iloc[0] == steps["time"].iloc[-1] + pd.Timedelta("30min")

    result = batch(tmp_path / "steps.csv", tmp_path / "all.parquet", "--registry", registry.root, "--every-window")
    assert result.returncode == 0, result.stderr
    every = pd.read_parquet(tmp_path / "all.parquet")
    # The copy's 99 rows have a gap at row 97: its only complete windows end at rows 95 and 96.
    assert (every["series"] == "elecdemand").sum() == len(steps) - LOOKBACK + 1 and (every["series"] == "copy").sum() == 2
    values = steps[FEATURES].to_numpy(np.float32)
    windows = np.stack([values[e - LOOKBACK + 1 : e + 1] for e in range(LOOKBACK - 1, len(steps))])
    (forecasts,) = session.run(["forecast"], {"window": windows})
    assert np.allclose(every.loc[every["series"] == "elecdemand", "forecast_1"], forecasts[:, 0], rtol=1e-6)
