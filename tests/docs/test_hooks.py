"""The pages docs/hooks.py generates: they cover every params key, every DVC stage and every benchmark output.

The hook is plain Python (MkDocs is only needed to build the site), so these run in the fast subset.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from pipeline.params import Params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("evergreen_docs_hooks", REPO / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_yaml_comments_name_the_key_they_describe(hooks: ModuleType) -> None:
    text = """# the file's header, not a key's

# the paths, leading
paths:
  raw: data/raw   # put files here
train:
  model:          # the network
    hidden: [1, 2]
  lr: 0.1         # first part
                  # and its continuation
  note: "a # inside quotes"  # the real comment
augment: {noise: {enabled: false}}   # a flow mapping: its block key's
"""
    assert hooks.yaml_comments(text) == {
        "paths": "the paths, leading",
        "paths.raw": "put files here",
        "train.model": "the network",
        "train.lr": "first part and its continuation",
        "train.note": "the real comment",
        "augment": "a flow mapping: its block key's",
    }


def _sections(cls: type[BaseModel], hooks: ModuleType, seen: set[type]) -> None:
    if cls in seen:
        return
    seen.add(cls)
    for info in cls.model_fields.values():
        for variant in hooks.section_variants(info.annotation):
            _sections(variant, hooks, seen)


def test_params_reference_lists_every_key_of_every_section(hooks: ModuleType) -> None:
    text = hooks.params_reference()
    sections: set[type] = set()
    for kind_params in get_args(Params):
        _sections(kind_params, hooks, sections)
    missing = []
    for section in sections:
        for name in section.model_fields:
            # a key is shown relative to its table (`lr`) or dotted below a sub-section (`early_stopping.metric`)
            if not re.search(rf"`(?:[\w.<>]+\.)?{re.escape(name)}`", text):
                missing.append(f"{section.__name__}.{name}")
    assert not missing, f"keys absent from the params reference: {missing}"
    for kind in ("tabular", "image", "sequence", "text"):
        assert f"`ingest` ({kind})" in text
    assert "`train.model`: mlp" in text and "`train.model`: lstm / gru" in text


def test_params_reference_carries_the_comments_of_the_params_files(hooks: ModuleType) -> None:
    text = hooks.params_reference()
    # params.yaml's comment on a tabular key, and an example file's on its own kind's key
    assert "put your own source files here: ingest depends on this folder" in text
    assert "input steps per window (96 half-hours = 2 days)" in text


def test_every_dvc_stage_has_a_page_with_its_card(hooks: ModuleType) -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name in stages:
        page = REPO / "docs" / "pipeline" / f"{name}.md"
        assert page.is_file(), f"no documentation page for the DVC stage {name!r}"
        assert f"<!-- evergreen:stage {name} -->" in page.read_text()
        card = hooks.stage_card(name)
        assert f"python -m pipeline.stages.{name}" in card and f"cmd: python -m pipeline.stages.{name}" in card


def test_every_benchmark_output_has_its_page(hooks: ModuleType) -> None:
    benches = {bench.name: bench for bench in hooks.benchmarks()}
    outputs = sorted((REPO / "bench").glob("*.out"))
    assert outputs
    for out in outputs:
        bench = benches[out.stem]
        assert bench.output == out.read_text()
        page = hooks.benchmark_page(bench)
        assert out.read_text().rstrip("\n") in page and bench.summary in page
    index = hooks.benchmark_index("benchmarks/index.md", list(benches.values()))
    assert all(f"({name}.md)" in index for name in benches)
    assert "common" not in benches  # bench/common.py holds shared pieces, not a benchmark


def test_a_missing_screenshot_says_how_to_make_it(hooks: ModuleType, tmp_path: Path) -> None:
    absent = hooks.screenshot("lifecycle/index.md", "nothing.png | A caption", tmp_path)
    assert absent.startswith('!!! note "Screenshot: A caption"') and "docs/screenshots.py" in absent
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "here.png").write_bytes(b"png")
    assert hooks.screenshot("lifecycle/index.md", "here.png | A caption", tmp_path) == "![A caption](../img/here.png)"
