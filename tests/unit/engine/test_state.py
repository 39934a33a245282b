import pytest
import torch

from pipeline.engine import TrainState, fit, resumable
from pipeline.engine.state import weights
from pipeline.models import build_model
from tests.unit.engine.conftest import config_for, quick


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
    pre, train, val = data
    cfg = quick(epochs=6, scheduler="cosine", warmup_epochs=1)
    config = config_for(pre, cfg)
    straight, straight_best, straight_history = fit(
        train, val, config, cfg, seed=3, task="classification", checkpoint_dir=tmp_path / "a", fingerprint="run"
    )

    (tmp_path / "b").mkdir()
    with pytest.raises(_Interrupt):
        fit(
            train,
            val,
            config,
            cfg,
            seed=3,
            task="classification",
            logger=_KillAfter(3),
            checkpoint_dir=tmp_path / "b",
            fingerprint="run",
        )
    last = resumable(tmp_path / "b", "run")
    assert last["epoch"] == 2  # epochs 0-2 were checkpointed before the kill
    resumed, resumed_best, resumed_history = fit(
        train, val, config, cfg, seed=3, task="classification", checkpoint_dir=tmp_path / "b", resume=last, fingerprint="run"
    )
    assert _without_timing(resumed_history.epochs) == _without_timing(straight_history.epochs)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_best["best_epoch"] == straight_best["best_epoch"]
    assert resumed_history.resumed_at == 3
    assert resumable(tmp_path / "b", "other params or data") is None  # a changed run starts afresh


def test_a_finished_run_resumes_without_training(tmp_path, data):
    pre, train, val = data
    cfg = quick(epochs=3)
    (tmp_path / "c").mkdir()
    first, _, history = fit(
        train, val, config_for(pre, cfg), cfg, seed=0, task="classification", checkpoint_dir=tmp_path / "c", fingerprint="f"
    )
    again, _, again_history = fit(
        train,
        val,
        config_for(pre, cfg),
        cfg,
        seed=0,
        task="classification",
        checkpoint_dir=tmp_path / "c",
        resume=resumable(tmp_path / "c", "f"),
        fingerprint="f",
    )
    assert again_history.epochs == _without_timing(history.epochs)  # checkpoints hold no wall-clock times
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_the_last_checkpoint_describes_itself_and_loads_with_weights_only(tmp_path, data):
    pre, train, val = data
    cfg = quick(epochs=2)
    fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification", checkpoint_dir=tmp_path, fingerprint="f")
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {
        "model_config",
        "model_state",
        "optimizer_state",
        "epoch",
        "step",
        "best_epoch",
        "best_metric",
        "train_params",
        "seed",
    } <= set(last)
    state = last["train_state"]
    assert set(state["rng"]) == {"torch", "cuda", "shuffle"} and state["step"] == last["step"] > 0
    assert "optimizer_state" not in state["best"]  # the best weights are not a second optimizer copy
    assert not list(tmp_path.glob(".*.tmp"))  # written then renamed


def test_train_state_round_trips_every_random_number_state():
    state = TrainState.start(seed=5)
    state.step, state.plateau_scale = 7, 0.5
    saved = state.state_dict()
    expected = (torch.rand(3), torch.randperm(10, generator=state.shuffle))
    other = TrainState.start(seed=6)
    other.load_state_dict(saved)
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.randperm(10, generator=other.shuffle), expected[1])
    assert (other.step, other.plateau_scale, other.history.resumed_at) == (7, 0.5, 0)


def test_best_weights_are_a_copy_not_the_live_tensors(data):
    pre, _, _ = data
    cfg = quick()
    model = build_model(config_for(pre, cfg))
    state = TrainState.start(seed=0)
    state.history.epochs.append({})
    best = weights(model, state.history, cfg, seed=0)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    assert not torch.equal(best["model_state"]["head.weight"], model.head.weight)
    assert best["epoch"] == 0 and "optimizer_state" not in best
