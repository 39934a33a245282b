"""`dvc plots show` and `dvc plots diff` load every plot a run wrote and warn about none, for every kind and task.

dvc.yaml declares every task's evaluation plots (a classifier's confusion, ROC, precision-recall and calibration,
a forecaster's forecast and horizon errors, a table regressor's predicted-vs-actual and residuals). DVC 3.67 warns
"failed to load some plots" about a declared plot file that is absent, so each plot is a folder, an output of
evaluate that a run leaves empty when its task has no such plot: an empty folder loads as no plot. Each kind's
example runs on a small slice up to evaluate in a temporary copy of the repo.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from pipeline.stages.evaluate import PLOTS
from tests.conftest import REPO, copy_repo, edit_params
from tests.pipeline.test_dvc_repro import run

WARNING = "failed to load some plots"
# The example, its slice (small: only the plots matter) and the plot folders its task fills.
CLASSIFIER = {"confusion", "roc", "precision_recall", "calibration"}
EXAMPLES = {
    "tabular": (
        None,
        {"ingest": {"max_rows": 3000}, "train": {"epochs": 2}, "evaluate": {"baseline_max_iter": 20}},
        CLASSIFIER,
    ),
    "regression": (
        "examples/ames/params.yaml",
        {"ingest": {"max_rows": 800, "min_rows": 100}, "train": {"epochs": 2}, "evaluate": {"baseline_max_iter": 20}},
        {"predicted_vs_actual", "residuals"},
    ),
    "image": (
        "examples/digits/params.yaml",
        {"ingest": {"max_rows": 400, "min_rows": 100}, "train": {"epochs": 2}},
        CLASSIFIER,
    ),
    "sequence": (
        "examples/elecdemand/params.yaml",
        {
            "ingest": {"max_rows": 1200, "min_rows": 100},
            "train": {
                "epochs": 2,
                "model": {"architecture": "lstm", "hidden": 8, "layers": 1, "dropout": 0.0, "bidirectional": False},
            },
        },
        {"forecast", "horizon_errors"},
    ),
    "text": (
        "examples/tweets/params.yaml",
        {
            "ingest": {"max_rows": 800, "min_rows": 100},
            "features": {"max_length": 16},
            "train": {
                "epochs": 1,
                "warmup_epochs": 0,
                "model": {"architecture": "text_transformer", "d_model": 8, "layers": 1, "heads": 2},
            },
            "evaluate": {"baseline_max_iter": 20},
        },
        CLASSIFIER,
    ),
}


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def plot_folders(entries: list) -> set[str]:
    prefix = "${paths.eval_plots}/"
    names = {next(iter(e)) if isinstance(e, dict) else e for e in entries}
    return {name.removeprefix(prefix) for name in names if name.startswith(prefix)}


def test_every_plot_folder_is_an_output_of_evaluate_and_a_top_level_plot():
    pipeline = dvc_yaml()
    assert plot_folders(pipeline["stages"]["evaluate"]["outs"]) == set(PLOTS)
    assert plot_folders(pipeline["plots"]) == set(PLOTS)
    assert {name for _, _, filled in EXAMPLES.values() for name in filled} == set(PLOTS)  # every plot is tested


def test_the_plots_page_is_git_ignored_but_its_template_is_committed():
    ignored = subprocess.run(["git", "check-ignore", "dvc_plots/index.html", "dvc_plots/static/x.json"], cwd=REPO)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "dvc_plots/template.html"], cwd=REPO).returncode == 1
    tracked = subprocess.run(["git", "ls-files", "dvc_plots"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert tracked == ["dvc_plots/template.html"]


@pytest.mark.slow
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_plots_show_and_diff_load_this_runs_plots_and_warn_about_none(example, tmp_path):
    params, sliced, filled = EXAMPLES[example]
    root = copy_repo(tmp_path / "evergreen")
    if params is not None:
        shutil.copy(root / params, root / "params.yaml")
    edit_params(root, **sliced)
    run(root, "dvc", "repro", "evaluate")
    plots = root / "reports/evaluate/plots"
    assert {p.name for p in plots.iterdir() if p.is_dir() and any(p.iterdir())} == filled

    shown = run(root, "dvc", "plots", "show", "-o", str(tmp_path / "shown"))
    assert WARNING not in shown.stdout + shown.stderr
    page = (tmp_path / "shown/index.html").read_text()
    for name in PLOTS:  # each plot's element is named after its file (reports/evaluate/plots/<name>/<name>.csv)
        assert (f"reports_evaluate_plots_{name}_{name}_csv" in page) == (name in filled), name
    assert re.search(r"val/\w+\.tsv", page)  # the training curves beside

    # The same at a committed revision, read from DVC's cache: the empty folders are outputs too.
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "run"], cwd=root, check=True
    )
    shutil.rmtree(plots)
    run(root, "dvc", "checkout", "evaluate")
    assert {p.name for p in plots.iterdir() if p.is_dir()} == set(PLOTS)
    diffed = run(root, "dvc", "plots", "diff", "HEAD", "-o", str(tmp_path / "diffed"))
    assert WARNING not in diffed.stdout + diffed.stderr
