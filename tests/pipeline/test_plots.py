"""`dvc plots show` writes its page into dvc_plots/ beside the committed offline template: the page is git-ignored,
the template is not."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_the_plots_page_is_git_ignored_but_its_template_is_committed():
    ignored = subprocess.run(["git", "check-ignore", "dvc_plots/index.html", "dvc_plots/static/x.json"], cwd=REPO)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "dvc_plots/template.html"], cwd=REPO).returncode == 1
    tracked = subprocess.run(["git", "ls-files", "dvc_plots"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert tracked == ["dvc_plots/template.html"]
