"""Swagger UI at `/docs` and ReDoc at `/redoc`, from assets shipped in the package.

FastAPI's defaults load both from a CDN, so they are blank offline or behind a strict proxy;
the assets are vendored by `scripts/vendor-web-assets.sh` (pinned, checksummed) instead.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/static"

router = APIRouter(include_in_schema=False)


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    base = _base(request)
    return get_swagger_ui_html(
        openapi_url=f"{base}/openapi.json",
        title=f"{request.app.title}: API",
        swagger_js_url=f"{base}{STATIC_PATH}/vendor/swagger-ui-bundle.js",
        swagger_css_url=f"{base}{STATIC_PATH}/vendor/swagger-ui.css",
        swagger_favicon_url=f"{base}{STATIC_PATH}/vendor/favicon-32x32.png",
    )


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    base = _base(request)
    return get_redoc_html(
        openapi_url=f"{base}/openapi.json",
        title=f"{request.app.title}: API reference",
        redoc_js_url=f"{base}{STATIC_PATH}/vendor/redoc.standalone.js",
        redoc_favicon_url=f"{base}{STATIC_PATH}/vendor/favicon-32x32.png",
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)
