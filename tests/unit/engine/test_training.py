import math

import numpy as np
import pytest
import torch

from pipeline.core.errors import ParamsError, TrainError
from pipeline.engine import Tensors, fit, validate
from pipeline.kinds.tabular.encoder import Preprocessor
from pipeline.kinds.tabular.evaluate import predict_proba
from pipeline.models import ModelConfig, load_model
from pipeline.params import TabularFeatures, TrainParams
from tests.conftest import make_table
from tests.unit.engine.conftest import config_for, quick


def test_loss_falls_and_the_model_learns(data):
    pre, train, val = data
    model, best, history = fit(train, val, config_for(pre, quick()), quick(), seed=0, task="classification")
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < 0.7 * losses[0]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.75  # majority share is ~0.4
    assert best["best_epoch"] == history.best_epoch


def test_ft_transformer_learns_and_reloads_from_its_checkpoint(data, tmp_path):
    pre, train, val = data
    cfg = quick(model={"architecture": "ft_transformer", "d_token": 16, "heads": 2, "layers": 2}, lr=0.003, epochs=6)
    model, best, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    losses = [e["train_loss"] for e in history.epochs]
    assert losses[-1] < 0.8 * losses[0]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.7
    assert best["model_config"]["family"] == "ft_transformer"
    torch.save(best, tmp_path / "model.pt")
    reloaded = load_model(tmp_path / "model.pt")
    np.testing.assert_allclose(
        predict_proba(reloaded, pre, make_table(50, seed=3)), predict_proba(model, pre, make_table(50, seed=3)), atol=1e-6
    )


def test_architecture_and_metric_are_checked_against_the_data():
    with pytest.raises(ValueError, match="d_token"):
        TrainParams.model_validate({"model": {"architecture": "ft_transformer", "d_token": 30, "heads": 8}})
    x = torch.randn(64, 3)
    regression = Tensors((x, torch.zeros(64, 0, dtype=torch.int64)), x.sum(1, keepdim=True))
    with pytest.raises(ParamsError, match="train.early_stopping.metric = 'val_accuracy' does not apply to regression"):
        fit(regression, regression, None, quick(early_stopping={"metric": "val_accuracy"}), seed=0, task="regression")


def test_the_task_is_said_not_guessed_from_the_targets():
    """An MLP with one output learns a value: the loss, metrics and early-stopping metric are the regression's."""
    x = torch.randn(512, 3, generator=torch.Generator().manual_seed(0))
    data = Tensors((x, torch.zeros(512, 0, dtype=torch.int64)), x @ torch.tensor([[1.0], [-2.0], [0.5]]))
    cfg = quick(
        model={"batch_norm": False, "dropout": 0.0},
        epochs=10,
        regression_loss="mse",
        early_stopping={"metric": "val_mae", "patience": 10},
    )
    config = ModelConfig(n_numeric=3, cardinalities=(), n_classes=1, hidden=(16,), dropout=0.0, batch_norm=False)
    model, _, history = fit(data, data, config, cfg, seed=0, task="regression")
    assert {"train_mae", "val_mae", "val_rmse"} <= set(history.epochs[0]) and "val_accuracy" not in history.epochs[0]
    assert history.epochs[history.best_epoch]["val_mae"] < 0.5 * history.epochs[0]["val_mae"]
    scores = validate(model, data, "regression", torch.nn.MSELoss(), 4096)
    assert scores["mae"] == pytest.approx(history.best_value, rel=1e-6)


def test_training_is_deterministic_for_a_seed(data):
    pre, train, val = data
    runs = [
        fit(train, val, config_for(pre, quick()), quick(), seed=7, task="classification")[0].state_dict() for _ in range(2)
    ]
    other = fit(train, val, config_for(pre, quick()), quick(), seed=8, task="classification")[0].state_dict()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    assert any(not torch.equal(runs[0][k], other[k]) for k in runs[0] if other[k].is_floating_point())


def test_early_stopping_stops_and_keeps_the_best_weights(data):
    pre, train, val = data
    cfg = quick(epochs=60, lr=0.05, early_stopping={"metric": "val_loss", "patience": 2})
    model, best, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    assert history.stopped_early and len(history.epochs) < 60
    assert len(history.epochs) - 1 - history.best_epoch == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, best["model_state"][key])
    assert "optimizer_state" not in best  # the best checkpoint is weights only


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("scheduler", ["none", "step", "cosine", "onecycle", "plateau"])
def test_every_optimizer_and_schedule_trains(data, optimizer, scheduler):
    pre, train, val = data
    cfg = quick(epochs=3, optimizer=optimizer, scheduler=scheduler, lr=0.005, warmup_epochs=1)
    _, _, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    assert all(math.isfinite(e["train_loss"]) for e in history.epochs)
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"] * 1.05


def test_l1_penalty_shrinks_weights(data):
    pre, train, val = data

    def weight_l1(l1: float) -> float:
        cfg = quick(l1=l1, epochs=5)
        model, _, _ = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
        return sum(float(p.detach().abs().sum()) for n, p in model.named_parameters() if p.ndim >= 2)

    assert weight_l1(0.01) < 0.8 * weight_l1(0.0)


def test_onehot_encoding_and_no_batch_norm(data):
    pre, train, val = data
    cfg = quick(model={"categorical_encoding": "onehot", "batch_norm": False, "dropout": 0.0})
    model, _, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert model.embeddings[0].weight.requires_grad is False
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]


# ---------------------------------------------------------------- efficient-training options


def test_bf16_autocast_trains_and_keeps_fp32_weights(data):
    pre, train, val = data
    cfg = quick(precision="bf16")
    model, _, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    assert history.epochs[-1]["train_loss"] < 0.8 * history.epochs[0]["train_loss"]
    assert history.epochs[history.best_epoch]["val_accuracy"] > 0.7
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_gradient_accumulation_matches_the_larger_batch(table, schema):
    """Two accumulated batches of 64 take the same steps as one batch of 128 (no batch norm, no dropout)."""
    pre = Preprocessor.fit(table.iloc[:384], schema, TabularFeatures())
    train, val = Tensors.encode(table.iloc[:384], pre), Tensors.encode(table.iloc[480:], pre)
    common = dict(model={"batch_norm": False, "dropout": 0.0}, epochs=3, optimizer="sgd", lr=0.05, scheduler="none")
    small = quick(batch_size=64, grad_accum_steps=2, **common)
    large = quick(batch_size=128, **common)
    accumulated, _, _ = fit(train, val, config_for(pre, small), small, seed=0, task="classification")
    plain, _, _ = fit(train, val, config_for(pre, large), large, seed=0, task="classification")
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(accumulated.state_dict()[key], value, atol=1e-5, rtol=1e-4)


def test_compiled_training_learns_and_saves_the_plain_model(data):
    pre, train, val = data
    cfg = quick(compile=True, epochs=3)
    model, best, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in best["model_state"])
    assert type(model).__name__ == "TabularMLP"


def test_auto_precision_and_compile_pick_bf16_and_the_compiled_attention_only_for_attention_networks(monkeypatch, tmp_path):
    from pipeline.engine import training
    from pipeline.models import FTTransformerConfig, build_model

    mlp = build_model(ModelConfig(n_numeric=3, cardinalities=(4,), n_classes=2))
    ft = build_model(FTTransformerConfig(n_numeric=3, cardinalities=(4,), n_classes=2, d_token=16, heads=2))
    cpu = torch.device("cpu")
    monkeypatch.setattr(training, "fast_bf16", lambda device: True)
    assert training.resolve_precision("auto", mlp, cpu) == "fp32"  # the MLP stays bit-identical to fp32
    assert training.resolve_precision("auto", ft, cpu) == "bf16"
    assert training.resolve_precision("fp32", ft, cpu) == "fp32"
    monkeypatch.setattr(training, "fast_bf16", lambda device: False)
    assert training.resolve_precision("auto", ft, cpu) == "fp32"
    assert training.resolve_compile("auto", mlp, cpu) is False
    assert training.resolve_compile(False, ft, cpu) is False
    assert training.resolve_compile("auto", ft, cpu) == "attention"
    assert training.resolve_compile("auto", ft, torch.device("cuda")) is False


@pytest.fixture
def fresh_can_compile():
    """can_compile's cached answer cleared before and after (the test fakes the machine), even if it fails."""
    from pipeline.models import blocks

    blocks.can_compile.cache_clear()
    yield
    blocks.can_compile.cache_clear()


def test_without_a_compiler_compile_true_is_one_clear_error_and_attention_keeps_the_kernels_that_need_none(
    monkeypatch, tmp_path, fresh_can_compile
):
    from pipeline.engine import training
    from pipeline.models import FTTransformerConfig, blocks, build_model

    ft = build_model(FTTransformerConfig(n_numeric=3, cardinalities=(4,), n_classes=2, d_token=16, heads=2))
    cpu, bf16 = torch.device("cpu"), torch.bfloat16
    (tmp_path / "Python.h").touch()
    monkeypatch.setattr(blocks.sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(blocks.shutil, "which", lambda name: "/usr/bin/" + name)
    blocks.can_compile.cache_clear()
    assert blocks.can_compile() and training.resolve_compile(True, ft, cpu) is True
    assert blocks.training_kernel(512, 8, 15, 15, bf16, cpu) == "compiled"
    for missing in ("headers", "compiler"):  # inductor builds Python extensions: it needs both
        if missing == "headers":
            monkeypatch.setattr(blocks.sysconfig, "get_path", lambda name: str(tmp_path / "none"))
        else:
            monkeypatch.setattr(blocks.sysconfig, "get_path", lambda name: str(tmp_path))
            monkeypatch.setattr(blocks.shutil, "which", lambda name: None)
        blocks.can_compile.cache_clear()
        assert not blocks.can_compile(), missing
        with pytest.raises(TrainError, match=r"^train.compile: true needs a C\+\+ compiler and Python's headers"):
            training.resolve_compile(True, ft, cpu)
        assert training.resolve_compile("auto", ft, cpu) == "attention"
        assert blocks.training_kernel(512, 8, 15, 15, bf16, cpu) == "batched"  # nothing compiled: next fastest
        assert blocks.training_kernel(512, 8, 1, 15, bf16, cpu) == "flash"  # a subset of queries
        assert blocks.training_kernel(256, 4, 96, 96, bf16, cpu) == "batched"  # needs no compiler


@pytest.mark.slow  # compiles the attention (tens of seconds on a loaded 2-core machine)
def test_the_compiled_attention_trains_the_ft_transformer_as_the_flash_kernel_does(data):
    """train.compile: attention changes the kernel, not the training: the same losses, epoch by epoch."""
    pre, train, val = data
    model = {"architecture": "ft_transformer", "d_token": 16, "heads": 2, "layers": 2}
    histories = []
    for compile in (False, "attention"):
        cfg = quick(model=model, compile=compile, lr=0.003, epochs=2)
        net, _, history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
        histories.append([e["train_loss"] for e in history.epochs])
    assert all(getattr(m, "compiled", True) for m in net.modules() if type(m).__name__ == "SelfAttention")
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-4)


def test_the_batched_attention_trains_the_sequence_transformer_as_the_flash_kernel_does_and_repeats_itself(monkeypatch):
    """train.compile: attention on windows longer than COMPILED_MAX_LENGTH under bf16: the batched attention,
    epoch by epoch the flash kernel's losses up to bf16 rounding; a seed gives the same model bit for bit."""
    from pipeline.models import SeqTransformerConfig, blocks

    calls, batched = [], blocks.batched_attention
    monkeypatch.setattr(blocks, "batched_attention", lambda *args: calls.append(1) or batched(*args))
    length = blocks.COMPILED_MAX_LENGTH + 8
    x = torch.randn(320, length, 2, generator=torch.Generator().manual_seed(0))
    y = x[:, -4:, 0].mean(1, keepdim=True)  # a learnable target: the mean of the last steps
    train, val = Tensors((x[:256],), y[:256]), Tensors((x[256:],), y[256:])
    config = SeqTransformerConfig(input_size=2, n_outputs=1, lookback=length, d_model=16, heads=2)
    model = {"architecture": "seq_transformer", "d_model": 16, "heads": 2}
    runs = []
    for compile in (False, "attention", "attention"):
        cfg = quick(model=model, precision="bf16", compile=compile, lr=0.003, epochs=2, early_stopping={"metric": "val_mae"})
        net, _, history = fit(train, val, config, cfg, seed=0, task="regression")
        runs.append(([e["train_loss"] for e in history.epochs], net.state_dict(), len(calls)))
    assert runs[0][2] == 0 and runs[1][2] == runs[2][2] - runs[1][2] > 0  # the flash kernel, then the batched one
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=0.03)
    assert runs[2][0] == runs[1][0]
    assert all(torch.equal(value, runs[2][1][key]) for key, value in runs[1][1].items())
