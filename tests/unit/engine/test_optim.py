import pytest
import torch

from pipeline.engine import class_weights, lr_at, make_optimizer
from pipeline.models import build_model
from pipeline.params import TrainParams
from tests.unit.engine.conftest import config_for, quick


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


def test_pretrained_tensors_get_their_own_learning_rate_group(data):
    pre, _, _ = data
    cfg = quick(warm_start={"pretrained_lr_scale": 0.1})
    model = build_model(config_for(pre, cfg))
    names = [name for name, _ in model.named_parameters()]
    optimizer = make_optimizer(model, cfg, frozenset(names[:-2]))  # all but the head
    assert [group["lr_scale"] for group in optimizer.param_groups] == [1.0, 0.1]
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, len(names) - 2]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_multi_tensor_update_gives_the_per_tensor_loop_s_numbers_bit_for_bit(data, optimizer):
    """make_optimizer's foreach kernels (and the clipping's) change the speed on a CPU, not a bit of the weights."""
    pre, _, _ = data
    cfg = quick(optimizer=optimizer, momentum=0.9, weight_decay=1e-3)
    torch.manual_seed(0)
    first = build_model(config_for(pre, cfg))
    second = build_model(config_for(pre, cfg))
    second.load_state_dict(first.state_dict())
    x_num, x_cat = torch.randn(64, first.config.n_numeric), torch.zeros(64, len(first.config.cardinalities), dtype=torch.long)
    y = torch.randint(0, first.config.n_classes, (64,))
    loop = make_optimizer(first, cfg)
    for group in loop.param_groups:
        group["foreach"] = False  # PyTorch's per-tensor loop, its CPU default
    for model, opt, foreach in ((first, loop, False), (second, make_optimizer(second, cfg), True)):
        assert all(group["foreach"] is foreach for group in opt.param_groups)
        torch.manual_seed(1)  # the same dropout masks
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x_num, x_cat), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1, foreach=foreach)
            opt.step()
    assert all(torch.equal(value, second.state_dict()[name]) for name, value in first.state_dict().items())
