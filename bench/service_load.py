"""Benchmark: Evergreen's prediction service beside the no-log floor and two peers, in one run (issue 13).

Every server gets the workspace's int8 model and the same record, one per request:

  evergreen       python -m serving as shipped (serve.workers: auto, one worker per usable CPU, at most 4):
                  the registry's production model, the record checked and committed to the prediction log
                  (SQLite WAL, synchronous=FULL) before the answer
  evergreen-Nw    the same with --workers N (--workers 1,2,default: each of them)
  floor           bench/peers/floor_app.py: FastAPI + onnxruntime, no log, no validation
  mlserver        MLServer 1.7.1 with a custom ONNX runtime (bench/peers/mlserver_onnx.py), as installed:
                  uvicorn's h11 parser, access log on
  mlserver-tuned  the same with httptools and no access log
  bentoml         BentoML 1.4.40, a service wrapping onnxruntime (bench/peers/bento_service.py)

The peers install into their own environments under bench/.peers/ (git-ignored) on the first run. wrk (a C
load generator, on loopback, sharing the machine's CPUs with the servers) posts for --seconds at each of
--clients connections; each repeat runs every server once per level, the servers' order rotated from one
repeat to the next; the table gives the medians of --repeats. CPU is the server's processes' CPU time per
answered request. The goal (issue 13): with the log on, at 16 and 64 clients, Evergreen's req/s >= 0.7x the
floor's and above the best peer's, its p99 <= 1.5x the floor's: ratios within this run, not absolute figures.
Last, every Evergreen request answered is checked against its log: rows >= answers, and 200 answered request
ids looked up one by one.

    python bench/service_load.py > bench/service_load.out     (after `dvc repro`; needs wrk: apt-get install wrk)

The committed output: --workers 1,default --only evergreen,floor,mlserver-tuned,bentoml.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import OtherLoad  # noqa: E402
from flows.stack import free_port  # noqa: E402
from pipeline.lifecycle.registry import Registry  # noqa: E402
from pipeline.onnxio.card import TabularCard  # noqa: E402
from pipeline.params import TabularParams, load_params, serve_workers  # noqa: E402
from serving.predlog import make_engine, predictions  # noqa: E402

PEERS = REPO / "bench" / "peers"  # the peers' code
ENVS = REPO / "bench" / ".peers"  # their environments (git-ignored)
ORT = importlib.metadata.version("onnxruntime")  # the peers run the onnxruntime Evergreen runs
PACKAGES = {
    # uvloop 0.22 raises in the asyncio.get_event_loop() MLServer's inference workers call at start: 0.21 as before.
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22", "httptools", f"onnxruntime=={ORT}"],
    "bentoml": ["bentoml==1.4.40", f"onnxruntime=={ORT}"],
}
MODEL_NAME = "evergreen"  # MLServer's model name: its endpoint is /v2/models/evergreen/infer
SPOT_CHECKS = 200
QUIET = {"DO_NOT_TRACK": "1", "BENTOML_DO_NOT_TRACK": "True", "ORT_DISABLE_TELEMETRY": "1"}

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
"""


def say(message: str) -> None:
    """Progress, on stderr: stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def peer_python(name: str) -> Path:
    """The Python of a peer's environment under bench/.peers/, made and installed on first use."""
    folder = ENVS / name
    python, marker = folder / "bin" / "python", folder / "installed.txt"
    wanted = "\n".join(PACKAGES[name])
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    say(f"installing {name} into {folder} ({', '.join(PACKAGES[name])}): a few minutes, once")
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES[name]], check=True)
    marker.write_text(wanted)
    return python


# ---------------------------------------------------------------- the servers


@dataclass
class Server:
    """One server under test: how to start it, what to post, and what it has answered so far."""

    name: str
    command: list[str]
    path: str  # the endpoint wrk posts to
    body: str  # one request's JSON body
    port: int
    cwd: Path = REPO
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    answered: int = 0  # 2xx answers counted: wrk runs, warm-up and readiness probes
    log_file: Path | None = None
    database: Path | None = None  # Evergreen's prediction log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, folder: Path) -> None:
        self.log_file = folder / f"{self.name}.log"
        with self.log_file.open("w") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**os.environ, **QUIET, **self.env},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped whole
            )

    def post(self) -> dict[str, Any]:
        request = urllib.request.Request(self.url, self.body.encode(), {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        self.answered += 1
        return answer

    def wait_ready(self, timeout: float = 300) -> dict[str, Any]:
        """The first answer to the body, once the server gives one."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.post()
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_file.read_text()[-3000:] if self.log_file else ""
                    raise SystemExit(f"{self.name} did not start ({exc}):\n{tail}") from None
                time.sleep(0.5)

    def cpu_seconds(self) -> float:
        """CPU time of the server's live processes: its process and every descendant (workers, inference
        processes), whatever session they put themselves in."""
        assert self.process is not None
        parents, ticks = {}, {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            pid = int(stat.parent.name)
            parents[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
        ours, grown = {self.process.pid}, True
        while grown:
            found = {pid for pid, parent in parents.items() if parent in ours} - ours
            ours |= found
            grown = bool(found)
        return sum(ticks.get(pid, 0) for pid in ours) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def one_record(params: TabularParams) -> str:
    """The first test row as a JSON list of one record, missing values as null (bench/log_replicas.py posts it)."""
    card = TabularCard.load(REPO / params.paths.model_card)
    row = pd.read_parquet(REPO / params.paths.split / "test.parquet").iloc[0]
    record = {
        spec.name: (
            None if pd.isna(row[spec.name]) else (float(row[spec.name]) if spec.kind == "numeric" else str(row[spec.name]))
        )
        for spec in card.inputs
    }
    return json.dumps([record])


def full_record(params: TabularParams) -> dict[str, Any]:
    """The first test row with every input present, as a client sends it: the peers' formats need no null."""
    card = TabularCard.load(REPO / params.paths.model_card)
    test = pd.read_parquet(REPO / params.paths.split / "test.parquet")
    row = test[[spec.name for spec in card.inputs]].dropna().iloc[0]
    return {spec.name: float(row[spec.name]) if spec.kind == "numeric" else str(row[spec.name]) for spec in card.inputs}


def v2_body(record: dict[str, Any], card: TabularCard) -> str:
    """The record as MLServer's V2 inference request: one [1, 1] tensor per model input."""
    inputs = [
        {
            "name": spec.name,
            "shape": [1, 1],
            "datatype": "FP32" if spec.kind == "numeric" else "BYTES",
            "data": [record[spec.name]],
        }
        for spec in card.inputs
    ]
    return json.dumps({"inputs": inputs})


def make_servers(
    folder: Path,
    params: TabularParams,
    registry: Path,
    model: Path,
    card_file: Path,
    workers: list[int | None],
    only: set[str] | None,
) -> list[Server]:
    card = TabularCard.load(card_file)
    record = full_record(params)
    body = json.dumps([record])
    servers = []
    for n in workers:  # None: as shipped, serve.workers of params.yaml
        name = "evergreen" if n is None else f"evergreen-{n}w"
        database = folder / f"log-{name}.sqlite"
        command = [sys.executable, "-m", "serving", "--port", "{port}", "--registry", str(registry)]
        command += ["--database-url", f"sqlite:///{database}", "--sqlite-synchronous", "FULL", "--no-access-log"]
        command += [] if n is None else ["--workers", str(n)]
        servers.append(Server(name, command, "/predict", body, 0, database=database))
    floor = [sys.executable, str(PEERS / "floor_app.py"), str(model), str(card_file), "{port}"]
    servers.append(Server("floor", floor, "/predict", body, 0))
    if only is None or {"mlserver", "mlserver-tuned"} & only:
        python = peer_python("mlserver")
        for name, parser, debug in (("mlserver", "h11", True), ("mlserver-tuned", "httptools", False)):
            models = folder / name
            (models / MODEL_NAME).mkdir(parents=True)
            settings = {"debug": debug, "http_port": "{port}", "grpc_port": free_port(), "metrics_port": free_port()}
            (models / "settings.template").write_text(json.dumps(settings))
            model_settings = {
                "name": MODEL_NAME,
                "implementation": "mlserver_onnx.OnnxRuntime",
                "parameters": {"uri": str(model)},
            }
            (models / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings))
            command = [str(python), str(PEERS / "mlserver_launch.py"), parser, str(models)]
            path = f"/v2/models/{MODEL_NAME}/infer"
            servers.append(Server(name, command, path, v2_body(record, card), 0, cwd=PEERS, env={"PYTHONPATH": str(PEERS)}))
    if only is None or "bentoml" in only:
        bentoml = peer_python("bentoml").parent / "bentoml"
        command = [str(bentoml), "serve", "bento_service:OnnxService", "--host", "127.0.0.1", "--port", "{port}"]
        env = {"EVERGREEN_BENCH_MODEL": str(model), "EVERGREEN_BENCH_CARD": str(card_file), "PYTHONPATH": str(PEERS)}
        servers.append(Server("bentoml", command, "/predict", json.dumps({"records": [record]}), 0, cwd=PEERS, env=env))
    servers = [s for s in servers if only is None or s.name in only or s.name.startswith("evergreen") and "evergreen" in only]
    for server in servers:  # ports last: free ones, as late as can be
        server.port = free_port()
        server.command = [part.replace("{port}", str(server.port)) for part in server.command]
        template = folder / server.name / "settings.template"
        if template.exists():  # MLServer reads its ports from settings.json in the model folder
            (folder / server.name / "settings.json").write_text(template.read_text().replace('"{port}"', str(server.port)))
    return servers


def answer_label(server: Server, answer: dict[str, Any]) -> str:
    """The label a server answered for the record (each says it in its own format)."""
    if "outputs" in answer:  # V2 inference response
        return next(o["data"][0] for o in answer["outputs"] if o["name"] == "label")
    return answer["predictions"][0]["label"]


# ---------------------------------------------------------------- the load


def parse_wrk(output: str) -> dict[str, float]:
    def found(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output)
        if match is None:
            raise SystemExit(f"wrk's output lacks {pattern!r}:\n{output}")
        return match

    def millis(text: str) -> float:
        value, unit = found(rf"\s{re.escape(text)}%\s+([\d.]+)(us|ms|s)\b").groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    result: dict[str, float] = {"rps": float(found(r"Requests/sec:\s+([\d.]+)").group(1))}
    for pct in ("50", "90", "99"):
        result[f"p{pct}_ms"] = millis(pct)
    result["requests"] = int(found(r"(\d+) requests in").group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    result["errors"] = result["non2xx"] + (sum(map(int, errors.groups())) if errors else 0)
    return result


def drive(server: Server, script: Path, clients: int, seconds: int) -> dict[str, float]:
    """One wrk run against the server: its figures, with the server's CPU per answered request."""
    before = server.cpu_seconds()
    command = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script), server.url]
    result = parse_wrk(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    answered = result["requests"] - result["non2xx"]
    server.answered += int(answered)
    result["cpu_us"] = 1e6 * (server.cpu_seconds() - before) / max(answered, 1)
    return result


def log_check(server: Server) -> str:
    """Every answered request in the log: rows >= answers, and SPOT_CHECKS answered request ids each found."""
    ids = [server.post()["request_id"] for _ in range(SPOT_CHECKS)]
    server.stop()
    engine = make_engine(f"sqlite:///{server.database}")
    with engine.connect() as connection:
        rows = connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one()
        found = connection.execute(
            sa.select(sa.func.count(sa.distinct(predictions.c.request_id))).where(predictions.c.request_id.in_(ids))
        ).scalar_one()
    engine.dispose()
    verdict = "yes" if rows >= server.answered and found == len(ids) else "NO"
    return (
        f"{server.name}: {rows:,} records in the log for {server.answered:,} answered requests (one record each; "
        f"wrk leaves uncounted the answers in flight when it stops); {found} of {len(ids)} answered request ids "
        f"looked up: every answer logged: {verdict}"
    )


# ---------------------------------------------------------------- the report


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    figures = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us")}
    figures["errors"] = sum(run["errors"] for run in runs)
    return figures


def report(results: dict[tuple[int, str], list[dict[str, float]]], servers: list[Server], levels: list[int]) -> list[str]:
    lines = []
    header = f"{'server':<16}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'errors':>8}{'CPU us/req':>11}"
    header += f"{'req/s/floor':>12}{'p99/floor':>10}"
    goals = []
    peers = [s.name for s in servers if s.name.startswith(("mlserver", "bentoml"))]
    for clients in levels:
        table = {s.name: medians(results[clients, s.name]) for s in servers}
        floor = table.get("floor")
        lines += ["", f"{clients} clients", header]
        for server in servers:
            r = table[server.name]
            ratio = f"{r['rps'] / floor['rps']:>12.2f}{r['p99_ms'] / floor['p99_ms']:>10.2f}" if floor else ""
            lines.append(
                f"{server.name:<16}{r['rps']:>8,.0f}{r['p50_ms']:>8.2f}{r['p90_ms']:>8.2f}{r['p99_ms']:>8.2f}"
                f"{r['errors']:>8.0f}{r['cpu_us']:>11.0f}{ratio}"
            )
        best = max(peers, key=lambda name: table[name]["rps"], default=None)
        for name in (s.name for s in servers if s.name.startswith("evergreen")):
            if floor is None:
                continue
            r = table[name]
            checks = [f"req/s {r['rps'] / floor['rps']:.2f}x the floor (>= 0.7: {yes(r['rps'] >= 0.7 * floor['rps'])})"]
            if best is not None:
                above = r["rps"] > table[best]["rps"]
                checks.append(f"{r['rps'] / table[best]['rps']:.2f}x the best peer, {best} (> 1: {yes(above)})")
            p99 = r["p99_ms"] / floor["p99_ms"]
            checks.append(f"p99 {p99:.2f}x the floor's (<= 1.5: {yes(p99 <= 1.5)})")
            goals.append(f"{clients} clients, {name}: " + "; ".join(checks))
    return lines + ["", "goals (issue 13), medians of this run:", *goals]


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=20, help="per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", default="16,64", help="connection counts, comma-separated")
    parser.add_argument(
        "--workers",
        default="default",
        help="Evergreen worker counts to run, comma-separated; default: serve.workers as shipped (auto)",
    )
    parser.add_argument("--only", help="servers to run, comma-separated (evergreen, floor, mlserver, mlserver-tuned, bentoml)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    params = load_params(REPO / "params.yaml")
    if not isinstance(params, TabularParams):
        sys.exit("this benchmark posts tabular records: params.yaml needs ingest.kind tabular")
    paths = params.paths
    int8 = REPO / paths.onnx_int8 / "model.onnx"
    if not int8.exists():
        sys.exit(f"{int8} is missing: the benchmark serves the int8 model (export.int8 on, then dvc repro)")
    levels = [int(c) for c in args.clients.split(",")]
    workers = [None if n == "default" else int(n) for n in args.workers.split(",")]
    only = set(args.only.split(",")) if args.only else None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = Registry(folder / "registry")
        version = registry.register(
            onnx=REPO / paths.onnx,
            onnx_int8=int8,
            model_card=REPO / paths.model_card,
            metrics=REPO / paths.eval_metrics,
            params=REPO / "params.yaml",
            dvc_lock=REPO / "dvc.lock",
            reference=REPO / paths.split / "train.parquet",
            extra={"serve": "int8"},  # Evergreen serves the int8 model, as the peers do
        )
        registry.promote(version.number, reason="benchmark")
        assert version.onnx_int8 is not None
        servers = make_servers(folder, params, registry.root, version.onnx_int8, version.card, workers, only)
        results: dict[tuple[int, str], list[dict[str, float]]] = {}
        load = OtherLoad().start()
        try:
            for server in servers:
                say(f"starting {server.name} on port {server.port}")
                server.start(folder)
            labels = {}
            for server in servers:
                labels[server.name] = answer_label(server, server.wait_ready())
                script = folder / f"{server.name}.lua"
                script.write_text(LUA.format(body=server.body))
                drive(server, script, 4, 3)  # warm-up
            for repeat in range(args.repeats):
                order = servers[repeat % len(servers) :] + servers[: repeat % len(servers)]
                for clients in levels:
                    for server in order:
                        say(f"repeat {repeat + 1}/{args.repeats}, {clients} clients: {server.name}")
                        run = drive(server, folder / f"{server.name}.lua", clients, args.seconds)
                        results.setdefault((clients, server.name), []).append(run)
            checks = [log_check(server) for server in servers if server.database is not None]
        finally:
            for server in servers:
                server.stop()
        machine = load.report()

    print(
        f"POST one record per request (the same int8 model everywhere), wrk -t2 on loopback sharing the "
        f"{os.cpu_count()} CPUs, {args.seconds} s per run, medians of {args.repeats} interleaved repeats; "
        f"Evergreen's log: SQLite WAL, synchronous=FULL, every record committed before its answer"
    )
    print(f"onnxruntime {ORT} in every server; answers for the record: {', '.join(f'{k} {v!r}' for k, v in labels.items())}")
    if None in workers:
        shipped = params.serve.workers
        print(f"evergreen: as shipped, serve.workers {shipped}: {serve_workers(shipped)} worker process(es) on this machine")
    print("\n".join(report(results, servers, levels)))
    print()
    print("\n".join(checks))
    print(machine)


if __name__ == "__main__":
    main()
