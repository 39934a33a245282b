"""The shared landing area ($EVERGREEN_LANDING): batches landed once, pulled whole by every host that screens.

Against a shared folder and a real S3 server (moto, tests/s3.py): the monitor's host and a retrain's fresh
clone each pull the same batches into their own ``paths.landing``, screen them there, and never pull a
batch twice, nor one they quarantined.
"""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core.errors import DataError
from pipeline.lifecycle.landing import REASON_SUFFIX, publish, pull_shared_landing, screen_landed
from pipeline.params.paths import LANDING_ENV
from tests.conftest import make_table
from tests.unit.lifecycle.test_landing import COLUMNS, params  # noqa: F401  (the fixture)


def batch(tmp_path, name: str, rows: int = 40, start: int = 6):
    frame = make_table(rows, seed=rows)
    frame["period"] = start
    path = tmp_path / "made" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    frame[COLUMNS].to_parquet(path, index=False)
    return path


@pytest.fixture(params=["folder", "s3"])
def shared(request, tmp_path) -> str:
    if request.param == "folder":
        folder = tmp_path / "shared-landing"
        folder.mkdir()
        return str(folder)
    return request.getfixturevalue("s3").bucket() + "/landing"


def test_batches_published_once_are_pulled_whole_by_each_host_once(shared, tmp_path):
    publish(batch(tmp_path, "wave_6.parquet"), shared)
    publish(batch(tmp_path, "wave_7.parquet", start=7), shared)
    with pytest.raises(DataError, match=r"wave_6\.parquet: a batch with this name has already landed in the shared area"):
        publish(batch(tmp_path, "wave_6.parquet"), shared)
    monitor_host, worker = tmp_path / "monitor" / "landing", tmp_path / "worker" / "landing"
    assert pull_shared_landing(shared, monitor_host, tmp_path / "monitor" / "q") == ["wave_6.parquet", "wave_7.parquet"]
    assert pull_shared_landing(shared, worker, tmp_path / "worker" / "q") == ["wave_6.parquet", "wave_7.parquet"]
    for host in (monitor_host, worker):
        assert pd.read_parquet(host / "wave_7.parquet").equals(pd.read_parquet(tmp_path / "made" / "wave_7.parquet"))
        assert sorted(p.name for p in host.iterdir()) == ["wave_6.parquet", "wave_7.parquet"]  # no temporaries left
    assert pull_shared_landing(shared, worker, tmp_path / "worker" / "q") == []


def test_a_batch_quarantined_here_is_not_pulled_again(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "bad.csv").write_text("nothing,like,the,source\n")
    (shared / ".uploading.csv").write_text("a producer's upload in progress\n")
    quarantine = tmp_path / "q"
    quarantine.mkdir()
    (quarantine / f"bad.csv{REASON_SUFFIX}").write_text("columns do not match")
    assert pull_shared_landing(str(shared), tmp_path / "landing", quarantine) == []


def test_a_folder_batch_is_published_and_pulled_as_one_folder(tmp_path):
    shared = tmp_path / "shared"
    (tmp_path / "made" / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "made" / "photos" / "cat" / "1.png").write_bytes(b"png")
    publish(tmp_path / "made" / "photos", str(shared))
    assert [p.name for p in shared.iterdir()] == ["photos"]
    assert pull_shared_landing(str(shared), tmp_path / "landing", tmp_path / "q") == ["photos"]
    assert (tmp_path / "landing" / "photos" / "cat" / "1.png").read_bytes() == b"png"


def test_a_missing_shared_folder_is_one_clear_error_and_an_empty_prefix_is_nothing_new(s3, tmp_path):
    with pytest.raises(DataError, match=r"shared landing area .*nowhere: no such folder \(check \$EVERGREEN_LANDING\)"):
        pull_shared_landing(str(tmp_path / "nowhere"), tmp_path / "landing", tmp_path / "q")
    assert pull_shared_landing(s3.bucket() + "/landing", tmp_path / "landing", tmp_path / "q") == []


def test_screening_pulls_from_the_shared_area_first_and_quarantines_here(params, shared, tmp_path, monkeypatch):  # noqa: F811
    publish(batch(tmp_path, "wave_6.parquet"), shared)
    bad = tmp_path / "made" / "broken.csv"
    bad.write_text("x,y\n1,2\n")
    publish(bad, shared)
    monkeypatch.setenv(LANDING_ENV, shared)
    good, moved = screen_landed(params, tmp_path)
    assert [b.path.name for b in good] == ["wave_6.parquet"] and [p.name for p in moved] == ["broken.csv"]
    good, moved = screen_landed(params, tmp_path)  # the quarantined batch is not pulled back in
    assert [b.path.name for b in good] == ["wave_6.parquet"] and moved == []
