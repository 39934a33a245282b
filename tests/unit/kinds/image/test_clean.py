"""Image clean (pipeline/kinds/image/clean.py): what it drops; tabular clean keys are unknown keys for images."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ParamsError
from pipeline.kinds.image.clean import clean_images
from pipeline.params import ImageClean
from tests.unit.kinds.image.conftest import image_params


def test_clean_drops_duplicates_nan_and_labels_outside_the_allow_list():
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 1, 2, 2)
    x[1] = x[0]  # duplicate with the same label: dropped
    x[2] = x[0]  # same pixels, another label: kept (a conflict, not a copy)
    x[3, 0, 0, 0] = np.nan
    y = np.array(["a", "a", "b", "a", "c", "NA"])
    out_x, out_y, dropped = clean_images(x, y, ImageClean(labels=("a", "b")))
    assert list(out_y) == ["a", "b"] and dropped == {
        "missing_label": 1,
        "label_not_allowed": 1,
        "non_finite_pixels": 1,
        "duplicate": 1,
    }


def test_valid_ranges_is_an_unknown_key_for_images(tmp_path):
    with pytest.raises(
        ParamsError, match=r"clean\.valid_ranges: unknown key; allowed: drop_duplicates, labels, missing_tokens"
    ):
        image_params(tmp_path, clean={"valid_ranges": {"age": [0, 1]}})
