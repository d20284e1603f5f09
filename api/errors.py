"""Tuner errors as HTTP answers: each a 4xx with what is wrong, except an unavailable database."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tuner.errors import (
    ArtifactNotFoundError,
    DuplicateStudyError,
    SpecError,
    StorageUnavailableError,
    StudyNotFoundError,
    StudyStateError,
    TrainerNotFoundError,
    TrialNotFoundError,
    TunerError,
    UnsafePathError,
)

STATUS: list[tuple[type[TunerError], int]] = [
    (SpecError, 422),
    (TrainerNotFoundError, 422),
    (DuplicateStudyError, 409),
    (StudyStateError, 409),
    (StudyNotFoundError, 404),
    (TrialNotFoundError, 404),
    (ArtifactNotFoundError, 404),
    (UnsafePathError, 404),
    (StorageUnavailableError, 503),
]


def _status(exc: TunerError) -> int:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return 400


async def tuner_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TunerError)
    code = _status(exc)
    if isinstance(exc, SpecError):
        body: object = [{"loc": path, "msg": reason} for path, reason in exc.problems]
    elif isinstance(exc, TrainerNotFoundError):
        body = [{"loc": "trainer", "msg": str(exc).removeprefix("trainer: ")}]
    else:
        body = str(exc)
    headers = {"Retry-After": "5"} if code == 503 else None
    return JSONResponse({"detail": body}, status_code=code, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(TunerError, tuner_error)
