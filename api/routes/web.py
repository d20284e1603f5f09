"""The browser UI: the page at `/`, its assets under `/ui/`, and `GET /api/v1/whoami`.

The page is static files from the package (`api/web/`, plus uPlot, marked and DOMPurify from
`static/vendor/`, all checked in: nothing is built or fetched at install or run time, and
nothing comes from a CDN).
Assets are served gzipped when the browser accepts it, with a strong ETag and `no-cache`, so a
repeat visit costs a 304 per file and an upgraded server is picked up at once. The page learns
the `--root-path` from a meta tag, so it works behind a proxy at a prefix.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import Field

from api.deps import BackendDep, Credentials, SettingsDep
from api.docs import STATIC_DIR
from api.routes import charts, importance
from api.routes.studies import ERRORS
from tuner.persistence.tokens import scope_of
from tuner.public.schemas import Public

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
ASSET_PATH = "/ui"
#: Every file the page may load, by its name under `/ui/`: nothing else is served there.
ASSETS: dict[str, Path] = {
    **{
        str(path.relative_to(WEB_DIR)): path
        for path in sorted(WEB_DIR.rglob("*"))
        if path.is_file() and path.suffix in (".js", ".css", ".svg") and path.name != "index.html"
    },
    "vendor/uPlot.iife.min.js": STATIC_DIR / "vendor" / "uPlot.iife.min.js",
    "vendor/uPlot.min.css": STATIC_DIR / "vendor" / "uPlot.min.css",
    "vendor/marked.esm.js": STATIC_DIR / "vendor" / "marked.esm.js",
    "vendor/purify.es.js": STATIC_DIR / "vendor" / "purify.es.js",
}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
#: The page runs only its own scripts and talks only to this server: a token kept in the
#: browser is worth protecting from injected script.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)
api_router = APIRouter(responses=ERRORS)
api_router.include_router(importance.router)
api_router.include_router(charts.router)


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


_cache: dict[tuple[Path, int, int], Asset] = {}


def load_asset(path: Path) -> Asset:
    """The file's bytes, gzipped and hashed once per version of the file."""
    stat = path.stat()
    key = (path, stat.st_mtime_ns, stat.st_size)
    found = _cache.get(key)
    if found is None:
        body = path.read_bytes()
        found = Asset(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0),
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        )
        for old in [k for k in _cache if k[0] == path]:
            del _cache[old]
        _cache[key] = found
    return found


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    """The page, with the root path it is served under and its asset URLs filled in."""
    asset = load_asset(WEB_DIR / "index.html")
    root = _root(request)
    text = asset.body.decode("utf-8").replace("{{root}}", html.escape(root, quote=True))
    return HTMLResponse(
        text,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get(ASSET_PATH + "/{name:path}")
async def web_asset(name: str, request: Request) -> Response:
    """One of the page's files; 404 for anything not in `ASSETS`. (On the event loop: the
    bytes are in memory after the first request, a stat is all it waits for.)"""
    accept_encoding = request.headers.get("accept-encoding", "")
    if_none_match = request.headers.get("if-none-match", "")
    path = ASSETS.get(name)
    if path is None or not path.is_file():
        raise HTTPException(404, detail=f"no such file of the web UI: {name}")
    asset = load_asset(path)
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if asset.etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    if "gzip" in accept_encoding.lower():
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.content_type, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


class WhoAmI(Public):
    scope: Literal["read", "write"] | None = Field(
        description="The bearer token's scope; null when no token was sent."
    )
    public_reads: bool = Field(description="Whether reads need no token on this server.")
    can_read: bool
    can_write: bool


@api_router.get("/whoami", response_model=WhoAmI, tags=["health"])
def who_am_i(settings: SettingsDep, backend: BackendDep, credentials: Credentials) -> WhoAmI:
    """What the sent token may do, so a client offers only that; 401 for an unknown or
    revoked token."""
    scope: Literal["read", "write"] | None = None
    if credentials is not None:
        found = scope_of(backend.db, credentials.credentials)
        if found == "read":
            scope = "read"
        elif found == "write":
            scope = "write"
        else:
            raise HTTPException(
                401, detail="invalid or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
    return WhoAmI(
        scope=scope,
        public_reads=settings.public_reads,
        can_read=scope is not None or settings.public_reads,
        can_write=scope == "write",
    )


def install(app: FastAPI, api_prefix: str) -> None:
    """The page, its assets, and the routes it needs beyond the REST API's own."""
    app.include_router(api_router, prefix=api_prefix)
    app.include_router(router)
