"""The drift-monitor flow: compare newly landed data with the production model's training data.

Reference: the exact training data of the production model (stored, hash-pinned, in its registry
version), sampled if large. Current: the batches landed since the last check (the source is
pluggable). Both are read and prepared by the pipeline's kind (``KindRuntime.landing_screen`` reads
them, ``drift_frame`` picks the columns): tables compare the model's inputs, images per-image
statistics (brightness, contrast, sharpness, size), sequences the steps' inputs and target, texts their
length in characters and words; classifiers of images, texts and sequences add the served model's
predicted class, texts the share of their words unseen in training. The served model is the one the
service answers with (the int8 twin where the gate chose it), measured against its own test figures.
Evidently's DataDriftPreset gives per-column verdicts from its test statuses. Where the kind groups its
rows (``KindRuntime.drift_groups``: sequences by series), the largest groups are also checked each
against their own reference rows (``group_drift``), and a group that drifted on its own counts as drift.
When the new data carries labels (actuals), the production model is scored on it too
(``KindRuntime.score_rows``; sequences: every complete window of the new steps). ``decide_retrain`` applies
the policy and, if it says so, the ``retrain/retrain`` deployment is started with reason
``drift`` and a link to the report. Reports: ``reports/drift/<time>/report.html`` and
``summary.json`` (the newest ``monitor.keep_reports`` folders are kept, older ones pruned), plus a markdown
artifact with the per-column (and per-group) tables and a table artifact with each column's drift score over
the last checks. Each check also adds a snapshot to the Evidently workspace ``paths.evidently``
(``pipeline/lifecycle/dashboard.py``: one project per pipeline, a dashboard over time).

Deployed from ``prefect.yaml`` (daily); run once by hand with ``python -m flows.monitor``;
``python -m flows.monitor ui [--port N]`` serves the Evidently UI on the workspace.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.common import (
    MonitorState,
    locked_state,
    registry_at,
    retrain_in_progress,
    update_state,
    utc_now,
    workspace_root,
)
from pipeline import kinds
from pipeline.core.io import write_json
from pipeline.kinds.base import LandingScreen
from pipeline.lifecycle.dashboard import (
    DEFAULT_UI_PORT,
    SUMMARY_FILE,
    CheckFigures,
    drift_history,
    history_table,
    percent,
    project_name,
    prune_reports,
    record_check,
    report_folder_name,
    serve_ui,
    significant,
)
from pipeline.lifecycle.landing import landing_rules, screen_landed
from pipeline.lifecycle.monitoring import (
    CurrentSource,
    LandingSource,
    PredictionLogSource,
    combine,
    compare_frames,
    decide_retrain,
    drifted_groups,
    group_drift,
    idempotency_key,
    label_column,
    last_retrain,
)
from pipeline.onnxio.card import ModelCard
from pipeline.params import load_params, prediction_log_url

RETRAIN_DEPLOYMENT = "retrain/retrain"
HISTORY_CHECKS = 10  # checks in the drift-history table artifact (at most monitor.keep_reports are kept)


@task
def check_drift(root: str, report_dir: str, checked_at: datetime | None = None) -> dict[str, Any] | None:
    """Drift of the new batches against the production model's training data; None when nothing is new.

    Also adds the check to the Evidently workspace (``paths.evidently``); a failure there is a warning."""
    logger = get_run_logger()
    root_path = Path(root)
    params = load_params(root_path / "params.yaml")
    paths, cfg = params.paths, params.monitor
    # The kind's landing rule, built once: it screens, lists and reads the batches, and reads the reference.
    rules = landing_rules(kinds.get(params.ingest.kind).runtime.landing_screen(params))  # NotSupportedYet: no landing
    screen_landed(params, root_path, rules)

    production = registry_at(root_path, paths).production()  # $EVERGREEN_REGISTRY, as the retrain flow
    if production is None:
        logger.warning("no production model yet: run the retrain flow first")
        return None
    production.verify()  # the reference must be the exact training data the registry pinned
    card = ModelCard.load(production.card)
    runtime = kinds.get(card.KIND).runtime

    state = MonitorState.load(root_path / paths.monitor_state)
    current = combine(
        [
            source.pending(set(state.checked_batches))
            for source in current_sources(params, root_path, label_column(card), rules)
        ]
    )
    if current.empty:
        logger.info("no new data since the last check (%s)", cfg.source)
        return None

    # The model the service answers with (the int8 twin where the gate chose it), so the predicted classes and the
    # performance measured here are those of the served model, compared with that model's own test figures.
    served = production.serving_onnx
    reference_metrics = dict(card.test_metrics)
    if served != production.onnx and card.int8 is not None:
        reference_metrics.update(
            {k: v for k, v in {"accuracy": card.int8.accuracy, "mae": card.int8.mae}.items() if v is not None}
        )
    # The kind's drift columns, with what the production model adds (the predicted class, for text the unseen words).
    current_inputs = runtime.drift_frame(current.frame, card, params, served)  # NotSupportedYet: not checked yet
    # The training split as the kind reads a batch (images: per-image statistics of train.npz).
    reference_rows = rules.read(production.reference)
    reference = runtime.drift_frame(reference_rows, card, params, served)
    html = Path(report_dir) / "report.html"
    drift = compare_frames(reference, current_inputs, cfg, params.seed, html)
    # Each large group (series) against its own reference rows, where the kind groups its rows.
    group_column = runtime.drift_groups(card)
    groups = None
    if group_column is not None:
        groups = group_drift(
            reference,
            current_inputs,
            reference_rows.get(group_column),
            current.frame.get(group_column),
            group_column,
            cfg,
            params.seed,
        )
    # Performance drift: the production model on the new rows that carry labels (actuals), when there are enough.
    performance = runtime.score_rows(served, card, current.frame, params)
    labelled = int(performance.get("rows", 0))
    measured = labelled >= cfg.min_rows
    served_name = served.name if served == production.onnx else f"int8/{served.name}"
    # The view over time: a failure to write it is logged by record_check and never costs the verdict.
    recorded = record_check(
        root_path / paths.evidently,
        project_name(card.KIND, card.target),
        drift,
        CheckFigures(
            new_rows=len(current.frame),
            labelled_rows=labelled,
            accuracy=performance.get("accuracy") if measured else None,
            test_accuracy=reference_metrics.get("accuracy"),
            mae=performance.get("mae") if measured else None,
            test_mae=reference_metrics.get("mae"),
        ),
        checked_at or utc_now(),
        metadata={
            "production_version": production.name,
            "served_model": served_name,
            "batches": shown(current.sources),
            "report": Path(report_dir).name,
        },
        keep_snapshots=cfg.keep_snapshots,
    )
    return {
        "drift": drift.to_dict(),
        "table": drift.markdown_table(),
        "groups": None if groups is None else groups.to_dict(),
        "group_table": None if groups is None else groups.markdown_table(),
        "drifted_groups": list(drifted_groups(groups, cfg.drift_share)),
        "keys": list(current.keys),
        "batches": list(current.sources),
        "rows": len(current.frame),
        "labelled_rows": labelled,
        "accuracy": performance.get("accuracy") if measured else None,
        "reference_accuracy": reference_metrics.get("accuracy"),
        "mae": performance.get("mae") if measured else None,
        "reference_mae": reference_metrics.get("mae"),
        "served_model": served_name,
        "production_version": production.name,
        "report": str(html),
        "snapshot": None if recorded is None else recorded.to_dict(),
    }


def shown(names: Sequence[str], limit: int = 5) -> str:
    """Names for a line of text: the first ``limit``, then how many more."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def current_sources(params, root: Path, target: str | None, rules: LandingScreen | None = None) -> list[CurrentSource]:
    """The sources ``monitor.source`` names: landed batches (listed and read by the kind's ``rules``), the
    service's prediction log (late labels joined into ``target``; None: not joined), or both."""
    sources: list[CurrentSource] = []
    if params.monitor.source in ("landing", "both"):
        sources.append(LandingSource(root / params.paths.landing, rules=rules))
    if params.monitor.source in ("prediction_log", "both"):
        url = prediction_log_url(params.serve)
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{root / url.removeprefix('sqlite:///')}"  # relative to the workspace
        sources.append(PredictionLogSource(url, target))
    return sources


@task
def trigger_retrain(deployment: str, note: str, key: str, start: str = "cold") -> str:
    """Start the retrain deployment (returns at once; the worker runs it)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment,
        parameters={"reason": "drift", "note": note, "start": start},
        timeout=0,
        idempotency_key=key,
        as_subflow=False,
    )
    # run_deployment returns a coroutine only when called from async code; this task is synchronous.
    if not isinstance(run, FlowRun):
        raise TypeError(f"run_deployment({deployment!r}) returned {type(run).__name__}, not a FlowRun")
    return str(run.id)


@flow(name="drift-monitor")
def drift_monitor(
    retrain_deployment: str | None = RETRAIN_DEPLOYMENT,
    cooldown_hours: float | None = None,
    retrain_start: Literal["cold", "warm"] = "cold",
) -> dict[str, Any]:
    """Check new data for drift and trigger a retrain when the policy says so.

    ``cooldown_hours`` overrides ``monitor.cooldown_hours`` for this run (an operator's "check now");
    ``retrain_start`` is passed to the retrain it triggers (warm: fine-tune the production model).
    """
    logger = get_run_logger()
    root = workspace_root()
    params = load_params(root / "params.yaml")
    monitor_cfg = (
        params.monitor if cooldown_hours is None else params.monitor.model_copy(update={"cooldown_hours": cooldown_hours})
    )
    now = utc_now()
    reports = root / params.paths.drift_reports
    report_dir = reports / report_folder_name(now)
    result = check_drift(str(root), str(report_dir), now)
    state_path = root / params.paths.monitor_state
    if result is None:
        update_state(state_path, last_check_at=now.isoformat())
        return {"checked": False}

    key = idempotency_key(result["keys"])
    with locked_state(state_path) as state:
        decision = decide_retrain(
            drifted_share=result["drift"]["drifted_share"],
            current_rows=result["rows"],
            accuracy=result["accuracy"],
            reference_accuracy=result["reference_accuracy"],
            error=result["mae"],
            reference_error=result["reference_mae"],
            drifted_groups=result["drifted_groups"],
            group_column=None if result["groups"] is None else result["groups"]["column"],
            key=key,
            triggered_keys=set(state.triggered_keys),
            last_retrain_at=last_retrain(state.last_retrain_at, registry_at(root, params.paths).history()),
            retrain_running=retrain_in_progress(root),
            now=now,
            cfg=monitor_cfg,
        )
        flow_run_id = None
        if decision.retrain and retrain_deployment:
            flow_run_id = trigger_retrain(retrain_deployment, f"drift report: {result['report']}", key, retrain_start)
            state.triggered_keys.append(key)
        if decision.blocked_by is None and (retrain_deployment or not decision.retrain):
            # Checked for good. A blocked decision, or a wanted retrain that this run may not start
            # (--no-trigger), leaves the data pending so a later check can act on it.
            state.checked_batches.extend(result["keys"])
        state.last_check_at = now.isoformat()

    summary = {
        **{k: v for k, v in result.items() if k not in ("table", "group_table")},
        "decision": decision.to_dict(),
        "key": key,
        "retrain_flow_run": flow_run_id,
    }
    write_json(report_dir / SUMMARY_FILE, summary)
    if flow_run_id:
        verdict = "retrain triggered"
    elif decision.retrain:
        verdict = "retrain wanted, not triggered (no deployment given)"
    elif decision.blocked_by:
        verdict = f"no retrain: {decision.blocked_by}"
    else:
        verdict = "no retrain"
    try:
        prune_reports(reports, params.monitor.keep_reports)
    except OSError as exc:  # the check is done and recorded; old reports wait for the next check's pruning
        logger.warning("drift reports in %s not pruned: %s", reports, exc)
    create_markdown_artifact(
        key="drift-report", description="Evergreen drift check", markdown=check_markdown(result, verdict, decision.reasons)
    )
    history = drift_history(reports, HISTORY_CHECKS)
    create_table_artifact(
        key="drift-history",
        table=history_table(history),
        description=(
            f"Drift score per column over the last {len(history)} checks, oldest first ('drift': the column's test "
            "failed). Scores are distances (higher: more drift) or, on at most 1000 reference rows, p-values (lower)."
        ),
    )
    if result["snapshot"] is not None:
        create_link_artifact(
            key="drift-snapshot",
            link=f"http://127.0.0.1:{DEFAULT_UI_PORT}{result['snapshot']['ui_path']}",
            link_text=f"This check in the Evidently UI (project {result['snapshot']['project']!r})",
            description=f"Start the UI with `python -m flows.monitor ui` (http://127.0.0.1:{DEFAULT_UI_PORT}).",
        )
    logger.info("drift check: %s (%s)", verdict, "; ".join(decision.reasons))
    return summary


def check_markdown(result: dict[str, Any], verdict: str, reasons: Sequence[str]) -> str:
    """The drift-report artifact of a check (``check_drift``'s result), its numbers written for people."""
    if result["reference_mae"] is not None:  # a numeric prediction (a forecaster, a regressor)
        performance = (
            f"MAE on labelled new rows: {significant(result['mae'])} (test MAE {significant(result['reference_mae'])})"
        )
    else:
        performance = (
            f"accuracy on labelled new rows: {significant(result['accuracy'])} "
            f"(test accuracy {significant(result['reference_accuracy'])})"
        )
    report = Path(result["report"])
    where = [f"Report: [{report.parent.name}/{report.name}]({report.resolve().as_uri()})"]
    if result["snapshot"] is not None:
        snapshot = result["snapshot"]
        where.append(
            f"Evidently: snapshot `{snapshot['snapshot_id']}` in project {snapshot['project']!r} "
            f"(`python -m flows.monitor ui`, then http://127.0.0.1:{DEFAULT_UI_PORT}{snapshot['ui_path']})"
        )
    groups = [] if result["group_table"] is None else ["", f"## Per {result['groups']['column']}", "", result["group_table"]]
    return "\n".join(
        [
            f"# Drift check: {verdict}",
            "",
            f"{result['rows']:,} new rows in {shown(result['batches'])} vs the training data of {result['production_version']}.",
            f"Drifted columns: {percent(result['drift']['drifted_share'])}; dataset drift: "
            f"{'yes' if result['drift']['dataset_drift'] else 'no'}; {performance} on {result['labelled_rows']:,} scored rows.",
            "",
            "Reasons: " + "; ".join(reasons),
            "",
            "; ".join(where),
            "",
            result["table"],
            *groups,
        ]
    )


def ui(root: Path | None = None, host: str = "127.0.0.1", port: int = DEFAULT_UI_PORT) -> None:
    """Serve the Evidently UI on the monitor's workspace (``paths.evidently`` of ``root``, default the workspace
    root, ``$EVERGREEN_ROOT`` or the current folder) until interrupted; see ``dashboard.serve_ui``."""
    root = workspace_root() if root is None else root
    serve_ui(root / load_params(root / "params.yaml").paths.evidently, host, port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m flows.monitor", description="Run one drift check (no command), or serve the Evidently UI (ui)."
    )
    parser.add_argument("--no-trigger", action="store_true", help="decide only; do not start the retrain deployment")
    commands = parser.add_subparsers(dest="command", metavar="{ui}")
    serve = commands.add_parser("ui", help="serve the Evidently UI on the monitor's workspace (paths.evidently)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help=f"port (default {DEFAULT_UI_PORT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.command == "ui":
        ui(host=args.host, port=args.port)
        return
    drift_monitor(retrain_deployment=None if args.no_trigger else RETRAIN_DEPLOYMENT)


if __name__ == "__main__":
    main()
