"""Benchmark: the prediction log with 1 and 2 service replicas, on SQLite and on PostgreSQL, at 16 clients.

Each configuration starts 1 or 2 `python -m serving` processes on free ports, all on one registry (the
workspace's current model) and one log: a SQLite file (WAL, synchronous=FULL) or a database on a real
PostgreSQL server started for the run (tests/postgres.py, with fsync on: `durable=True`). `wrk` sends
single-record POST /predict requests from 16 connections in all (16 to one replica, 8 + 8 to two) for
``--seconds``; then the log is counted against the answered requests. The four configurations run one
after the other in one run, so compare their ratios (the machine is shared; the load generator shares
its cores with the servers).

    python bench/log_replicas.py [--seconds 20]     (after `dvc repro`; needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.service_load import LUA, one_record, parse_wrk  # noqa: E402
from flows.stack import free_port  # noqa: E402
from pipeline.lifecycle.registry import Registry  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from serving.predlog import make_engine, predictions  # noqa: E402
from tests.postgres import running_cluster, unavailable  # noqa: E402

CLIENTS = 16


def start_replicas(count: int, registry: Path, database_url: str) -> list[tuple[subprocess.Popen, int]]:
    replicas = []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "serving", "--port", str(port), "--database-url", database_url]
        # One worker per replica, as measured in bench/log_replicas.out: the replica is the unit compared here.
        command += ["--registry", str(registry), "--no-access-log", "--workers", "1"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        replicas.append((process, port))
    for process, port in replicas:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"replica on port {port} did not become ready")
                time.sleep(0.2)
    return replicas


def measure(replicas: list[tuple[subprocess.Popen, int]], script: Path, seconds: int) -> dict[str, float]:
    """wrk against every replica at once, CLIENTS connections split evenly; totals and the worst p99."""
    for _, port in replicas:  # warm-up
        subprocess.run(
            ["wrk", "-t1", "-c2", "-d2s", "-s", str(script), f"http://127.0.0.1:{port}/predict"], capture_output=True
        )
    each = CLIENTS // len(replicas)
    runs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{each}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script)]
            + [f"http://127.0.0.1:{port}/predict"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _, port in replicas
    ]
    results = [parse_wrk(run.communicate()[0]) for run in runs]
    return {
        "rps": sum(r["rps"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
    }


def stop(replicas: list[tuple[subprocess.Popen, int]]) -> None:
    for process, _ in replicas:
        process.send_signal(signal.SIGTERM)
    for process, _ in replicas:
        process.wait(timeout=60)


def logged(database_url: str) -> int:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
    engine.dispose()
    return int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if unavailable():
        sys.exit(f"PostgreSQL is needed: {unavailable()}")
    params = load_params(REPO / "params.yaml")
    paths = params.paths
    rows = []
    with tempfile.TemporaryDirectory() as folder, running_cluster(durable=True) as cluster:
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
        script = folder / "post.lua"
        script.write_text(LUA.format(body=one_record(params)))
        for store in ("sqlite", "postgresql"):
            for count in (1, 2):
                url = f"sqlite:///{folder / f'log-{count}.sqlite'}" if store == "sqlite" else cluster.database(f"log{count}")
                replicas = start_replicas(count, registry.root, url)
                try:
                    result = measure(replicas, script, args.seconds)
                finally:
                    stop(replicas)
                rows.append((store, count, result, logged(url)))

    print(
        f"POST /predict, one record per request, {CLIENTS} clients in all, {args.seconds} s per configuration, wrk on loopback"
    )
    print(f"{'log':<11}{'replicas':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'logged':>9}")
    for store, count, r, records in rows:
        print(f"{store:<11}{count:>9}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}{records:>9}")
    base = rows[0][2]["rps"]
    print("req/s relative to 1 replica on SQLite: " + ", ".join(f"{s} x{c}: {r['rps'] / base:.2f}" for s, c, r, _ in rows))


if __name__ == "__main__":
    main()
