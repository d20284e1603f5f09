"""Request-body limits: size (declared and received) and how deeply a body nests.

Python's `json` and PyYAML's composer recurse once per level of nesting, so a body of a few
thousand `[` raises `RecursionError` inside the parser (a 500, not a 4xx). Bodies are therefore
measured before any parser sees them, by scanners that do not recurse themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import yaml
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Deepest nesting of lists and mappings a body may have. A study spec needs about six levels;
#: every recursive step after parsing (validation, error rendering) stays far from Python's
#: recursion limit at this depth.
MAX_NESTING = 32
#: Most nodes YAML aliases may add to a document ("billion laughs": nine aliases of nine
#: aliases of ... expand a few hundred bytes into millions of nodes).
MAX_ALIAS_NODES = 100_000


def too_deep() -> HTTPException:
    return HTTPException(
        400,
        detail=f"request body nested too deeply: more than {MAX_NESTING} levels of lists "
        "and mappings",
    )


class BodySizeLimit:
    """Answer 413 to a body larger than `max_bytes` (pure ASGI, so streams are counted too)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await reject(send, 400, "BAD_REQUEST", "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await reject(send, 413, "BODY_TOO_LARGE", self._too_large())
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self._too_large())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await reject(send, 413, "BODY_TOO_LARGE", self._too_large())

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes"


async def reject(send: Send, status: int, code: str, message: str, *, close: bool = False) -> None:
    """Answer in the API's error shape (see `api.errors`) before the app is reached; `close`:
    the connection is closed after it."""
    body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body parsing answers 413 with it
    (rather than turning any other error into a bare 400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail=detail)


class StripRootPath:
    """Accept requests with or without the `--root-path` prefix.

    Proxies differ: some strip the prefix before forwarding (the app sees `/api/v1/...`),
    others forward the path unchanged (`/prefix/api/v1/...`). Both reach the same routes.
    """

    def __init__(self, app: ASGIApp, *, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.root_path and scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path == self.root_path or path.startswith(self.root_path + "/"):
                scope = dict(scope)
                scope["path"] = path[len(self.root_path) :] or "/"
                raw = scope.get("raw_path")
                if isinstance(raw, bytes) and raw.startswith(self.root_path.encode()):
                    scope["raw_path"] = raw[len(self.root_path) :] or b"/"
        await self.app(scope, receive, send)


class NestingScanner:
    """How deeply `[` and `{` nest in a JSON text, fed chunk by chunk, without recursing.

    Brackets inside strings do not count. Any body is measured (YAML's flow style nests with
    the same brackets); a block-style YAML body is measured by `yaml_problem`.
    """

    _SPECIAL = re.compile(rb'[][{}"\\]')

    def __init__(self, limit: int = MAX_NESTING) -> None:
        self.limit = limit
        self.depth = 0
        self.in_string = False
        self.escaped = False  # the previous chunk ended in a backslash inside a string

    def too_deep(self, chunk: bytes) -> bool:
        """Feed the next chunk; whether the nesting so far exceeds the limit."""
        skip = 0 if self.escaped else -1  # the index of a byte a backslash escapes
        self.escaped = False
        for match in self._SPECIAL.finditer(chunk):
            at = match.start()
            if at == skip:
                continue
            byte = chunk[at : at + 1]
            if self.in_string:
                if byte == b"\\":
                    skip = at + 1
                    self.escaped = skip == len(chunk)
                elif byte == b'"':
                    self.in_string = False
            elif byte == b'"':
                self.in_string = True
            elif byte in (b"[", b"{"):
                self.depth += 1
                if self.depth > self.limit:
                    return True
            elif byte in (b"]", b"}"):
                self.depth = max(0, self.depth - 1)
        return False


class NestingLimit:
    """Answer 400 to a body nested more than `MAX_NESTING` deep, before anything parses it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scanner = NestingScanner()

        async def scanning_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and scanner.too_deep(message.get("body", b"")):
                raise too_deep()  # an HTTPException: answered by the app's handlers
            return message

        await self.app(scope, scanning_receive, send)


def yaml_problem(text: str) -> str | None:
    """What makes `text` unsafe to compose as YAML (too deep, an alias bomb), if anything.

    PyYAML's parser is iterative (its composer is not): its events are counted here. Text that
    is not valid YAML is left to the loader, which says where it is wrong.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return _event_problem(yaml.parse(text, Loader=loader))
    except yaml.YAMLError:
        return None


def _event_problem(events: Iterable[yaml.Event]) -> str | None:
    sizes: dict[str, int] = {}  # anchor -> nodes of its (complete) node, aliases expanded
    open_nodes: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes so far)
    added = 0  # nodes added by aliases
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, 1))
            if len(open_nodes) > MAX_NESTING:
                return too_deep().detail
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, nodes = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, nodes = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                if any(event.anchor == name for name, _ in open_nodes):
                    return f"YAML alias *{event.anchor} refers to a node that contains it"
                continue  # undefined: the loader says so
            anchor, nodes = None, sizes[event.anchor]
            added += nodes
            if added > MAX_ALIAS_NODES:
                return f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes"
        else:
            continue
        if anchor is not None:
            sizes[anchor] = nodes
        if open_nodes:
            parent, count = open_nodes[-1]
            open_nodes[-1] = (parent, count + nodes)
    return None
