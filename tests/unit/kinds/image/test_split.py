"""Image split (pipeline/kinds/image/split.py): stratified, disjoint, and no time split without a time column."""

from __future__ import annotations

import pytest

from pipeline.core.errors import ParamsError
from pipeline.kinds.image import clean, ingest, split
from pipeline.kinds.image.data import read_images, split_path
from pipeline.params import SplitParams
from tests.unit.kinds.image.conftest import image_params


def test_split_is_stratified_and_refuses_time(tmp_path):
    params = image_params(tmp_path)
    ingest.run(params.ingest, params.paths, params.seed)
    clean.run(params.clean, params.paths)
    report = split.run(params.split, params.paths, params.seed)
    parts = {name: read_images(split_path(params.paths.split, name)) for name in ("train", "val", "test")}
    assert sum(len(x) for x, _ in parts.values()) == 600 == report["rows"]
    keys = [{hash(img.tobytes()) for img in x} for x, _ in parts.values()]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert all(set(y) == {str(d) for d in range(10)} for _, y in parts.values())
    with pytest.raises(ParamsError, match=r"split\.method 'time' does not apply to ingest\.kind 'image'; choose stratified"):
        image_params(tmp_path, split={"method": "time"})
    timed = SplitParams(method="time", train=0.7, val=0.15, test=0.15)  # the kind refuses it too, should it get one
    with pytest.raises(ParamsError, match=r"^split\.method = 'time' needs a time or group column"):
        split.run(timed, params.paths, params.seed)
