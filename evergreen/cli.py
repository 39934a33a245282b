"""The ``evergreen`` command: one entry point for the pipeline, the lifecycle loop, the service and tuning.

    evergreen repro [DVC ARGS]                 dvc repro, with this environment's tools on PATH
    evergreen stack up|down|status             Prefect server, work pool, prefect.yaml's deployments, a worker
    evergreen retrain [--watch] [--here]       start the retrain deployment (--here: run the flow in this process)
    evergreen monitor [--no-trigger] [--watch] check landed data for drift now; follow the retrain it starts
    evergreen monitor ui [--port N]            Evidently's UI on the drift checks' workspace
    evergreen land next|sample|file|status     make data arrive in the landing area
    evergreen registry list|show|history|diff|rollback
    evergreen serve [...]                      the prediction service
    evergreen score [...]                      batch scoring with the production model
    evergreen tune search|show|apply           hyperparameter search with Optuna
    evergreen reset-demo [--yes]               empty landing area, fresh registry, monitor state and log

Every command takes ``--help``. Exit codes: 0 done, 1 a user error or a failed run (one line on stderr),
2 bad usage, 3 the stack is down (``stack status``). ``--json`` prints data instead of lines where a command
reports something a script would read. The ``python -m`` entry points behind each command keep working.
Watched runs end with one line of outcome on stdout: "promoted v0002: accuracy 0.6712 vs v0001's 0.665",
"drift: 4/6 columns drifted (67%) on 1,234 new rows; retrain triggered: crimson-wolf".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("evergreen")

PROG = "evergreen"
EXIT_FAILED = 1
EXIT_STACK_DOWN = 3


class CommandError(Exception):
    """A user-facing failure: one line on stderr, exit code 1."""


def fail(message: str) -> None:
    raise CommandError(message)


# ---------------------------------------------------------------- passthrough commands


def forward(target: str, name: str) -> Callable[[list[str]], int]:
    """A command that hands its arguments to an existing ``main(argv, prog)`` (imported only when run)."""

    def run(argv: list[str]) -> int:
        module_name, function = target.split(":")
        module = __import__(module_name, fromlist=[function])
        getattr(module, function)(argv, prog=f"{PROG} {name}")
        return 0

    return run


PASSTHROUGH: dict[str, tuple[str, str]] = {
    "stack": ("flows.stack:main", "up | down | status: the Prefect server, work pool, deployments and a worker"),
    "land": ("pipeline.lifecycle.landing:main", "next | sample | file | status: make data arrive in the landing area"),
    "registry": ("pipeline.lifecycle.registry.cli:main", "list | show | history | diff | rollback"),
    "serve": ("serving.__main__:main", "the prediction service (python -m serving)"),
    "score": ("serving.batch:main", "batch scoring with the production model (python -m serving.batch)"),
    "tune": ("pipeline.tune.cli:main", "search | show | apply: hyperparameter search with Optuna"),
}


def repro(argv: list[str]) -> int:
    """``dvc repro`` with this environment's interpreter and tools first on PATH (stage commands call ``python``)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.call([sys.executable, "-m", "dvc", "repro", *argv], env=env)


# ---------------------------------------------------------------- Prefect: where the server is, following a run


def prefect_api(required: bool = True) -> str | None:
    """The Prefect API this command talks to: $PREFECT_API_URL, else this workspace's stack when it is up
    (None when not ``required``: the flow then runs on Prefect's temporary in-process server)."""
    from flows.stack import workspace_stack

    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    stack = workspace_stack()
    if stack.healthy():
        return stack.api_url
    if required:
        fail(f"no Prefect server at {stack.api_url}: start one with `evergreen stack up` (or set PREFECT_API_URL)")
    return None


def api_settings(url: str | None) -> Any:
    """``temporary_settings`` pointing Prefect at ``url`` (no change for None)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: url} if url else {})


def follow(flow_run_id: Any, *, quiet: bool, timeout: float) -> Any:
    """Wait for a flow run to end, printing each new state on stderr; the final flow run."""
    import time

    from prefect.client.orchestration import get_client

    deadline, seen = time.monotonic() + timeout, None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            state = flow_run.state.name if flow_run.state is not None else "?"
            if state != seen and not quiet:
                sys.stderr.write(f"{flow_run.name}: {state}\n")
            seen = state
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if time.monotonic() > deadline:
                fail(f"{flow_run.name} still {state} after {timeout:.0f}s; follow it in the Prefect UI")
            time.sleep(2)  # the API has no push for another process's run: poll it


def retrain_outcome(history: Sequence[dict[str, Any]], since: str | None) -> dict[str, Any] | None:
    """The retrain's decision as the registry recorded it: the last promote, rejected or unchanged event at or
    after ``since`` (ISO time), or None when the run recorded none (it failed before the gate)."""
    decisions = [
        e
        for e in history
        if e.get("event") in ("promote", "rejected", "unchanged") and (since is None or str(e.get("time", "")) >= since)
    ]
    return decisions[-1] if decisions else None


def outcome_line(event: dict[str, Any] | None) -> str:
    """One line for a retrain's outcome: "promoted v0002: accuracy 0.6712 vs v0001's 0.665 (drift: reason)"."""
    from pipeline.lifecycle.gate import decision_summary

    if event is None:
        return "no decision recorded: the run stopped before the gate (see its logs)"
    verb = {"promote": "promoted", "rejected": "rejected", "unchanged": "unchanged"}[str(event["event"])]
    found = event.get("decision")
    verdict: dict[str, Any] = found if isinstance(found, dict) else {}
    gate = verdict.get("decision") if isinstance(verdict.get("decision"), dict) else None
    if event["event"] == "unchanged":
        return f"unchanged {event.get('version')}: the new model is byte-identical to production"
    reason = str(event.get("reason") or (gate or {}).get("reason") or "")
    metrics = decision_summary(verdict) if gate is not None else ""
    return f"{verb} {event.get('version')}: {metrics}{'; ' if metrics and reason else ''}{reason}"


def registry_here() -> Any:
    from flows.common import registry_at, workspace_root
    from pipeline.params import load_params

    root = workspace_root()
    return registry_at(root, load_params(root / "params.yaml").paths)


def utc_now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")


def retrain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} retrain",
        description="Start a retrain: screen landed data, run the DVC stages, gate the challenger, promote or reject.",
    )
    parser.add_argument("--watch", action="store_true", help="wait for the run and print its outcome")
    parser.add_argument("--here", action="store_true", help="run the flow in this process (no server or worker needed)")
    parser.add_argument("--deployment", default="retrain/retrain", help="default: retrain/retrain (or retrain/retrain-remote)")
    parser.add_argument("--start", choices=["cold", "warm"], default="cold", help="warm: fine-tune the production model")
    parser.add_argument("--reason", choices=["manual", "schedule", "drift"], default="manual")
    parser.add_argument("--note", default=None)
    parser.add_argument("--timeout", type=float, default=3600.0, help="--watch: give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    args = parser.parse_args(argv)
    since = utc_now_iso()
    if args.here:
        from flows.retrain import retrain as retrain_flow

        with api_settings(prefect_api(required=False)):  # recorded on the stack when it is up
            retrain_flow(reason=args.reason, note=args.note, start=args.start)
        event = retrain_outcome(registry_here().history(), since)
        return report({"run": "here", "state": "Completed", "outcome": event}, outcome_line(event), args.json)

    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    with api_settings(prefect_api()):
        flow_run = run_deployment(
            args.deployment,
            parameters={"reason": args.reason, "note": args.note, "start": args.start},
            timeout=0,
        )
        if not isinstance(flow_run, FlowRun):  # a coroutine only when called from async code; this is not
            fail(f"run_deployment({args.deployment!r}) returned {type(flow_run).__name__}, not a flow run")
        assert isinstance(flow_run, FlowRun)
        if not args.watch:
            return report(
                {"run": flow_run.name, "id": str(flow_run.id), "state": "Scheduled"},
                f"started {flow_run.name} ({args.deployment}); follow it with: evergreen retrain --watch, or the Prefect UI",
                args.json,
            )
        finished = follow(flow_run.id, quiet=args.json, timeout=args.timeout)
    return finish_retrain(finished, since, args.json)


def finish_retrain(flow_run: Any, since: str, as_json: bool) -> int:
    """The outcome line of a finished retrain run; exit 1 when the run did not complete."""
    state = flow_run.state.name if flow_run.state is not None else "?"
    if flow_run.state is None or not flow_run.state.is_completed():
        message = flow_run.state.message if flow_run.state is not None else ""
        report({"run": flow_run.name, "state": state, "outcome": None}, "", as_json)
        fail(f"{flow_run.name} ended {state}: {message or 'see its logs in the Prefect UI'}")
    event = retrain_outcome(registry_here().history(), since)
    return report({"run": flow_run.name, "state": state, "outcome": event}, f"{flow_run.name}: {outcome_line(event)}", as_json)


def report(data: dict[str, Any], line: str, as_json: bool) -> int:
    """The result on stdout: ``data`` as one JSON line for scripts, else ``line`` (when there is one) for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
    elif line:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


# ---------------------------------------------------------------- the drift monitor


def monitor_line(summary: dict[str, Any], run_name: str | None) -> str:
    """One line for a drift check: the drifted share, the rows, the verdict and the retrain it started."""
    if not summary.get("checked", True):
        return "nothing new to check (every landed batch and logged record was checked before)"
    drift = summary.get("drift", {})
    columns, drifted = len(drift.get("columns", [])), len(drift.get("drifted_columns", []))
    share = float(drift.get("drifted_share", 0.0))
    counted = f"{drifted}/{columns} columns drifted ({share:.0%})" if columns else f"{share:.0%} of columns drifted"
    decision = summary.get("decision", {})
    if run_name:
        verdict = f"retrain triggered: {run_name}"
    elif decision.get("retrain"):
        verdict = (
            "retrain wanted, not triggered (--no-trigger)"
            if not decision.get("blocked_by")
            else f"no retrain: {decision['blocked_by']}"
        )
    elif decision.get("blocked_by"):
        verdict = f"no retrain: {decision['blocked_by']}"
    else:
        verdict = "no retrain"
    return f"drift: {counted} on {int(summary.get('rows', 0)):,} new rows; {verdict}"


def monitor(argv: list[str]) -> int:
    if argv[:1] == ["ui"]:
        return monitor_ui(argv[1:])
    parser = argparse.ArgumentParser(
        prog=f"{PROG} monitor",
        description="Check the new data for drift against the production model now (``evergreen monitor ui``: the dashboard).",
    )
    parser.add_argument("--no-trigger", action="store_true", help="decide only; do not start a retrain")
    parser.add_argument("--watch", action="store_true", help="follow the retrain it starts to its end")
    parser.add_argument("--deployment", default="retrain/retrain", help="the retrain deployment to start on drift")
    parser.add_argument("--cooldown-hours", type=float, default=None, help="override monitor.cooldown_hours for this check")
    parser.add_argument("--start", choices=["cold", "warm"], default="cold", help="the start of the retrain it triggers")
    parser.add_argument("--timeout", type=float, default=3600.0, help="--watch: give up after this many seconds")
    parser.add_argument("--json", action="store_true", help="print the check's summary (and the retrain's outcome) as JSON")
    args = parser.parse_args(argv)
    with api_settings(prefect_api(required=not args.no_trigger)):
        from flows.monitor import drift_monitor

        since = utc_now_iso()
        summary = drift_monitor(
            retrain_deployment=None if args.no_trigger else args.deployment,
            cooldown_hours=args.cooldown_hours,
            retrain_start=args.start,
        )
        run_id = summary.get("retrain_flow_run")
        run_name = flow_run_name(run_id) if run_id else None
        report(summary if args.json else {}, "" if args.json else monitor_line(summary, run_name), args.json)
        if args.watch and run_id:
            finished = follow(run_id, quiet=args.json, timeout=args.timeout)
            return finish_retrain(finished, since, args.json)
    return 0


def flow_run_name(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.read_flow_run(flow_run_id).name)


def monitor_ui(argv: list[str]) -> int:
    from pipeline.lifecycle.dashboard import DEFAULT_UI_PORT, serve_ui

    parser = argparse.ArgumentParser(
        prog=f"{PROG} monitor ui",
        description="Evidently's UI on the drift checks' workspace (paths.evidently): drift over time, each check's report.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback by default: the UI has no login")
    parser.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help=f"default {DEFAULT_UI_PORT} (the service has 8000)")
    args = parser.parse_args(argv)
    from flows.common import workspace_root
    from pipeline.params import load_params

    root = workspace_root()
    workspace = root / load_params(root / "params.yaml").paths.evidently
    sys.stderr.write(f"Evidently UI on {workspace}: http://{args.host}:{args.port}\n")
    try:
        serve_ui(workspace, host=args.host, port=args.port)
    except ValueError as exc:
        fail(str(exc))
    return 0


# ---------------------------------------------------------------- reset-demo


def reset_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} reset-demo",
        description="Start the lifecycle demo afresh: empty landing area and quarantine, a fresh registry, monitor "
        "state, drift reports, Evidently workspace and prediction log. The pipeline's own outputs stay.",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    from pipeline.lifecycle.landing import CHECKOUT_FILES
    from pipeline.params import load_params, prediction_log_url
    from pipeline.params.paths import LANDING_ENV, REGISTRY_ENV

    shared = [name for name in (REGISTRY_ENV, LANDING_ENV) if os.environ.get(name)]
    if shared:
        fail(f"${shared[0]} is set: reset-demo resets this workspace's own demo state only, never a shared one")
    params = load_params()
    paths = params.paths
    folders = [Path(p) for p in (paths.quarantine, paths.registry, paths.drift_reports, paths.evidently)]
    landing = Path(paths.landing)
    landed = [p for p in landing.iterdir() if p.name not in CHECKOUT_FILES] if landing.is_dir() else []
    log_url = prediction_log_url(params.serve)
    log_files = []
    if log_url.startswith("sqlite:///") and not log_url.startswith("sqlite:////"):
        database = Path(log_url.removeprefix("sqlite:///"))
        log_files = [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]
    doomed = [p for p in [*landed, *folders, Path(paths.monitor_state), *log_files] if p.exists() or p.is_symlink()]
    if not doomed:
        sys.stdout.write("nothing to reset\n")
        return 0
    listing = "\n".join(f"  {p}" for p in doomed)
    if not args.yes:
        if not sys.stdin.isatty():
            fail("reset-demo deletes the registry and the landed data: confirm with --yes")
        sys.stdout.write(f"This deletes:\n{listing}\nContinue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            sys.stdout.write("nothing deleted\n")
            return EXIT_FAILED
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    sys.stdout.write(f"deleted {len(doomed)} item(s); the pipeline's outputs are untouched (evergreen repro is a no-op)\n")
    return 0


# ---------------------------------------------------------------- the command table


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "repro": (repro, "run the DVC pipeline (dvc repro with this environment); DVC's options pass through"),
    **{name: (forward(target, name), help_text) for name, (target, help_text) in PASSTHROUGH.items() if name == "stack"},
    "retrain": (retrain, "start a retrain (--watch: wait and print promoted/rejected; --here: run it in this process)"),
    "monitor": (monitor, "check new data for drift now (--watch: follow the retrain it starts; `monitor ui`: dashboard)"),
    **{name: (forward(target, name), help_text) for name, (target, help_text) in PASSTHROUGH.items() if name != "stack"},
    "reset-demo": (reset_demo, "empty landing area, fresh registry, monitor state and prediction log (asks first)"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Evergreen keeps a deep-learning model fresh in production: the DVC pipeline, the lifecycle "
        "loop (landing, drift, retrain, gate, registry), the service and tuning.",
        epilog="`evergreen COMMAND --help` for each command's options.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)  # its own parser answers --help
    return top


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evergreen")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> None:
    from pipeline.core.cli import setup_logging
    from pipeline.core.errors import EvergreenError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        parser().parse_args(argv)  # --help, --version, or argparse's usage error (exit 2)
    name, rest = argv[0], argv[1:]
    setup_logging()
    for chatty in ("httpx", "httpcore"):  # one line per API poll (Prefect's client) would bury the run's states
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        code = COMMANDS[name][0](rest)
    except (CommandError, EvergreenError) as exc:
        log.error("%s", exc)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    sys.exit(code)
