"""Image prepare (pipeline/kinds/image/train.py) and the engine on images: the normaliser, the CNN, its loaders."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.errors import ParamsError
from pipeline.engine import fit, use_pinned_memory
from pipeline.kinds.image.data import read_images, split_path, write_images
from pipeline.kinds.image.train import prepare
from pipeline.params import CNNParams, LoaderParams, MLPParams, TrainParams
from tests.unit.kinds.image.conftest import QUICK, image_params

# Small models train fastest on one thread, and a busy machine's other processes cannot slow them.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_normaliser_is_fitted_on_the_real_training_images_only(trained):
    params, prepared, _, _ = trained
    paths = params.paths
    before = prepare(params.features, params.train, paths).encoder
    others = [split_path(paths.split, "val"), split_path(paths.split, "test"), split_path(paths.augmented, "train")]
    originals = {path: read_images(path) for path in others}
    for path, (x, y) in originals.items():
        write_images(path, x * 3 + 7, y)
    try:
        assert prepare(params.features, params.train, paths).encoder == before == prepared.encoder
    finally:
        for path, (x, y) in originals.items():
            write_images(path, x, y)
    x, _ = read_images(split_path(paths.split, "train"))
    assert before["mean"] == pytest.approx([float(x.mean())]) and before["std"] == pytest.approx([float(x.std())], rel=1e-5)


def test_cnn_learns_digits_in_a_few_epochs(trained):
    _, prepared, model, history = trained
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < losses[0] and history.epochs[-1]["val_loss"] < history.epochs[0]["val_loss"]
    assert max(e["val_accuracy"] for e in history.epochs) > 0.6  # ten classes: chance is 0.1
    assert prepared.train.inputs[0].shape[1:] == (1, 8, 8) and prepared.train.inputs[0].dtype == torch.float32
    assert prepared.task == "classification"


def test_channels_last_trains_the_same_network(trained):
    params, prepared, model, _ = trained
    cfg = TrainParams.model_validate({**QUICK, "epochs": 1, "model": {**QUICK["model"], "channels_last": True}})
    channels_last = prepare(params.features, cfg, params.paths)
    assert channels_last.train.inputs[0].is_contiguous(memory_format=torch.channels_last)
    plain = TrainParams.model_validate({**QUICK, "epochs": 1})
    a, best_a, _ = fit(prepared.train, prepared.val, prepared.config, plain, params.seed, task=prepared.task)
    b, best_b, _ = fit(channels_last.train, channels_last.val, channels_last.config, cfg, params.seed, task=channels_last.task)
    assert b.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(t.is_contiguous() for t in best_b["model_state"].values())  # checkpoints hold plain tensors
    for name, tensor in best_a["model_state"].items():
        torch.testing.assert_close(best_b["model_state"][name], tensor, rtol=1e-4, atol=1e-5)


def test_loader_workers_give_the_batches_of_the_in_memory_loop(trained):
    params, prepared, _, _ = trained
    cfg = TrainParams.model_validate({**QUICK, "epochs": 1})
    workers = TrainParams.model_validate({**QUICK, "epochs": 1, "loader": {"workers": 2}})
    _, in_memory, _ = fit(prepared.train, prepared.val, prepared.config, cfg, params.seed, task=prepared.task)
    _, loaded, _ = fit(prepared.train, prepared.val, prepared.config, workers, params.seed, task=prepared.task)
    for name, tensor in in_memory["model_state"].items():
        torch.testing.assert_close(loaded["model_state"][name], tensor, rtol=0, atol=0)


def test_pinned_memory_only_where_it_helps():
    assert use_pinned_memory(LoaderParams(), torch.device("cpu")) is False  # this machine: a no-op
    assert use_pinned_memory(LoaderParams(), torch.device("cuda")) is True
    assert use_pinned_memory(LoaderParams(pin_memory=False), torch.device("cuda")) is False
    with pytest.raises(ParamsError, match=r"train\.loader\.pin_memory = true needs a CUDA device"):
        use_pinned_memory(LoaderParams(pin_memory=True), torch.device("cpu"))


def test_architecture_must_fit_the_data_kind(trained, tmp_path):
    params, _, _, _ = trained
    with pytest.raises(ParamsError, match=r"^train\.model\.architecture = 'mlp' is not an image model"):
        prepare(params.features, TrainParams(model=MLPParams(architecture="mlp")), params.paths)
    with pytest.raises(ParamsError, match=r"train\.model\.architecture = 'mlp' does not fit ingest\.kind 'image'; choose cnn"):
        image_params(tmp_path, train={"model": {"architecture": "mlp"}})


def test_image_params_are_typed_and_strict(tmp_path, table, schema):
    from pipeline.kinds.tabular.encoder import Preprocessor
    from pipeline.kinds.tabular.train import tabular_config
    from pipeline.params import TabularFeatures

    with pytest.raises(ParamsError, match=r"augment\.rotation\.max_degree: unknown key; allowed: enabled, max_degrees"):
        image_params(tmp_path, augment={"rotation": {"max_degree": 5}})
    with pytest.raises(ParamsError, match=r"train\.model\.channels = \(\): needs at least one stage"):
        image_params(tmp_path, train={"model": {"channels": []}})
    with pytest.raises(ParamsError, match=r"train\.model\.architecture = 'cnn' is not a tabular model"):
        tabular_config(Preprocessor.fit(table, schema, TabularFeatures()), TrainParams(model=CNNParams(architecture="cnn")))
