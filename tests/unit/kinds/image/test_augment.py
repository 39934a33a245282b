"""Image augment (pipeline/kinds/image/augment.py): originals first, seeded copies, each transform as intended."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ParamsError
from pipeline.kinds.image.augment import affine, augment_images
from pipeline.kinds.image.ingest import DIGITS_RANGE
from pipeline.params import ImageAugment
from tests.unit.kinds.image.conftest import image_params

# The affine transforms run in torch: one thread, so a busy machine's other processes cannot slow them.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def only(**enabled) -> ImageAugment:
    values = {name: {"enabled": False} for name in ("rotation", "shift", "flip", "noise")}
    for name, settings in enabled.items():
        values[name] = {"enabled": True, **settings}
    return ImageAugment.model_validate({**values, "copies": 1})


def test_augment_keeps_the_originals_first_and_is_deterministic(digits):
    x, y = digits
    cfg = ImageAugment.model_validate(
        {"rotation": {"enabled": True}, "shift": {"enabled": True}, "noise": {"enabled": True}, "copies": 2}
    )
    out, out_y = augment_images(x, y, cfg, DIGITS_RANGE, seed=3)
    assert out.shape == (150, 1, 8, 8) and list(out_y) == list(y) * 3
    np.testing.assert_array_equal(out[:50], x)
    np.testing.assert_array_equal(out, augment_images(x, y, cfg, DIGITS_RANGE, seed=3)[0])
    assert not np.array_equal(out, augment_images(x, y, cfg, DIGITS_RANGE, seed=4)[0])
    assert out.min() >= 0 and out.max() <= 16
    unchanged, _ = augment_images(x, y, only(), DIGITS_RANGE, seed=3)
    assert unchanged is x  # nothing enabled: the training images as they were


def test_flip_mirrors_left_right(digits):
    x, y = digits
    out, _ = augment_images(x, y, only(flip={}), DIGITS_RANGE, seed=0)
    copies = out[50:]
    mirrored = np.array([np.array_equal(c, np.flip(o, axis=-1)) for c, o in zip(copies, x)])
    same = np.array([np.array_equal(c, o) for c, o in zip(copies, x)])
    assert (mirrored | same).all() and 10 < mirrored.sum() < 40


def test_rotation_and_shift_move_pixels_as_intended(digits):
    x, _ = digits
    turned = affine(x[:3], np.full(3, 90.0), np.zeros((3, 2)), fill=0.0)
    np.testing.assert_allclose(turned, np.rot90(x[:3], k=1, axes=(2, 3)), atol=1e-4)  # counter-clockwise
    moved = affine(x[:3], np.zeros(3), np.array([[0.0, 1.0]] * 3), fill=0.0)  # one pixel right
    np.testing.assert_allclose(moved[..., 1:], x[:3, ..., :-1], atol=1e-4)
    np.testing.assert_allclose(moved[..., 0], 0.0, atol=1e-4)
    lifted = affine(x[:1] + 5, np.zeros(1), np.array([[1.0, 0.0]]), fill=5.0)  # down, edge filled with 5
    np.testing.assert_allclose(lifted[..., 0, :], 5.0, atol=1e-4)


def test_noise_has_the_configured_scale(digits):
    x, y = digits
    out, _ = augment_images(x, y, only(noise={"std": 0.01}), DIGITS_RANGE, seed=0)
    inside = (x > 1) & (x < 15)  # away from the clipped ends of the range
    assert np.std((out[50:] - x)[inside]) == pytest.approx(0.01 * 16, rel=0.1)


def test_tabular_augmentations_are_unknown_keys_for_images(tmp_path):
    with pytest.raises(ParamsError, match=r"augment\.mixup: unknown key; allowed: copies, flip, noise, rotation, shift"):
        image_params(tmp_path, augment={"mixup": {"enabled": True, "fraction": 0.3, "alpha": 0.4}})
