"""Champion/challenger gate: promote a new model only when it is at least as good as production.

Both models are scored on the same, newest test data. The challenger is promoted when its
primary metric (``gate.metric``) is at least the champion's minus ``gate.tolerance`` and its
ONNX parity check passed. With no champion yet, it must beat the majority-class baseline
(for mae/rmse: the seasonal-naive forecast).
Every decision carries both models' numbers and the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def to_dict(self) -> dict:
        return asdict(self)


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


def baseline_key(metric: str) -> str:
    """Where evaluate's metrics.json keeps the baseline for ``metric``."""
    return BASELINE_KEY.get(metric, "baseline_majority")


def decide(challenger: float, champion: float | None, baseline: float, parity_ok: bool, cfg: GateParams) -> Decision:
    """The promotion rule; pure, so every branch is unit-tested. Errors (mae, rmse) are lower-better."""

    def verdict(promote: bool, reason: str) -> Decision:
        return Decision(promote, reason, cfg.metric, challenger, champion, baseline, cfg.tolerance)

    name = baseline_key(cfg.metric).removeprefix("baseline_").replace("_", "-")
    lower = cfg.metric in LOWER_IS_BETTER
    if not parity_ok:
        return verdict(False, "ONNX parity check failed: the exported model does not match the trained one")
    if champion is None:
        if (challenger < baseline) if lower else (challenger > baseline):
            return verdict(True, f"first model: {cfg.metric} {challenger:.4f} beats the {name} baseline {baseline:.4f}")
        return verdict(False, f"first model: {cfg.metric} {challenger:.4f} does not beat the {name} baseline {baseline:.4f}")
    if lower:
        if challenger <= champion + cfg.tolerance:
            return verdict(True, f"{cfg.metric} {challenger:.4f} <= champion {champion:.4f} + tolerance {cfg.tolerance}")
        return verdict(False, f"{cfg.metric} {challenger:.4f} > champion {champion:.4f} + tolerance {cfg.tolerance}")
    if challenger >= champion - cfg.tolerance:
        return verdict(True, f"{cfg.metric} {challenger:.4f} >= champion {champion:.4f} - tolerance {cfg.tolerance}")
    return verdict(False, f"{cfg.metric} {challenger:.4f} < champion {champion:.4f} - tolerance {cfg.tolerance}")
