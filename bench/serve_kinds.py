"""Benchmark: every kind side by side through the prediction service and batch scoring.

For each workspace given (one that ran ``dvc repro``: a tabular classifier, a tabular regressor, an image, a
sequence and a text one), it starts ``python -m serving`` on a free port with a temporary registry holding
that workspace's model, sends single-record ``POST /predict`` requests from 16 client threads (keep-alive,
the log on: SQLite WAL, full fsync) and prints p50/p99 latency and throughput; then times
``python -m serving.batch``'s scoring of the kind's test split, enlarged to ``--batch-rows`` records (tables
and texts: rows; images: the test images repeated; sequences: every window of the test table, repeated as
more series). A text record is one test text (a JSON string); a tabular regressor answers its value.

Batch ``records/s`` counts the whole command (interpreter start and imports included: about 1.5 s idle, 2-4 s under load);
``scoring/s`` is the command's own figure (reading, scoring and writing).

The client threads share the 2-core machine with the server, so absolute figures are pessimistic;
the kinds are measured the same way in one run, which is what the comparison needs.

    python bench/serve_kinds.py WORKSPACE... [--requests 2000] [--batch-rows 20000]

The workspaces: tests/service/conftest.py's slices (``build_served_workspace``, ``build_kind_workspace``).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.stack import free_port  # noqa: E402
from pipeline.kinds import training_split_file  # noqa: E402
from pipeline.lifecycle.registry import Registry  # noqa: E402
from pipeline.onnxio.card import ImageCard, ModelCard, SequenceCard, TabularCard, TextCard  # noqa: E402
from pipeline.params import load_params  # noqa: E402

CLIENTS = 16


def one_record(workspace: Path, card: ModelCard) -> object:
    """One record of the kind, as a client sends it, from the workspace's test split."""
    split = workspace / load_params(workspace / "params.yaml").paths.split
    if isinstance(card, TabularCard):
        row = pd.read_parquet(split / "test.parquet").iloc[0]
        return {
            s.name: None if pd.isna(row[s.name]) else (float(row[s.name]) if s.kind == "numeric" else str(row[s.name]))
            for s in card.inputs
        }
    if isinstance(card, ImageCard):
        from PIL import Image

        with np.load(split / "test.npz") as archive:
            pixels = archive["x"][0, 0]
        low, high = card.inputs[0].value_range
        buffer = io.BytesIO()
        Image.fromarray(np.round((pixels - low) * 255 / (high - low)).astype(np.uint8)).save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode()
    if isinstance(card, TextCard):
        return str(pd.read_parquet(split / "test.parquet")[card.text_column].iloc[0])
    assert isinstance(card, SequenceCard)
    steps = pd.read_parquet(split / "test.parquet").iloc[: card.lookback]
    steps[card.time_column] = steps[card.time_column].map(lambda t: t.isoformat())
    return steps[[card.series_column, card.time_column, *card.features]].to_dict("records")


def drive(port: int, body: bytes, requests: int) -> tuple[list[float], int]:
    """``requests`` single-record requests from CLIENTS threads: latencies (ms) and non-200 answers."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        own = []
        for _ in range(count):
            started = time.perf_counter()
            connection.request("POST", "/predict", body, {"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            own.append((time.perf_counter() - started) * 1000)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(own)

    threads = [threading.Thread(target=client, args=(requests // CLIENTS,)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def serve(workspace: Path, card: ModelCard, folder: Path, requests: int) -> dict[str, float]:
    params = load_params(workspace / "params.yaml")
    paths = params.paths
    registry = Registry(folder / "registry")
    version = registry.register(
        onnx=workspace / paths.onnx,
        model_card=workspace / paths.model_card,
        metrics=workspace / paths.eval_metrics,
        params=workspace / "params.yaml",
        dvc_lock=workspace / "dvc.lock",
        reference=training_split_file(workspace / paths.split),
    )
    registry.promote(version.number, reason="benchmark")
    port = free_port()
    command = [sys.executable, "-m", "serving", "--port", str(port), "--registry", str(registry.root), "--no-access-log"]
    # One worker, as measured in bench/serve_kinds.out (serve.workers now defaults to auto).
    command += ["--database-url", f"sqlite:///{folder / 'log.sqlite'}", "--workers", "1"]
    server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"{workspace}: the service did not become ready")
                time.sleep(0.2)
        body = json.dumps([one_record(workspace, card)]).encode()
        drive(port, body, 200)  # warm-up
        started = time.perf_counter()
        latencies, errors = drive(port, body, requests)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    p50, p99 = np.percentile(latencies, [50, 99])
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "requests_per_s": len(latencies) / seconds,
        "errors": errors,
        "body_bytes": len(body),
    }


def batch_input(workspace: Path, card: ModelCard, folder: Path, rows: int) -> tuple[Path, list[str]]:
    """The kind's test split enlarged to about ``rows`` records, and the extra batch arguments."""
    split = workspace / load_params(workspace / "params.yaml").paths.split
    if isinstance(card, (TabularCard, TextCard)):  # rows of a table: features, or a text column
        test = pd.read_parquet(split / "test.parquet")
        pd.concat([test] * (rows // len(test) + 1)).iloc[:rows].to_parquet(folder / "rows.parquet")
        return folder / "rows.parquet", []
    if isinstance(card, ImageCard):
        with np.load(split / "test.npz") as archive:
            x, y = archive["x"], archive["y"]
        np.savez(
            folder / "images.npz", x=np.tile(x, (rows // len(x) + 1, 1, 1, 1))[:rows], y=np.tile(y, rows // len(y) + 1)[:rows]
        )
        return folder / "images.npz", []
    assert isinstance(card, SequenceCard)
    test = pd.read_parquet(split / "test.parquet")
    windows = len(test) - card.lookback + 1
    copies = [test.assign(**{card.series_column: f"s{i}"}) for i in range(max(1, rows // windows))]
    pd.concat(copies).to_parquet(folder / "steps.parquet")
    return folder / "steps.parquet", ["--every-window"]


def batch(workspace: Path, card: ModelCard, folder: Path, rows: int) -> dict[str, float]:
    paths = load_params(workspace / "params.yaml").paths
    source, extra = batch_input(workspace, card, folder, rows)
    command = [
        sys.executable,
        "-m",
        "serving.batch",
        str(source),
        str(folder / "out.parquet"),
        "--model",
        str(workspace / paths.onnx),
    ]
    command += ["--card", str(workspace / paths.model_card), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(result.stderr)
    scored = len(pd.read_parquet(folder / "out.parquet", columns=["model_version"]))
    # The command's own figure (its last log line): reading, scoring and writing, without the process start.
    own = re.search(r"\((\d+) rows/s\), model ", result.stderr)
    if own is None:
        sys.exit(f"no throughput in the batch command's log:\n{result.stderr}")
    return {
        "records": scored,
        "seconds_with_startup": seconds,
        "records_per_s": scored / seconds,
        "scoring_per_s": float(own.group(1)),
    }


def name(card: ModelCard) -> str:
    """The kind, and for a table whether it is a regressor."""
    return "tabular-reg" if isinstance(card, TabularCard) and card.task == "regression" else card.KIND


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspaces", nargs="+", type=Path)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batch-rows", type=int, default=20000)
    args = parser.parse_args()
    print(
        f"{'kind':<12} {'body B':>7} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7} {'errors':>6} | {'batch records':>13} {'records/s':>10} {'scoring/s':>10}"
    )
    for workspace in args.workspaces:
        card = ModelCard.load(workspace / load_params(workspace / "params.yaml").paths.model_card)
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            served = serve(workspace, card, folder, args.requests)
            scored = batch(workspace, card, folder, args.batch_rows)
        print(
            f"{name(card):<12} {served['body_bytes']:>7} {served['p50_ms']:>7.2f} {served['p99_ms']:>7.2f} "
            f"{served['requests_per_s']:>7.0f} {served['errors']:>6} | {scored['records']:>13} {scored['records_per_s']:>10.0f} {scored['scoring_per_s']:>10.0f}"
        )


if __name__ == "__main__":
    main()
