"""dvc.lock stays true: the same stages on the same data give bit-identical outputs, and CI can tell when the
committed dvc.lock no longer matches the committed code and params.

1. Each kind's slice is reproduced twice, in two temporary copies of the repo at different paths: every out's
   hash in the two dvc.lock files must be the same. A timing, host name, wall-clock time or absolute path in any
   DVC output (reports, DVCLive files, model card, preprocessor, ONNX metadata) would differ. TensorBoard's event
   files (which do carry times and the host name) are written, but git-ignored and no DVC output.
2. ``.ci/check_dvc_lock`` on a fresh clone (no data, no DVC cache): passes when the committed dvc.lock matches the
   committed code and params, fails in one line per stale dependency naming it and its stages.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, copy_repo, edit_params, tool_env
from tests.pipeline.test_dvc_repro import SLICE as TABULAR_SLICE
from tests.pipeline.test_dvc_repro import run
from tests.pipeline.test_image_repro import SLICE as IMAGE_SLICE

pytestmark = pytest.mark.slow

# kind -> (the example params copied over params.yaml, or None for the default; the slice)
KINDS = {
    "tabular": (None, TABULAR_SLICE),
    "image": ("examples/digits/params.yaml", IMAGE_SLICE),
    "sequence": (
        "examples/elecdemand/params.yaml",
        {
            "ingest": {"max_rows": 1200, "min_rows": 100},
            "train": {
                "epochs": 2,
                "model": {"architecture": "lstm", "hidden": 16, "layers": 1, "dropout": 0.0, "bidirectional": False},
            },
        },
    ),
}
CHECK = ".ci/check_dvc_lock"


def prepare(root: Path, kind: str) -> Path:
    """A copy of the repo with the kind's params and slice, committed."""
    example, sliced = KINDS[kind]
    root.mkdir(parents=True)
    copy_repo(root)
    if example is not None:
        shutil.copy(root / example, root / "params.yaml")
    edit_params(root, **sliced)
    git(root, "commit", "-qam", f"{kind} slice")
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=root, check=True)


def locked_outs(root: Path) -> dict[str, str]:
    """Every stage's outs (metrics and plots included) in dvc.lock: ``stage:path`` -> md5."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {f"{name}:{out['path']}": out["md5"] for name, stage in stages.items() for out in stage.get("outs", [])}


@pytest.fixture(scope="module")
def reproduced_twice(tmp_path_factory) -> Callable[[str], tuple[Path, Path]]:
    """Two copies of the repo (different paths, the same commit) reproduced on the same slice; built once per
    kind and module."""
    built: dict[str, tuple[Path, Path]] = {}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in built:
            base = tmp_path_factory.mktemp(f"lock-{kind}")
            first = prepare(base / "first", kind)
            # The second copy is a clone of the first's commit: the same code and params, whatever changes in the
            # checkout meanwhile; another path, its own empty DVC cache.
            second = base / "second-copy"
            subprocess.run(["git", "clone", "-q", str(first), str(second)], check=True)
            for root in (first, second):
                run(root, "dvc", "repro")
            built[kind] = (first, second)
        return built[kind]

    return get


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_same_run_twice_gives_bit_identical_outputs(reproduced_twice, kind):
    first, second = reproduced_twice(kind)
    outs = locked_outs(first)
    assert len(outs) >= 15  # every stage's outs, metrics and plots
    differing = {out for out, md5 in outs.items() if locked_outs(second).get(out) != md5}
    assert not differing, f"outputs that differ between two identical runs: {sorted(differing)}"
    assert (first / "dvc.lock").read_text() == (second / "dvc.lock").read_text()


def test_tensorboard_events_are_written_outside_dvc_outputs(reproduced_twice):
    first, _ = reproduced_twice("tabular")
    tensorboard = yaml.safe_load((first / "params.yaml").read_text())["paths"]["tensorboard"]
    assert list((first / tensorboard).glob("events.out.tfevents.*"))  # written ...
    assert not [out for out in locked_outs(first) if out.split(":", 1)[1].startswith(tensorboard)]  # ... not an out
    ignored = subprocess.run(["git", "check-ignore", "-q", tensorboard], cwd=first)
    assert ignored.returncode == 0  # and never committed by accident


@pytest.fixture
def fresh_clone(reproduced_twice, tmp_path) -> Path:
    """A fresh clone of a reproduced workspace whose dvc.lock is committed: no outputs, no DVC cache."""
    first, _ = reproduced_twice("tabular")
    source = tmp_path / "source"
    shutil.copytree(first, source, symlinks=True)
    git(source, "add", "dvc.lock")
    git(source, "commit", "-qm", "dvc.lock")
    subprocess.run(["git", "clone", "-q", str(source), str(tmp_path / "clone")], check=True)
    return tmp_path / "clone"


def check_lock(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", CHECK], cwd=root, env=tool_env(), capture_output=True, text=True, timeout=300)


def test_check_passes_on_a_fresh_clone_whose_lock_is_true(fresh_clone):
    assert not (fresh_clone / "data/ingested").exists()  # nothing but git's files
    result = check_lock(fresh_clone)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_names_changed_code_and_params_and_the_stages_they_feed(fresh_clone):
    engine = fresh_clone / "pipeline/engine/__init__.py"
    engine.write_text(engine.read_text() + "\n# changed after dvc.lock was written\n")
    edit_params(fresh_clone, evaluate={"calibration_bins": 10})
    result = check_lock(fresh_clone)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr  # one line per stale dependency; missing data is no staleness
    assert "pipeline/engine changed since it was written (stages train, evaluate, export)" in result.stderr
    assert "params.yaml evaluate changed since it was written (stage evaluate)" in result.stderr
    assert all(line.startswith("dvc.lock is stale: ") and line.endswith("commit dvc.lock") for line in lines)


def test_check_names_a_changed_command_and_a_stage_missing_from_the_lock(fresh_clone):
    pipeline = fresh_clone / "dvc.yaml"
    pipeline.write_text(
        pipeline.read_text().replace("cmd: python -m pipeline.stages.clean", "cmd: python -m pipeline.stages.clean -v")
    )
    lock = yaml.safe_load((fresh_clone / "dvc.lock").read_text())
    del lock["stages"]["export"]
    (fresh_clone / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    result = check_lock(fresh_clone)
    assert result.returncode == 1
    assert "the command of stage clean changed since it was written (stage clean)" in result.stderr
    assert "stage export is in dvc.yaml but not in dvc.lock" in result.stderr


def test_the_check_is_an_executable_script():
    assert (REPO / CHECK).stat().st_mode & 0o111
