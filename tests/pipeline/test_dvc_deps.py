"""DVC's code deps are exact, for every kind: editing one kind's code re-runs only workspaces of
that kind, and every ``pipeline`` module a stage imports is one of that stage's deps.

Each kind gets a temporary copy of the repo with its params (tabular: params.yaml; image:
examples/digits/params.yaml merged over it; sequence: examples/elecdemand/params.yaml, text:
examples/tweets/params.yaml, copied over it). Nothing is trained: every output gets a placeholder and ``dvc commit --force`` records the
current deps, so ``dvc status`` then answers "what would re-run" in about a second.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, clone_workspace, copy_repo, tool_env

KINDS = ("tabular", "image", "sequence", "text")
MODEL_STAGES = {"train", "evaluate", "export"}  # the stages that use the training engine

pytestmark = pytest.mark.slow


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=root, env=tool_env(), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def kind_workspace(destination: Path, kind: str) -> Path:
    """A copy of the repo whose params select ``kind``, as the kind's repro test builds it."""
    if kind == "image":
        example = yaml.safe_load((REPO / "examples/digits/params.yaml").read_text())
        return copy_repo(destination, **example)
    root = copy_repo(destination)
    if kind == "sequence":
        shutil.copy(root / "examples/elecdemand/params.yaml", root / "params.yaml")
    if kind == "text":
        shutil.copy(root / "examples/tweets/params.yaml", root / "params.yaml")
    return root


def resolved_dvc_yaml(root: Path) -> dict:
    """dvc.yaml with every ``${key.path}`` replaced by its value in the workspace's params.yaml."""
    params = yaml.safe_load((root / "params.yaml").read_text())

    def value(match: re.Match) -> str:
        found = params
        for key in match.group(1).split("."):
            found = found[key]
        return str(found)

    return yaml.safe_load(re.sub(r"\$\{\s*([\w.]+)\s*\}", value, (root / "dvc.yaml").read_text()))


def declared_paths(entries: list) -> list[str]:
    """The paths of a stage's ``deps``/``outs``/``metrics``/``plots`` list (an entry is a path or {path: options})."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def add_placeholders(root: Path) -> None:
    """Stand-ins for every output and every missing data dep (a suffix marks a file, none a folder)."""
    for stage in resolved_dvc_yaml(root)["stages"].values():
        for key in ("deps", "outs", "metrics", "plots"):
            for name in declared_paths(stage.get(key, [])):
                path = root / name
                if path.exists():
                    continue
                if path.suffix:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
                else:
                    path.mkdir(parents=True)
                    (path / "placeholder").write_text("placeholder\n")


@pytest.fixture(scope="module", params=KINDS)
def recorded(request, tmp_path_factory) -> tuple[str, Path]:
    """(kind, a workspace whose dvc.lock records its current deps); tests copy it, none changes it."""
    kind = request.param
    root = kind_workspace(tmp_path_factory.mktemp(f"deps-{kind}"), kind)
    add_placeholders(root)
    run(root, "dvc", "commit", "--force")
    return kind, root


@pytest.fixture
def workspace(recorded, tmp_path) -> tuple[str, Path]:
    """A private copy of the recorded workspace, free to edit."""
    kind, root = recorded
    return kind, clone_workspace(root, tmp_path / "workspace")


def status(root: Path) -> dict:
    return json.loads(run(root, "dvc", "status", "--json").stdout or "{}")


def stage_names(root: Path) -> set[str]:
    return set(resolved_dvc_yaml(root)["stages"])


def touch(path: Path) -> None:
    """A real content change (DVC hashes contents, so a new mtime alone would not count)."""
    path.write_text(path.read_text() + "\n# edited by test_dvc_deps\n")


def kind_packages(root: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted((root / "pipeline/kinds").glob("*/__init__.py"))}


def test_the_recorded_workspace_has_nothing_to_run(workspace):
    kind, root = workspace
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == stage_names(root)
    assert status(root) == {}


def test_editing_another_kinds_code_runs_nothing(workspace):
    kind, root = workspace
    others = {name: package for name, package in kind_packages(root).items() if name != kind}
    assert set(KINDS) - {kind} <= set(others), f"missing kind packages under pipeline/kinds: {sorted(others)}"
    for package in others.values():
        for module in package.rglob("*.py"):
            touch(module)
        (package / "added_by_test.py").write_text('"""A new module in another kind."""\n')
    assert status(root) == {}


def test_editing_the_active_kinds_code_reruns_every_stage(workspace):
    kind, root = workspace
    touch(kind_packages(root)[kind] / "__init__.py")
    changed = status(root)
    assert set(changed) == stage_names(root)
    for stage, reasons in changed.items():
        deps = {path for reason in reasons for path in reason.get("changed deps", {})}
        assert deps and all(path.startswith(f"pipeline/kinds/{kind}") for path in deps), (stage, reasons)


def test_editing_the_engine_reruns_train_evaluate_export_only(workspace):
    kind, root = workspace
    for module in (root / "pipeline/engine").glob("*.py"):
        touch(module)
    assert set(status(root)) == MODEL_STAGES


# ---------------------------------------------------------------- every imported module is a dep

# Run in the workspace: for each stage, forget every pipeline module, import the stage module and
# the kind's stages (what `python -m pipeline.stages.<stage>` loads before it works), list what loaded.
IMPORT_EACH_STAGE = """
import importlib, json, sys
kind, stages = sys.argv[1], sys.argv[2:]
loaded = {}
for stage in stages:
    for name in [n for n in sys.modules if n == "pipeline" or n.startswith("pipeline.")]:
        del sys.modules[name]
    importlib.import_module(f"pipeline.stages.{stage}")
    importlib.import_module("pipeline.kinds").get(kind).stages()
    loaded[stage] = {
        name: module.__file__ for name, module in sys.modules.items()
        if (name == "pipeline" or name.startswith("pipeline.")) and getattr(module, "__file__", None)
    }
print(json.dumps(loaded))
"""

# The function of the kind's stages (pipeline/kinds/base.py: KindStages) each stage calls, where its name differs.
KIND_FUNCTION = {"train": "prepare"}


def module_file(root: Path, name: str) -> Path | None:
    """The source file of module ``name`` in the workspace (None: not a module, e.g. an imported function)."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, name: str) -> dict[str | None, set[str]]:
    """The module names a file imports, by the top-level function or class whose body imports them
    (None: at module level); imports under ``if TYPE_CHECKING:`` load nothing and are left out."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str | None, set[str]] = {}

    def visit(node: ast.AST, scope: str | None) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, scope)
            return
        if scope is None and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            scope = node.name
        names = found.setdefault(scope, set())
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(ast.parse(path.read_text(), filename=str(path)), None)
    return found


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_chains(root: Path, kind: str, stage: str) -> dict[str, list[str]]:
    """Every pipeline module the stage imports, directly or not, each with the shortest chain of imports
    that reaches it. Imports inside functions count (they load when the stage runs), with two
    exceptions that mirror what a stage calls: the loaders of the other kinds (the kind table imports
    a kind, and a kind's package its stages, only when asked, and a stage asks for its own kind only;
    the run-time list proves it), and in the kind's stages only the one function this stage calls."""
    start = f"pipeline.stages.{stage}"
    others = [f"pipeline.kinds.{name}" for name in kind_packages(root) if name != kind]
    loaders = {("pipeline.kinds", other) for other in others} | {(other, f"{other}.stages") for other in others}
    kind_stages, called = f"pipeline.kinds.{kind}.stages", {None, stage, KIND_FUNCTION.get(stage)}
    chains = {module: [start] if module == start else [start, module] for module in with_parents(start)}
    todo = list(chains)
    while todo:
        name = todo.pop(0)
        path = module_file(root, name)
        if path is None:
            continue
        for scope, names in sorted(imported_names(path, name).items(), key=lambda item: item[0] or ""):
            if name == kind_stages and scope not in called:
                continue
            for imported in sorted(names):
                for module in with_parents(imported):
                    if module in chains or not (module == "pipeline" or module.startswith("pipeline.")):
                        continue
                    if (name, module) in loaders or module_file(root, module) is None:
                        continue
                    chains[module] = [*chains[name], module]
                    todo.append(module)
    return chains


def covered(relative: str, deps: list[str]) -> bool:
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_pipeline_module_a_stage_imports_is_one_of_its_deps(recorded, tmp_path):
    kind, pristine = recorded
    root = clone_workspace(pristine, tmp_path / "workspace")
    # dvc.lock: the deps as DVC itself resolved dvc.yaml's templates for this kind's params.
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    stages = sorted(lock)
    env = {**tool_env(), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_STAGE, kind, *stages],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])

    gaps: dict[str, dict[str, str]] = {}  # uncovered file -> stage -> how the stage reaches it
    for stage in stages:
        outside = sorted(f for f in loaded[stage].values() if not Path(f).resolve().is_relative_to(root.resolve()))
        assert not outside, f"stage {stage} imported pipeline modules from outside the workspace: {outside}"
        deps = [dep["path"] for dep in lock[stage]["deps"]]
        chains = import_chains(root, kind, stage)
        for name in sorted(set(chains) | set(loaded[stage])):
            file = loaded[stage].get(name) or module_file(root, name)
            relative = Path(file).resolve().relative_to(root.resolve()).as_posix()
            if not covered(relative, deps):
                how = " -> ".join(chains[name]) if name in chains else "loaded at run time"
                gaps.setdefault(relative, {})[stage] = how
    assert not gaps, f"dvc.yaml misses code deps ({kind} params):\n" + "\n".join(
        f"{relative}: imported by {', '.join(sorted(by_stage))}, e.g. {next(iter(by_stage.values()))}; "
        f"add `- {relative}` to those stages' deps"
        for relative, by_stage in sorted(gaps.items())
    )
