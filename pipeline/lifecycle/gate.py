"""Champion/challenger gate: promote a new model only when it is at least as good as production.

Both models are scored on the same, newest test data. The challenger is promoted when its
primary metric (``gate.metric``) is at least the champion's minus ``gate.tolerance`` and its
ONNX parity check passed. With no champion yet, it must beat the majority-class baseline
(for mae/rmse: the stronger naive forecast, persistence or seasonal naive, or a table regressor's training
mean) and, where evaluate trained one, come within ``gate.tolerance`` of the trained baseline too (HGB for
tables, regression included, the pixel logistic regression for images): a diverged network predicts one
class and can still edge past the majority class, never past a fitted model.
Every decision carries both models' numbers and the reason.

Lineage: a champion is only comparable with a challenger of the same kind, task, target and
input schema (``lineage``). After a switch of ``params.yaml`` to other data the old champion cannot
even be scored on the new test split, so ``comparable`` says why in one line and the flow gates the
challenger as the first model of a new lineage (recorded in the registry's history); the registry
keeps one history, with the lineage change in it, rather than one registry per lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pipeline.onnxio.card import ModelCard
from pipeline.params import GateParams


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None
    baseline: float | None
    tolerance: float
    trained_baseline: float | None = None  # the first model's second bar (None: evaluate trained none)
    trained_baseline_name: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def number(value: Any) -> str:
    """A metric for people: four significant digits (0.6524, 1.235e+04), '-' for none."""
    if value is None:
        return "-"
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def decision_summary(verdict: dict[str, Any]) -> str:
    """One line for a gate's verdict as the retrain flow records it (``decision``, ``champion_version``):
    "accuracy 0.6712 vs v0001's 0.665" or, for a first model, "accuracy 0.6712 (no champion; baseline 0.41)"."""
    found = verdict.get("decision")
    decision: dict[str, Any] = found if isinstance(found, dict) else {}
    metric = decision.get("metric", "?")
    challenger = number(decision.get("challenger"))
    if decision.get("champion") is None:
        return f"{metric} {challenger} (no champion; baseline {number(decision.get('baseline'))})"
    return f"{metric} {challenger} vs {verdict.get('champion_version') or 'the champion'}'s {number(decision.get('champion'))}"


def parity_passed(parity: dict, tolerance: float) -> bool:
    """The export stage's own verification, re-checked from its report.

    Classifiers report ``max_abs_probability_diff``; forecasters report ``max_scaled_diff`` (the
    largest |ONNX - PyTorch| forecast in units of the target's training std) and 0 label mismatches.
    """
    diff = parity.get("max_scaled_diff", parity.get("max_abs_probability_diff", 1.0))
    return parity.get("label_mismatches") == 0 and diff <= tolerance


LOWER_IS_BETTER = {"mae", "rmse"}
# The baseline a first model must beat, as evaluate names it in its metrics.
BASELINE_KEY = {"mae": "baseline_seasonal_naive", "rmse": "baseline_seasonal_naive"}
# A table regressor's naive floor: the training mean (it has no seasons).
MEAN_BASELINE = "baseline_mean"


# A forecaster's naive forecasts: the one a first model must beat is the stronger on the test windows.
NAIVE_FORECASTS = ("baseline_seasonal_naive", "baseline_persistence")


def baseline_key(metric: str, metrics: dict[str, Any] | None = None) -> str:
    """Where evaluate's metrics.json keeps the baseline a first model must beat for ``metric``: for an error
    metric, the stronger naive forecast in ``metrics`` (persistence or seasonal naive, whichever errs less on
    the test windows), or the training mean where ``metrics`` hold that and no forecast."""
    key = BASELINE_KEY.get(metric, "baseline_majority")
    if metrics is None or metric not in LOWER_IS_BETTER:
        return key
    naive = [
        (float(metrics[k][metric]), k) for k in NAIVE_FORECASTS if isinstance(metrics.get(k), dict) and metric in metrics[k]
    ]
    if naive:
        return min(naive)[1]
    if MEAN_BASELINE in metrics:
        return MEAN_BASELINE
    return key


def trained_baseline(metrics: dict[str, Any], metric: str) -> tuple[str, float] | None:
    """The strongest baseline in evaluate's metrics other than ``baseline_key(metric)``, as (key, value).

    Tables: ``baseline_hgb`` (classifier or regressor); images: ``baseline_logreg``. None when evaluate
    reports only naive floors (forecasts: the stronger naive forecast is the floor itself, beaten outright;
    sequence classification).
    """
    floor = baseline_key(metric, metrics)
    found = [
        (key, float(value[metric]))
        for key, value in sorted(metrics.items())
        if key.startswith("baseline_")
        and key != floor
        and key not in NAIVE_FORECASTS
        and isinstance(value, dict)
        and metric in value
    ]
    if not found:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(found, key=lambda item: item[1])


def decide(
    challenger: float,
    champion: float | None,
    baseline: float,
    parity_ok: bool,
    cfg: GateParams,
    trained: tuple[str, float] | None = None,
    floor: str | None = None,
) -> Decision:
    """The promotion rule; pure, so every branch is unit-tested. Errors (mae, rmse) are lower-better.

    ``trained``: ``trained_baseline(metrics, cfg.metric)``, the first model's second bar; ``floor``:
    ``baseline_key(cfg.metric, metrics)``, the name of ``baseline`` (None: ``baseline_key(cfg.metric)``).
    """
    trained_name = None if trained is None else trained[0].removeprefix("baseline_").replace("_", "-")
    trained_value = None if trained is None else trained[1]

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(
            promote, reason, cfg.metric, challenger, champion, baseline, cfg.tolerance, trained_value, trained_name
        )

    name = (floor or baseline_key(cfg.metric)).removeprefix("baseline_").replace("_", "-")
    lower = cfg.metric in LOWER_IS_BETTER
    if not parity_ok:
        return verdict(False, "ONNX parity check failed: the exported model does not match the trained one")
    if champion is None:
        if not ((challenger < baseline) if lower else (challenger > baseline)):
            return verdict(
                False, f"first model: {cfg.metric} {challenger:.4f} does not beat the {name} baseline {baseline:.4f}"
            )
        reason = f"first model: {cfg.metric} {challenger:.4f} beats the {name} baseline {baseline:.4f}"
        if trained_value is None:
            return verdict(True, reason)
        if lower:
            if challenger <= trained_value + cfg.tolerance:
                return verdict(
                    True, f"{reason} and is <= the {trained_name} baseline {trained_value:.4f} + tolerance {cfg.tolerance}"
                )
            return verdict(
                False,
                f"first model: {cfg.metric} {challenger:.4f} > the {trained_name} baseline {trained_value:.4f} "
                f"+ tolerance {cfg.tolerance} (training went wrong? check train.lr and the loss curve)",
            )
        if challenger >= trained_value - cfg.tolerance:
            return verdict(
                True, f"{reason} and is >= the {trained_name} baseline {trained_value:.4f} - tolerance {cfg.tolerance}"
            )
        return verdict(
            False,
            f"first model: {cfg.metric} {challenger:.4f} < the {trained_name} baseline {trained_value:.4f} "
            f"- tolerance {cfg.tolerance} (training went wrong? check train.lr and the loss curve)",
        )
    if lower:
        if challenger <= champion + cfg.tolerance:
            return verdict(True, f"{cfg.metric} {challenger:.4f} <= champion {champion:.4f} + tolerance {cfg.tolerance}")
        return verdict(False, f"{cfg.metric} {challenger:.4f} > champion {champion:.4f} + tolerance {cfg.tolerance}")
    if challenger >= champion - cfg.tolerance:
        return verdict(True, f"{cfg.metric} {challenger:.4f} >= champion {champion:.4f} - tolerance {cfg.tolerance}")
    return verdict(False, f"{cfg.metric} {challenger:.4f} < champion {champion:.4f} - tolerance {cfg.tolerance}")


def lineage(card: ModelCard) -> dict[str, Any]:
    """What must match for two models to be scored on the same test split: kind, task, target, inputs.

    Inputs by name and ONNX type (and a window's features), not by known categories or ranges: those
    change with every retrain on new data without making the models incomparable.
    """
    inputs = []
    for item in getattr(card, "inputs", ()):
        entry = [item.name, item.onnx_type]
        if hasattr(item, "features"):
            entry.append(list(item.features))
        inputs.append(entry)
    return {"kind": card.KIND, "task": card.task, "target": card.target, "inputs": inputs}


def comparable(challenger: ModelCard, champion: ModelCard) -> str | None:
    """None when the champion can be gated against the challenger; else one line saying what differs."""
    new, old = lineage(challenger), lineage(champion)
    for key in ("kind", "task", "target"):
        if new[key] != old[key]:
            return f"the champion's {key} is {old[key]!r}, the challenger's {new[key]!r}"
    if new["inputs"] != old["inputs"]:
        old_names = [entry[0] for entry in old["inputs"]]
        new_names = [entry[0] for entry in new["inputs"]]
        gone = [n for n in old_names if n not in new_names]
        added = [n for n in new_names if n not in old_names]
        detail = (
            f"inputs only the champion takes: {gone[:5]}; only the challenger: {added[:5]}"
            if gone or added
            else ("the same input names with other types or features")
        )
        return f"the champion's input schema differs ({detail})"
    return None
