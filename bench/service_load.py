"""Benchmark: the prediction service under a bounded load from a second process on loopback.

Starts `python -m serving` (logging on, SQLite WAL with full fsync) on a free port with a
temporary registry holding the workspace's current model, then drives it with `wrk` (a C load
generator: `apt-get install wrk`) with single-record POST /predict requests at 16 and 64
concurrent connections for 30 s each. Prints throughput, p50/p90/p99 latency and errors, and
checks that every answered request is in the prediction log. Goal: p99 under 20 ms at 16 clients.

    python bench/service_load.py [--seconds 30]     (after `dvc repro`)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flows.stack import free_port  # noqa: E402
from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.card import TabularCard
from pipeline.params import load_params
from serving.predlog import make_engine, predictions  # noqa: E402

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


def one_record(params) -> str:
    card = TabularCard.load(REPO / params.paths.model_card)
    row = pd.read_parquet(REPO / params.paths.split / "test.parquet").iloc[0]
    record = {
        spec.name: (
            None if pd.isna(row[spec.name]) else (float(row[spec.name]) if spec.kind == "numeric" else str(row[spec.name]))
        )
        for spec in card.inputs
    }
    return json.dumps([record])


def parse_wrk(output: str) -> dict[str, float]:
    def millis(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for pct in ("50", "90", "99"):
        result[f"p{pct}_ms"] = millis(re.search(rf"\s{pct}%\s+(\S+)", output).group(1))
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL", help="SQLite synchronous mode of the log")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    params = load_params(REPO / "params.yaml")
    paths = params.paths
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        registry = Registry(folder / "registry")
        version = registry.register(
            onnx=REPO / paths.onnx,
            model_card=REPO / paths.model_card,
            metrics=REPO / paths.eval_metrics,
            params=REPO / "params.yaml",
            dvc_lock=REPO / "dvc.lock",
            reference=REPO / paths.split / "train.parquet",
        )
        registry.promote(version.number, reason="benchmark")
        port, database = free_port(), folder / "log.sqlite"
        script = folder / "post.lua"
        script.write_text(LUA.format(body=one_record(params)))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                "--port",
                str(port),
                "--database-url",
                f"sqlite:///{database}",
                "--no-access-log",
                "--registry",
                str(folder / "registry"),
                "--sqlite-synchronous",
                args.synchronous,
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{url}/ready", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("service did not become ready")
                    time.sleep(0.2)
            subprocess.run(["wrk", "-t1", "-c4", "-d3s", "-s", str(script), f"{url}/predict"], capture_output=True)  # warm-up
            rows = []
            for clients in (16, 64):
                out = subprocess.run(
                    [
                        "wrk",
                        "-t2",
                        f"-c{clients}",
                        f"-d{args.seconds}s",
                        "--latency",
                        "--timeout",
                        "5s",
                        "-s",
                        str(script),
                        f"{url}/predict",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                rows.append((clients, parse_wrk(out)))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        engine = make_engine(f"sqlite:///{database}")
        with engine.connect() as connection:
            logged = connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
        engine.dispose()

    print(
        f"POST /predict, one record per request, {args.seconds} s per level, logging on (SQLite WAL, synchronous={args.synchronous}), wrk on loopback"
    )
    print(f"{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for clients, r in rows:
        print(f"{clients:>8}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}")
    print(
        f"records in the prediction log: {logged} (requests answered incl. warm-up: >= {sum(r['requests'] for _, r in rows)})"
    )


if __name__ == "__main__":
    main()
