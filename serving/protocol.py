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
* request line + headers over ``max_header_bytes``: 431 and the connection closes. httptools hands a header
  line over only once it ends, so the raw bytes of a header still open after a whole chunk are counted too:
  a line that never ends is refused at the limit, not buffered (and re-copied) until the deadline.

An answered refusal closes gracefully: the answer, then a FIN, then whatever the client still sends is read
and dropped until it closes (at most ``LINGER_SECONDS`` and ``LINGER_BYTES``). Closing at once with unread
bytes makes the kernel send a reset, which can discard the answer before the client reads it. Each closing
is one log line. httptools (what uvicorn picks by default) is kept for its speed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

STATUS_TEXT = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
LINGER_SECONDS = 2.0  # after a refusal, how long a client may take to read it and close before a reset
LINGER_BYTES = 1 << 20  # and how much more it may send meanwhile (a flood would keep the worker reading)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header deadline, a body deadline and a header-size limit (set by ``guarded_protocol``)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 16_384

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # this request's completed header pieces
        self._header_raw = 0  # this request's raw bytes in chunks that ended with its header still open
        self._in_header = True  # from the connection's start or a request's first byte to the end of its header
        self._headers_done = 0  # requests whose header ended on this connection
        self._refused = False  # answered and closing: ignore whatever else the client sends
        self._dropped = 0  # bytes read and dropped since the refusal

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "request header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering: read and drop, so that the close is a FIN and not a reset
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.abort()
            return
        header_was_open, headers_done = self._in_header, self._headers_done
        super().data_received(data)
        # Open before and after, with no header ending in between: every byte of the chunk is this request's
        # header. A chunk that ends one header (a pipelined request's) and begins another is not counted, so
        # the new one is counted from its next chunk: the limit can be passed by one read, never wrongly.
        whole_chunk_header = header_was_open and self._in_header and self._headers_done == headers_done
        if whole_chunk_header and not self._refused and not self.transport.is_closing():
            self._header_raw += len(data)
            if self._header_raw > self.max_header_bytes:
                self._refuse_header_size()

    # ---------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_raw = 0
        self._in_header = True
        if self._deadline is None:  # a later request on a kept-alive connection: timed from its first byte
            self._arm(self.header_timeout, "request header")

    def on_url(self, url: bytes) -> None:
        if self._count(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._count(len(name) + len(value) + 4):  # ": " and CRLF
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_header = False
        self._headers_done += 1
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
        self._refuse_header_size()
        return False

    def _refuse_header_size(self) -> None:
        self._refuse(431, f"request header is over the limit of {self.max_header_bytes} bytes")

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
        # A body's request has its handler (or none reads it): a 408 now could be read as the answer to
        # something else, so _refuse closes without one, as it does while a response is under way.
        self._refuse(408, f"{what} not received within {seconds:g} s", answer=what != "request body")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the parser reads on after a refusal; its answer has been sent
            super().send_400_response(msg)

    def _refuse(self, status: int, detail: str, answer: bool = True) -> None:
        """Answer a JSON error with Connection: close and stop reading: one log line, no ASGI task. No answer
        (a plain close; a running handler sees a disconnect) when ``answer`` is false or a response is under
        way on this connection: an answer now would come before that response."""
        self._refused = True
        self._disarm()
        log.info("closed a connection from %s: %s", _peer(self.client), detail)
        if not answer or (self.cycle is not None and not self.cycle.response_complete):
            self.transport.close()
            return
        body = orjson.dumps({"detail": detail})
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, STATUS_TEXT[status], len(body)) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the FIN follows the answer; reading goes on (data_received drops it)
        # The client's own FIN closes the transport (eof_received); one that never closes is reset here, which
        # also frees a connection whose client never reads the answer (close() would wait for it forever).
        self._deadline = self.loop.call_later(LINGER_SECONDS, self.transport.abort)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


def guarded_protocol(header_timeout: float, body_timeout: float, max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits (uvicorn builds one per connection)."""
    return type(
        "EvergreenHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_header_bytes": max_header_bytes},
    )
