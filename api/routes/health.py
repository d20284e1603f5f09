"""Liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import BackendDep
from api.errors import error_body
from tuner.domain.errors import TunerError
from tuner.public.schemas import Health, NotReady

router = APIRouter(tags=["health"])

#: Why the embedded study manager is not running (None while it runs), when there is one.
ManagerProblem = Callable[[], str | None]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": NotReady}})
async def readyz(request: Request, backend: BackendDep) -> JSONResponse:
    """The database answers, and the embedded study manager (if any) runs."""
    try:
        await run_in_threadpool(backend.db.ping)
    except (TunerError, Exception):  # any failure to reach the database means not ready
        return _not_ready("database unavailable", "the database does not answer")
    manager_problem: ManagerProblem | None = request.app.state.manager_problem
    if manager_problem is not None and (reason := manager_problem()) is not None:
        return _not_ready("manager unavailable", reason)
    return JSONResponse({"status": "ok"})


def _not_ready(status: str, reason: str) -> JSONResponse:
    """A probe's body (`status`, `reason`) that is also the API's error shape."""
    body = {"status": status, "reason": reason}
    body.update(error_body("UNAVAILABLE", f"not ready: {reason}"))
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
