"""The DVC remote policy of the retrain flow: what a pull or push means, when to push, which dvc.lock a
fresh clone takes, where the registry is, and what a fresh workspace refuses.

The parsing tests read DVC 3's own messages; the tests marked slow run the real ``dvc`` on a one-stage
project in a temporary git repository with a local folder as its remote.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flows.common import (
    DVC_REMOTE_ENV,
    DVC_REMOTE_NAME,
    DvcRemoteError,
    WorkspaceNotShareable,
    dvc_remote,
    lock_to_restore,
    missing_objects,
    prepare_fresh_workspace,
    registry_at,
    transfer,
    transfer_result,
    workspace_root,
)
from pipeline.lifecycle.registry import ModelVersion
from pipeline.params.paths import REGISTRY_ENV, registry_location
from tests.conftest import tool_env

# DVC 3.67's messages, as printed by `dvc pull --allow-missing` on a new remote and by a refused checkout.
MISSING = """Everything is up to date.
WARNING: Some of the cache files do not exist neither locally nor on remote. Missing cache files:
md5: 69b64623f86def16ce17d454b8be41ae
md5: 08e38f389cb309b8dc5fa02670968800.dir
md5: 764efa883dda1e11db47671c4a3bbd9e
"""
UNSAVED = """ERROR: failed to pull data from the cloud - Can't remove the following unsaved files without confirmation. \
Use `--force` to force.
/tmp/ws/out/x
"""


def test_a_pull_from_a_remote_that_lacks_objects_is_first_use_not_failure():
    result = transfer_result("pull", 0, MISSING)
    assert (result.status, result.missing, result.files) == ("first-use", 3, 0)


def test_a_pull_counts_the_files_it_fetched():
    result = transfer_result("pull", 0, "A       models/model.onnx\n39 files fetched and 33 files added\n")
    assert (result.status, result.files, result.missing) == ("done", 39, 0)


def test_a_pull_that_would_overwrite_changed_outputs_keeps_them_and_names_them():
    result = transfer_result("pull", 1, UNSAVED)
    assert result.status == "kept-local"
    assert "/tmp/ws/out/x" in result.detail


def test_a_pull_that_fails_otherwise_is_an_error_naming_dvc_s_words():
    with pytest.raises(DvcRemoteError, match=r"dvc pull failed \(exit 1\).*Unable to connect"):
        transfer_result("pull", 1, "ERROR: failed to pull data from the cloud - Unable to connect to the bucket\n")


def test_no_remote_is_a_status_not_an_error():
    assert transfer_result("pull", 1, "No remote provided and no default remote set.\n").status == "no-remote"


def test_a_push_counts_its_files_and_an_up_to_date_push_is_success():
    assert transfer_result("push", 0, "39 files pushed\n").files == 39
    assert transfer_result("push", 0, "Everything is up to date.\n").status == "done"


def test_a_push_that_leaves_objects_nowhere_fails_because_the_version_would_not_be_reproducible():
    with pytest.raises(DvcRemoteError, match="3 object.*cannot be reproduced elsewhere"):
        transfer_result("push", 0, MISSING)


def test_a_push_that_fails_is_an_error():
    with pytest.raises(DvcRemoteError, match=r"dvc push failed \(exit 1\).*Access Denied"):
        transfer_result("push", 1, "ERROR: failed to push data to the cloud - Access Denied\n")


def test_an_unknown_transfer_is_refused():
    with pytest.raises(ValueError, match="'fetch'.*pull.*push"):
        transfer_result("fetch", 0, "")


def test_missing_objects_counts_only_the_listed_hashes():
    assert missing_objects("Everything is up to date.\n") == 0
    assert missing_objects(MISSING + "ERROR: something else\n") == 3


def version(number: int, revision: str | None) -> ModelVersion:
    return ModelVersion(number=number, path=Path(f"/registry/versions/v{number:04d}"), meta={"git_revision": revision})


def test_a_fresh_clone_takes_the_lock_of_the_newest_version_built_from_its_commit():
    versions = [version(1, "aaa"), version(2, "bbb"), version(3, "aaa"), version(4, None)]
    assert lock_to_restore(versions, "aaa").number == 3
    assert lock_to_restore(versions, "ccc") is None
    assert lock_to_restore(versions, None) is None
    assert lock_to_restore([], "aaa") is None


def test_the_registry_is_the_env_folder_when_set_else_the_params_path(raw_params, tmp_path, monkeypatch):
    from tests.conftest import make_params

    paths = make_params(raw_params, tmp_path).paths
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    assert registry_location(paths) == paths.registry
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path / "shared"))
    assert registry_location(paths) == str(tmp_path / "shared")
    assert registry_at(Path("/anywhere"), paths).root == tmp_path / "shared"


def test_an_empty_evergreen_root_means_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVERGREEN_ROOT", "")
    assert workspace_root() == tmp_path.resolve()


# ---------------------------------------------------------------- the real dvc on a one-stage project

DVC_YAML = """stages:
  make:
    cmd: python -c "import pathlib; p = pathlib.Path('out'); p.mkdir(exist_ok=True); (p / 'x').write_text('hi'); pathlib.Path('m.json').write_text('{}')"
    outs: [out]
    metrics: [m.json]
"""


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def git(cwd: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd).stdout


def dvc_cli(cwd: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd).stdout


@pytest.fixture
def project(tmp_path) -> Path:
    """A git + DVC project with one stage, run once: its outputs are in the local cache only."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    dvc_cli(root, "init", "-q")
    dvc_cli(root, "config", "core.analytics", "false")
    (root / "dvc.yaml").write_text(DVC_YAML)
    dvc_cli(root, "repro", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one stage")
    return root


@pytest.mark.slow
def test_without_a_remote_there_is_none_and_the_env_folder_becomes_the_default_in_the_local_config(project, tmp_path):
    assert dvc_remote(project, None) is None
    assert dvc_remote(project, str(tmp_path / "remote")) == DVC_REMOTE_NAME
    assert str(tmp_path / "remote") in (project / ".dvc" / "config.local").read_text()
    assert git(project, "status", "--porcelain") == ""  # a machine's path never reaches a tracked file
    assert dvc_remote(project, None) == DVC_REMOTE_NAME  # remembered for the next run


@pytest.mark.slow
def test_a_fresh_clone_pulls_nothing_before_the_first_push_and_the_same_bytes_after_it(project, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    remote = dvc_remote(clone, str(tmp_path / "remote"))
    first = transfer(clone, "pull", remote)
    # an empty remote: expected, not a failure; out/ counts once (its .dir listing), m.json once
    assert (first.status, first.missing) == ("first-use", 2)
    assert not (clone / "out").exists()

    pushed = transfer(project, "push", dvc_remote(project, str(tmp_path / "remote")))
    assert (pushed.status, pushed.files) == ("done", 3)
    assert transfer(project, "push", remote).files == 0  # nothing new

    pulled = transfer(clone, "pull", remote)
    assert (pulled.status, pulled.files, pulled.missing) == ("done", 3, 0)
    assert (clone / "out" / "x").read_bytes() == (project / "out" / "x").read_bytes()
    assert "in sync" in dvc_cli(clone, "status", "-c")


@pytest.mark.slow
def test_a_pull_leaves_outputs_changed_since_dvc_lock_in_place(project, tmp_path):
    remote = dvc_remote(project, str(tmp_path / "remote"))
    transfer(project, "push", remote)
    (project / "out" / "x").write_text("changed here")
    (project / ".dvc" / "cache").rename(tmp_path / "moved-cache")  # the pull must fetch, then meets the change
    result = transfer(project, "pull", remote)
    assert result.status == "kept-local" and "out/x" in result.detail
    assert (project / "out" / "x").read_text() == "changed here"


@pytest.mark.slow
def test_a_push_whose_objects_are_nowhere_fails(project, tmp_path):
    remote = dvc_remote(project, str(tmp_path / "remote"))
    (project / ".dvc" / "cache").rename(tmp_path / "moved-cache")
    with pytest.raises(DvcRemoteError, match="cannot be reproduced elsewhere"):
        transfer(project, "push", remote)


@pytest.mark.slow
def test_a_fresh_workspace_refuses_to_run_without_a_shared_registry_or_a_remote(project, tmp_path):
    with pytest.raises(WorkspaceNotShareable, match=REGISTRY_ENV):
        prepare_fresh_workspace(project, {DVC_REMOTE_ENV: str(tmp_path / "remote")})
    with pytest.raises(WorkspaceNotShareable, match=DVC_REMOTE_ENV):
        prepare_fresh_workspace(project, {REGISTRY_ENV: str(tmp_path / "registry")})
