"""Sequence augment (pipeline/kinds/sequence/augment.py): seeded copies, each technique as intended."""

from __future__ import annotations

import numpy as np

from pipeline.kinds.sequence.augment import augment_windows
from pipeline.params import SequenceAugment


def test_augment_is_deterministic_and_each_technique_changes_windows_as_intended():
    rng = np.random.default_rng(0)
    x = (5 + rng.normal(size=(50, 12, 2))).astype(np.float32)
    y = (5 + rng.normal(size=(50, 3))).astype(np.float32)
    std = np.array([1.0, 1.0])

    def run(seed=0, copies=1, **enabled):
        cfg = SequenceAugment.model_validate({**{k: {"enabled": True, **v} for k, v in enabled.items()}, "copies": copies})
        return augment_windows(x, y, cfg, std, target_index=0, seed=seed)

    same_x, same_y, added = run()
    assert same_x is x and same_y is y and added == {}  # nothing enabled: unchanged
    a, b = run(jitter={"std": 0.1}), run(jitter={"std": 0.1})
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], run(seed=1, jitter={"std": 0.1})[0])
    jx, jy, added = run(copies=2, jitter={"std": 0.1})
    assert jx.shape == (150, 12, 2) and added == {"jitter": 100} and np.array_equal(jx[:50], x)
    assert np.array_equal(jy[50:100], y) and 0.05 < np.std(jx[50:100] - x) < 0.15  # noise on inputs, truth kept

    sx, sy, _ = run(scaling={"std": 0.2})
    factors = sx[50:] / x  # one factor per window and feature
    assert np.allclose(factors, factors[:, :1, :], atol=1e-5) and factors.std() > 0.05
    assert np.allclose(sy[50:] / y, factors[:, 0, :1], atol=1e-5)  # the targets scale with their own feature

    wx, wy, _ = run(window_slicing={"ratio": 0.5})
    assert np.array_equal(wx[50:, -1], x[:, -1]) and np.array_equal(wy[50:], y)  # forecast origin kept
    assert not np.allclose(wx[50:, 0], x[:, 0])
    assert (wx[50:].min(axis=1) >= x.min(axis=1) - 1e-5).all()  # interpolation stays inside the values
