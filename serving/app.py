"""The prediction service: the registry's production model under onnxruntime, behind FastAPI.

Endpoints: ``POST /predict`` (a JSON list of raw records -> per record the model kind's answer: a
classifier's label and class probabilities, a regressor's value, a forecaster's values and times; with
the model version and request id; every record logged and committed before the answer; for an image
model also ``multipart/form-data``, one image file per part, answered and logged as the same files sent
as base64 records), ``POST /labels``
(late ground truth, joined by request id), ``GET /health``, ``GET /ready``, ``GET /model``,
``GET /metrics`` (Prometheus text; with several workers, the sum of theirs). A background task
watches the registry's production pointer and swaps in a newly promoted (or rolled-back) model without
a restart: the new session is loaded first, then one reference is replaced, so a request in flight
finishes on the model it started with. Everything kind-specific is the model's kind's runtime
(``KindRuntime``): ``feed_schema`` once per model; per request ``build_feed`` (records -> feed), the ONNX
outputs it names, ``answer`` (outputs -> answers and the log's label and vector) and ``log_inputs`` (what
the log keeps of a record: tabular fields, image statistics, a window's newest step). A production model
the service cannot score leaves it unready, ``/ready`` answering 503 with the reason. No torch on this
path: onnxruntime, numpy and the model card only.

The edges (issue 9): a production model or pointer that cannot be loaded never stops the service:
it starts unready (503 with the reason on ``/ready``) or, with ``serve.on_bad_model: fallback``, serves
the newest earlier production version that verifies. ``/ready`` is 503 too while the prediction log
cannot commit. Every refused request is a one-line JSON ``detail`` naming the field; every unexpected
error a JSON 500 counted in ``evergreen_errors_total{reason="internal"}``. ``/labels`` accepts only
labels of requests in the log, records they scored, classes of the model that scored them. With
``$EVERGREEN_API_TOKEN`` set, ``/predict``, ``/labels`` and ``/metrics`` need ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import email.errors
import email.parser
import email.policy
import gc
import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline import kinds
from pipeline.core.errors import DataError
from pipeline.kinds.base import Answers, FeedSchema, KindRuntime, NotSupportedYet, RecordError
from pipeline.kinds.image.records import ImageFile
from pipeline.lifecycle.registry import AnyRegistry, ModelVersion, RegistryError, open_registry, parse_version, version_name
from pipeline.onnxio.card import ModelCard
from pipeline.onnxio.session import ort_session
from pipeline.params import ServeParams
from serving.predlog import PredictionLog, commit_error

log = logging.getLogger(__name__)

API_TOKEN_ENV = "EVERGREEN_API_TOKEN"
# /docs (Swagger UI) and /redoc load their scripts and styles from the service itself (fastapi-offline ships
# them), not from a CDN: the pages work on a machine with no internet. The schema stays at /openapi.json.
DOCS_ASSETS_URL = "/docs-assets"
REQUEST_ID = re.compile(r"[0-9a-f]{32}")  # what /predict hands out: uuid4().hex
# The metrics' reason label for each refusal status; anything else is an invalid request.
REASONS = {
    401: "unauthorized",
    408: "body_timeout",
    413: "payload_too_large",
    499: "client_disconnected",
    503: "unavailable",
}


class RequestError(Exception):
    """A bad request: carries the HTTP status and a message naming the field."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message with whitespace collapsed, or its type when it has none."""
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class LoadedModel:
    """An immutable, ready-to-run production model; swapped as a whole on promotion or rollback."""

    version: str
    card: ModelCard
    session: Any
    inputs: FeedSchema  # the kind's own schema, worked out once here
    runtime: KindRuntime[Any]  # the kind's hooks, called per request with ``inputs``
    outputs: list[str]  # the ONNX outputs ``runtime.answer`` takes
    classes: tuple[str, ...]
    metrics: dict[str, Any]
    variant: str  # "fp32" or "int8"

    @classmethod
    def load(cls, registry: AnyRegistry, threads: int) -> LoadedModel | None:
        version = registry.production()
        return None if version is None else cls.from_version(version, threads)

    @classmethod
    def from_version(cls, version: ModelVersion, threads: int) -> LoadedModel:
        version.verify()
        card = ModelCard.load(version.card)
        runtime = kinds.get(card.KIND).runtime
        inputs = runtime.feed_schema(card)  # before the session: a kind the service cannot score yet stops here
        session = ort_session(version.serving_onnx, threads)  # int8 when the gate chose it
        variant = "int8" if version.serving_onnx == version.onnx_int8 else "fp32"
        outputs = list(inputs.outputs)
        return cls(version.name, card, session, inputs, runtime, outputs, card.classes, version.metrics(), variant)


def score(model: LoadedModel, records: Sequence[Any]) -> tuple[dict[str, np.ndarray], Answers, list[str]]:
    """Records -> (feed, answers, what the log keeps), by the model's kind; a bad record is a ``RecordError``."""
    runtime, inputs = model.runtime, model.inputs
    feed = runtime.build_feed(records, inputs)
    answers = runtime.answer(model.session.run(model.outputs, feed), records, inputs)
    return feed, answers, runtime.log_inputs(records, feed, inputs)


def load_fallback(registry: AnyRegistry, threads: int) -> LoadedModel | None:
    """The newest earlier production version that verifies and loads, or None.

    Only versions the gate once put in production qualify (their promote or rollback is in the history):
    the newest registered version may be a candidate the gate rejected."""
    served: set[int] = set()
    for event in registry.history():
        if event.get("event") in ("promote", "rollback") and isinstance(event.get("version"), str):
            try:
                served.add(parse_version(event["version"]))
            except RegistryError:  # a hand-edited history line names no version: it cannot be a fallback
                continue
    for number in sorted(served, reverse=True):
        try:
            return LoadedModel.from_version(registry.get(number), threads)
        except Exception as exc:  # this one is damaged too: try the next older one, saying why
            log.warning("fallback: %s cannot be served either: %s", version_name(number), one_line(exc))
    return None


# ---------------------------------------------------------------- metrics


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # where prometheus_client's multiprocess mode keeps a process's values
MODEL_INFO = "evergreen_model_info"


def keep_metrics_in(directory: Path | None) -> None:
    """Where this process's metric values live, set before its metrics are made: in memory (None: one worker),
    or in mmap files in ``directory``, the service's own, whose sum every worker's /metrics reports.

    prometheus_client picks its value store from $PROMETHEUS_MULTIPROC_DIR when first imported; it is asked
    again here, so neither the order of imports nor a directory the user's environment names decides it."""
    os.environ.pop(MULTIPROC_ENV.lower(), None)  # the deprecated spelling prometheus_client still reads
    if directory is None:
        os.environ.pop(MULTIPROC_ENV, None)
    else:
        os.environ[MULTIPROC_ENV] = str(directory)
    prometheus_values.ValueClass = prometheus_values.get_value_class()


class WorkersCollector:
    """Every worker's metrics, summed from the files in the service's directory (``MultiProcessCollector``),
    less the model versions no live worker serves: a worker's file keeps a version it swapped out at 0
    (prometheus_client cannot take a labelled value out of its files), and /metrics shows only versions served."""

    def __init__(self, directory: Path) -> None:
        self.collector = MultiProcessCollector(None, path=str(directory))

    def collect(self) -> Iterator[Metric]:
        for metric in self.collector.collect():
            if metric.name == MODEL_INFO:
                metric.samples = [sample for sample in metric.samples if sample.value > 0]
            yield metric


class ServiceMetrics:
    """The service's Prometheus metrics. One worker: an in-process registry. Several (``multiprocess_dir``):
    each worker's values go to its own mmap files in the service's directory (``keep_metrics_in`` first) and
    ``registry`` sums every worker's files, so any worker's /metrics answers the service's totals."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        owner: CollectorRegistry | None
        self.in_files = multiprocess_dir is not None
        if multiprocess_dir is None:
            self.registry = owner = CollectorRegistry()
        else:
            assert prometheus_values.ValueClass._multiprocess, "keep_metrics_in(directory) comes first"
            self.registry, owner = CollectorRegistry(), None  # values in files, read back by the collector
            self.registry.register(WorkersCollector(multiprocess_dir))
        self.requests = Counter("evergreen_requests_total", "HTTP requests", ["endpoint", "status"], registry=owner)
        self.errors = Counter(
            "evergreen_errors_total", "Requests answered with an error", ["endpoint", "reason"], registry=owner
        )
        self.latency = Histogram(
            "evergreen_request_latency_seconds",
            "Time to answer /predict, logging included",
            registry=owner,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.records = Counter("evergreen_records_scored_total", "Records scored and logged", registry=owner)
        self.internal = Counter(
            "evergreen_internal_errors_total", "Unexpected errors answered with a JSON 500", ["endpoint"], registry=owner
        )
        # Per version, the live workers serving it (livesum: a worker that ended counts no more): 1 with one
        # worker; with several, all of them on one version, split between two while a reload is under way.
        self.model = Gauge(
            MODEL_INFO,
            "The model version being served (value: the worker processes serving it)",
            ["version"],
            registry=owner,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter("evergreen_model_reloads_total", "Production model swaps", registry=owner)

    def serving(self, version: str | None, previous: str | None) -> None:
        if previous is not None and self.in_files:
            self.model.labels(version=previous).set(0)  # stays in the worker's file, at 0 (WorkersCollector)
        elif previous is not None:
            self.model.remove(previous)
        if version is not None:
            self.model.labels(version=version).set(1)


# ---------------------------------------------------------------- the application


class Service:
    """State shared by the endpoints: the current model, the log, the metrics, the reload task."""

    def __init__(self, settings: ServeParams, registry_root: str | Path, metrics_dir: Path | None = None):
        self.settings = settings
        self.registry = open_registry(registry_root)  # a folder, or an object store (s3://) another host promotes to
        self.model: LoadedModel | None = None
        self.log: PredictionLog | None = None
        self.metrics = ServiceMetrics(metrics_dir)
        self.refused: str | None = None  # why the production model is not served (its kind, a damaged file, ...)
        self.fallback = False  # serving an earlier production version because the production one cannot load
        self._pointer_seen: bytes | None = None
        self._settled = False  # the model for _pointer_seen is served, or can never be (not: may load on a retry)
        self._classes: dict[str, tuple[str, ...]] = {}  # model version -> its classes, for /labels

    @property
    def prediction_log(self) -> PredictionLog:
        """The open log: the app's lifespan opens it before the first request and closes it after the last."""
        if self.log is None:
            raise RuntimeError("the prediction log is not open; requests are served only inside the app's lifespan")
        return self.log

    def _pointer(self) -> bytes | None:
        """The registry's pointer token: cheap to read every few seconds, changes on every switch.
        A store that cannot be read must not fail here but in the loader, with its reason (retried each interval)."""
        try:
            return self.registry.pointer_token()
        except Exception as exc:  # an object store unreachable for a moment, a damaged pointer object
            return f"unreadable: {exc}".encode()

    @property
    def unready(self) -> str:
        """Why no model is served: the production model cannot be loaded or served, or there is none yet."""
        return self.refused or "no production model in the registry yet"

    async def reload_if_changed(self) -> bool:
        """Load the production model when the pointer changed; swap only once the new one is ready.
        Never raises: a model that cannot be loaded leaves the current one serving (or none) and says why."""
        # Off the event loop: on an object store the pointer is a listing over the network, which must not
        # hold up the requests in flight.
        pointer = await run_in_threadpool(self._pointer)
        if self._settled and pointer == self._pointer_seen:
            return False
        try:
            loaded = await run_in_threadpool(LoadedModel.load, self.registry, self.settings.onnx_threads)
        except NotSupportedYet as exc:
            # Not a failure to retry: this version can never be served. Say why on /ready until the pointer moves.
            self._settled, self._pointer_seen = True, pointer
            return await self._not_served(str(exc))
        except Exception as exc:
            # A damaged file or pointer can be repaired in place (restored from a backup): retried every interval.
            self._settled = False
            return await self._not_served(f"the production model cannot be loaded: {one_line(exc)}")
        self._settled, self._pointer_seen, self.refused, self.fallback = True, pointer, None, False
        if loaded is None or (self.model is not None and loaded.version == self.model.version):
            return False
        self._swap(loaded)
        return True

    async def _not_served(self, reason: str) -> bool:
        """Keep serving the current model (if any) and say why; with no model and the fallback policy,
        serve the newest earlier production version that loads."""
        if reason != self.refused:  # one line per new reason, not one per retry
            log.error("production model not served (serving %s): %s", self.model.version if self.model else None, reason)
        self.refused = reason
        if self.model is not None or self.settings.on_bad_model != "fallback":
            return False
        try:
            loaded = await run_in_threadpool(load_fallback, self.registry, self.settings.onnx_threads)
        except Exception as exc:  # the history itself is unreadable: stay unready, saying both
            self.refused = f"{reason}; no fallback: {one_line(exc)}"
            return False
        if loaded is None:
            self.refused = f"{reason}; no earlier production version verifies"
            return False
        self.fallback = True
        self._swap(loaded)
        log.warning("fallback: serving %s, the newest earlier production version that verifies", loaded.version)
        return True

    def _swap(self, loaded: LoadedModel) -> None:
        previous, self.model = self.model, loaded  # one reference swap: in-flight requests keep theirs
        self.metrics.serving(loaded.version, previous.version if previous else None)
        self.metrics.reloads.inc()
        log.info("serving model %s (was %s)", loaded.version, previous.version if previous else None)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_seconds)
            try:
                await self.reload_if_changed()
            except Exception:  # reload_if_changed handles what it expects; a watcher that died would never reload again
                log.exception("model watcher: unexpected error, still serving %s", self.model.version if self.model else None)

    def classes_of(self, version: str) -> tuple[str, ...]:
        """The classes of the model version that scored a request (empty for a forecaster)."""
        model = self.model
        if model is not None and model.version == version:
            return model.classes
        if version not in self._classes:
            try:
                self._classes[version] = ModelCard.load(self.registry.get(version).card).classes
            except (RegistryError, DataError) as exc:  # removed or damaged since it scored the request
                raise RequestError(422, f"model version {version} that scored the request cannot be read: {exc}") from None
        return self._classes[version]


def parse_labels(body: bytes, max_items: int, max_label_chars: int) -> list[dict[str, Any]]:
    """The /labels body, each item checked on its own (the log is checked next): 422 naming the item."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(422, f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise RequestError(422, "body must be a non-empty JSON list of {request_id, index, label}")
    if len(items) > max_items:
        raise RequestError(413, f"{len(items)} labels is over the batch limit of {max_items}")
    seen: dict[tuple[str, int], int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"request_id", "index", "label"}:
            raise RequestError(422, f"item {i}: expected exactly the fields request_id, index, label")
        request_id, index, label = item["request_id"], item["index"], item["label"]
        if not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id):
            raise RequestError(422, f"item {i}: request_id must be the 32 hex characters /predict returned")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise RequestError(422, f"item {i}: index must be a record's position in its request, an integer from 0")
        if not isinstance(label, str) or not label:
            raise RequestError(422, f"item {i}: label must be a non-empty string")
        if len(label) > max_label_chars:
            raise RequestError(422, f"item {i}: label is {len(label)} characters, over the limit of {max_label_chars}")
        first = seen.setdefault((request_id, index), i)
        if first != i:
            raise RequestError(422, f"item {i}: request_id {request_id} index {index} repeats item {first}")
    return items


def check_labels(service: Service, items: list[dict[str, Any]]) -> None:
    """Each label against the log: its request was scored, its index is one of that request's records,
    and it is a class of the model that scored it. Runs in a worker thread (database reads)."""
    scored = service.prediction_log.scored([item["request_id"] for item in items])
    for i, item in enumerate(items):
        request_id, index, label = item["request_id"], item["index"], item["label"]
        if request_id not in scored:
            raise RequestError(422, f"item {i}: request_id {request_id} is not in the prediction log")
        version, count = scored[request_id]
        if index >= count:
            raise RequestError(422, f"item {i}: index {index} is out of range; request {request_id} scored {count} record(s)")
        classes = service.classes_of(version)
        if classes and label not in classes:
            raise RequestError(422, f"item {i}: label {label!r} is not a class of model {version} ({', '.join(classes)})")


class CatchAll:
    """Innermost guard against the unexpected: an exception no handler knows becomes a JSON 500, counted and
    logged once with its traceback (Starlette's own guard answers plain text and logs it twice)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            body = internal_error(self.metrics, scope, exc)
            if started:  # half a response is out: uvicorn closes the connection, the client sees it cut
                return
            await send_json(send, 500, body)


def refused(metrics: ServiceMetrics, method: str, endpoint: str, exc: RequestError) -> bytes:
    """A refused request counted (and a vanished client's one log line): its JSON body, ``{"detail": ...}``."""
    metrics.requests.labels(endpoint, str(exc.status)).inc()
    metrics.errors.labels(endpoint, REASONS.get(exc.status, "invalid")).inc()
    if exc.status == 499:  # nobody to answer: one line in the log instead of a traceback
        log.info("%s %s: %s", method, endpoint, exc)
    return orjson.dumps({"detail": str(exc)})


def internal_error(metrics: ServiceMetrics, scope: Scope, exc: Exception) -> bytes:
    """An unexpected error logged once with its traceback and counted: the JSON 500's body."""
    endpoint = scope["path"]
    log.exception("internal error answering %s %s", scope["method"], endpoint, exc_info=exc)
    metrics.internal.labels(endpoint).inc()
    metrics.errors.labels(endpoint, "internal").inc()
    metrics.requests.labels(endpoint, "500").inc()
    return orjson.dumps({"detail": f"internal error ({type(exc).__name__}); the service log has the traceback"})


async def send_json(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """One whole JSON response, as Starlette's ``Response`` sends it (content-length, then content-type)."""
    raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    if headers:
        raw += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (never read whole first)
    and with 408 when it is not all in within ``timeout`` seconds (a slow sender holds no handler)."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit, timeout)


async def receive_body(receive: Receive, declared: str | None, limit: int, timeout: float) -> bytes:
    """``read_body`` on the raw ASGI ``receive``, given the Content-Length header (None when absent)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is over the limit of {limit} bytes", CLOSE)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise RequestError(499, "the client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"request body is over the limit of {limit} bytes", CLOSE)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise RequestError(408, f"request body not received within {timeout:g} s", CLOSE) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


CLOSE = {"connection": "close"}  # the rest of a refused body is not worth reading: uvicorn closes after the answer

FORM_DATA = "multipart/form-data"
# What a multipart body the email parser took apart may lack, said as the caller can act on it.
FORM_DEFECTS = {
    email.errors.NoBoundaryInMultipartDefect: "the Content-Type names no boundary (multipart/form-data; boundary=...)",
    email.errors.StartBoundaryNotFoundDefect: "no part starts with the boundary the Content-Type names",
    email.errors.CloseBoundaryNotFoundDefect: "the closing boundary is missing: the body is cut short",
    email.errors.MissingHeaderBodySeparatorDefect: "no blank line between the part's headers and its bytes",
}


def form_defect(defect: email.errors.MessageDefect) -> str:
    """A defect the email parser found, in words (its docstring's when it is not one of ``FORM_DEFECTS``)."""
    return FORM_DEFECTS.get(type(defect)) or " ".join(str(type(defect).__doc__).split()) or type(defect).__name__


def is_form_data(content_type: str | None) -> bool:
    """Whether a request's Content-Type is multipart/form-data (any parameters, any case)."""
    return content_type is not None and content_type.partition(";")[0].strip().lower() == FORM_DATA


def form_images(body: bytes, content_type: str, max_records: int) -> list[ImageFile]:
    """A multipart/form-data body's parts as image files, in order, each named for errors by its position
    and file name (or field name); one line naming the part (or the body) when one is not a plain file part.
    Parsed by the standard library's email parser (binary-safe under its HTTP policy): the service takes no
    dependency for the one endpoint that reads forms. Runs in a worker thread (a 1 MB body takes ~60 ms)."""
    header = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if message.defects:
        raise RequestError(422, f"multipart body: {form_defect(message.defects[0])}")
    if not message.is_multipart():
        raise RequestError(422, "multipart body: no part found; send each image as a file part")
    parts = list(message.iter_parts())
    if not parts:
        raise RequestError(422, "multipart body holds no part: send at least one image file")
    if len(parts) > max_records:
        raise RequestError(413, f"{len(parts)} files is over the batch limit of {max_records}")
    files = []
    for i, part in enumerate(parts):
        filename, field = part.get_filename(), part.get_param("name", header="content-disposition")
        where = f"part {i}" + (f" ({filename!r})" if filename else f" (field {field!r})" if isinstance(field, str) else "")
        if part.defects:
            raise RequestError(422, f"{where}: {form_defect(part.defects[0])}")
        if part.get_content_disposition() != "form-data":
            raise RequestError(422, f"{where}: needs a header Content-Disposition: form-data; name=...; filename=...")
        data = part.get_payload(decode=True)
        if part.is_multipart() or not isinstance(data, bytes):
            raise RequestError(422, f"{where}: a nested multipart part; send each image as its own file part")
        files.append(ImageFile(data, where))
    return files


# The documented bodies (the handlers read the raw body themselves, for the size limit): they are what
# /docs shows and what a schemathesis run generates requests from.
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "minItems": 1,
                "description": "raw records, by the model's kind: tabular, an object of fields; image, base64 "
                "PNG/JPEG text or nested arrays of pixels; sequence, a list of `lookback` rows of the long table",
            }
        },
        FORM_DATA: {
            "schema": {
                "type": "object",
                "description": "image models only: one PNG or JPEG file per part (any field name; `image` by "
                "convention), answered in part order and logged exactly as the same files sent as base64 records",
                "required": ["image"],
                "properties": {
                    "image": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                    }
                },
            },
            "encoding": {"image": {"contentType": "image/png, image/jpeg"}},
        },
    },
}
LABELS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["request_id", "index", "label"],
                    "additionalProperties": False,
                    "properties": {
                        "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "index": {"type": "integer", "minimum": 0},
                        "label": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                },
            }
        }
    },
}


# ---------------------------------------------------------------- POST /predict, ahead of FastAPI

JSON = "application/json"


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None, as FastAPI's ``HTTPBearer`` reads it."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme and token and scheme.lower() == "bearer" else None


def check_token(token: str | None, api_token: str | None) -> None:
    """Refuse (401) a request whose bearer token is missing or wrong, when the service has one."""
    if api_token is None:
        return
    challenge = {"www-authenticate": "Bearer"}
    if token is None:
        raise RequestError(401, f"missing header Authorization: Bearer <token> (${API_TOKEN_ENV} is set)", challenge)
    # Constant time: the comparison must not tell a caller how much of a guess was right.
    if not hmac.compare_digest(token.encode(), api_token.encode()):
        raise RequestError(401, "header Authorization: the bearer token is not valid", challenge)


def route_path(scope: Scope) -> str:
    """The request's path below the app's root path (as Starlette's router matches it)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root + "/") else path


class PredictEndpoint:
    """POST /predict as a plain ASGI callable, answered before FastAPI's routing, middleware and dependencies.

    Why (issue 13): at one record per request, that machinery cost the main thread more than the model did
    (30% of its time against 9% for ``Session.run``). This does what the FastAPI route did, in the same
    order and with the same answers: the bearer token, 503 while unready, the body under its size limit and
    deadline, the records checked by the kind's runtime, every record committed to the log before the
    answer, the same metrics; an unexpected error is the same logged and counted JSON 500."""

    def __init__(self, service: Service, api_token: str | None) -> None:
        self.service = service
        self.api_token = api_token
        metrics = service.metrics
        self._ok = metrics.requests.labels("/predict", "200")  # the children bound once, not per request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self.answer(scope, receive)
        except RequestError as exc:
            await send_json(send, exc.status, refused(self.service.metrics, "POST", route_path(scope), exc), exc.headers)
        except Exception as exc:
            await send_json(send, 500, internal_error(self.service.metrics, scope, exc))
        else:
            await send_json(send, 200, body)

    async def answer(self, scope: Scope, receive: Receive) -> bytes:
        """The JSON answer to one request, sent only once its records are committed; ``RequestError`` when refused."""
        started = time.perf_counter()
        service, settings = self.service, self.service.settings
        authorization = content_type = declared = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's ``Headers.get`` reads them
            if name == b"content-length":
                declared = declared if declared is not None else value.decode("latin-1")
            elif name == b"content-type":
                content_type = content_type if content_type is not None else value.decode("latin-1")
            elif name == b"authorization":
                authorization = authorization if authorization is not None else value.decode("latin-1")
        check_token(bearer_token(authorization), self.api_token)
        model = service.model  # this request's model, whatever gets promoted meanwhile
        if model is None:
            raise RequestError(503, service.unready)
        body = await receive_body(receive, declared, settings.max_body_bytes, settings.body_timeout_seconds)
        records: list[Any]
        if is_form_data(content_type):  # image files uploaded; records as the kind's runtime decodes them
            if model.card.KIND != "image":
                raise RequestError(
                    422,
                    f"multipart/form-data uploads image files, for image models; model {model.version} is a "
                    f"{model.card.KIND} model: send a JSON list of records",
                )
            records = await run_in_threadpool(form_images, body, str(content_type), settings.max_records)
        else:
            records = json_records(body, settings.max_records)
        # Small requests of rows or windows run inline (a thread hop costs more than their ~0.1-2 ms);
        # large ones, and any image decoding, run in a worker thread and leave the event loop free.
        try:
            if len(records) <= 16 and model.card.KIND != "image":
                _, answers, logged = score(model, records)
            else:
                _, answers, logged = await run_in_threadpool(score, model, records)
        except RecordError as exc:
            raise RequestError(422, str(exc)) from None
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC).isoformat()
        version, labels, vectors = model.version, answers.labels, answers.vectors
        rows = [
            {
                "request_id": request_id,
                "record_index": i,
                "logged_at": now,
                "model_version": version,
                "inputs": logged[i],
                "label": labels[i],
                "probabilities": orjson.dumps(vectors[i]).decode(),
            }
            for i in range(len(records))
        ]
        try:
            await service.prediction_log.write(rows)  # answered only once committed
        except Exception as exc:  # no answer without its log record; the client may retry elsewhere
            raise RequestError(503, f"prediction log cannot commit: {commit_error(exc)}") from None
        metrics = service.metrics
        metrics.records.inc(len(records))
        self._ok.inc()
        metrics.latency.observe(time.perf_counter() - started)
        predictions = [{"index": i, **item} for i, item in enumerate(answers.answers)]
        return orjson.dumps({"request_id": request_id, "model_version": version, "predictions": predictions})


def json_records(body: bytes, max_records: int) -> list[Any]:
    """A JSON body's records: a non-empty list of at most ``max_records`` (each checked by the kind's runtime)."""
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(422, f"body is not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise RequestError(422, "body must be a JSON list of records")
    if not records:
        raise RequestError(422, "body is an empty list: send at least one record")
    if len(records) > max_records:
        raise RequestError(413, f"{len(records)} records is over the batch limit of {max_records}")
    return records


class Handover(Response):
    """What FastAPI's documented /predict route answers: the request handed to ``PredictEndpoint``."""

    def __init__(self, endpoint: PredictEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint(scope, receive, send)


class ServiceApp(FastAPI):
    """The service's FastAPI app, with POST /predict answered by its ``PredictEndpoint`` first."""

    predict_endpoint: PredictEndpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and route_path(scope) == "/predict":
            await self.predict_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: ServeParams, registry_root: str | Path, api_token: str | None = None, metrics_dir: Path | None = None
) -> FastAPI:
    """The FastAPI application for one registry and one prediction log; with ``api_token``, /predict,
    /labels and /metrics need ``Authorization: Bearer <api_token>``; with ``metrics_dir``, one worker of
    several, its metrics kept in that directory and /metrics the sum of every worker's (``ServiceMetrics``)."""
    service = Service(settings, registry_root, metrics_dir)
    bearer = HTTPBearer(auto_error=False)

    async def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_token(credentials.credentials if credentials else None, api_token)

    guarded = [Depends(authorised)]

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

    app = FastAPIOffline(
        title="Evergreen prediction service",
        lifespan=lifespan,
        static_url=DOCS_ASSETS_URL,
        # Swagger UI would send the schema to validator.swagger.io for its badge: no call leaves the page.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.service = service
    app.add_middleware(CatchAll, metrics=service.metrics)
    endpoint = PredictEndpoint(service, api_token)
    # FastAPIOffline builds a plain FastAPI; ServiceApp only adds the /predict shortcut (no state of its own).
    app.__class__ = ServiceApp
    assert isinstance(app, ServiceApp)
    app.predict_endpoint = endpoint

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return Response(refused(service.metrics, request.method, request.url.path, exc), exc.status, exc.headers, JSON)

    # POST /predict is answered by ``PredictEndpoint`` ahead of FastAPI (``ServiceApp.__call__``); this route
    # documents it in /openapi.json and /docs, and hands over to the same endpoint should a request reach it.
    @app.post("/predict", dependencies=guarded, openapi_extra={"requestBody": PREDICT_BODY})
    async def predict(request: Request):
        return Handover(endpoint)

    @app.post("/labels", dependencies=guarded, openapi_extra={"requestBody": LABELS_BODY})
    async def add_labels(request: Request):
        body = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
        items = parse_labels(body, settings.max_records, settings.max_label_chars)
        await run_in_threadpool(check_labels, service, items)
        try:
            count = await run_in_threadpool(service.prediction_log.add_labels, items, datetime.now(UTC).isoformat())
        except Exception as exc:
            failing = service.prediction_log.failing
            if failing is None:
                raise  # not the log's known commit failure (e.g. its schema damaged): a JSON 500, counted
            raise RequestError(503, f"prediction log cannot commit: {failing}") from exc  # as /predict answers
        service.metrics.requests.labels("/labels", "200").inc()
        return {"stored": count}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        model, failing = service.model, service.prediction_log.failing
        if model is None:
            return JSONResponse(status_code=503, content={"ready": False, "detail": service.unready})
        if failing is not None:
            detail = f"prediction log cannot commit: {failing}"
            return JSONResponse(status_code=503, content={"ready": False, "detail": detail})
        if service.refused is None:
            return {"ready": True, "model_version": model.version}
        # Serving, but not the production model: ready, and saying which and why.
        return {"ready": True, "model_version": model.version, "fallback": service.fallback, "detail": service.refused}

    @app.get("/model")
    async def model_info():
        model = service.model
        if model is None:
            raise RequestError(503, service.unready)
        return {"version": model.version, "variant": model.variant, "card": model.card.to_dict(), "metrics": model.metrics}

    @app.get("/metrics", dependencies=guarded)
    async def metrics():
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
