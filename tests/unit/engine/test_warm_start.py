from dataclasses import replace

import pytest
import torch

from pipeline.core.errors import ParamsError
from pipeline.engine import fit, load_matching, warm_start_state
from pipeline.models import build_model
from tests.unit.engine.conftest import config_for, quick


def test_warm_start_loads_matching_tensors_and_fine_tunes_from_them(data):
    pre, train, val = data
    cfg = quick(epochs=6)
    source, source_best, source_history = fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification")
    # A tiny learning rate: after one epoch the warm model is still the source model.
    still = quick(epochs=2, lr=1e-9, warmup_epochs=0, scheduler="none")
    warm, _, warm_history = fit(
        train, val, config_for(pre, still), still, seed=1, task="classification", init_state=source_best["model_state"]
    )
    warm_weights = dict(warm.named_parameters())
    for key, value in source.named_parameters():  # weights, not batch-norm statistics (those follow the data)
        assert torch.allclose(warm_weights[key], value, atol=1e-5), key
    assert warm_history.epochs[0]["val_accuracy"] == pytest.approx(
        source_history.epochs[source_history.best_epoch]["val_accuracy"], abs=0.02
    )


def test_a_head_for_other_classes_starts_fresh_and_frozen_layers_do_not_move(data):
    pre, train, val = data
    cfg = quick(epochs=3, warm_start={"freeze": ("embeddings", "body.0"), "pretrained_lr_scale": 0.5})
    config = config_for(pre, cfg)
    source = build_model(replace(config, n_classes=5)).state_dict()  # another class count: another head
    model = build_model(config)
    loaded, skipped = load_matching(model, source)
    assert set(skipped) == {"head.weight", "head.bias"} and "body.0.weight" in loaded

    tuned, _, _ = fit(train, val, config, cfg, seed=0, task="classification", init_state=source)
    for key in ("body.0.weight", "embeddings.0.weight"):
        assert torch.equal(tuned.state_dict()[key], source[key]), key
    assert not torch.equal(
        tuned.state_dict()["body.1.weight"], source["body.1.weight"]
    )  # batch-norm scale: loaded, not frozen


def test_warm_start_errors_name_the_key(data, tmp_path):
    pre, train, val = data
    cfg = quick(epochs=1, warm_start={"freeze": ("encoder",)})
    state = fit(train, val, config_for(pre, quick(epochs=1)), quick(epochs=1), seed=0, task="classification")[1]
    with pytest.raises(ParamsError, match=r"train.warm_start.freeze: 'encoder' names no parameter"):
        fit(train, val, config_for(pre, cfg), cfg, seed=0, task="classification", init_state=state["model_state"])
    torch.save(state, tmp_path / "model.pt")
    transformer = quick(model={"architecture": "ft_transformer", "d_token": 16, "heads": 2})
    with pytest.raises(ParamsError, match="holds a mlp model but train.model builds a ft_transformer"):
        warm_start_state(tmp_path / "model.pt", config_for(pre, transformer))
    assert warm_start_state(tmp_path / "absent.pt", config_for(pre, transformer)) is None
