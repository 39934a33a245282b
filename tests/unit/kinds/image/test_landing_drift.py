"""Landing and drift for images, on real digits: batches screened and quarantined with a reason, ingest
stacking the landed ones, per-image statistics that drift when the brightness shifts, and the production
model's predicted class (from the log's answer, or the model run on landed images as the service runs it)
that drifts when a batch holds one digit; the model's accuracy on labelled landed images."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.kinds.base import LOGGED_LABEL, PREDICTED
from pipeline.kinds.image import stages
from pipeline.kinds.image.data import read_images, refuse_oversized_npz, split_path
from pipeline.kinds.image.ingest import load_digits_images
from pipeline.lifecycle.drift import detect_drift
from pipeline.lifecycle.landing import REASON_SUFFIX, land_entry, screen_landed
from pipeline.lifecycle.monitoring import LandingSource, combine, drift_columns
from pipeline.onnxio.card import parse_card
from pipeline.onnxio.session import ort_session
from tests.unit.kinds.image.conftest import image_params
from tests.unit.onnxio.fixtures import old_card_data

RUNTIME = kinds.get("image").runtime


def write_png_folder(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Digits [N, 1, 8, 8] in 0..16 as 8-bit PNGs in the ImageFolder layout root/<class>/<i>.png."""
    for i, (image, label) in enumerate(zip(x, y)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image[0] * 255 / 16).astype(np.uint8), mode="L").save(root / str(label) / f"{i}.png")
    return root


def reasons(params) -> dict[str, str]:
    folder = Path(params.paths.quarantine)
    return {p.name.removesuffix(REASON_SUFFIX): p.read_text().strip() for p in folder.glob(f"*{REASON_SUFFIX}")}


def test_image_batches_are_screened_and_bad_ones_quarantined_with_a_reason(tmp_path):
    x, y = load_digits_images()
    params = image_params(tmp_path, ingest={"source": str(write_png_folder(tmp_path / "raw" / "digits", x[:150], y[:150]))})
    landing = Path(params.paths.landing)
    write_png_folder(landing / "folder_batch", x[150:170], y[150:170])
    bytes_x = np.round(x[170:200, 0] * 255 / 16).astype(np.uint8)  # [N, H, W] uint8, as a camera would give
    np.savez(landing / "labelled.npz", x=bytes_x, y=y[170:200])
    np.savez(landing / "unlabelled.npz", x=bytes_x)  # no y: for drift only
    np.savez(landing / "too_big.npz", x=np.zeros((5, 16, 16), np.uint8), y=np.array(["1"] * 5))
    np.savez(landing / "nan.npz", x=np.full((5, 8, 8), np.nan, np.float32))
    np.savez(landing / "over_scale.npz", x=np.full((5, 8, 8), 300.0, np.float32))
    (landing / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (landing / "table.csv").write_text("a,b\n1,2\n")
    write_png_folder(landing / "broken_folder", x[:3], y[:3])
    (landing / "broken_folder" / "0" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    good, moved = screen_landed(params)

    assert {b.path.name: b.rows for b in good} == {"folder_batch": 20, "labelled.npz": 30, "unlabelled.npz": 30}
    assert sorted(p.name for p in moved) == [
        "broken_folder",
        "corrupt.npz",
        "nan.npz",
        "over_scale.npz",
        "table.csv",
        "too_big.npz",
    ]
    why = reasons(params)
    assert "images are 1x16x16 (channels x height x width), the source's 1x8x8" in why["too_big.npz"]
    assert "pixel values are not finite" in why["nan.npz"]
    assert "pixel values span [300, 300], outside the source's scale [0, 255]" in why["over_scale.npz"]
    assert why["corrupt.npz"].startswith("not a readable .npz file")
    assert why["table.csv"] == "unsupported file type '.csv'; use one of ['.npz']"
    assert "bad.png: unreadable image" in why["broken_folder"]


def test_an_image_folder_and_an_npz_land_whole_and_pass_the_screen(tmp_path):
    x, y = load_digits_images()
    params = image_params(tmp_path)
    landing = Path(params.paths.landing)
    folder = tmp_path / "incoming" / "scans"
    for i, (image, label) in enumerate(zip(x[:12], y[:12])):  # 0..16 digits as 16-bit PNGs keep the source's scale
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].astype(np.uint16)).save(folder / str(label) / f"{i}.png")
    np.savez(tmp_path / "incoming" / "more.npz", x=x[12:40], y=y[12:40])
    assert land_entry(folder, landing) == landing / "scans"
    assert land_entry(tmp_path / "incoming" / "more.npz", landing) == landing / "more.npz"
    with pytest.raises(DataError, match="a batch with this name has already landed"):
        land_entry(folder, landing)
    assert sorted(p.name for p in landing.iterdir()) == ["more.npz", "scans"]  # no temporary left behind
    good, moved = screen_landed(params)
    assert {b.path.name: b.rows for b in good} == {"more.npz": 28, "scans": 12} and moved == []


def test_a_batch_in_another_pixel_scale_than_the_source_is_quarantined(tmp_path):
    params = image_params(tmp_path)  # the default source: digits in 0..16
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "bytes.npz", x=np.full((4, 8, 8), 200, np.uint8), y=np.array(["1"] * 4))
    good, moved = screen_landed(params)
    assert not good and [p.name for p in moved] == ["bytes.npz"]
    assert "outside the source's scale [0, 16]" in reasons(params)["bytes.npz"]


def test_ingest_stacks_labelled_landed_images_under_the_source_and_leaves_unlabelled_ones(tmp_path):
    x, y = load_digits_images()
    params = image_params(tmp_path, ingest={"max_rows": 200})
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "a.npz", x=x[1000:1040], y=y[1000:1040])
    np.savez(landing / "b_unlabelled.npz", x=x[1040:1060])
    report = stages.ingest(params.ingest, params.paths, params.seed)
    stacked, labels = read_images(Path(params.paths.ingested) / "images.npz")
    assert len(stacked) == 240 and report["rows"] == 240
    np.testing.assert_array_equal(stacked[-40:], x[1000:1040])
    assert list(labels[-40:]) == list(y[1000:1040])
    assert report["landed_batches"] == [
        {"file": "a.npz", "images": 40, "labelled": True},
        {"file": "b_unlabelled.npz", "images": 20, "labelled": False},
    ]
    np.savez(landing / "c_bad.npz", x=np.zeros((3, 16, 16), np.float32))  # landed after the screen ran
    with pytest.raises(DataError, match=r"c_bad.npz: landed batch cannot be used: images are 1x16x16"):
        stages.ingest(params.ingest, params.paths, params.seed)


def image_card():
    return parse_card(old_card_data("image"))


@pytest.mark.parametrize(("shift", "drifts"), [(0.0, False), (5.0, True)])
def test_a_brightness_shifted_batch_drifts_and_an_unshifted_one_does_not(tmp_path, shift, drifts):
    x, y = load_digits_images()
    params = image_params(tmp_path)
    rules = RUNTIME.landing_screen(params)
    reference_file = tmp_path / "train.npz"
    # The training split is a random draw of the digits (split.method random), so the batch is too: the
    # digits are ordered by writer, and a later slice of them differs from an earlier one on its own.
    order = np.random.default_rng(0).permutation(len(x))
    np.savez(reference_file, x=x[order[:900]], y=y[order[:900]])
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    # Brighter, clipped at the scale's top as a camera's exposure would be: the batch still passes the screen.
    np.savez(landing / "batch.npz", x=np.clip(x[order[900:1300]] + shift, 0, 16))
    good, moved = screen_landed(params, rules=rules)
    assert [b.path.name for b in good] == ["batch.npz"] and moved == []

    card = image_card()
    reference = RUNTIME.drift_frame(rules.read(reference_file), card, params)
    current = LandingSource(landing, rules=rules).pending(set())
    assert current.sources == ("batch.npz",) and len(current.frame) == 400
    frame = RUNTIME.drift_frame(current.frame, card, params)
    assert list(frame.columns) == ["brightness", "contrast", "sharpness", "height", "width"]
    assert all(str(t) == "float64" for t in frame.dtypes)
    result = detect_drift(reference, frame, *drift_columns(reference))
    assert result.dataset_drift is drifts
    assert ("brightness" in result.drifted_columns) is drifts


def test_a_folder_batch_holding_a_link_is_quarantined_and_the_link_never_read(tmp_path):
    x, y = load_digits_images()
    params = image_params(tmp_path, ingest={"source": str(write_png_folder(tmp_path / "raw" / "digits", x[:50], y[:50]))})
    landing = Path(params.paths.landing)
    outside = write_png_folder(tmp_path / "elsewhere", x[50:53], y[50:53])
    batch = write_png_folder(landing / "linked", x[60:70], y[60:70])
    (batch / str(y[60]) / "stolen.png").symlink_to(next((outside / str(y[50])).iterdir()))
    (batch / "loop").symlink_to(batch)  # a folder link back into itself
    before = sorted(outside.rglob("*"))

    good, moved = screen_landed(params)

    assert good == [] and [p.name for p in moved] == ["linked"]
    assert "holds symbolic link(s)" in reasons(params)["linked"]
    assert sorted(outside.rglob("*")) == before  # the link's target is untouched


def test_an_npz_that_would_unpack_to_gigabytes_is_refused_from_its_header(tmp_path):
    """A zip bomb: a few kB of compressed zeros whose 'x' header claims 6 GiB."""
    bomb = tmp_path / "bomb.npz"
    header = {"descr": "|u1", "fortran_order": False, "shape": (6 * 2**20, 32, 32)}
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_2_0(member, header)
        member.write(b"\0" * 1024)  # the claimed pixels are never read: the header alone refuses it
    with pytest.raises(DataError, match=r"bomb\.npz: array 'x' \[6291456, 32, 32\] would unpack to 6\.0 GiB"):
        refuse_oversized_npz(bomb)


# ---------------------------------------------------------------- the production model's predicted class

STATISTICS = ["brightness", "contrast", "sharpness", "height", "width"]


def service_labels(onnx: Path, card, x: np.ndarray) -> list[str]:
    """The service's answers for images x [N, 1, 8, 8] sent as nested arrays: its own feed, the same ONNX file."""
    schema = RUNTIME.feed_schema(card)
    feed = RUNTIME.build_feed([image.tolist() for image in x], schema)
    return RUNTIME.answer(ort_session(onnx).run(list(schema.outputs), feed), list(x), schema).labels


def logged_rows(labels: list[str], truth: list[str] | None = None) -> pd.DataFrame:
    """Rows as ``serving.predlog.read_log`` gives them: the logged statistics, the answered class, late labels."""
    frame = pd.DataFrame(
        {
            "sha256": ["ab" * 32] * len(labels),
            "format": "png",
            "height": 8,
            "width": 8,
            "brightness": 0.3,
            "contrast": 0.2,
            "sharpness": 0.1,
            LOGGED_LABEL: labels,
        }
    )
    if truth is not None:
        frame["digit"] = truth
    return frame


def test_landed_images_are_classified_by_the_production_model_as_the_service_classifies_them(exported, tmp_path):
    _, onnx, card = exported
    x, _ = load_digits_images()
    params = image_params(tmp_path)
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "batch.npz", x=x[1000:1200])
    rows = RUNTIME.landing_screen(params).read(landing / "batch.npz")

    frame = RUNTIME.drift_frame(rows, card, params, onnx)

    assert list(frame.columns) == [*STATISTICS, PREDICTED]  # where each image lives is dropped
    assert str(frame[PREDICTED].dtype) == "string"
    assert frame[PREDICTED].tolist() == service_labels(onnx, card, x[1000:1200])
    without = RUNTIME.drift_frame(rows, card, params)  # no model: the statistics alone, unchanged
    assert list(without.columns) == STATISTICS
    pd.testing.assert_frame_equal(frame[STATISTICS], without)


def test_logged_rows_keep_the_answered_class_and_only_landed_rows_are_run_through_the_model(exported, tmp_path):
    _, onnx, card = exported
    x, _ = load_digits_images()
    params = image_params(tmp_path)
    logged = logged_rows(["3", "7", "7"])
    # Nothing to run: the answered class is the prediction, and the model file is never opened.
    only_logged = RUNTIME.drift_frame(logged, card, params, tmp_path / "never-opened.onnx")
    assert only_logged[PREDICTED].tolist() == ["3", "7", "7"]

    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "a.npz", x=x[1200:1230])
    np.savez(landing / "b.npz", x=x[1300:1310])
    rules = RUNTIME.landing_screen(params)
    landed = LandingSource(landing, rules=rules).pending(set())
    assert landed.sources == ("a.npz", "b.npz")
    mixed = pd.concat([landed.frame, logged], ignore_index=True)  # as the monitor combines landing and the log
    frame = RUNTIME.drift_frame(mixed, card, params, onnx)
    expected = [*service_labels(onnx, card, x[1200:1230]), *service_labels(onnx, card, x[1300:1310]), "3", "7", "7"]
    assert frame[PREDICTED].tolist() == expected
    assert frame.loc[40:, STATISTICS].to_numpy().tolist() == [[0.3, 0.2, 0.1, 8.0, 8.0]] * 3


def test_a_frame_larger_than_the_monitor_compares_is_sampled_before_the_model_runs(exported, tmp_path):
    _, onnx, card = exported
    x, _ = load_digits_images()
    params = image_params(tmp_path, monitor={"reference_sample": 100, "current_sample": 120})
    np.savez(tmp_path / "train.npz", x=x[:500], y=np.zeros(500, dtype=str))
    rows = RUNTIME.landing_screen(params).read(tmp_path / "train.npz")
    frame = RUNTIME.drift_frame(rows, card, params, onnx)
    assert len(frame) == 120 and frame.index.is_monotonic_increasing  # the larger sample, seeded, in order
    assert frame[PREDICTED].tolist() == service_labels(onnx, card, x[frame.index.to_numpy()])
    again = RUNTIME.drift_frame(rows, card, params, onnx)
    pd.testing.assert_frame_equal(frame, again)


def test_images_ingest_now_reads_at_another_size_than_the_model_takes_are_one_line_naming_the_batch(exported, tmp_path):
    _, onnx, card = exported
    x, _ = load_digits_images()
    params = image_params(tmp_path, ingest={"size": [16, 16]})
    np.savez(tmp_path / "batch.npz", x=x[:10])
    rows = RUNTIME.landing_screen(params).read(tmp_path / "batch.npz")
    with pytest.raises(
        DataError,
        match=r"batch\.npz: images are \[1, 16, 16\] as ingest reads them now, the production model takes \[1, 8, 8\]",
    ):
        RUNTIME.drift_frame(rows, card, params, onnx)


@pytest.mark.parametrize(("batch", "drifts"), [("a random draw", False), ("only ones", True)])
def test_a_batch_the_model_classifies_as_one_digit_drifts_on_the_predicted_class(exported, tmp_path, batch, drifts):
    trained_params, onnx, card = exported
    x, y = load_digits_images()
    params = image_params(tmp_path)
    rules = RUNTIME.landing_screen(params)
    reference = RUNTIME.drift_frame(rules.read(split_path(trained_params.paths.split, "train")), card, params, onnx)
    rng = np.random.default_rng(0)
    pick = np.flatnonzero(y == "1") if batch == "only ones" else rng.choice(len(x), 300, replace=False)
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "batch.npz", x=x[pick])
    current = RUNTIME.drift_frame(LandingSource(landing, rules=rules).pending(set()).frame, card, params, onnx)

    numeric, categorical = drift_columns(reference)
    assert categorical == [PREDICTED]
    result = detect_drift(reference, current, numeric, categorical)
    assert result.column(PREDICTED).kind == "categorical"
    assert result.column(PREDICTED).drifted is drifts
    if drifts:
        assert (current[PREDICTED] == "1").mean() > 0.5  # the model (3 epochs) calls most of them ones


def test_score_rows_is_the_models_accuracy_on_the_labelled_landed_images(exported, tmp_path):
    _, onnx, card = exported
    x, y = load_digits_images()
    params = image_params(tmp_path)
    landing = Path(params.paths.landing)
    landing.mkdir(parents=True)
    np.savez(landing / "labelled.npz", x=x[1400:1500], y=y[1400:1500])
    np.savez(landing / "unlabelled.npz", x=x[1500:1550])  # counts for drift only
    folder = landing / "scans"  # the ImageFolder layout: the class is the folder's name
    for i, (image, label) in enumerate(zip(x[1550:1580], y[1550:1580])):  # 16-bit PNGs keep the 0..16 scale
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].astype(np.uint16)).save(folder / str(label) / f"{i:02d}.png")
    rules = RUNTIME.landing_screen(params)
    current = LandingSource(landing, rules=rules).pending(set())
    assert current.sources == ("labelled.npz", "scans", "unlabelled.npz")

    scores = RUNTIME.score_rows(onnx, card, current.frame, params)

    # The folder is read class folder by class folder (name order), each in file name order.
    order = np.concatenate([np.arange(1400, 1500), 1550 + np.argsort(y[1550:1580], kind="stable")])
    predicted = service_labels(onnx, card, x[order])
    assert scores["rows"] == 130.0
    assert scores["accuracy"] == pytest.approx(np.mean(np.array(predicted) == y[order]))
    assert set(scores) == {"accuracy", "balanced_accuracy", "macro_f1", "rows"}

    unlabelled = combine([LandingSource(landing, rules=rules).pending({current.keys[0], current.keys[1]})])
    assert unlabelled.sources == ("unlabelled.npz",) and RUNTIME.score_rows(onnx, card, unlabelled.frame, params) == {}


def test_score_rows_scores_logged_rows_by_the_answered_class_and_skips_unlabelled_ones(exported, tmp_path):
    _, _, card = exported
    params = image_params(tmp_path)
    logged = logged_rows(["3", "7", "7", "1"], truth=["3", "7", "1", None])
    scores = RUNTIME.score_rows(tmp_path / "never-opened.onnx", card, logged, params)
    assert scores["rows"] == 3.0 and scores["accuracy"] == pytest.approx(2 / 3)
    assert RUNTIME.score_rows(tmp_path / "never-opened.onnx", card, logged_rows(["3"]), params) == {}
