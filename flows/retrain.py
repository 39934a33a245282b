"""The retrain flow: screen landed data, run the DVC pipeline stage by stage, gate, promote.

Prefect orchestrates and DVC executes: the stage order is read from DVC's own graph (the DAG
lives in ``dvc.yaml`` only), and each stage runs as ``dvc repro --single-item <stage>`` so DVC's
cache, lock and ``dvc.lock`` stay the source of truth. A stage DVC finds up to date finishes in a
``Skipped`` state. Then the challenger (``models/model.onnx``) and the production model are scored
on the same newest test split, the gate decides, and a promoted model becomes a new immutable
registry version. The run ends with a markdown artifact: data added, both models' numbers, decision.

With a DVC remote (``$EVERGREEN_DVC_REMOTE``, or a default in DVC's config) the run first pulls what
``dvc.lock`` names and, once the gate has decided, pushes the workspace's data and models, so any
machine can reproduce a registered version: ``git checkout`` of its ``git_revision``, its ``dvc.lock``
from the registry, ``dvc pull``. Without one it says so and computes everything here.

Deployed from ``prefect.yaml``: ``retrain`` runs in the worker's checkout, ``retrain-remote`` in a
fresh clone per run (its pull step is ``python -m flows.common prepare-workspace``). Run once by
hand with ``python -m flows.retrain --reason manual``.
"""

# No `from __future__ import annotations` here: Prefect validates the flow's parameters with a pydantic model
# built from its annotations, and a worker that loads this file by path must find them already evaluated
# (strings like "Reason" failed to resolve there: "RetrainModel is not fully defined").
import argparse
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

import networkx as nx
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from flows.common import (
    DVC_REMOTE_ENV,
    DvcRemoteError,
    clear_stale_dvc_locks,
    dvc,
    dvc_remote,
    is_lock_contention,
    registry_at,
    retrain_lock,
    transfer,
    update_state,
    utc_now,
    workspace_root,
)
from pipeline.core.errors import DataError
from pipeline.core.gitinfo import git_revision
from pipeline.core.io import INIT_ENCODER_FILE, INIT_FILE, INT8_FILE, file_sha256, read_json
from pipeline.kinds import score_test, training_split_file
from pipeline.kinds.base import NotSupportedYet
from pipeline.lifecycle.gate import Decision, baseline_key, comparable, decide, parity_passed, trained_baseline
from pipeline.lifecycle.landing import screen_landed
from pipeline.lifecycle.registry import AnyRegistry, ModelVersion, ProductionChanged, RegistryError
from pipeline.onnxio.card import ModelCard
from pipeline.params import Params, load_params

Reason = Literal["schedule", "drift", "manual"]
Start = Literal["cold", "warm"]


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's own last lines."""


def stage_order(root: Path) -> list[str]:
    """Stage names in the order DVC runs them (its graph's edges point from a stage to its dependencies)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        # Names, not `addressing`: that is relative to the caller's cwd; the stages live in the root dvc.yaml.
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


class DvcLockBusy(StageFailed):
    """DVC could not take its repo lock or one of the stage's paths ("is busy"): another DVC process holds it."""


def _lock_contention(task, task_run, state) -> bool:
    """Retry only when DVC's lock was busy: that can succeed later; a failing stage cannot."""
    try:
        state.result()
    except DvcLockBusy:
        return True
    except Exception:
        return False
    return False


def stage_failure(stage: str, output: str) -> StageFailed:
    """The error for a failed ``dvc repro`` with this output: DvcLockBusy (retried) or StageFailed."""
    tail = " | ".join(line for line in output.strip().splitlines()[-5:] if line.strip())
    if is_lock_contention(output):
        return DvcLockBusy(f"stage {stage!r}: DVC's lock is busy: {tail}")
    return StageFailed(f"stage {stage!r} failed: {tail}")


@task(retries=3, retry_delay_seconds=10, retry_condition_fn=_lock_contention, task_run_name="dvc-{stage}")
def run_stage(stage: str, root: str) -> dict[str, Any] | State:
    """``dvc repro --single-item <stage>``; Skipped when DVC finds it up to date."""
    logger = get_run_logger()
    started = time.perf_counter()
    clear_stale_dvc_locks(Path(root))  # a lock left by a killed run would block this stage for good
    result = dvc(Path(root), "repro", "--single-item", stage)
    seconds = round(time.perf_counter() - started, 2)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise stage_failure(stage, output)
    if f"Running stage '{stage}'" in output:
        logger.info("stage %s ran in %.1fs", stage, seconds)
        return {"stage": stage, "status": "ran", "seconds": seconds}
    status = "restored from run-cache" if "is cached" in output else "up to date"
    logger.info("stage %s skipped: %s", stage, status)
    return Completed(
        name="Skipped",
        message=f"{stage}: {status}",
        data={"stage": stage, "status": "skipped", "detail": status, "seconds": seconds},
    )


def _remote_trouble(task, task_run, state) -> bool:
    """Retry a pull or push that failed against the remote (a network blip, a busy DVC lock); not a bug."""
    try:
        state.result()
    except DvcRemoteError:
        return True
    except Exception:
        return False
    return False


@task(retries=2, retry_delay_seconds=15, retry_condition_fn=_remote_trouble, task_run_name="dvc-pull")
def pull_data(root: str) -> dict[str, Any]:
    """``dvc pull`` before the stages: what the remote holds for dvc.lock need not be computed again here."""
    logger = get_run_logger()
    remote = dvc_remote(Path(root), os.environ.get(DVC_REMOTE_ENV))
    if remote is None:
        logger.info(
            "no DVC remote configured (set $%s or `dvc remote add -d <name> <url>`): nothing pulled, "
            "the stages compute what is missing and nothing will be pushed",
            DVC_REMOTE_ENV,
        )
        return {"command": "pull", "status": "no-remote"}
    pulled = transfer(Path(root), "pull", remote)
    if pulled.status == "first-use":
        logger.info(
            "dvc pull from %s: %d file(s), %d object(s) of dvc.lock not on the remote yet (expected before its "
            "first push): the stages compute them",
            remote,
            pulled.files,
            pulled.missing,
        )
    elif pulled.status == "kept-local":
        logger.warning("dvc pull from %s left the workspace's own outputs in place (%s)", remote, pulled.detail)
    else:
        logger.info("dvc pull from %s: %s, %d file(s) in %.1fs", remote, pulled.status, pulled.files, pulled.seconds)
    return asdict(pulled)


@task(retries=2, retry_delay_seconds=15, retry_condition_fn=_remote_trouble, task_run_name="dvc-push")
def push_data(root: str) -> dict[str, Any]:
    """``dvc push`` of the workspace's data and models once the gate has decided and before anything is
    registered or promoted: every version the run ends at (promoted, rejected, or production's model again)
    can then be reproduced on any machine (its git revision, its dvc.lock from the registry, ``dvc pull``).
    A push that fails stops the run there, production unchanged: a model whose data never reached the
    remote is never made production (a fresh-clone worker deletes its workspace after the run)."""
    logger = get_run_logger()
    remote = dvc_remote(Path(root), os.environ.get(DVC_REMOTE_ENV))
    if remote is None:
        logger.info("no DVC remote configured: this run's data stays in this workspace only")
        return {"command": "push", "status": "no-remote"}
    try:
        pushed = transfer(Path(root), "push", remote)
    except DvcRemoteError as exc:
        raise DvcRemoteError(
            f"the gated model's data is not on {remote}, so nothing was registered or promoted: {exc}"
        ) from None
    logger.info("dvc push to %s: %d file(s) in %.1fs", remote, pushed.files, pushed.seconds)
    return asdict(pushed)


@task
def place_init_model(root: str, start: Start) -> dict[str, Any]:
    """warm: put the production model's checkpoint and encoder in ``paths.init_model`` for train to
    fine-tune; cold: remove them. Either way DVC sees the change and re-runs train."""
    logger = get_run_logger()
    paths = load_params(Path(root) / "params.yaml").paths
    folder = Path(root) / paths.init_model
    production = registry_at(Path(root), paths).production()
    if start == "warm" and production is not None and production.torch_model is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for source, name in ((production.torch_model, INIT_FILE), (production.encoder, INIT_ENCODER_FILE)):
            target = folder / name
            if source is None:
                target.unlink(missing_ok=True)
            elif not target.exists() or file_sha256(target) != file_sha256(source):
                shutil.copyfile(source, target)
        logger.info("warm start from production %s", production.name)
        return {"start": "warm", "from": production.name}
    if start == "warm":
        logger.warning("warm start asked for, but there is no production model with a checkpoint: cold start")
    for name in (INIT_FILE, INIT_ENCODER_FILE):
        (folder / name).unlink(missing_ok=True)
    return {"start": "cold", "from": None}


@task
def screen_landing(root: str) -> dict[str, Any]:
    """Quarantine landed batches that cannot be ingested, so one bad file never stops the retrain."""
    params = load_params(Path(root) / "params.yaml")
    try:
        good, moved = screen_landed(params, Path(root))
    except NotSupportedYet as exc:  # a kind that takes no landed data yet: nothing to screen, the retrain goes on
        get_run_logger().info("%s", exc)
        return {"batches": [], "quarantined": []}
    return {"batches": [b.path.name for b in good], "quarantined": [p.name for p in moved]}


def champion(registry: AnyRegistry, challenger_card: Path) -> tuple[ModelVersion | None, str | None]:
    """The production model to gate against, re-verified, and why it is not comparable (None: it is).

    RegistryError naming the file when a file of the production version changed after registration.
    """
    production = registry.production()
    if production is None:
        return None, None
    try:
        production.verify()
    except RegistryError as exc:
        raise RegistryError(f"gate: the production model is corrupt, not scoring it: {exc}") from None
    why = comparable(ModelCard.load(challenger_card), ModelCard.load(production.card))
    return production, None if why is None else f"champion {production.name} not comparable: {why}"


@task
def gate(root: str) -> dict[str, Any]:
    """Score challenger and champion on the newest test split and decide.

    The champion is re-verified against its registered hashes first: a corrupted file would score
    as a weak model and lose to any challenger. A champion of another lineage (kind, task, target or
    input schema; see ``pipeline.lifecycle.gate``) is not scored: the challenger is gated as a first model.
    """
    logger = get_run_logger()
    root_path = Path(root)
    params = load_params(root_path / "params.yaml")
    paths = params.paths
    test_split = root_path / paths.split
    challenger_scores = score_test(root_path / paths.onnx, root_path / paths.model_card, test_split)
    metrics = read_json(root_path / paths.eval_metrics)
    metric = params.gate.metric
    floor = baseline_key(metric, metrics)
    if not isinstance(metrics.get(floor), dict) or metric not in metrics[floor]:
        raise DataError(f"{root_path / paths.eval_metrics}: no {floor}.{metric} for the gate (run dvc repro evaluate)")
    baseline = metrics[floor][metric]

    production, new_lineage = champion(registry_at(root_path, paths), root_path / paths.model_card)
    champion_scores = None
    if production is not None and new_lineage is None:
        champion_scores = score_test(production.onnx, production.card, test_split)
    elif new_lineage is not None:
        logger.warning("%s; gating the challenger as the first model of a new lineage", new_lineage)
    parity = read_json(root_path / paths.export_report)
    decision = decide(
        challenger_scores[metric],
        None if champion_scores is None else champion_scores[metric],
        baseline,
        parity_passed(parity, params.export.tolerance),
        params.gate,
        trained_baseline(metrics, metric),
        floor,
    )
    if new_lineage is not None:
        decision = replace(decision, reason=f"new lineage ({new_lineage}): {decision.reason}")
    return {
        "decision": decision.to_dict(),
        "challenger": challenger_scores,
        "champion": champion_scores,
        "champion_version": None if production is None else production.name,
        "new_lineage": new_lineage,
        "test_rows": challenger_scores["rows"],
    }


@task
def promote(root: str, verdict: dict[str, Any], reason: str, note: str | None) -> dict[str, Any]:
    """Register the challenger as a new version and switch production if the gate says so."""
    root_path = Path(root)
    params = load_params(root_path / "params.yaml")
    paths = params.paths
    registry = registry_at(root_path, paths)
    decision = Decision(**verdict["decision"])
    onnx_sha = file_sha256(root_path / paths.onnx)
    production = registry.production()
    event = {"trigger": reason, "note": note, **verdict}
    if production is not None and production.onnx_sha256 == onnx_sha:
        registry.record({"event": "unchanged", "version": production.name, "decision": event})
        return {"action": "unchanged", "version": production.name}
    int8 = ModelCard.load(root_path / paths.model_card).int8
    serve_int8 = int8 is not None and int8.accuracy_loss <= params.gate.int8_max_accuracy_loss
    existing = registry.find_by_onnx_sha256(onnx_sha)
    rolled_back = {e.get("previous") for e in registry.history() if e.get("event") == "rollback"}
    if existing is not None and existing.name in rolled_back:
        # An operator rolled this exact model back: a retrain that reproduces it must not undo that.
        registry.record(
            {
                "event": "rejected",
                "version": existing.name,
                "decision": event,
                "reason": "this model was rolled back; promote it by hand if wanted",
            }
        )
        return {"action": "rejected", "version": existing.name}
    version = existing or registry.register(
        onnx=root_path / paths.onnx,
        model_card=root_path / paths.model_card,
        metrics=root_path / paths.eval_metrics,
        params=root_path / "params.yaml",
        dvc_lock=root_path / "dvc.lock",
        reference=training_split_file(root_path / paths.split),
        onnx_int8=(root_path / paths.onnx_int8 / INT8_FILE) if int8 else None,
        torch_model=root_path / paths.model,
        encoder=root_path / paths.preprocessor,
        git_revision=git_revision(root_path),
        extra={
            "rows": read_json(root_path / paths.ingest_report)["rows"],
            "trigger": reason,
            "test_scores": verdict["challenger"],
            # int8 only when it loses at most gate.int8_max_accuracy_loss of test accuracy (measured by export).
            "serve": "int8" if serve_int8 else "fp32",
        },
    )
    if decision.promote:
        try:  # against the champion the gate scored: another worker sharing the registry may have promoted since
            registry.promote(
                version.number,
                reason=f"{reason}: {decision.reason}",
                decision=event,
                expected_current=verdict["champion_version"],
            )
        except ProductionChanged as exc:
            get_run_logger().warning("%s", exc)
            registry.record({"event": "rejected", "version": version.name, "decision": event, "reason": str(exc)})
            return {"action": "rejected", "version": version.name}
        return {"action": "promoted", "version": version.name}
    registry.record({"event": "rejected", "version": version.name, "decision": event})
    return {"action": "rejected", "version": version.name}


def rows_line(now: int, champion: str | None, before: int | None) -> str:
    """The rows this run ingested, beside the production model's training run when there is one to compare with."""
    if champion is None:
        return f"{now} rows ingested (no production model yet: nothing to compare with)"
    if before is None:
        return f"{now} rows ingested (production {champion} recorded no row count to compare with)"
    return f"{now} rows ingested ({now - before:+d} vs the training run of production {champion})"


def summary_markdown(
    reason: str, note: str | None, stages: list[dict], landing: dict, verdict: dict, outcome: dict, rows: dict
) -> str:
    """The run's story for the Prefect UI. ``rows``: ``now`` (ingested by this run) and ``before`` (by the
    champion's training run; None when there is no champion or it recorded none)."""
    decision = verdict["decision"]
    columns = [name for name in verdict["challenger"] if name != "rows"]
    lines = [
        f"# Retrain ({reason})",
        "",
        f"Note: {note}" if note else "",
        f"**Decision: {outcome['action']} {outcome.get('version') or ''}** - {decision['reason']}",
        "",
        f"Data: {rows_line(rows['now'], verdict['champion_version'], rows['before'])}; "
        f"landed batches: {', '.join(landing['batches']) or 'none'}; quarantined: {', '.join(landing['quarantined']) or 'none'}",
        "",
        f"| model | {' | '.join(columns)} |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, scores in (
        ("challenger", verdict["challenger"]),
        (f"champion {verdict['champion_version'] or '-'}", verdict["champion"]),
    ):
        if scores:
            lines.append(f"| {name} | {' | '.join(f'{scores[c]:.4f}' for c in columns)} |")
    lines += [
        "",
        f"Gate metric `{decision['metric']}`, tolerance {decision['tolerance']}, test rows {verdict['test_rows']}.",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {s['stage']} | {s.get('detail', s['status'])} | {s['seconds']} |" for s in stages]
    return "\n".join(line for line in lines if line is not None)


def remote_line(pulled: dict[str, Any], pushed: dict[str, Any]) -> str:
    """One line for the summary: what came from and went to the DVC remote."""
    if pulled["status"] == "no-remote":
        return "DVC remote: none configured (nothing pulled or pushed)."
    return (
        f"DVC remote `{pulled['remote']}`: pulled {pulled['files']} file(s) ({pulled['status']}), "
        f"pushed {pushed.get('files', 0)} file(s) ({pushed['status']})."
    )


@flow(name="retrain", log_prints=False)
def retrain(reason: Reason = "manual", note: str | None = None, start: Start = "cold") -> dict[str, Any]:
    """Screen new data, run every DVC stage in DVC's order, gate the challenger, promote or reject.

    ``start="warm"`` fine-tunes the production model on the new data (train.warm_start) instead
    of training from scratch.
    """
    logger = get_run_logger()
    root = workspace_root()
    params: Params = load_params(root / "params.yaml")
    with retrain_lock(root, wait_seconds=600):
        pulled = pull_data(str(root))
        landing = screen_landing(str(root))
        initialisation = place_init_model(str(root), start)
        stages: list[dict[str, Any]] = []
        for stage in stage_order(root):
            state = run_stage.with_options(name=f"dvc-{stage}")(stage, str(root), return_state=True)
            # A skipped stage returns a Completed state carrying its summary: result() is the dict either way.
            summary = state.result()
            if not isinstance(summary, dict):
                raise TypeError(f"stage {stage!r}: expected its summary dict, got {type(summary).__name__}")
            stages.append(summary)
        verdict = gate(str(root))
        pushed = push_data(str(root))  # before promote: production never points at data the remote lacks
        outcome = promote(str(root), verdict, reason, note)
        update_state(root / params.paths.monitor_state, last_retrain_at=utc_now().isoformat())

    rows_now = read_json(root / params.paths.ingest_report)["rows"]
    champion = verdict["champion_version"]
    rows_before = registry_at(root, params.paths).get(champion).meta["extra"].get("rows") if champion else None
    markdown = (
        summary_markdown(reason, note, stages, landing, verdict, outcome, {"now": rows_now, "before": rows_before})
        + "\n\n"
        + remote_line(pulled, pushed)
    )
    create_markdown_artifact(markdown=markdown, key="retrain-summary", description="Evergreen retrain summary")
    logger.info("retrain (%s): %s %s - %s", reason, outcome["action"], outcome.get("version"), verdict["decision"]["reason"])
    return {
        "stages": stages,
        "landing": landing,
        "start": initialisation,
        **verdict,
        "outcome": outcome,
        "dvc": {"pull": pulled, "push": pushed, "workspace": str(root)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.retrain")
    parser.add_argument("--reason", choices=["schedule", "drift", "manual"], default="manual")
    parser.add_argument("--note", default=None)
    parser.add_argument("--start", choices=["cold", "warm"], default="cold", help="warm: fine-tune the production model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    retrain(reason=args.reason, note=args.note, start=args.start)


if __name__ == "__main__":
    main()
