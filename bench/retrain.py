"""Benchmark: flow time of a retrain triggered with nothing changed (goal: under 30 s).

In a fresh copy of the repo on the full default data, under a temporary Prefect server: a first
retrain (every stage runs, v0001 is promoted), then a second one with nothing changed (every
stage skipped by DVC, the gate runs, no new version). Prints both flow times.

    python bench/retrain.py
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from repro import fresh_copy


def main() -> None:
    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", ORT_DISABLE_TELEMETRY="1")
    logging.disable(logging.INFO)
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain

    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=60):
        os.environ["EVERGREEN_ROOT"] = str(fresh_copy(Path(folder)))
        started = time.perf_counter()
        first = retrain(reason="manual")
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        second = retrain(reason="schedule")
        second_seconds = time.perf_counter() - started

    print(f"first retrain (all stages run): {first_seconds:.1f} s -> {first['outcome']}")
    statuses = sorted({s["status"] for s in second["stages"]})
    print(f"retrain with nothing changed: {second_seconds:.1f} s (stages: {statuses}) -> {second['outcome']}")


if __name__ == "__main__":
    main()
