"""The image kind (pipeline/images.py): every stage on small images, the CNN, and its verified ONNX export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from pipeline.core.errors import DataError, ParamsError
from pipeline.engine.loop import fit, use_pinned_memory
from pipeline.kinds import score_test
from pipeline.kinds.image import stages as images
from pipeline.models import load_model
from pipeline.onnxio.session import ort_session
from pipeline.params import ImageAugmentParams, TrainParams, parse_params
from tests.conftest import make_params

IMAGE_INGEST = {
    "kind": "image", "source": "default", "target": "digit", "time_column": None, "time_cutoff": None,
    "drop_columns": [], "categorical": [], "min_rows": 100, "max_rows": 600,
}
QUICK = {
    "architecture": "cnn", "cnn": {"channels": (8, 16)}, "epochs": 3, "batch_size": 64, "lr": 0.01, "warmup_epochs": 0,
    "early_stopping": {"metric": "val_loss", "patience": 5, "min_delta": 0.0},
}


# Small models train fastest on one thread, and a busy machine's other processes cannot slow them.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_params(raw: dict, tmp_path: Path, ingest: dict | None = None, **sections):
    defaults = {"clean": {"valid_ranges": {}}, "split": {"method": "stratified"}}
    return make_params(raw, tmp_path, ingest={**IMAGE_INGEST, **(ingest or {})}, **{**defaults, **sections})


def data_stages(params) -> None:
    images.ingest(params.ingest, params.paths, params.seed)
    images.clean(params.clean, params.paths)
    images.split(params.split, params.paths, params.seed)
    images.augment(params.augment, params.paths, params.seed)


@pytest.fixture(scope="module")
def trained(raw_params, tmp_path_factory):
    """600 digits through the data stages, a small CNN trained 3 epochs and saved as the train stage does."""
    torch.set_num_threads(1)
    params = image_params(raw_params, tmp_path_factory.mktemp("digits"), train=QUICK)
    data_stages(params)
    prepared = images.prepare(params.features, params.train, params.paths)
    model, best, history = fit(prepared.train, prepared.val, prepared.config, params.train, params.seed)
    Path(params.paths.model).parent.mkdir(parents=True, exist_ok=True)
    torch.save(best, params.paths.model)
    Path(params.paths.preprocessor).write_text(json.dumps(prepared.encoder))
    return params, prepared, model, history


# ---------------------------------------------------------------- ingest


def test_default_source_is_the_real_digits_in_their_own_scale(raw_params, tmp_path):
    params = image_params(raw_params, tmp_path)
    report = images.ingest(params.ingest, params.paths, params.seed)
    x, y = images.read_images(Path(params.paths.ingested) / images.IMAGES_FILE)
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


def test_image_folder_in_grayscale_and_rgb(raw_params, tmp_path):
    folder = write_folder(tmp_path / "pets")
    (folder / "cat" / "notes.txt").write_text("not an image")
    for mode, channels in (("grayscale", 1), ("rgb", 3)):
        params = image_params(raw_params, tmp_path / mode, ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "image": {"mode": mode}})
        report = images.ingest(params.ingest, params.paths, params.seed)
        x, y = images.read_images(Path(params.paths.ingested) / images.IMAGES_FILE)
        assert x.shape == (12, channels, 6, 5)
        assert list(y) == ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 4  # the class folder names
        assert report["value_range"] == [0.0, 255.0] and report["not_images"] == [str(folder / "cat" / "notes.txt")]
    rgb = np.asarray(Image.open(folder / "dog" / "1.png"), dtype=np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[5], rgb)


def test_unreadable_images_are_reported_then_stop_the_stage_past_the_threshold(raw_params, tmp_path):
    folder = write_folder(tmp_path / "pets")
    (folder / "owl" / "broken.png").write_bytes(b"\x89PNG not really")
    params = image_params(raw_params, tmp_path / "lenient", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "image": {"max_unreadable_share": 0.1}})
    report = images.ingest(params.ingest, params.paths, params.seed)
    assert report["rows"] == 12 and [u["file"] for u in report["unreadable"]] == [str(folder / "owl" / "broken.png")]
    strict = image_params(raw_params, tmp_path / "strict", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "image": {"max_unreadable_share": 0.0}})
    with pytest.raises(DataError, match=r"owl/broken\.png: unreadable image .*1 of 13 files .*ingest\.image\.max_unreadable_share") as error:
        images.ingest(strict.ingest, strict.paths, strict.seed)
    assert "\n" not in str(error.value)


def test_mixed_sizes_need_ingest_image_size(raw_params, tmp_path):
    folder = write_folder(tmp_path / "pets")
    Image.fromarray(np.zeros((9, 9), np.uint8), "L").save(folder / "owl" / "big.png")
    params = image_params(raw_params, tmp_path / "a", ingest={"source": str(folder), "min_rows": 10, "max_rows": None})
    with pytest.raises(DataError, match=r"big\.png: image is 9x9 but .* is 6x5; set ingest\.image\.size"):
        images.ingest(params.ingest, params.paths, params.seed)
    resized = image_params(raw_params, tmp_path / "b", ingest={"source": str(folder), "min_rows": 10, "max_rows": None, "image": {"size": [4, 4]}})
    assert images.ingest(resized.ingest, resized.paths, resized.seed)["shape"] == [1, 4, 4]


def test_npz_source_channels_last_bytes(raw_params, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 7, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "own.npz", x=x, y=np.repeat([0, 1, 2], 10))
    params = image_params(raw_params, tmp_path, ingest={"source": str(tmp_path / "own.npz"), "min_rows": 10, "max_rows": None, "image": {"mode": "rgb"}})
    report = images.ingest(params.ingest, params.paths, params.seed)
    stored, y = images.read_images(Path(params.paths.ingested) / images.IMAGES_FILE)
    np.testing.assert_array_equal(stored, x.transpose(0, 3, 1, 2).astype(np.float32))  # stored [N, C, H, W]
    assert report["value_range"] == [0.0, 255.0] and list(y[:2]) == ["0", "0"]
    np.savez(tmp_path / "bad.npz", images=x)
    bad = image_params(raw_params, tmp_path / "bad", ingest={"source": str(tmp_path / "bad.npz"), "min_rows": 10, "max_rows": None})
    with pytest.raises(DataError, match=r"bad\.npz: needs arrays 'x' \(images\) and 'y' \(labels\); found \['images'\]"):
        images.ingest(bad.ingest, bad.paths, bad.seed)


def test_tabular_ingest_keys_are_refused_in_one_line(raw_params, tmp_path):
    params = image_params(raw_params, tmp_path, ingest={"time_column": "year", "categorical": ["occ10"]})
    with pytest.raises(ParamsError, match=r"^ingest\.time_column, ingest\.categorical apply to tabular columns"):
        images.ingest(params.ingest, params.paths, params.seed)


# ---------------------------------------------------------------- clean, split


def test_clean_drops_duplicates_nan_and_labels_outside_the_allow_list():
    from pipeline.params import CleanParams

    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 1, 2, 2)
    x[1] = x[0]  # duplicate with the same label: dropped
    x[2] = x[0]  # same pixels, another label: kept (a conflict, not a copy)
    x[3, 0, 0, 0] = np.nan
    y = np.array(["a", "a", "b", "a", "c", "NA"])
    out_x, out_y, dropped = images.clean_images(x, y, CleanParams(labels=("a", "b")))
    assert list(out_y) == ["a", "b"] and dropped == {"missing_label": 1, "label_not_allowed": 1, "non_finite_pixels": 1, "duplicate": 1}
    with pytest.raises(ParamsError, match=r"clean\.valid_ranges names columns \['age'\]"):
        images.clean_images(x, y, CleanParams(valid_ranges={"age": (0, 1)}))


def test_split_is_stratified_and_refuses_time(raw_params, tmp_path):
    params = image_params(raw_params, tmp_path)
    images.ingest(params.ingest, params.paths, params.seed)
    images.clean(params.clean, params.paths)
    report = images.split(params.split, params.paths, params.seed)
    parts = {name: images.read_images(images.split_path(params.paths.split, name)) for name in ("train", "val", "test")}
    assert sum(len(x) for x, _ in parts.values()) == 600 == report["rows"]
    keys = [{hash(img.tobytes()) for img in x} for x, _ in parts.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert all(set(y) == {str(d) for d in range(10)} for _, y in parts.values())
    timed = image_params(raw_params, tmp_path, split={"method": "time"})
    with pytest.raises(ParamsError, match=r"^split\.method = 'time' needs a time or group column"):
        images.split(timed.split, timed.paths, timed.seed)


# ---------------------------------------------------------------- augment


def only(**enabled) -> ImageAugmentParams:
    values = {name: {"enabled": False} for name in ("rotation", "shift", "flip", "noise")}
    for name, settings in enabled.items():
        values[name] = {"enabled": True, **settings}
    return ImageAugmentParams.model_validate({**values, "copies": 1})


@pytest.fixture
def digits():
    x, y = images.load_digits_images()
    return x[:50], y[:50]


def test_augment_keeps_the_originals_first_and_is_deterministic(digits):
    x, y = digits
    cfg = ImageAugmentParams.model_validate({"rotation": {"enabled": True}, "shift": {"enabled": True}, "noise": {"enabled": True}, "copies": 2})
    out, out_y = images.augment_images(x, y, cfg, images.DIGITS_RANGE, seed=3)
    assert out.shape == (150, 1, 8, 8) and list(out_y) == list(y) * 3
    np.testing.assert_array_equal(out[:50], x)
    np.testing.assert_array_equal(out, images.augment_images(x, y, cfg, images.DIGITS_RANGE, seed=3)[0])
    assert not np.array_equal(out, images.augment_images(x, y, cfg, images.DIGITS_RANGE, seed=4)[0])
    assert out.min() >= 0 and out.max() <= 16
    unchanged, _ = images.augment_images(x, y, only(), images.DIGITS_RANGE, seed=3)
    assert unchanged is x  # nothing enabled: the training images as they were


def test_flip_mirrors_left_right(digits):
    x, y = digits
    out, _ = images.augment_images(x, y, only(flip={}), images.DIGITS_RANGE, seed=0)
    copies = out[50:]
    mirrored = np.array([np.array_equal(c, np.flip(o, axis=-1)) for c, o in zip(copies, x)])
    same = np.array([np.array_equal(c, o) for c, o in zip(copies, x)])
    assert (mirrored | same).all() and 10 < mirrored.sum() < 40


def test_rotation_and_shift_move_pixels_as_intended(digits):
    x, _ = digits
    turned = images.affine(x[:3], np.full(3, 90.0), np.zeros((3, 2)), fill=0.0)
    np.testing.assert_allclose(turned, np.rot90(x[:3], k=1, axes=(2, 3)), atol=1e-4)  # counter-clockwise
    moved = images.affine(x[:3], np.zeros(3), np.array([[0.0, 1.0]] * 3), fill=0.0)  # one pixel right
    np.testing.assert_allclose(moved[..., 1:], x[:3, ..., :-1], atol=1e-4)
    np.testing.assert_allclose(moved[..., 0], 0.0, atol=1e-4)
    lifted = images.affine(x[:1] + 5, np.zeros(1), np.array([[1.0, 0.0]]), fill=5.0)  # down, edge filled with 5
    np.testing.assert_allclose(lifted[..., 0, :], 5.0, atol=1e-4)


def test_noise_has_the_configured_scale(digits):
    x, y = digits
    out, _ = images.augment_images(x, y, only(noise={"std": 0.01}), images.DIGITS_RANGE, seed=0)
    inside = (x > 1) & (x < 15)  # away from the clipped ends of the range
    assert np.std((out[50:] - x)[inside]) == pytest.approx(0.01 * 16, rel=0.1)


def test_tabular_augmentations_are_refused_for_images(raw_params, tmp_path):
    params = image_params(raw_params, tmp_path, augment={"mixup": {"enabled": True, "fraction": 0.3, "alpha": 0.4}})
    with pytest.raises(ParamsError, match=r"^augment\.mixup augment table rows"):
        images.augment(params.augment, params.paths, params.seed)


# ---------------------------------------------------------------- train


def test_normaliser_is_fitted_on_the_real_training_images_only(trained):
    params, prepared, _, _ = trained
    paths = params.paths
    before = images.prepare(params.features, params.train, paths).encoder
    others = [images.split_path(paths.split, "val"), images.split_path(paths.split, "test"), images.split_path(paths.augmented, "train")]
    originals = {path: images.read_images(path) for path in others}
    for path, (x, y) in originals.items():
        images.write_images(path, x * 3 + 7, y)
    try:
        assert images.prepare(params.features, params.train, paths).encoder == before == prepared.encoder
    finally:
        for path, (x, y) in originals.items():
            images.write_images(path, x, y)
    x, _ = images.read_images(images.split_path(paths.split, "train"))
    assert before["mean"] == pytest.approx([float(x.mean())]) and before["std"] == pytest.approx([float(x.std())], rel=1e-5)


def test_cnn_learns_digits_in_a_few_epochs(trained):
    _, prepared, model, history = trained
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < losses[0] and history.epochs[-1]["val_loss"] < history.epochs[0]["val_loss"]
    assert max(e["val_accuracy"] for e in history.epochs) > 0.6  # ten classes: chance is 0.1
    assert prepared.train.inputs[0].shape[1:] == (1, 8, 8) and prepared.train.inputs[0].dtype == torch.float32


def test_channels_last_trains_the_same_network(trained):
    params, prepared, model, _ = trained
    cfg = TrainParams.model_validate({**QUICK, "epochs": 1, "channels_last": True})
    channels_last = images.prepare(params.features, cfg, params.paths)
    assert channels_last.train.inputs[0].is_contiguous(memory_format=torch.channels_last)
    plain = TrainParams.model_validate({**QUICK, "epochs": 1})
    a, best_a, _ = fit(prepared.train, prepared.val, prepared.config, plain, params.seed)
    b, best_b, _ = fit(channels_last.train, channels_last.val, channels_last.config, cfg, params.seed)
    assert b.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(t.is_contiguous() for t in best_b["model_state"].values())  # checkpoints hold plain tensors
    for name, tensor in best_a["model_state"].items():
        torch.testing.assert_close(best_b["model_state"][name], tensor, rtol=1e-4, atol=1e-5)


def test_loader_workers_give_the_batches_of_the_in_memory_loop(trained):
    params, prepared, _, _ = trained
    cfg = TrainParams.model_validate({**QUICK, "epochs": 1})
    workers = TrainParams.model_validate({**QUICK, "epochs": 1, "loader": {"workers": 2}})
    _, in_memory, _ = fit(prepared.train, prepared.val, prepared.config, cfg, params.seed)
    _, loaded, _ = fit(prepared.train, prepared.val, prepared.config, workers, params.seed)
    for name, tensor in in_memory["model_state"].items():
        torch.testing.assert_close(loaded["model_state"][name], tensor, rtol=0, atol=0)


def test_pinned_memory_only_where_it_helps():
    from pipeline.params import LoaderParams

    assert use_pinned_memory(LoaderParams(), torch.device("cpu")) is False  # this machine: a no-op
    assert use_pinned_memory(LoaderParams(), torch.device("cuda")) is True
    assert use_pinned_memory(LoaderParams(pin_memory=False), torch.device("cuda")) is False
    with pytest.raises(ParamsError, match=r"train\.loader\.pin_memory = true needs a CUDA device"):
        use_pinned_memory(LoaderParams(pin_memory=True), torch.device("cpu"))


def test_architecture_must_fit_the_data_kind(trained):
    params, _, _, _ = trained
    with pytest.raises(ParamsError, match=r"^train\.architecture = 'mlp' is not an image model"):
        images.prepare(params.features, TrainParams(architecture="mlp"), params.paths)


def test_image_params_are_typed_and_strict(raw_params, table, schema):
    from pipeline.kinds.tabular.encoder import fit_preprocessor
    from pipeline.kinds.tabular.train import tabular_config
    from pipeline.params import FeatureParams

    with pytest.raises(ParamsError, match=r"augment\.image\.rotation\.max_degree: unknown key; allowed: enabled, max_degrees"):
        parse_params({**raw_params, "augment": {"image": {"rotation": {"max_degree": 5}}}})
    with pytest.raises(ParamsError, match=r"train\.cnn\.channels = \(\): needs at least one stage"):
        parse_params({**raw_params, "train": {**raw_params["train"], "cnn": {"channels": []}}})
    with pytest.raises(ParamsError, match=r"train\.architecture = 'cnn' is not a tabular model"):
        tabular_config(fit_preprocessor(table, schema, FeatureParams()), TrainParams(architecture="cnn"))


# ---------------------------------------------------------------- evaluate, export, gate


def test_evaluate_writes_the_tabular_reports_with_a_pixel_baseline(trained):
    params, _, _, _ = trained
    metrics = images.evaluate(params.evaluate, params.paths, params.seed)
    assert {"model", "baseline_majority", "baseline_logreg", "model_minus_logreg"} <= set(metrics)
    assert metrics["baseline_majority"]["accuracy"] < 0.2 < metrics["baseline_logreg"]["accuracy"]
    plots = Path(params.paths.eval_plots)
    assert {p.name for p in plots.glob("*.csv")} == {"confusion.csv", "roc.csv", "precision_recall.csv", "calibration.csv"}
    assert set(json.loads(Path(params.paths.eval_per_class).read_text())) == {str(d) for d in range(10)}


def test_export_is_verified_takes_raw_pixels_and_scores_for_the_gate(trained):
    params, prepared, _, _ = trained
    paths = params.paths
    if not Path(paths.eval_metrics).exists():
        images.evaluate(params.evaluate, paths, params.seed)
    report = images.export(params.export, paths)
    assert report["label_mismatches"] == 0 and report["max_abs_probability_diff"] <= params.export.tolerance

    graph = onnx.load(paths.onnx)
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["image"]
    assert [o.name for o in graph.graph.output] == ["probabilities", "label"]
    card = json.loads(Path(paths.model_card).read_text())
    assert card["kind"] == "image" and card["target"] == "digit" and card["inputs"][0]["shape"] == ["N", 1, 8, 8]
    assert card["inputs"][0]["value_range"] == [0.0, 16.0]

    x, y = images.read_images(images.split_path(paths.split, "test"))
    probabilities, labels = ort_session(paths.onnx).run(None, {"image": x})
    expected = images.predict_images(load_model(paths.model), prepared.encoder, x)  # normalised on the PyTorch side
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    scores = score_test(paths.onnx, paths.model_card, paths.split)
    assert scores["rows"] == len(y) and scores["accuracy"] == pytest.approx(float((labels == y).mean()))
    assert scores["accuracy"] == pytest.approx(json.loads(Path(paths.eval_metrics).read_text())["model"]["accuracy"])
    assert math.isclose(report["int8"]["fp32_accuracy"], scores["accuracy"])


def test_the_registry_reference_is_the_training_split_whatever_its_format(tmp_path):
    from pipeline.core.errors import DataError
    from pipeline.kinds import training_split_file

    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "train.npz").write_bytes(b"")
    (tmp_path / "test.npz").write_bytes(b"")
    assert training_split_file(tmp_path) == tmp_path / "train.npz"
    (tmp_path / "train.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="expected one train"):
        training_split_file(tmp_path)
