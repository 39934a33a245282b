"""The registry's command line: list, show, history, rollback.

Command: ``python -m pipeline.lifecycle.registry [--root DIR] list | show [VERSION] | history |
rollback [--to VERSION] [--reason TEXT]`` (root defaults to ``paths.registry``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.core.cli import run_or_exit, setup_logging
from pipeline.lifecycle.registry import open_registry
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append("* production" if production else "(nothing in production)")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def format_version(version: ModelVersion, is_production: bool) -> str:
    header = f"{version.name}{' (production)' if is_production else ''}  {version.path}"
    return header + "\n" + json.dumps({"meta": version.meta, "metrics": version.metrics()}, indent=2, sort_keys=True) + "\n"


def format_history(events: list[dict[str, Any]]) -> str:
    """One line per event: time, kind, version, then the remaining fields as key=value."""
    if not events:
        return "no history yet\n"
    lines = []
    for event in events:
        rest = " ".join(f"{k}={_short(v)}" for k, v in sorted(event.items()) if k not in ("time", "event", "version", "id"))
        kind, version = str(event.get("event", "?")), str(event.get("version", "-"))
        lines.append(f"{event.get('time', '?')}  {kind:<10} {version:<6} {rest}".rstrip())
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.lifecycle.registry", description="Inspect the model registry or roll production back."
    )
    parser.add_argument(
        "--root", help="registry folder or s3:// store (default: $EVERGREEN_REGISTRY, else paths.registry in params.yaml)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="all versions; * marks production")
    show = commands.add_parser("show", help="one version's meta and metrics (default: production)")
    show.add_argument("version", nargs="?")
    commands.add_parser("history", help="every promotion, rejection and rollback")
    rollback = commands.add_parser("rollback", help="switch production back")
    rollback.add_argument("--to", help="version to roll back to (default: the previous production version)")
    rollback.add_argument("--reason", default="manual rollback (CLI)")
    return parser


def _run_cli(args: argparse.Namespace) -> str:
    location = args.root or registry_location(load_params().paths)
    if not is_store_url(location) and not Path(location.removeprefix("file://")).is_dir():
        raise RegistryError(f"no registry at {location} (register a model first, or pass --root)")
    registry = open_registry(location)
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
    try:
        previous = registry.production()
    except RegistryError:  # a damaged pointer is what `rollback --to` repairs
        previous = None
    target = registry.rollback(args.to, reason=args.reason)
    return f"production: {target.name} (was {previous.name if previous else 'unreadable'})\n"


def main(argv: list[str] | None = None) -> None:
    """CLI entry: results on stdout; a user error is one line on stderr and exit code 1."""
    setup_logging()
    args = _parser().parse_args(argv)
    sys.stdout.write(run_or_exit(lambda: _run_cli(args)))
