import pytest

from pipeline.engine import TrainState, check_metric, is_improvement
from pipeline.engine.callbacks import EarlyStopping, Plateau
from pipeline.params import EarlyStoppingParams


def _run(values: list[float], *callbacks) -> TrainState:
    state = TrainState.start(seed=0)
    for epoch, value in enumerate(values):
        state.history.epochs.append({"val_loss": value})
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_loss": value}, state)
    return state


def test_early_stopping_tracks_the_best_epoch_and_stops_after_patience():
    stopping = EarlyStopping(EarlyStoppingParams(metric="val_loss", patience=2, min_delta=0.0))
    state = _run([1.0, 0.8, 0.9, 0.85], stopping)
    assert (state.history.best_epoch, state.history.best_value, state.history.stopped_early) == (1, 0.8, True)
    assert not _run([1.0, 0.8, 0.9], stopping).history.stopped_early


def test_plateau_cuts_the_rate_after_patience_epochs_without_improvement():
    stopping = EarlyStopping(EarlyStoppingParams(metric="val_loss", patience=99, min_delta=0.0))
    state = _run([1.0, 1.1, 1.2, 1.3, 1.4, 0.5, 0.6], stopping, Plateau(patience=1, gamma=0.5))
    # No improvement at epochs 1-2: a cut (wait 2 > 1), again at 3-4; epoch 5 improves and resets the count.
    assert state.plateau_scale == 0.25 and state.plateau_wait == 1


def test_metrics_are_checked_against_the_task_and_compared_in_their_direction():
    check_metric("val_mae", "regression")
    with pytest.raises(Exception, match="'val_mae' does not apply to classification"):
        check_metric("val_mae", "classification")
    assert is_improvement(0.9, float("nan"), "val_loss", 0.0)
    assert is_improvement(0.9, 1.0, "val_loss", 0.0) and not is_improvement(0.9, 1.0, "val_accuracy", 0.0)
    assert not is_improvement(0.95, 1.0, "val_loss", 0.1)
