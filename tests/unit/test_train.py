import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.errors import ParamsError
from pipeline.core.io import SCHEMA_FILE, split_file, write_json, write_table
from pipeline.engine.loop import Tensors, class_weights, fit, lr_at
from pipeline.kinds.tabular.encoder import fit_preprocessor, load_preprocessor
from pipeline.kinds.tabular.evaluate import predict_proba
from pipeline.kinds.tabular.train import tabular_config
from pipeline.models import load_model
from pipeline.params import FeatureParams, TrainParams
from pipeline.stages import train as train_stage
from tests.conftest import make_params, make_table


def _config(pre, cfg: TrainParams):
    return tabular_config(pre, cfg)


@pytest.fixture
def data(table, schema):
    pre = fit_preprocessor(table.iloc[:480], schema, FeatureParams())
    return pre, Tensors.encode(table.iloc[:480], pre), Tensors.encode(table.iloc[480:], pre)


def quick(**overrides) -> TrainParams:
    values = dict(hidden=(32,), epochs=8, batch_size=64, lr=0.01, warmup_epochs=0, early_stopping={"patience": 8})
    values.update(overrides)
    return TrainParams.model_validate(values)


# ---------------------------------------------------------------- learning-rate schedules


def test_warmup_is_linear_then_cosine_reaches_min_lr():
    cfg = TrainParams(lr=0.1, min_lr=0.001, epochs=10, warmup_epochs=2, scheduler="cosine")
    steps = 10
    assert lr_at(0, cfg, steps) == pytest.approx(0.1 / 20)
    assert lr_at(19, cfg, steps) == pytest.approx(0.1)
    assert lr_at(20, cfg, steps) == pytest.approx(0.1)
    assert lr_at(100, cfg, steps) == pytest.approx(0.001)
    lrs = [lr_at(s, cfg, steps) for s in range(20, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_step_decay():
    cfg = TrainParams(lr=1.0, epochs=30, scheduler="step", step_size=10, gamma=0.5)
    assert [lr_at(e * 5, cfg, 5) for e in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_onecycle_rises_from_lr_over_25_then_anneals():
    cfg = TrainParams(lr=0.25, min_lr=0.0, epochs=10, scheduler="onecycle")
    steps = 10
    assert lr_at(0, cfg, steps) == pytest.approx(0.01)
    assert lr_at(30, cfg, steps) == pytest.approx(0.25)  # 30% warm-up by default
    assert lr_at(99, cfg, steps) < 0.001


def test_constant_schedules():
    for name in ("none", "plateau"):
        cfg = TrainParams(lr=0.3, scheduler=name)
        assert {lr_at(s, cfg, 7) for s in range(100)} == {0.3}


def test_balanced_class_weights():
    y = torch.tensor([0, 0, 0, 1])
    assert class_weights(y, 3, "balanced").tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    assert class_weights(y, 3, "none") is None


# ---------------------------------------------------------------- the loop


def test_loss_falls_and_the_model_learns(data):
    pre, train, val = data
    model, best, history = fit(train, val, _config(pre, quick()), quick(), seed=0)
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < 0.7 * losses[0]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.75  # majority share is ~0.4
    assert best["best_epoch"] == history.best_epoch


def test_ft_transformer_learns_and_reloads_from_its_checkpoint(data, tmp_path):
    pre, train, val = data
    cfg = quick(architecture="ft_transformer", transformer={"d_token": 16, "heads": 2, "layers": 2}, lr=0.003, epochs=6)
    model, best, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < 0.8 * losses[0]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.7
    assert best["model_config"]["family"] == "ft_transformer"
    torch.save(best, tmp_path / "model.pt")
    reloaded = load_model(tmp_path / "model.pt")
    np.testing.assert_allclose(predict_proba(reloaded, pre, make_table(50, seed=3)), predict_proba(model, pre, make_table(50, seed=3)), atol=1e-6)


def test_architecture_and_metric_are_checked_against_the_data():
    with pytest.raises(ValueError, match="d_token"):
        TrainParams.model_validate({"transformer": {"d_token": 30, "heads": 8}})
    x = torch.randn(64, 3)
    regression = Tensors((x, torch.zeros(64, 0, dtype=torch.int64)), x.sum(1, keepdim=True))
    with pytest.raises(ParamsError, match="train.early_stopping.metric = 'val_accuracy' does not apply to regression"):
        fit(regression, regression, None, quick(early_stopping={"metric": "val_accuracy"}), seed=0)


def test_training_is_deterministic_for_a_seed(data):
    pre, train, val = data
    runs = [fit(train, val, _config(pre, quick()), quick(), seed=7)[0].state_dict() for _ in range(2)]
    other = fit(train, val, _config(pre, quick()), quick(), seed=8)[0].state_dict()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert any(not torch.equal(runs[0][k], other[k]) for k in runs[0] if other[k].is_floating_point())


def test_early_stopping_stops_and_keeps_the_best_weights(data):
    pre, train, val = data
    cfg = quick(epochs=60, lr=0.05, early_stopping={"metric": "val_loss", "patience": 2})
    model, best, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    assert history.stopped_early and len(history.epochs) < 60
    assert len(history.epochs) - 1 - history.best_epoch == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model_state"][key])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "onecycle", "plateau"])
def test_every_optimizer_and_schedule_trains(data, optimizer, scheduler):
    pre, train, val = data
    cfg = quick(epochs=3, optimizer=optimizer, scheduler=scheduler, lr=0.005, warmup_epochs=1)
    _, _, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    assert all(math.isfinite(e["train_loss"]) for e in history.epochs)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"] * 1.05


def test_l1_penalty_shrinks_weights(data):
    pre, train, val = data

    def weight_l1(l1: float) -> float:
        cfg = quick(l1=l1, epochs=5)
        model, _, _ = fit(train, val, _config(pre, cfg), cfg, seed=0)
        return sum(float(p.detach().abs().sum()) for n, p in model.named_parameters() if p.ndim >= 2)

    assert weight_l1(0.01) < 0.8 * weight_l1(0.0)


def test_onehot_encoding_and_no_batch_norm(data):
    pre, train, val = data
    cfg = quick(categorical_encoding="onehot", batch_norm=False, dropout=0.0)
    model, _, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert model.embeddings[0].weight.requires_grad is False
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]


# ---------------------------------------------------------------- the stage


def _write_splits(paths, frames, schema):
    for name, frame in frames.items():
        write_table(split_file(paths.split, name), frame)
    write_json(f"{paths.split}/{SCHEMA_FILE}", schema.to_dict())
    write_table(split_file(paths.augmented, "train"), frames["train"])


def test_stage_writes_self_describing_checkpoints_that_reload(tmp_path, raw_params, table, schema):
    params = make_params(raw_params, tmp_path, train={"epochs": 3, "hidden": [16], "warmup_epochs": 0})
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    _write_splits(params.paths, frames, schema)
    summary = train_stage.run(params.features, params.train, params.paths, params.seed)
    assert summary["epochs_run"] == 3

    checkpoint = torch.load(params.paths.model, weights_only=True)
    assert {"model_config", "model_state", "optimizer_state", "epoch", "best_metric", "train_params", "seed"} <= set(checkpoint)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in checkpoint["model_state"])
    last = torch.load(f"{params.paths.checkpoints}/last.pt", weights_only=True)
    assert last["epoch"] == 2
    model, pre = load_model(params.paths.model), load_preprocessor(params.paths.preprocessor)
    proba = predict_proba(model, pre, frames["test"])
    assert proba.shape == (len(frames["test"]), 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert (tmp_path / params.paths.train_live).joinpath("metrics.json").exists()
    assert any((tmp_path / params.paths.tensorboard).iterdir())


def test_leakage_held_out_rows_never_move_the_fitted_encoder(tmp_path, raw_params, schema):
    """Changing validation and test feature values leaves the saved imputation/scaling statistics unchanged."""
    table = make_table(600)
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    params = make_params(raw_params, tmp_path, train={"epochs": 1, "hidden": [8], "warmup_epochs": 0})
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    before = (tmp_path / params.paths.preprocessor).read_text()

    def wild(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(x=frame["x"].fillna(0) * 1000 + 1e6, noise=-frame["noise"], colour="never-seen")

    frames = {"train": frames["train"], "val": wild(frames["val"]), "test": wild(frames["test"])}
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    assert (tmp_path / params.paths.preprocessor).read_text() == before

    # Guard against a test that cannot fail: changing the training rows does move the statistics.
    frames["train"] = wild(frames["train"])
    _write_splits(params.paths, frames, schema)
    train_stage.run(params.features, params.train, params.paths, params.seed)
    assert (tmp_path / params.paths.preprocessor).read_text() != before


# ---------------------------------------------------------------- efficient-training options


def test_bf16_autocast_trains_and_keeps_fp32_weights(data):
    pre, train, val = data
    cfg = quick(precision="bf16")
    model, _, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    assert history.epochs[-1]["train_loss"] < 0.8 * history.epochs[0]["train_loss"]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.7
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_gradient_accumulation_matches_the_larger_batch(table, schema):
    """Two accumulated batches of 64 take the same steps as one batch of 128 (no batch norm, no dropout)."""
    pre = fit_preprocessor(table.iloc[:384], schema, FeatureParams())
    train, val = Tensors.encode(table.iloc[:384], pre), Tensors.encode(table.iloc[480:], pre)
    common = dict(batch_norm=False, dropout=0.0, epochs=3, optimizer="sgd", lr=0.05, scheduler="none")
    small = quick(batch_size=64, grad_accum_steps=2, **common)
    large = quick(batch_size=128, **common)
    accumulated, _, _ = fit(train, val, _config(pre, small), small, seed=0)
    plain, _, _ = fit(train, val, _config(pre, large), large, seed=0)
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[key], value, atol=1e-5, rtol=1e-4)


def test_device_is_chosen_automatically():
    from pipeline.core.errors import ParamsError
    from pipeline.engine.loop import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="train.device = 'cuda'"):
            resolve_device("cuda")


# ---------------------------------------------------------------- resume


class _Interrupt(Exception):
    pass


def _without_timing(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "epoch_seconds"} for e in epochs]


class _KillAfter:
    """A logger that kills the run during epoch ``epoch`` (before that epoch's checkpoint is written)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def log_epoch(self, epoch, values):
        if epoch == self.epoch:
            raise _Interrupt


def test_interrupted_training_resumes_to_the_same_result(tmp_path, data):
    from pipeline.engine.loop import resumable

    pre, train, val = data
    cfg = quick(epochs=6, scheduler="cosine", warmup_epochs=1)
    config = _config(pre, cfg)
    straight, straight_best, straight_history = fit(train, val, config, cfg, seed=3, checkpoint_dir=tmp_path / "a", fingerprint="run")

    (tmp_path / "b").mkdir()
    with pytest.raises(_Interrupt):
        fit(train, val, config, cfg, seed=3, logger=_KillAfter(3), checkpoint_dir=tmp_path / "b", fingerprint="run")
    last = resumable(tmp_path / "b", "run")
    assert last["epoch"] == 2  # epochs 0-2 were checkpointed before the kill
    resumed, resumed_best, resumed_history = fit(
        train, val, config, cfg, seed=3, checkpoint_dir=tmp_path / "b", resume=last, fingerprint="run"
    )
    assert _without_timing(resumed_history.epochs) == _without_timing(straight_history.epochs)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_best["best_epoch"] == straight_best["best_epoch"]
    assert resumable(tmp_path / "b", "other params or data") is None  # a changed run starts afresh


def test_a_finished_run_resumes_without_training(tmp_path, data):
    from pipeline.engine.loop import resumable

    pre, train, val = data
    cfg = quick(epochs=3)
    (tmp_path / "c").mkdir()
    first, _, history = fit(train, val, _config(pre, cfg), cfg, seed=0, checkpoint_dir=tmp_path / "c", fingerprint="f")
    again, _, again_history = fit(
        train, val, _config(pre, cfg), cfg, seed=0, checkpoint_dir=tmp_path / "c", resume=resumable(tmp_path / "c", "f"), fingerprint="f"
    )
    assert again_history.epochs == history.epochs
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_compiled_training_learns_and_saves_the_plain_model(data):
    pre, train, val = data
    cfg = quick(compile=True, epochs=3)
    model, best, history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in best["model_state"])
    assert type(model).__name__ == "TabularMLP"


# ---------------------------------------------------------------- warm start


def test_warm_start_loads_matching_tensors_and_fine_tunes_from_them(data):
    pre, train, val = data
    cfg = quick(epochs=6)
    source, source_best, source_history = fit(train, val, _config(pre, cfg), cfg, seed=0)
    # A tiny learning rate: after one epoch the warm model is still the source model.
    still = quick(epochs=2, lr=1e-9, warmup_epochs=0, scheduler="none")
    warm, _, warm_history = fit(train, val, _config(pre, still), still, seed=1, init_state=source_best["model_state"])
    warm_weights = dict(warm.named_parameters())
    for key, value in source.named_parameters():  # weights, not batch-norm statistics (those follow the data)
        assert torch.allclose(warm_weights[key], value, atol=1e-5), key
    assert warm_history.epochs[0]["val_accuracy"] == pytest.approx(source_history.epochs[source_history.best_epoch]["val_accuracy"], abs=0.02)


def test_a_head_for_other_classes_starts_fresh_and_frozen_layers_do_not_move(data):
    from pipeline.engine.loop import load_matching
    from pipeline.models import build_model

    pre, train, val = data
    cfg = quick(epochs=3, warm_start={"freeze": ("embeddings", "body.0"), "pretrained_lr_scale": 0.5})
    config = _config(pre, cfg)
    source = build_model(replace(config, n_classes=5)).state_dict()  # another class count: another head
    model = build_model(config)
    loaded, skipped = load_matching(model, source)
    assert set(skipped) == {"head.weight", "head.bias"} and "body.0.weight" in loaded

    tuned, _, _ = fit(train, val, config, cfg, seed=0, init_state=source)
    for key in ("body.0.weight", "embeddings.0.weight"):
        assert torch.equal(tuned.state_dict()[key], source[key]), key
    assert not torch.equal(tuned.state_dict()["body.1.weight"], source["body.1.weight"])  # batch-norm scale: loaded, not frozen


def test_pretrained_tensors_get_their_own_learning_rate_group(data):
    from pipeline.engine.loop import make_optimizer
    from pipeline.models import build_model

    pre, _, _ = data
    cfg = quick(warm_start={"pretrained_lr_scale": 0.1})
    model = build_model(_config(pre, cfg))
    names = [name for name, _ in model.named_parameters()]
    optimizer = make_optimizer(model, cfg, frozenset(names[:-2]))  # all but the head
    assert [group["lr_scale"] for group in optimizer.param_groups] == [1.0, 0.1]
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, len(names) - 2]


def test_warm_start_errors_name_the_key(data, tmp_path):
    from pipeline.engine.loop import warm_start_state

    pre, train, val = data
    cfg = quick(epochs=1, warm_start={"freeze": ("encoder",)})
    state = fit(train, val, _config(pre, quick(epochs=1)), quick(epochs=1), seed=0)[1]
    with pytest.raises(ParamsError, match=r"train.warm_start.freeze: 'encoder' names no parameter"):
        fit(train, val, _config(pre, cfg), cfg, seed=0, init_state=state["model_state"])
    torch.save(state, tmp_path / "model.pt")
    transformer = quick(architecture="ft_transformer", transformer={"d_token": 16, "heads": 2})
    with pytest.raises(ParamsError, match="holds a mlp model but train.architecture builds a ft_transformer"):
        warm_start_state(tmp_path / "model.pt", _config(pre, transformer))
    assert warm_start_state(tmp_path / "absent.pt", _config(pre, transformer)) is None


def test_the_stage_fine_tunes_the_model_in_init_model_keeping_its_encoder(tmp_path, raw_params, table, schema, caplog):
    from pipeline.engine.loop import reusable_encoder

    first = make_params(raw_params, tmp_path / "first", train={"epochs": 2, "hidden": [16], "warmup_epochs": 0})
    frames = {"train": table.iloc[:400], "val": table.iloc[400:500], "test": table.iloc[500:]}
    _write_splits(first.paths, frames, schema)
    train_stage.run(first.features, first.train, first.paths, first.seed)

    # New training rows (a different encoder would be fitted), and the first model placed in init_model.
    second = make_params(raw_params, tmp_path / "second", train={"epochs": 2, "hidden": [16], "warmup_epochs": 0})
    _write_splits(second.paths, {**frames, "train": table.iloc[100:450]}, schema)
    init = Path(second.paths.init_model)
    init.mkdir(parents=True)
    (init / "model.pt").write_bytes(Path(first.paths.model).read_bytes())
    (init / "preprocessor.json").write_text(Path(first.paths.preprocessor).read_text())
    with caplog.at_level("INFO", logger="pipeline"):
        train_stage.run(second.features, second.train, second.paths, second.seed)
    assert "keeping the initial model's encoder" in caplog.text and "warm start: 9 tensors loaded, 0 fresh []" in caplog.text
    assert Path(second.paths.preprocessor).read_text() == Path(first.paths.preprocessor).read_text()

    encoder = json.loads(Path(first.paths.preprocessor).read_text())
    assert reusable_encoder(encoder, list(encoder["classes"])) is encoder
    assert reusable_encoder(encoder, [*encoder["classes"], "new class"]) is None  # new classes: fit afresh
