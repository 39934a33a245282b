"""MkDocs hooks: the documentation pages made from the code at build time, so none can drift and none is committed.

- The params reference: ``<!-- evergreen:params-reference -->`` in ``reference/params.md`` becomes one table per
  params section, walked from the typed models in ``pipeline/params`` (every key with its type, default,
  constraints and the comments beside it in the model source, ``params.yaml`` and ``examples/*/params.yaml``),
  plus the checks a section makes across keys (the messages its validators raise).
- The benchmarks: one page per ``bench/*.py`` benchmark (its docstring and what it last printed, ``bench/<name>.out``),
  added under *Benchmarks* in the nav, and ``<!-- evergreen:benchmark-index -->`` becomes a table of them.
- Stage cards: ``<!-- evergreen:stage NAME -->`` becomes the stage module's docstring (inputs, outputs, params,
  command) and its entry in ``dvc.yaml``.
- Screenshots: ``<!-- evergreen:screenshot NAME.png | caption -->`` shows ``docs/img/NAME.png`` when
  ``docs/screenshots.py`` has made it, and says how to make it otherwise.

Wired in ``mkdocs.yml`` (``hooks: [docs/hooks.py]``); ``mkdocs build --strict`` fails on any warning logged here.
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import posixpath
import re
import subprocess
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Warnings under "mkdocs." count for --strict.
log = logging.getLogger("mkdocs.hooks.evergreen")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the project's own packages, when mkdocs runs outside its editable install
    sys.path.insert(0, str(ROOT))

MARKER = re.compile(r"<!--\s*evergreen:(?P<name>[\w-]+)\s*(?P<arg>.*?)\s*-->")
BENCH_DIR = "bench"
BENCH_NAV_TITLE = "Benchmarks"
BENCH_PAGES = "benchmarks"
SCREENSHOT_DIR = "img"


# ---------------------------------------------------------------- Markdown helpers


def cell(text: str) -> str:
    """Text for a Markdown table cell: pipes and angle brackets escaped outside code spans, one line."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(text.split()))
    return "".join(
        part if part.startswith("`") else part.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") for part in parts
    )


def code(value: str) -> str:
    """A code span holding ``value`` (longer fences where it holds backticks)."""
    fence = "``" if "`" in value else "`"
    return f"{fence}{value}{fence}" if fence == "`" else f"{fence} {value} {fence}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- comments in params files


@dataclass(frozen=True)
class ParamsFile:
    """One committed params file: its label, what it selects, and the comment beside each key."""

    label: str
    kind: str
    architecture: str | None
    comments: dict[str, str]


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<rest>.*)$")


def _split_comment(rest: str) -> tuple[str, str]:
    """A YAML line's value and its trailing comment (a '#' after white space, outside quotes)."""
    quote = None
    for i, char in enumerate(rest):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def yaml_comments(text: str) -> dict[str, str]:
    """The comment of each block key of a YAML file, by dotted path.

    A key's comment is its trailing comment, continued by comment lines indented past the key right
    after it, and preceded by a block of comment lines at the key's own indentation right above it.
    Keys inside flow mappings (``{a: 1}``) share their block key's comment.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the open block keys
    leading: list[str] = []
    leading_indent = -1
    last: tuple[str, int] | None = None  # (path, indent) of the previous key line that had a comment
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if last is not None and indent > last[1] and not leading:
                comments[last[0]] += " " + body  # a continuation of the comment above
            else:
                last = None
                if leading and indent != leading_indent:
                    leading = []
                leading_indent = indent
                leading.append(body)
            continue
        match = _KEY_LINE.match(line)
        if not stripped or not match:
            leading, last = [], None
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([key for _, key in stack] + [match["key"]])
        stack.append((indent, match["key"]))
        _, trailing = _split_comment(match["rest"])
        parts = ([" ".join(leading)] if leading and leading_indent == indent else []) + ([trailing] if trailing else [])
        leading, last = [], None
        if parts:
            comments[path] = " ".join(parts)
            last = (path, indent) if trailing else None
    return comments


def params_files(root: Path = ROOT) -> list[ParamsFile]:
    """``params.yaml`` and every ``examples/*/params.yaml``, each with the kind and architecture it selects."""
    found = []
    for path in [root / "params.yaml", *sorted(root.glob("examples/*/params.yaml"))]:
        text = path.read_text()
        raw = yaml.safe_load(text) or {}
        model = (raw.get("train") or {}).get("model") or {}
        label = "params.yaml" if path.parent == root else path.parent.name
        found.append(
            ParamsFile(
                label, str((raw.get("ingest") or {}).get("kind", "tabular")), model.get("architecture"), yaml_comments(text)
            )
        )
    return found


# ---------------------------------------------------------------- comments and checks in the models' source


def _class_source(cls: type) -> tuple[ast.ClassDef, list[str]] | None:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return None
    node = ast.parse(source).body[0]
    return (node, source.splitlines()) if isinstance(node, ast.ClassDef) else None


def source_comments(cls: type) -> dict[str, str]:
    """The comments on each field of a model class: the comment lines right above it and the one beside it."""
    found = _class_source(cls)
    if found is None:
        return {}
    node, lines = found
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    comments = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above, number = [], statement.lineno - 1
        while number >= 1 and lines[number - 1].strip().startswith("#"):
            above.insert(0, by_line.get(number, ""))
            number -= 1
        beside = [by_line[n] for n in range(statement.lineno, (statement.end_lineno or statement.lineno) + 1) if n in by_line]
        text = " ".join(part for part in above + beside if part)
        if text:
            comments[statement.target.id] = text
    return comments


def _message(node: ast.expr) -> str | None:
    """The text of an error message: an f-string's placeholders become '…'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "…" for part in node.values)  # type: ignore[misc]
    return None


def validator_checks(cls: type) -> list[str]:
    """What a section checks across its keys: the messages its validators raise, in source order."""
    found = _class_source(cls)
    if found is None:
        return []
    messages = []
    for statement in found[0].body:
        if not isinstance(statement, ast.FunctionDef) or not any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "").endswith("_validator") for d in statement.decorator_list
        ):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                text = _message(node.exc.args[0])
                if text:
                    messages.append(text)
    return messages


# ---------------------------------------------------------------- types, defaults, constraints


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is typing.Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def section_variants(annotation: Any) -> list[type[BaseModel]]:
    """The section classes a field may hold (one for a plain sub-section, several for a tagged union)."""
    options = [_unwrap(arg) for arg in _union_args(_unwrap(annotation))]
    return [arg for arg in options if _is_section(arg)]


def yaml_value(value: Any) -> str:
    """A value as it would be written in params.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(yaml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str):
        return (
            '""' if value == "" else (f'"{value}"' if value != value.strip() or value in {"null", "true", "false"} else value)
        )
    return repr(value)


def type_text(annotation: Any) -> str:
    """A field's type in words and code spans: ``int``, ``float`` or ``null``, one of ``a``, ``b``, list of ``str``."""
    annotation = _unwrap(annotation)
    if annotation is type(None):
        return "`null`"
    if annotation is Any:
        return "any value"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        values = [code(yaml_value(arg)) for arg in args]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin in (typing.Union, types.UnionType):
        parts = [type_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(parts + (["`null`"] if type(None) in args else []))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_text(args[0])}"
        return "[" + ", ".join(type_text(arg) for arg in args) + "]"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if _is_section(annotation):
        return "section"
    if isinstance(annotation, type):
        return code(annotation.__name__)
    return code(str(annotation))


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def constraints(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for name, sign in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{sign} {yaml_value(value)}")
        min_length = getattr(item, "min_length", None)
        if min_length is not None:
            found.append(f"at least {min_length} character{'s' if min_length != 1 else ''}")
    return ", ".join(found)


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    return code(yaml_value(value))


# ---------------------------------------------------------------- the params reference


@dataclass
class Scope:
    """The params files whose comments apply to the keys being walked (those of the kind or architecture)."""

    files: list[ParamsFile]

    def comment(self, path: str) -> str:
        texts: dict[str, list[str]] = {}
        for params_file in self.files:
            text = params_file.comments.get(path)
            if text:
                texts.setdefault(text, []).append(params_file.label)
        out = []
        for text, labels in texts.items():
            where = "" if len(labels) == len(self.files) else f" *({', '.join(labels)})*"
            out.append(f"{text}{where}")
        return " · ".join(out)


@dataclass
class Walk:
    """Rows of one table, and the tables of the variants and maps met on the way (rendered after it)."""

    root: str = ""  # the table's section: keys are shown relative to it
    rows: list[list[str]] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    later: list[tuple[str, type[BaseModel], str]] = field(default_factory=list)  # (path, class, note)

    def key(self, path: str) -> str:
        return code(path[len(self.root) + 1 :] if self.root and path.startswith(self.root + ".") else path)


def describe(*parts: str) -> str:
    seen: list[str] = []
    for part in parts:
        if part and part not in seen:
            seen.append(part)
    return cell(" — ".join(seen))


def _own_classes(cls: type) -> list[type]:
    """``cls`` and the project classes it inherits fields from (not pydantic's own)."""
    return [base for base in cls.__mro__ if base.__module__.startswith("pipeline.")]


def field_comments(cls: type) -> dict[str, str]:
    """The source comments of every field of ``cls``, inherited fields included."""
    found: dict[str, str] = {}
    for base in reversed(_own_classes(cls)):
        found.update(source_comments(base))
    return found


def walk_section(
    cls: type[BaseModel],
    prefix: str,
    scope: Scope,
    walk: Walk,
    skip: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
) -> None:
    """Append one row per key of ``cls`` (sub-sections flattened into dotted keys) to ``walk``."""
    comments = field_comments(cls)
    for base in _own_classes(cls):
        walk.checks += [(prefix or "the whole file", message) for message in validator_checks(base)]
    for name, info in cls.model_fields.items():
        if name in skip or (only is not None and name not in only):
            continue
        path = f"{prefix}.{name}" if prefix else name
        variants = section_variants(info.annotation)
        annotation = _unwrap(info.annotation)
        if len(variants) > 1:  # a tagged union: one table per variant, after this one
            tags = [variant_tag(variant) for variant in variants]
            type_cell = "one of the variants below (" + ", ".join(code(tag) for tag in tags) + ")"
            description = describe(comments.get(name, ""), scope.comment(path))
            walk.rows.append([walk.key(path), cell(type_cell), default_text(info), description])
            walk.later += [(path, variant, tag) for variant, tag in zip(variants, tags, strict=True)]
            continue
        if len(variants) == 1 and variants[0] is annotation:  # a plain sub-section: its keys follow, dotted
            doc = _doc(annotation)
            walk.rows.append([walk.key(path), "section", "", describe(doc, comments.get(name, ""), scope.comment(path))])
            walk_section(annotation, path, scope, walk)
            continue
        if variants:  # a map of sections (tune.space): the section's own table follows
            walk.later.append((f"{path}.<key>", variants[0], ""))
        walk.rows.append(
            [
                walk.key(path),
                cell(type_text(info.annotation) + (f"; {constraints(info)}" if constraints(info) else "")),
                cell(default_text(info) + _example(path, info, scope)),
                describe(comments.get(name, ""), scope.comment(path)),
            ]
        )


def _example(path: str, info: FieldInfo, scope: Scope) -> str:
    """For a required key, the value the first committed params file gives it."""
    if not info.is_required():
        return ""
    for params_file in scope.files:
        value = _lookup(params_file, path)
        if value is not _MISSING:
            return f"; e.g. {code(yaml_value(value))}"
    return ""


_MISSING = object()
_RAW: dict[str, Any] = {}


def _lookup(params_file: ParamsFile, path: str) -> Any:
    raw = _RAW.get(params_file.label)
    if raw is None:
        name = "params.yaml" if params_file.label == "params.yaml" else f"examples/{params_file.label}/params.yaml"
        raw = _RAW[params_file.label] = yaml.safe_load((ROOT / name).read_text()) or {}
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def variant_tag(cls: type[BaseModel]) -> str:
    """The literal value that selects a variant (``architecture: mlp``), joined when it allows several."""
    for info in cls.model_fields.values():
        annotation = _unwrap(info.annotation)
        if get_origin(annotation) is Literal:
            return " / ".join(str(arg) for arg in get_args(annotation))
    return cls.__name__


def _doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__")
    return " ".join(inspect.cleandoc(doc).split()) if doc else ""


def render_walk(
    title_level: int, title: str, cls: type[BaseModel], prefix: str, scope: Scope, skip: tuple[str, ...] = ()
) -> str:
    walk = Walk(root=prefix)
    walk_section(cls, prefix, scope, walk, skip)
    out = [f"{'#' * title_level} {title}", ""]
    if _doc(cls):
        out += [_doc(cls), ""]
    out += [table(["Key", "Type", "Default", "Description"], walk.rows), ""]
    if walk.checks:
        out += ["Checked across keys (the messages name the values):", ""]
        out += [f"- {cell(where)}: {cell(message)}" for where, message in walk.checks] + [""]
    for path, variant, tag in walk.later:
        heading = f"{path}: {tag}" if tag else path
        out.append(render_walk(title_level + 1, code(heading), variant, path, scope))
    return "\n".join(out)


def _kinds() -> dict[str, type[BaseModel]]:
    """Each data kind's params class, by the ``ingest.kind`` literal that selects it."""
    from pipeline.params import Params

    found = {}
    for cls in get_args(Params):
        ingest = cls.model_fields["ingest"].annotation
        found[variant_tag(ingest)] = cls
    return found


def params_reference(root: Path = ROOT) -> str:
    """The generated part of the params reference page (Markdown)."""
    from pipeline.params import ARCHITECTURES, DEFAULT_SPACES, SPLIT_METHODS, TrainParams

    files = params_files(root)
    kinds = _kinds()
    classes = list(kinds.values())
    # The data sections are those whose model differs by kind; the rest are common to every kind.
    names = list(classes[0].model_fields)
    by_kind = [name for name in names if len({cls.model_fields[name].annotation for cls in classes}) > 1]
    common = [name for name in names if name not in by_kind]
    everyone = Scope(files)
    out = ["## Kinds, architectures and split methods", ""]
    out.append(
        table(
            ["`ingest.kind`", "`train.model.architecture`", "`split.method`", "complete example files"],
            [
                [
                    code(kind),
                    ", ".join(code(a) for a in ARCHITECTURES[kind]),
                    ", ".join(code(m) for m in SPLIT_METHODS[kind]),
                    ", ".join(code(_file_name(f)) for f in files if f.kind == kind) or "",
                ]
                for kind in kinds
            ],
        )
    )
    out += ["", "## Sections every kind has", ""]
    top = kinds[next(iter(kinds))]
    for name in common:
        info = top.model_fields[name]
        variants = section_variants(info.annotation)
        if not variants:  # a top-level value (seed)
            walk = Walk()
            walk_section(top, "", everyone, walk, only=(name,))
            out += [f"### `{name}`", "", table(["Key", "Type", "Default", "Description"], walk.rows), ""]
            out += ["Checked across sections (the messages name the values):", ""]
            out += [f"- {cell(message)}" for _, message in walk.checks] + [""]
            continue
        section = variants[0]
        if section is TrainParams:
            out.append(render_walk(3, f"`{name}`", section, name, everyone, skip=("model",)))
            out += [
                f"### `{name}.model`",
                "",
                "The network; `architecture` selects the variant, and the kind decides which architectures it may be.",
                "",
            ]
            for variant in section_variants(section.model_fields["model"].annotation):
                tag = variant_tag(variant)
                scope = Scope([f for f in files if f.architecture in tag.split(" / ")] or files)
                out.append(render_walk(4, f"`{name}.model`: {tag}", variant, f"{name}.model", scope))
            continue
        out.append(render_walk(3, f"`{name}`", section, name, everyone))
    out += [
        "## Data sections, by kind",
        "",
        f"`ingest.kind` selects the variant of {', '.join(code(n) for n in by_kind)}.",
        "",
    ]
    for kind, cls in kinds.items():
        scope = Scope([f for f in files if f.kind == kind])
        out += [f"### {kind}", ""]
        for name in by_kind:
            section = section_variants(cls.model_fields[name].annotation)[0]
            out.append(render_walk(4, f"`{name}` ({kind})", section, name, scope))
    out += ["## Default search spaces", "", "What `tune.space: null` searches, by architecture (`DEFAULT_SPACES`).", ""]
    rows = []
    for architecture, space in DEFAULT_SPACES.items():
        for key, dimension in space.items():
            if dimension.choices is not None:
                values = "choices " + ", ".join(code(yaml_value(choice)) for choice in dimension.choices)
            else:
                values = f"{yaml_value(dimension.low)} to {yaml_value(dimension.high)}" + (
                    ", log scale" if dimension.log else ""
                )
            rows.append([code(architecture), code(key), cell(values)])
    out += [table(["architecture", "key", "values"], rows), ""]
    return "\n".join(out)


def _file_name(params_file: ParamsFile) -> str:
    return "params.yaml" if params_file.label == "params.yaml" else f"examples/{params_file.label}/params.yaml"


# ---------------------------------------------------------------- benchmarks


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str  # the docstring's first paragraph, without "Benchmark: "
    body: str  # the rest of the docstring
    output: str | None  # what it last printed (bench/<name>.out)
    recorded: str  # when that output was committed, for people


def _git(root: Path, *args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def benchmarks(root: Path = ROOT) -> list[Benchmark]:
    """Every benchmark in bench/: a script whose docstring starts with "Benchmark" or that has an .out beside it."""
    found = []
    for script in sorted((root / BENCH_DIR).glob("*.py")):
        doc = ast.get_docstring(ast.parse(script.read_text())) or ""
        out = script.with_suffix(".out")
        if not (doc.startswith("Benchmark") or out.exists()):
            continue
        summary, _, body = doc.partition("\n\n")
        summary = " ".join(summary.split()).removeprefix("Benchmark:").strip()
        recorded = ""
        if out.exists():
            date = _git(root, "log", "-1", "--format=%cs", "--", str(out.relative_to(root)))
            changed = _git(root, "status", "--porcelain", "--", str(out.relative_to(root)))
            recorded = "changed since its last commit" if changed else (f"committed {date}" if date else "")
        found.append(
            Benchmark(
                script.stem, summary[:1].upper() + summary[1:], body, out.read_text() if out.exists() else None, recorded
            )
        )
    return found


def _docstring_markdown(body: str) -> str:
    """A docstring's paragraphs as Markdown: indented lines become code blocks, RST ``x`` code spans stay."""
    out, block = [], []
    for line in body.splitlines():
        if line.startswith("    ") or (block and not line.strip()):
            block.append(line[4:])
            continue
        if block:
            out += ["", "```bash", *[b for b in block if b.strip()], "```", ""]
            block = []
        out.append(line)
    if block:
        out += ["", "```bash", *[b for b in block if b.strip()], "```"]
    return "\n".join(out).strip()


def benchmark_page(bench: Benchmark) -> str:
    out = [f"# {bench.name}", "", f"`{BENCH_DIR}/{bench.name}.py`: {bench.summary}", ""]
    if bench.body.strip():
        out += [_docstring_markdown(bench.body), ""]
    if f"{BENCH_DIR}/{bench.name}.py" not in bench.body:  # the docstring shows its command line already
        out += ["## Run it", "", "```bash", f"python {BENCH_DIR}/{bench.name}.py", "```", ""]
    out += ["## Latest output", ""]
    if bench.output is None:
        out += [f"No output recorded yet: run the script and keep what it prints in `{BENCH_DIR}/{bench.name}.out`."]
    else:
        out += [
            f"What it printed the last time it was run, kept in `{BENCH_DIR}/{bench.name}.out`"
            + (f" ({bench.recorded})." if bench.recorded else "."),
            "",
            "```text",
            bench.output.rstrip("\n"),
            "```",
        ]
    return "\n".join(out) + "\n"


def benchmark_index(page_uri: str, benches: list[Benchmark]) -> str:
    here = posixpath.dirname(page_uri)
    rows = [
        [
            f"[{bench.name}]({posixpath.relpath(f'{BENCH_PAGES}/{bench.name}.md', here)})",
            cell(bench.summary),
            cell(bench.recorded if bench.output is not None else "no output recorded"),
        ]
        for bench in benches
    ]
    return table(["benchmark", "what it measures", "output"], rows)


# ---------------------------------------------------------------- stages


def _rst_to_markdown(text: str) -> str:
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def dvc_stage_block(name: str, root: Path = ROOT) -> str | None:
    """The stage's entry in dvc.yaml, as written (comments and ${...} templates kept)."""
    lines = (root / "dvc.yaml").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line == f"  {name}:"), None)
    if start is None:
        return None
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block).rstrip())


def stage_card(name: str, root: Path = ROOT) -> str:
    """A stage's own docstring (inputs, outputs, params, command) and its dvc.yaml entry."""
    module = root / "pipeline" / "stages" / f"{name}.py"
    if not module.is_file():
        log.warning("stage %r: no %s", name, module.relative_to(root))
        return ""
    doc = ast.get_docstring(ast.parse(module.read_text())) or ""
    paragraphs = doc.split("\n\n")
    lead = re.sub(r"^Stage \w+:\s*", "", " ".join(paragraphs[0].split()))
    out = [f"*From `pipeline/stages/{name}.py`:* {_rst_to_markdown(lead[:1].upper() + lead[1:])}", ""]
    for paragraph in paragraphs[1:]:
        fields = re.findall(r"^(Inputs|Outputs|Params|Command):\s*(.*(?:\n\s+.*)*)", paragraph, flags=re.MULTILINE)
        if fields:
            for key, value in fields:
                out += [key, f":   {_rst_to_markdown(' '.join(value.split()))}", ""]
        else:
            out += [_rst_to_markdown(" ".join(paragraph.split())), ""]
    block = dvc_stage_block(name, root)
    if block is None:
        log.warning("stage %r is not in dvc.yaml", name)
    else:
        out += ['??? info "Its entry in `dvc.yaml`"', "", "    ```yaml", textwrap.indent(block, "    "), "    ```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- screenshots


def screenshot(page_uri: str, arg: str, docs_dir: Path) -> str:
    name, _, caption = (part.strip() for part in arg.partition("|"))
    if (docs_dir / SCREENSHOT_DIR / name).is_file():
        target = posixpath.relpath(f"{SCREENSHOT_DIR}/{name}", posixpath.dirname(page_uri))
        return f"![{caption}]({target})"
    return (
        f'!!! note "Screenshot: {caption}"\n'
        f"    Not made in this build: `python docs/screenshots.py` writes `docs/{SCREENSHOT_DIR}/{name}`"
        " (see *Documentation* on the home page)."
    )


# ---------------------------------------------------------------- MkDocs events


_BUILD: dict[str, list[Benchmark]] = {}  # what one build reads from bench/ (read afresh by each build's on_config)


def on_config(config: Any) -> Any:
    """Put a page for each benchmark under *Benchmarks* in the nav (a new bench script needs no nav edit)."""
    _BUILD["benchmarks"] = benchmarks()
    nav = config.get("nav") or []
    section = next((item for item in nav if isinstance(item, dict) and BENCH_NAV_TITLE in item), None)
    if section is None or not isinstance(section[BENCH_NAV_TITLE], list):
        log.warning("mkdocs.yml: no '%s' section in nav to hold the generated benchmark pages", BENCH_NAV_TITLE)
        return config
    listed = {next(iter(entry.values())) if isinstance(entry, dict) else entry for entry in section[BENCH_NAV_TITLE]}
    for bench in _BUILD["benchmarks"]:
        uri = f"{BENCH_PAGES}/{bench.name}.md"
        if uri not in listed:
            section[BENCH_NAV_TITLE].append({bench.name: uri})
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for bench in _BUILD["benchmarks"]:
        files.append(File.generated(config, f"{BENCH_PAGES}/{bench.name}.md", content=benchmark_page(bench)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    uri = page.file.src_uri
    docs_dir = Path(config["docs_dir"])

    def replace(match: re.Match[str]) -> str:
        name, arg = match["name"], match["arg"]
        if name == "params-reference":
            return params_reference()
        if name == "benchmark-index":
            return benchmark_index(uri, _BUILD["benchmarks"])
        if name == "stage":
            return stage_card(arg)
        if name == "screenshot":
            return screenshot(uri, arg, docs_dir)
        log.warning("%s: unknown marker <!-- evergreen:%s -->", uri, name)
        return match[0]

    return MARKER.sub(replace, markdown)
