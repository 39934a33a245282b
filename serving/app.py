"""The prediction service: the registry's production model under onnxruntime, behind FastAPI.

Endpoints: ``POST /predict`` (a JSON list of raw records -> label, class probabilities, model
version and request id; every record logged and committed before the answer), ``POST /labels``
(late ground truth, joined by request id), ``GET /health``, ``GET /ready``, ``GET /model``,
``GET /metrics`` (Prometheus text). A background task watches the registry's production pointer
and swaps in a newly promoted (or rolled-back) model without a restart: the new session is
loaded first, then one reference is replaced, so a request in flight finishes on the model it
started with. Records become the model's feed by its kind's runtime (``KindRuntime.feed_schema``
once per model, ``build_feed`` per request); a production model of a kind the service cannot score
yet leaves it unready, ``/ready`` answering 503 with the reason. No torch on this path:
onnxruntime, numpy and the model card only.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from pipeline import kinds
from pipeline.kinds.base import FeedSchema, NotSupportedYet, RecordError
from pipeline.lifecycle.registry import Registry
from pipeline.onnxio.card import ModelCard
from pipeline.onnxio.session import ort_session
from pipeline.params import ServeParams
from serving.predlog import PredictionLog

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A bad request: carries the HTTP status and a message naming the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LoadedModel:
    """An immutable, ready-to-run production model; swapped as a whole on promotion or rollback."""

    version: str
    card: ModelCard
    session: Any
    inputs: FeedSchema  # the kind's own schema, worked out once here
    build_feed: Callable[[Sequence[Any], Any], dict[str, np.ndarray]]  # the kind's records -> feed, called per request
    classes: tuple[str, ...]
    metrics: dict[str, Any]
    variant: str  # "fp32" or "int8"

    @classmethod
    def load(cls, registry: Registry, threads: int) -> LoadedModel | None:
        version = registry.production()
        if version is None:
            return None
        version.verify()
        card = ModelCard.load(version.card)
        runtime = kinds.get(card.KIND).runtime
        inputs = runtime.feed_schema(card)  # before the session: a kind the service cannot score yet stops here
        session = ort_session(version.serving_onnx, threads)  # int8 when the gate chose it
        variant = "int8" if version.serving_onnx == version.onnx_int8 else "fp32"
        return cls(version.name, card, session, inputs, runtime.build_feed, card.classes, version.metrics(), variant)


# ---------------------------------------------------------------- the log


def model_fields(record: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """Only the model's input fields go into the log (validation already refused anything else)."""
    return {name: record[name] for name in names}


# ---------------------------------------------------------------- metrics


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("evergreen_requests_total", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.errors = Counter(
            "evergreen_errors_total", "Requests answered with an error", ["endpoint", "reason"], registry=self.registry
        )
        self.latency = Histogram(
            "evergreen_request_latency_seconds",
            "Time to answer /predict, logging included",
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.records = Counter("evergreen_records_scored_total", "Records scored and logged", registry=self.registry)
        self.model = Gauge(
            "evergreen_model_info", "The model version being served (value 1)", ["version"], registry=self.registry
        )
        self.reloads = Counter("evergreen_model_reloads_total", "Production model swaps", registry=self.registry)

    def serving(self, version: str | None, previous: str | None) -> None:
        if previous is not None:
            self.model.remove(previous)
        if version is not None:
            self.model.labels(version=version).set(1)


# ---------------------------------------------------------------- the application


class Service:
    """State shared by the endpoints: the current model, the log, the metrics, the reload task."""

    def __init__(self, settings: ServeParams, registry_root: Path):
        self.settings = settings
        self.registry = Registry(registry_root)
        self.model: LoadedModel | None = None
        self.log: PredictionLog | None = None
        self.metrics = ServiceMetrics()
        self.refused: str | None = None  # why the production model is not served (a kind the service cannot score yet)
        self._pointer_seen: str | None = None

    @property
    def prediction_log(self) -> PredictionLog:
        """The open log: the app's lifespan opens it before the first request and closes it after the last."""
        if self.log is None:
            raise RuntimeError("the prediction log is not open; requests are served only inside the app's lifespan")
        return self.log

    def _pointer(self) -> str | None:
        """The production pointer's bytes: cheap to read every few seconds, changes on every switch."""
        try:
            return self.registry.pointer_file.read_text()
        except FileNotFoundError:
            return None

    @property
    def unready(self) -> str:
        """Why no model is served: the production model's kind refused, or there is none yet."""
        return self.refused or "no production model loaded"

    async def reload_if_changed(self) -> bool:
        """Load the production model when the pointer changed; swap only once the new one is ready."""
        pointer = self._pointer()
        if pointer == self._pointer_seen and (self.model is not None or self.refused is not None):
            return False
        try:
            loaded = await run_in_threadpool(LoadedModel.load, self.registry, self.settings.onnx_threads)
        except NotSupportedYet as exc:
            # Not a failure to retry: this version can never be served. Keep serving the previous model, if any,
            # and say why on /ready until the pointer moves.
            self._pointer_seen, self.refused = pointer, str(exc)
            log.error("production model not served, still serving %s: %s", self.model.version if self.model else None, exc)
            return False
        self._pointer_seen, self.refused = pointer, None
        if loaded is None or (self.model is not None and loaded.version == self.model.version):
            return False
        previous, self.model = self.model, loaded  # one reference swap: in-flight requests keep theirs
        self.metrics.serving(loaded.version, previous.version if previous else None)
        self.metrics.reloads.inc()
        log.info("serving model %s (was %s)", loaded.version, previous.version if previous else None)
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_seconds)
            try:
                await self.reload_if_changed()
            except Exception as exc:  # a broken new version must not take the service down: keep serving the old one
                log.error("model reload failed, still serving %s: %s", self.model.version if self.model else None, exc)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: ServeParams, registry_root: str | Path) -> FastAPI:
    """The FastAPI application for one registry and one prediction log."""
    service = Service(settings, Path(registry_root))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.log = PredictionLog(settings.database_url, settings.sqlite_synchronous)
        await service.reload_if_changed()
        # Long-lived objects (model, app, libraries) never need collecting: keep them out of the
        # collector's generations, so its pauses stay short under load (they showed in p99).
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(service.watch())
        try:
            yield
        finally:
            watcher.cancel()
            service.log.close()

    app = FastAPI(title="Evergreen prediction service", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        endpoint = request.url.path
        service.metrics.requests.labels(endpoint, str(exc.status)).inc()
        service.metrics.errors.labels(endpoint, "payload_too_large" if exc.status == 413 else "invalid").inc()
        return JSONResponse(status_code=exc.status, content={"detail": str(exc)})

    @app.post("/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        model = service.model  # this request's model, whatever gets promoted meanwhile
        if model is None:
            raise RequestError(503, service.refused or "no production model in the registry yet")
        body = await read_body(request, settings.max_body_bytes)
        try:
            records = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(422, f"body is not valid JSON: {exc}") from None
        if not isinstance(records, list):
            raise RequestError(422, "body must be a JSON list of records")
        if not records:
            raise RequestError(422, "body is an empty list: send at least one record")
        if len(records) > settings.max_records:
            raise RequestError(413, f"{len(records)} records is over the batch limit of {settings.max_records}")
        try:
            feed = model.build_feed(records, model.inputs)
        except RecordError as exc:
            raise RequestError(422, str(exc)) from None
        probabilities, labels = (
            model.session.run(["probabilities", "label"], feed)
            if len(records) <= 16
            else await run_in_threadpool(model.session.run, ["probabilities", "label"], feed)
        )
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC).isoformat()
        names = model.inputs.names
        rows = [
            {
                "request_id": request_id,
                "record_index": i,
                "logged_at": now,
                "model_version": model.version,
                "inputs": orjson.dumps(model_fields(record, names)).decode(),
                "label": str(labels[i]),
                "probabilities": orjson.dumps(probabilities[i].tolist()).decode(),
            }
            for i, record in enumerate(records)
        ]
        await service.prediction_log.write(rows)  # answered only once committed
        service.metrics.records.inc(len(records))
        service.metrics.requests.labels("/predict", "200").inc()
        service.metrics.latency.observe(time.perf_counter() - started)
        classes = model.classes
        return Response(
            orjson.dumps(
                {
                    "request_id": request_id,
                    "model_version": model.version,
                    "predictions": [
                        {"index": i, "label": str(labels[i]), "probabilities": dict(zip(classes, probabilities[i].tolist()))}
                        for i in range(len(records))
                    ],
                }
            ),
            media_type="application/json",
        )

    @app.post("/labels")
    async def add_labels(request: Request):
        body = await read_body(request, settings.max_body_bytes)
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(422, f"body is not valid JSON: {exc}") from None
        if not isinstance(items, list) or not items:
            raise RequestError(422, "body must be a non-empty JSON list of {request_id, index, label}")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"request_id", "index", "label"}:
                raise RequestError(422, f"item {i}: expected exactly the fields request_id, index, label")
            if (
                not isinstance(item["index"], int)
                or not isinstance(item["label"], str)
                or not isinstance(item["request_id"], str)
            ):
                raise RequestError(422, f"item {i}: request_id and label must be strings, index an integer")
        count = await run_in_threadpool(service.prediction_log.add_labels, items, datetime.now(UTC).isoformat())
        service.metrics.requests.labels("/labels", "200").inc()
        return {"stored": count}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if service.model is None:
            return JSONResponse(status_code=503, content={"ready": False, "detail": service.unready})
        return {"ready": True, "model_version": service.model.version}

    @app.get("/model")
    async def model_info():
        model = service.model
        if model is None:
            raise RequestError(503, service.unready)
        return {"version": model.version, "variant": model.variant, "card": model.card.to_dict(), "metrics": model.metrics}

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
