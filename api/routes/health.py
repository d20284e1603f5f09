"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import BackendDep
from api.schemas import Health
from tuner.errors import TunerError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(backend: BackendDep) -> JSONResponse:
    """The database answers."""
    try:
        await run_in_threadpool(backend.db.ping)
    except (TunerError, Exception):  # any failure to reach the database means not ready
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
