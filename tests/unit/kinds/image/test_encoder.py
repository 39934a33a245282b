"""The image encoder (pipeline/kinds/image/encoder.py): per-channel normalisation and label codes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.kinds.image.data import ImageSchema
from pipeline.kinds.image.encoder import ImageNormaliser, label_codes
from pipeline.params import ImageFeatures


def test_normaliser_standardises_each_channel_and_keeps_constant_channels_finite():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (20, 3, 4, 5)).astype(np.float32)
    x[:, 2] = 7.0  # a constant channel: std 0 would divide by zero
    encoder = ImageNormaliser.fit(x, ImageSchema("animal", 3, 4, 5, (0.0, 255.0), ("cat", "dog")), ImageFeatures())
    assert encoder.shape == (3, 4, 5) and encoder.classes == ("cat", "dog") and encoder.std[2] == 1.0
    z = encoder.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:, :2].mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, :2].std(axis=(0, 2, 3)), 1.0, rtol=1e-4)
    np.testing.assert_array_equal(z[:, 2], 0.0)


def test_label_codes_follow_the_class_order_and_name_unknown_labels():
    assert label_codes(np.array(["dog", "cat", "dog"]), ("cat", "dog")).tolist() == [1, 0, 1]
    with pytest.raises(DataError, match=r"labels \['owl'\] are not among the classes \['cat', 'dog'\]"):
        label_codes(np.array(["cat", "owl"]), ("cat", "dog"))
