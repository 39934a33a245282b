"""The architecture as tests: the kind table, the kind contract, and what the torch-free layers import.

import-linter (``.importlinter``, run in CI) checks the static import graph; these tests check what is
actually loaded at run time, in a fresh interpreter, so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.kinds.base import KindRuntime, KindStages

TORCH_FREE = [
    "pipeline.kinds",
    "pipeline.kinds.tabular.runtime",
    "pipeline.kinds.image.runtime",
    "pipeline.kinds.sequence.runtime",
    "pipeline.kinds.text.runtime",
    "pipeline.lifecycle.registry",
    "pipeline.lifecycle.gate",
    "pipeline.lifecycle.landing",
    "pipeline.lifecycle.drift",
    "pipeline.lifecycle.monitoring",
    "pipeline.onnxio.session",
    "pipeline.params",
    "serving.app",
    "serving.batch",
    "flows.retrain",
    "flows.monitor",
]


def _loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


@pytest.mark.parametrize("module", TORCH_FREE)
def test_the_lifecycle_and_the_runtime_halves_never_load_torch(module):
    loaded = _loaded_after_import(module)
    assert "torch" not in loaded, f"importing {module} loads torch"
    assert not {name for name in loaded if name.startswith("pipeline.stages") or name.startswith("pipeline.engine")}


def test_a_stage_loads_only_the_kind_it_runs():
    code = (
        "import sys; from pipeline import kinds; kinds.get('tabular').stages(); "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('pipeline.kinds.'))))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert any(name.startswith("pipeline.kinds.tabular.") for name in loaded)
    assert not any(
        name.startswith(("pipeline.kinds.image", "pipeline.kinds.sequence", "pipeline.kinds.text")) for name in loaded
    )


@pytest.mark.parametrize("name", sorted(kinds.KINDS))
def test_every_kind_implements_the_whole_contract(name):
    kind = kinds.get(name)
    assert kind.name == name
    for protocol, implementation in ((KindStages, kind.stages()), (KindRuntime, kind.runtime)):
        for member, declared in inspect.getmembers(protocol, inspect.isfunction):
            if member.startswith("_"):
                continue
            provided = getattr(implementation, member, None)
            assert callable(provided), f"kind {name!r} has no {protocol.__name__}.{member}"
            wanted = [p for p in inspect.signature(declared).parameters if p != "self"]
            assert list(inspect.signature(provided).parameters) == wanted, f"{name}: {member} signature"


def test_an_unknown_kind_is_one_line_naming_the_known_ones():
    with pytest.raises(DataError, match=r"unknown data kind 'video'; known: \['image', 'sequence', 'tabular', 'text'\]"):
        kinds.get("video")
