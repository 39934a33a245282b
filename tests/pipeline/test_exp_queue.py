"""Experiments see the workspace's data or refuse: a queued DVC experiment runs in a temporary copy
(.dvc/tmp/exps/...) without the git-ignored landed batches, so ingest stops it in one line instead of letting
it train on fewer rows than the workspace. The real queue (``dvc exp run --queue`` then ``--run-all``, which
follows the queue's worker to the end) runs in a temporary copy of the repo; the rule itself is tested directly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pipeline.core.errors import DataError
from pipeline.lifecycle.landing import land_frame, next_periods
from pipeline.params import load_params, parse_params
from pipeline.stages.ingest import experiment_origin, experiment_sees_the_data, unseen_files
from tests.conftest import copy_repo, tool_env

REFUSAL = "this DVC experiment runs in a temporary copy of the workspace that lacks"


def experiment_env(origin: Path) -> dict[str, str]:
    """What DVC sets for a stage of an experiment queued from ``origin``."""
    return {"DVC_ROOT": str(origin), "DVC_EXP_NAME": "queued-one", "DVC_STAGE": "ingest"}


@pytest.fixture
def workspaces(tmp_path, raw_params):
    """The originating workspace and an experiment's temporary copy of it, both with the checkout's landing file."""
    params = parse_params(raw_params)
    origin, copy = tmp_path / "workspace", tmp_path / "workspace/.dvc/tmp/exps/tmp1234"
    for root in (origin, copy):
        for folder in (params.paths.landing, params.paths.raw):
            (root / folder).mkdir(parents=True)
            (root / folder / ".gitignore").write_text("*\n!.gitignore\n")
    return params.paths, origin, copy


def test_the_workspace_itself_is_no_experiment_copy(tmp_path):
    assert experiment_origin({}, tmp_path) is None  # python -m pipeline.stages.ingest by hand
    assert experiment_origin({"DVC_ROOT": str(tmp_path), "DVC_STAGE": "ingest"}, tmp_path) is None  # dvc repro
    assert experiment_origin(experiment_env(tmp_path), tmp_path) is None  # dvc exp run (in the workspace)
    assert experiment_origin({"DVC_ROOT": str(tmp_path)}, tmp_path / "elsewhere") is None  # not an experiment
    assert experiment_origin(experiment_env(tmp_path), tmp_path / ".dvc/tmp/exps/tmp1") == tmp_path.resolve()


def test_files_missing_or_different_in_the_copy_are_unseen(tmp_path):
    origin, copy = tmp_path / "origin", tmp_path / "copy"
    for root in (origin, copy):
        (root / "sub").mkdir(parents=True)
        (root / "same.csv").write_text("a\n1\n")
    (origin / "only_here.csv").write_text("a\n2\n")
    (origin / "sub/changed.csv").write_text("a\n3\n")
    (copy / "sub/changed.csv").write_text("a\n4\n")  # same size, other content
    (copy / "extra.csv").write_text("a\n5\n")  # the copy may hold more: nothing of the workspace is missing
    assert unseen_files(origin, copy) == ["only_here.csv", "sub/changed.csv"]
    assert unseen_files(tmp_path / "absent", copy) == []


def test_an_experiment_copy_without_a_landed_batch_is_refused_naming_it(workspaces):
    paths, origin, copy = workspaces
    (origin / paths.landing / "year_2008.csv").write_text("year,age\n2008,40\n")
    with pytest.raises(DataError) as refused:
        experiment_sees_the_data(paths, experiment_env(origin), copy)
    message = str(refused.value)
    assert message.startswith(f"{paths.landing}: {REFUSAL} 1 git-ignored file(s)")
    assert "year_2008.csv" in message and f"-C {paths.landing}/year_2008.csv" in message and "\n" not in message


def test_a_raw_source_file_left_behind_is_refused_too(workspaces):
    paths, origin, copy = workspaces
    (origin / paths.raw / "own.csv").write_text("x,label\n1,a\n")
    with pytest.raises(DataError, match=rf"^{paths.raw}: .*own\.csv"):
        experiment_sees_the_data(paths, experiment_env(origin), copy)


def test_an_experiment_copy_holding_the_same_files_runs(workspaces):
    paths, origin, copy = workspaces
    for root in (origin, copy):
        (root / paths.landing / "year_2008.csv").write_text("year,age\n2008,40\n")
    experiment_sees_the_data(paths, experiment_env(origin), copy)
    experiment_sees_the_data(paths, {}, origin)  # the workspace's own run never compares


def dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=root, env=tool_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_a_queued_experiment_sees_the_landed_batches_or_refuses(tmp_path):
    root = copy_repo(tmp_path / "evergreen", ingest={"max_rows": 4000})
    # No dvc.lock: the copy's cache is empty, and an experiment of ingest alone records only ingest.
    for args in (["rm", "-q", "dvc.lock"], ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    params = load_params(root / "params.yaml")
    ((period, frame),) = next_periods(params, 1)
    batch = land_frame(frame, root / params.paths.landing, f"year_{period}").relative_to(root)

    for args in (["--queue", "ingest", "-n", "unseen"], ["--queue", "ingest", "-n", "seen", "-C", str(batch)]):
        queued = dvc(root, "exp", "run", *args)
        assert queued.returncode == 0, queued.stdout + queued.stderr
    dvc(root, "exp", "run", "--run-all")  # follows the queue's worker until both ran; one of them fails

    unseen = dvc(root, "queue", "logs", "unseen").stdout
    refusals = [line for line in unseen.splitlines() if REFUSAL in line]
    assert len(refusals) == 1 and f"(e.g. {batch.name})" in refusals[0], unseen
    assert "landed batch(es)" not in unseen  # nothing was read: the refusal comes first
    seen = dvc(root, "queue", "logs", "seen").stdout
    assert REFUSAL not in seen and "and 1 landed batch(es)" in seen, seen
    status = dvc(root, "queue", "status").stdout
    assert any(line.split()[1:2] == ["unseen"] and "Failed" in line for line in status.splitlines()), status
    assert any(line.split()[1:2] == ["seen"] and "Success" in line for line in status.splitlines()), status
