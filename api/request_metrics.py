"""HTTP request latency for Prometheus, by method, route template and status.

The route is the matched route's template (`/api/v1/studies/{study}`), never the raw path, so
the number of series is bounded by the app's routes whatever clients ask for; a request no
route matched (a 404 of an unknown path, a body refused before routing) is `unmatched`. The
time runs from the request's arrival to the end of its response: an event stream's is how long
it was followed.
"""

from __future__ import annotations

import time
from typing import Final

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED: Final = "unmatched"

REQUEST_LATENCY: Final = Histogram(
    "tuner_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its response, by route template.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def route_template(scope: Scope) -> str:
    """The template of the route that served `scope`, with the prefixes of the routers that
    included it (`/api/v1`: static, as every prefix here; the route sets only its own part)."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return UNMATCHED
    regex = getattr(route, "path_regex", None)
    path: str = scope.get("path", "")
    if regex is not None and not regex.match(path):
        for at, char in enumerate(path):
            if char == "/" and at > 0 and regex.match(path[at:]):
                return path[:at] + template
    return template


class RequestMetrics:
    """Observes each HTTP request's latency (pure ASGI: streamed responses are timed whole)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is answered 500 outside

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            REQUEST_LATENCY.labels(scope["method"], route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )
