"""The retrain flow's summary (the Prefect artifact) says only what is true: a first run has no production
model's training run to compare its rows with."""

from __future__ import annotations

import pytest

from flows.retrain import summary_markdown

STAGES = [{"stage": "ingest", "status": "ran", "seconds": 1.5}]
LANDING = {"batches": ["wave-2008.csv"], "quarantined": []}
DECISION = {"metric": "accuracy", "tolerance": 0.005, "reason": "beats the baseline", "promote": True}


def verdict(champion: str | None) -> dict:
    scores = {"accuracy": 0.7, "rows": 100}
    return {
        "decision": DECISION,
        "challenger": scores,
        "champion": None if champion is None else {"accuracy": 0.69, "rows": 100},
        "champion_version": champion,
        "new_lineage": None,
        "test_rows": 100,
    }


def data_line(markdown: str) -> str:
    (line,) = [line for line in markdown.splitlines() if line.startswith("Data: ")]
    return line


def test_a_first_run_compares_with_no_production_model():
    markdown = summary_markdown(
        "manual",
        None,
        STAGES,
        LANDING,
        verdict(None),
        {"action": "promoted", "version": "v0001"},
        {"now": 1200, "before": None},
    )
    line = data_line(markdown)
    assert line.startswith("Data: 1200 rows ingested (no production model yet: nothing to compare with);")
    assert "training run" not in line and "+1200" not in line
    assert "| champion" not in markdown  # no champion row in the score table either


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (1000, "Data: 1200 rows ingested (+200 vs the training run of production v0003);"),
        (1300, "Data: 1200 rows ingested (-100 vs the training run of production v0003);"),
        (None, "Data: 1200 rows ingested (production v0003 recorded no row count to compare with);"),
    ],
)
def test_a_later_run_compares_with_the_champions_training_run(before, expected):
    markdown = summary_markdown(
        "drift",
        None,
        STAGES,
        LANDING,
        verdict("v0003"),
        {"action": "promoted", "version": "v0004"},
        {"now": 1200, "before": before},
    )
    assert data_line(markdown).startswith(expected)
    assert "| champion v0003 | 0.6900 |" in markdown
