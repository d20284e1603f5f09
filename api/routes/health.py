"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import BackendDep
from api.errors import error_body
from tuner.domain.errors import TunerError
from tuner.public.schemas import Health, NotReady
from tuner.study.operations import Backend

router = APIRouter(tags=["health"])

#: Why the embedded study manager is not running (None while it runs), when there is one.
ManagerProblem = Callable[[], str | None]


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


#: Seconds a readiness probe waits for the database: an answer (503) comes well within the
#: usual probe timeout even when the database hangs instead of refusing.
READY_TIMEOUT = 1.5


class DatabaseProbe:
    """One ping of the database in flight at most, shared by the probes that come meanwhile:
    probes of a database that hangs neither wait past `READY_TIMEOUT` nor pile up threads."""

    def __init__(self) -> None:
        self._ping: asyncio.Future[None] | None = None

    async def answers(self, backend: Backend) -> bool:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(run_in_threadpool(backend.db.ping))
        try:
            await asyncio.wait_for(asyncio.shield(self._ping), READY_TIMEOUT)
        except (TunerError, Exception):  # any failure to reach the database means not ready
            return False
        return True


@router.get("/readyz", response_model=Health, responses={503: {"model": NotReady}})
async def readyz(request: Request, backend: BackendDep) -> JSONResponse:
    """The database answers (within `READY_TIMEOUT`), and the embedded study manager (if any)
    runs."""
    probe: DatabaseProbe | None = getattr(request.app.state, "database_probe", None)
    if probe is None:
        probe = request.app.state.database_probe = DatabaseProbe()
    if not await probe.answers(backend):
        return _not_ready(
            "database unavailable", f"the database does not answer within {READY_TIMEOUT:g} s"
        )
    manager_problem: ManagerProblem | None = request.app.state.manager_problem
    if manager_problem is not None and (reason := manager_problem()) is not None:
        return _not_ready("manager unavailable", reason)
    return JSONResponse({"status": "ok"})


def _not_ready(status: str, reason: str) -> JSONResponse:
    """A probe's body (`status`, `reason`) that is also the API's error shape."""
    body = {"status": status, "reason": reason}
    body.update(error_body("UNAVAILABLE", f"not ready: {reason}"))
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
