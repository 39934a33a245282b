"""The registry's command line: list, show, history, diff, rollback (``evergreen registry ...``).

Command: ``python -m pipeline.lifecycle.registry [--root DIR] [--json] list | show [VERSION] | history |
diff A [B] | rollback [--to VERSION] [--reason TEXT]`` (root defaults to $EVERGREEN_REGISTRY, else
``paths.registry``). Tables for people; ``--json`` gives the same answers as data for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.lifecycle.gate import decision_summary, number
from pipeline.lifecycle.registry import AnyRegistry, open_registry
from pipeline.lifecycle.registry.layout import ONNX_FILE, RegistryError
from pipeline.lifecycle.registry.objectstore import is_store_url
from pipeline.lifecycle.registry.versions import ModelVersion
from pipeline.params import load_params
from pipeline.params.paths import registry_location


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def format_versions(versions: list[ModelVersion], production: ModelVersion | None) -> str:
    """A table of versions with the production one marked ``*``."""
    if not versions:
        return "no model versions registered\n"
    rows = [("", "VERSION", "CREATED", "GIT", "ONNX SHA256", "EXTRA")]
    for v in versions:
        scalars = sorted((k, val) for k, val in v.meta.get("extra", {}).items() if not isinstance(val, dict | list))
        rows.append(
            (
                "*" if production and v.number == production.number else "",
                v.name,
                v.meta.get("created", ""),
                (v.meta.get("git_revision") or "-")[:10],
                v.meta.get("sha256", {}).get(ONNX_FILE, "")[:12],
                " ".join(f"{k}={_short(val)}" for k, val in scalars),
            )
        )
    return table(rows) + ("* production\n" if production else "(nothing in production)\n")


def format_version(version: ModelVersion, is_production: bool) -> str:
    header = f"{version.name}{' (production)' if is_production else ''}  {version.path}"
    return header + "\n" + json.dumps({"meta": version.meta, "metrics": version.metrics()}, indent=2, sort_keys=True) + "\n"


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns two spaces apart; the last column runs free."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def event_row(event: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """(time, decision, version, challenger vs champion, reason) of one history event."""
    verdict = event.get("decision") if isinstance(event.get("decision"), dict) else None
    if verdict is not None and isinstance(verdict.get("decision"), dict):  # a retrain's gate verdict
        metric, reason = decision_summary(verdict), str(event.get("reason") or verdict["decision"].get("reason", ""))
        trigger = verdict.get("trigger")
        reason = f"{trigger}: {reason}" if trigger and not reason.startswith(f"{trigger}:") else reason
    else:
        metric, reason = "", str(event.get("reason") or "")
    if event.get("event") == "register":
        reason = f"git {str(event.get('git_revision') or '-')[:10]}"
    if event.get("previous"):
        reason = f"{reason} (was {event['previous']})" if reason else f"was {event['previous']}"
    time_text = str(event.get("time", "?"))[:19].replace("T", " ")
    return time_text, str(event.get("event", "?")), str(event.get("version", "-")), metric, reason


def format_history(events: list[dict[str, Any]]) -> str:
    """A table, oldest first: time (UTC), decision, version, challenger vs champion, reason."""
    if not events:
        return "no history yet\n"
    return table([("TIME (UTC)", "DECISION", "VERSION", "CHALLENGER VS CHAMPION", "REASON"), *map(event_row, events)])


def format_diff(a: ModelVersion, b: ModelVersion) -> str:
    """What differs between two versions: test metrics, training params, files and provenance."""
    rows: list[tuple[str, ...]] = [("", a.name, b.name)]
    flat_a, flat_b = flatten({"metrics": a.metrics()}), flatten({"metrics": b.metrics()})
    flat_a |= flatten({"params": yaml.safe_load(a.params_file.read_text()) or {}})
    flat_b |= flatten({"params": yaml.safe_load(b.params_file.read_text()) or {}})
    for key in ("created", "git_revision", "data_sha256"):
        flat_a[key], flat_b[key] = a.meta.get(key), b.meta.get(key)
    for name in sorted(set(a.meta.get("sha256", {})) | set(b.meta.get("sha256", {}))):
        flat_a[f"sha256.{name}"] = a.meta.get("sha256", {}).get(name)
        flat_b[f"sha256.{name}"] = b.meta.get("sha256", {}).get(name)
    changed = [k for k in sorted(set(flat_a) | set(flat_b)) if flat_a.get(k) != flat_b.get(k)]
    if not changed:
        return f"{a.name} and {b.name} are identical\n"
    for key in changed:
        rows.append((key, _cell(flat_a.get(key)), _cell(flat_b.get(key))))
    return table(rows)


def diff_json(a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    flat_a = flatten({"metrics": a.metrics(), "params": yaml.safe_load(a.params_file.read_text()) or {}, "meta": a.meta})
    flat_b = flatten({"metrics": b.metrics(), "params": yaml.safe_load(b.params_file.read_text()) or {}, "meta": b.meta})
    keys = sorted(k for k in set(flat_a) | set(flat_b) if flat_a.get(k) != flat_b.get(k))
    return {"a": a.name, "b": b.name, "changed": {k: [flat_a.get(k), flat_b.get(k)] for k in keys}}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256
    return _short(value)


def _parser(prog: str = "python -m pipeline.lifecycle.registry") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Inspect the model registry or roll production back.")
    parser.add_argument(
        "--root", help="registry folder or s3:// store (default: $EVERGREEN_REGISTRY, else paths.registry in params.yaml)"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of a table (for scripts)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="all versions; * marks production")
    show = commands.add_parser("show", help="one version's meta and metrics (default: production)")
    show.add_argument("version", nargs="?")
    commands.add_parser("history", help="every registration, promotion, rejection and rollback, as a table")
    diff = commands.add_parser("diff", help="what differs between two versions (metrics, params, files)")
    diff.add_argument("a", help="a version, e.g. v0001")
    diff.add_argument("b", nargs="?", help="another version (default: production)")
    rollback = commands.add_parser("rollback", help="switch production back")
    rollback.add_argument("--to", help="version to roll back to (default: the previous production version)")
    rollback.add_argument("--reason", default="manual rollback (CLI)")
    return parser


def _run_cli(args: argparse.Namespace) -> str:
    location = args.root or registry_location(load_params().paths)
    if not is_store_url(location) and not Path(location.removeprefix("file://")).is_dir():
        raise RegistryError(f"no registry at {location} (register a model first, or pass --root)")
    registry = open_registry(location)
    if args.json:
        return json.dumps(_run_json(registry, args), indent=2, sort_keys=True, default=str) + "\n"
    if args.command == "list":
        return format_versions(registry.versions(), registry.production())
    if args.command == "show":
        production = registry.production()
        if args.version is not None:
            version = registry.get(args.version)
        elif production is not None:
            version = production
        else:
            raise RegistryError(
                "nothing is in production yet; name a version: python -m pipeline.lifecycle.registry show v0001"
            )
        return format_version(version, production is not None and production.number == version.number)
    if args.command == "history":
        return format_history(registry.history())
    if args.command == "diff":
        return format_diff(*_pair(registry, args))
    try:
        previous = registry.production()
    except RegistryError:  # a damaged pointer is what `rollback --to` repairs
        previous = None
    target = registry.rollback(args.to, reason=args.reason)
    return f"production: {target.name} (was {previous.name if previous else 'unreadable'})\n"


def _pair(registry: AnyRegistry, args: argparse.Namespace) -> tuple[ModelVersion, ModelVersion]:
    if args.b is not None:
        return registry.get(args.a), registry.get(args.b)
    production = registry.production()
    if production is None:
        raise RegistryError("nothing is in production yet; name both versions: diff v0001 v0002")
    return registry.get(args.a), production


def _run_json(registry: AnyRegistry, args: argparse.Namespace) -> Any:
    """The same answers as the tables, as data."""
    production = registry.production() if args.command != "rollback" else None
    if args.command == "list":
        current = production.name if production else None
        return [{"version": v.name, "production": v.name == current, **v.meta} for v in registry.versions()]
    if args.command == "show":
        version = registry.get(args.version) if args.version else production
        if version is None:
            raise RegistryError("nothing is in production yet; name a version")
        return {
            "version": version.name,
            "production": bool(production and production.name == version.name),
            "meta": version.meta,
            "metrics": version.metrics(),
        }
    if args.command == "history":
        return registry.history()
    if args.command == "diff":
        return diff_json(*_pair(registry, args))
    try:
        previous = registry.production()
    except RegistryError:
        previous = None
    target = registry.rollback(args.to, reason=args.reason)
    return {"production": target.name, "previous": previous.name if previous else None}


def main(argv: list[str] | None = None, prog: str = "python -m pipeline.lifecycle.registry") -> None:
    """CLI entry: results on stdout; a user error is one line on stderr and exit code 1."""
    setup_logging()
    args = _parser(prog).parse_args(argv)
    sys.stdout.write(run_or_exit(lambda: _run_cli(args)))
