"""Every data kind round the whole loop, for real, under ``prefect_test_harness``.

Per kind (tables, images, sequences, text), on a slice of its documented example:

1. the retrain flow runs ``dvc repro`` (all seven stages) and promotes v0001, the registry keeping the
   kind's training split as the drift reference; a second retrain changes nothing;
2. the service (the real app, in process) scores a request of that kind with v0001 and logs it;
3. a landed batch that drifts (later survey waves, brighter digits, a warmer elecdemand, the tweets after
   the cutoff) makes the drift monitor start the retrain deployment; a runner executes that flow run in a
   subprocess, as a worker would, and it ingests the batch and promotes v0002 (the gate is wide here: this
   test is about the loop, the gate's rules have their own tests);
4. the service moves to v0002 by itself; a rollback puts v0001 back in production and the service follows.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.runner import Runner
from prefect.testing.utilities import prefect_test_harness

from flows.monitor import drift_monitor
from flows.retrain import retrain
from pipeline.core.io import read_json
from pipeline.kinds.image.ingest import load_digits_images
from pipeline.kinds.sequence.ingest import load_elecdemand
from pipeline.kinds.text.ingest import read_source
from pipeline.lifecycle.landing import land_frame, next_periods
from pipeline.lifecycle.registry import Registry
from pipeline.params import Params, load_params
from serving.app import create_app
from tests.conftest import copy_repo, edit_params

pytestmark = pytest.mark.slow
RELOAD_DEADLINE = 30.0  # seconds for the service to notice a new production pointer (it checks every 0.2 s here)


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=60):
        yield


@dataclass(frozen=True)
class Case:
    """One kind's slice, a request the service must score, and a landed batch that drifts."""

    make: Callable[[Path], Path]
    request: Callable[[Path], list[Any]]
    drifting: Callable[[Path, Params], str]


# ---------------------------------------------------------------- tables: GSS wages


def tabular(root: Path) -> Path:
    copy_repo(root)
    edit_params(
        root,
        ingest={"max_rows": 4000},
        train={"epochs": 3},
        evaluate={"baseline_max_iter": 30},
        gate={"tolerance": 0.5},
        monitor={"min_rows": 300, "cooldown_hours": 0},
    )
    return root


def table_records(root: Path) -> list[Any]:
    card = read_json(root / "models/model_card.json")
    rows = pd.read_parquet(root / "data/split/test.parquet").head(5)
    return [
        {
            s["name"]: None
            if pd.isna(r[s["name"]])
            else (float(r[s["name"]]) if s["kind"] == "numeric" else str(r[s["name"]]))
            for s in card["inputs"]
        }
        for _, r in rows.iterrows()
    ]


def later_waves(root: Path, params: Params) -> str:
    names = []
    for period, frame in next_periods(params, 2):
        land_frame(frame, root / params.paths.landing, f"year_{period}")
        names.append(f"year_{period}")
    return names[0]


# ---------------------------------------------------------------- images: digits


def digits(root: Path) -> Path:
    copy_repo(root)
    shutil.copy(root / "examples/digits/params.yaml", root / "params.yaml")
    edit_params(
        root,
        ingest={"max_rows": 600, "min_rows": 100},
        train={"epochs": 2},
        gate={"tolerance": 0.5},
        monitor={"min_rows": 300, "cooldown_hours": 0},
    )
    return root


def image_arrays(root: Path) -> list[Any]:
    with np.load(root / "data/split/test.npz") as archive:
        return [image.tolist() for image in archive["x"][:5]]


def brighter_digits(root: Path, params: Params) -> str:
    """600 labelled digits, 4 units brighter (clipped to the 0..16 scale), as an .npz batch."""
    x, y = load_digits_images()
    landing = root / params.paths.landing
    landing.mkdir(parents=True, exist_ok=True)
    np.savez(landing / "brighter.npz", x=np.clip(x[-600:] + 4, 0, 16), y=y[-600:])
    return "brighter.npz"


# ---------------------------------------------------------------- sequences: elecdemand


def elecdemand(root: Path) -> Path:
    copy_repo(root)
    shutil.copy(root / "examples/elecdemand/params.yaml", root / "params.yaml")
    # Enough training for a first model that beats persistence, the stronger naive forecast half an hour
    # ahead (MAE 0.069 against 0.105 GW on this slice); the wide tolerance lets the drift retrain promote.
    edit_params(
        root,
        ingest={"max_rows": 2400, "min_rows": 100, "stride": 1},
        gate={"tolerance": 10.0},
        monitor={"min_rows": 300, "cooldown_hours": 0},
        train={
            "epochs": 15,
            "batch_size": 32,
            "model": {"architecture": "lstm", "hidden": 32, "layers": 1, "dropout": 0.0, "bidirectional": False},
        },
    )
    return root


def window(root: Path) -> list[Any]:
    card = read_json(root / "models/model_card.json")
    steps = pd.read_parquet(root / "data/split/test.parquet").head(card["lookback"])
    features = ["Demand", "WorkDay", "Temperature"]
    return [
        [
            {"series": r.series, "time": r.time.isoformat(), **{f: float(getattr(r, f)) for f in features}}
            for r in steps.itertuples()
        ]
    ]


def warmer_steps(root: Path, params: Params) -> str:
    """The 1,200 elecdemand steps after the slice, 8 deg C warmer with 1 GW more demand."""
    steps = load_elecdemand("time").iloc[2400:3600]
    land_frame(
        steps.assign(Temperature=steps["Temperature"] + 8, Demand=steps["Demand"] + 1), root / params.paths.landing, "warmer"
    )
    return "warmer"


# ---------------------------------------------------------------- text: tweets by device


def tweets(root: Path) -> Path:
    copy_repo(root)
    shutil.copy(root / "examples/tweets/params.yaml", root / "params.yaml")
    # A small bi-LSTM that learns the devices apart on 2,000 tweets in a few epochs (a first model must beat
    # the majority class's macro F1); the wide tolerance lets the drift retrain promote.
    edit_params(
        root,
        ingest={"max_rows": 2000, "min_rows": 100},
        features={"max_length": 32},
        train={
            "epochs": 4,
            "warmup_epochs": 0,
            "model": {"architecture": "text_lstm", "embedding_dim": 32, "hidden": 32, "dropout": 0.1, "bidirectional": True},
        },
        evaluate={"baseline_max_iter": 50},
        gate={"tolerance": 0.5},
        monitor={"min_rows": 300, "cooldown_hours": 0},
    )
    return root


def texts(root: Path) -> list[Any]:
    return ["Make America great again!", "Thank you Ohio! #MAGA", "Great interview on @FoxNews tonight at 10pm"]


def later_tweets(root: Path, params: Params) -> str:
    """1,500 tweets sent after the training data's cutoff (2017-2018: longer tweets, other devices)."""
    frame, _ = read_source(params.ingest.source)
    created = pd.to_datetime(frame[params.ingest.time_column], utc=True)
    later = frame.loc[created > pd.Timestamp(params.ingest.time_cutoff, tz="UTC")].head(1500)
    land_frame(later, root / params.paths.landing, "tweets_2017")
    return "tweets_2017"


CASES = {
    "tabular": Case(tabular, table_records, later_waves),
    "image": Case(digits, image_arrays, brighter_digits),
    "sequence": Case(elecdemand, window, warmer_steps),
    "text": Case(tweets, texts, later_tweets),
}


def production_served(client: TestClient, version: str) -> None:
    """Wait (with a deadline) until the service says it serves ``version``: it polls the registry itself."""
    deadline = time.monotonic() + RELOAD_DEADLINE
    while time.monotonic() < deadline:
        if client.get("/model").json().get("version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the service did not move to {version} within {RELOAD_DEADLINE} s")


def run_triggered(flow_run_id: str, deployment: Runner) -> Any:
    """Execute the scheduled run the monitor started, in a subprocess, as a worker would; its final state."""
    asyncio.run(deployment.start(run_once=True))
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state


@pytest.mark.parametrize("kind", list(CASES))
def test_every_kind_goes_round_the_whole_loop(harness, tmp_path, monkeypatch, kind):
    case = CASES[kind]
    root = case.make(tmp_path / kind)
    monkeypatch.setenv("EVERGREEN_ROOT", str(root))
    params = load_params(root / "params.yaml")
    registry = Registry(root / params.paths.registry)

    first = retrain(reason="manual")
    assert [s["status"] for s in first["stages"]] == ["ran"] * 7
    assert first["outcome"]["action"] == "promoted", first["decision"]
    v1 = registry.production()
    assert (
        v1 is not None and v1.name == "v0001" and v1.card_data().get("kind", "tabular") == kind
    )  # tabular cards name no kind
    assert retrain(reason="schedule")["outcome"] == {"action": "unchanged", "version": "v0001"}

    settings = params.serve.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'predictions.sqlite'}", "reload_interval_seconds": 0.2}
    )
    with TestClient(create_app(settings, registry.root)) as client:
        request = case.request(root)
        response = client.post("/predict", json=request)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "v0001" and len(body["predictions"]) == len(request)

        batch = case.drifting(root, params)
        runner = Runner(name=f"worker-{kind}", query_seconds=1, limit=1)
        runner.add_flow(retrain, name=f"retrain-{kind}")
        summary = drift_monitor(retrain_deployment=f"retrain/retrain-{kind}", cooldown_hours=0)
        assert summary["decision"]["retrain"] is True, summary["decision"]
        assert any(name.startswith(batch) for name in summary["batches"])
        assert summary["retrain_flow_run"] and Path(summary["report"]).exists()

        state = run_triggered(summary["retrain_flow_run"], runner)
        assert state.type == StateType.COMPLETED, state
        landed = read_json(root / params.paths.ingest_report)["landed_batches"]
        assert any(entry["file"].startswith(batch) for entry in landed)
        promoted = [e for e in registry.history() if e.get("event") == "promote"]
        assert promoted[-1]["version"] == "v0002" and promoted[-1]["reason"].startswith("drift"), registry.history()[-1]
        production_served(client, "v0002")

        registry.rollback(reason="test: roll back the drift retrain")
        assert registry.production().name == "v0001"
        production_served(client, "v0001")
        again = client.post("/predict", json=request).json()
        assert again["model_version"] == "v0001"
