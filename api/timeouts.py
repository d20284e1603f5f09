"""Slow clients are timed out: a request's headers and its body each have a deadline.

uvicorn closes idle kept-alive connections, but a client that sends its request line and
headers one byte at a time, or its body at 1 byte/s, holds a connection (and a task) for as
long as it likes: a hundred such clients hold a hundred. Two limits close them:

- `HeaderDeadlineProtocol`: uvicorn's own HTTP protocol (httptools), with a timer from the
  first byte of a request (or the connection's opening) to the end of its headers; past
  `HEADER_SECONDS` the client gets `408` and the connection is closed.
- `BodyDeadline`: ASGI middleware; the whole body must arrive within `BODY_SECONDS` of the
  request's start, else `408` (if nothing was answered yet) and the connection is closed.

A client that leaves while its request is served is not an error of the server: it is logged
at INFO, without a traceback (`ClientGone`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.limits import reject

logger = logging.getLogger(__name__)

#: Seconds from a request's first byte (or the connection's opening) to the end of its headers.
HEADER_SECONDS = 10.0
#: Seconds from a request's start to the end of its body.
BODY_SECONDS = 30.0

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
)


def _timeout_body(message: str) -> bytes:
    return json.dumps({"error": {"code": "TIMEOUT", "message": message, "details": []}}).encode()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's headers."""

    header_seconds = HEADER_SECONDS
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_deadline(cls, seconds: float) -> type[HeaderDeadlineProtocol]:
        """The protocol class with another deadline (uvicorn takes a class)."""
        return type(cls.__name__, (cls,), {"header_seconds": seconds})

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request of a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        seconds = self.header_seconds
        body = _timeout_body(f"the request's headers did not arrive within {seconds:g} s")
        self.transport.write(
            _TIMEOUT_RESPONSE + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        self.transport.close()


class BodyDeadline:
    """408 to a request whose body is not all there `BODY_SECONDS` after its start."""

    def __init__(self, app: ASGIApp, *, seconds: float = BODY_SECONDS) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        started = False
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()  # a disconnect, awaited by streaming responses
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except _BodyTooSlow:
            if not started:
                message = f"the request's body did not arrive within {self.seconds:g} s"
                await reject(send, 408, "TIMEOUT", message, close=True)


class _BodyTooSlow(Exception):
    """Raised from `receive` when the body's deadline passed."""


class ClientGone:
    """A client that left while its request was served ends that request quietly (INFO), not
    with the tracebacks of the errors its absence raises further down."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except (ClientDisconnect, ConnectionError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
                raise
            logger.info("%s %s: the client left (%s)", scope["method"], scope["path"], exc)
