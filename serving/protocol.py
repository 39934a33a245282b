"""uvicorn's httptools protocol with the guards uvicorn 0.54 lacks: a header deadline, a body deadline and a
header-size limit.

Why a protocol subclass: uvicorn's only timer is the keep-alive one, armed after a response and cancelled
by any byte received, so a connection that opens and sends nothing, or drips a header or a body one byte
at a time, is held forever (1,100 such connections sat open for 20 s and more). ``h11_max_incomplete_event_size``
limits headers only under the h11 protocol, and ``limit_concurrency`` only answers 503 once too many are
held. An ASGI middleware cannot help: the application sees a request only once its header is complete.
The parser's callbacks are where a request's header begins and ends, so the deadlines live there:

* header: from the connection's start (or the first byte of a later request) to the end of the header,
  ``header_timeout`` seconds; then 408 and the connection closes;
* body: from the end of the header to the end of the body, twice ``body_timeout``: the handlers' own 408
  (``serving.app.read_body``) comes first; this one closes, without an answer, connections whose body no
  handler reads;
* request line + headers over ``max_header_bytes``: 431 and the connection closes.

Each closing is one log line. httptools (what uvicorn picks by default) is kept for its speed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

STATUS_TEXT = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header deadline, a body deadline and a header-size limit (set by ``guarded_protocol``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16_384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refused = False  # answered and closing: ignore whatever else the client sends

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "request header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    # ---------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._deadline is None:  # a later request on a kept-alive connection: timed from its first byte
            self._arm(self.header_timeout, "request header")

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):  # ": " and CRLF
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return  # no ASGI task for a refused request
        self._arm(2 * self.body_timeout, "request body")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        super().on_message_complete()

    # ---------------------------------------------------------- the guards

    def _count(self, size: int) -> bool:
        """Count header bytes; past the limit answer 431 and close. False once refused."""
        if self._refused:
            return False
        self._header_bytes += size
        if self._header_bytes <= self.max_header_bytes:
            return True
        self._refuse(431, f"request header is over the limit of {self.max_header_bytes} bytes")
        return False

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if what == "request body" or (self.cycle is not None and not self.cycle.response_complete):
            # A response is under way or done on this connection: a 408 now could be read as the answer to
            # something else. Close; a running handler sees a disconnect.
            self._refused = True
            log.info("closed a connection from %s: %s not received within %g s", _peer(self.client), what, seconds)
            self.transport.close()
            return
        self._refuse(408, f"{what} not received within {seconds:g} s")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer a JSON error with Connection: close and stop reading: one log line, no ASGI task."""
        self._refused = True
        self._disarm()
        log.info("closed a connection from %s: %s", _peer(self.client), detail)
        body = orjson.dumps({"detail": detail})
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, STATUS_TEXT[status], len(body)) + body)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def guarded_protocol(header_timeout: float, body_timeout: float, max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits (uvicorn builds one per connection)."""
    return type(
        "EvergreenHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_header_bytes": max_header_bytes},
    )
