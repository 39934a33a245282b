"""Image ingest (pipeline/kinds/image/ingest.py): the digits, image folders, .npz files, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import DataError, ParamsError
from pipeline.kinds.image import ingest
from pipeline.kinds.image.data import IMAGES_FILE, read_images
from tests.unit.kinds.image.conftest import image_params


def test_default_source_is_the_real_digits_in_their_own_scale(tmp_path):
    params = image_params(tmp_path)
    report = ingest.run(params.ingest, params.paths, params.seed)
    x, y = read_images(Path(params.paths.ingested) / IMAGES_FILE)
    schema = json.loads((Path(params.paths.ingested) / "schema.json").read_text())
    assert x.shape == (600, 1, 8, 8) and x.dtype == np.float32
    assert schema["kind"] == "image" and schema["value_range"] == [0.0, 16.0] and schema["target"] == "digit"
    assert x.min() == 0 and x.max() == 16 and set(y) == {str(d) for d in range(10)}
    assert report["source"] == "sklearn:load_digits" and sum(report["class_balance"].values()) == 600


def write_folder(root: Path, size=(6, 5), per_class=4) -> Path:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog", "owl"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / label / f"{i}.png")
    return root


def test_image_folder_in_grayscale_and_rgb(tmp_path):
    folder = write_folder(tmp_path / "pets")
    (folder / "cat" / "notes.txt").write_text("not an image")
    for mode, channels in (("grayscale", 1), ("rgb", 3)):
        params = image_params(tmp_path / mode, ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "mode": mode})
        report = ingest.run(params.ingest, params.paths, params.seed)
        x, y = read_images(Path(params.paths.ingested) / IMAGES_FILE)
        assert x.shape == (12, channels, 6, 5)
        assert list(y) == ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 4  # the class folder names
        assert report["value_range"] == [0.0, 255.0] and report["not_images"] == [str(folder / "cat" / "notes.txt")]
    rgb = np.asarray(Image.open(folder / "dog" / "1.png"), dtype=np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[5], rgb)


def test_unreadable_images_are_reported_then_stop_the_stage_past_the_threshold(tmp_path):
    folder = write_folder(tmp_path / "pets")
    (folder / "owl" / "broken.png").write_bytes(b"\x89PNG not really")
    params = image_params(
        tmp_path / "lenient", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "max_unreadable_share": 0.1}
    )
    report = ingest.run(params.ingest, params.paths, params.seed)
    assert report["rows"] == 12 and [u["file"] for u in report["unreadable"]] == [str(folder / "owl" / "broken.png")]
    strict = image_params(
        tmp_path / "strict", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "max_unreadable_share": 0.0}
    )
    with pytest.raises(
        DataError, match=r"owl/broken\.png: unreadable image .*1 of 13 files .*ingest\.max_unreadable_share"
    ) as error:
        ingest.run(strict.ingest, strict.paths, strict.seed)
    assert "\n" not in str(error.value)


def test_mixed_sizes_need_ingest_size(tmp_path):
    folder = write_folder(tmp_path / "pets")
    Image.fromarray(np.zeros((9, 9), np.uint8), "L").save(folder / "owl" / "big.png")
    params = image_params(tmp_path / "a", ingest={"source": str(folder), "min_rows": 10, "max_rows": None})
    with pytest.raises(DataError, match=r"big\.png: image is 9x9 but .* is 6x5; set ingest\.size"):
        ingest.run(params.ingest, params.paths, params.seed)
    resized = image_params(tmp_path / "b", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "size": [4, 4]})
    assert ingest.run(resized.ingest, resized.paths, resized.seed)["shape"] == [1, 4, 4]


def test_npz_source_channels_last_bytes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 7, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "own.npz", x=x, y=np.repeat([0, 1, 2], 10))
    params = image_params(
        tmp_path, ingest={"source": str(tmp_path / "own.npz"), "min_rows": 10, "max_rows": None, "mode": "rgb"}
    )
    report = ingest.run(params.ingest, params.paths, params.seed)
    stored, y = read_images(Path(params.paths.ingested) / IMAGES_FILE)
    np.testing.assert_array_equal(stored, x.transpose(0, 3, 1, 2).astype(np.float32))  # stored [N, C, H, W]
    assert report["value_range"] == [0.0, 255.0] and list(y[:2]) == ["0", "0"]
    np.savez(tmp_path / "bad.npz", images=x)
    bad = image_params(tmp_path / "bad", ingest={"source": str(tmp_path / "bad.npz"), "min_rows": 10, "max_rows": None})
    with pytest.raises(DataError, match=r"bad\.npz: needs arrays 'x' \(images\) and 'y' \(labels\); found \['images'\]"):
        ingest.run(bad.ingest, bad.paths, bad.seed)


def test_tabular_ingest_keys_are_unknown_keys_in_one_line(tmp_path):
    with pytest.raises(
        ParamsError, match=r"ingest\.time_column: unknown key; allowed: .*; ingest\.categorical: unknown key"
    ) as error:
        image_params(tmp_path, ingest={"time_column": "year", "categorical": ["occ10"]})
    assert "\n" not in str(error.value)
