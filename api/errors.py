"""Tuner errors as HTTP answers: each a 4xx with what is wrong, except an unavailable database.

Error bodies echo what the client sent (pydantic's `input` and `ctx`), so they are made
JSON-safe first: JSON has no NaN or Infinity, no bytes, and no lone surrogates in UTF-8.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.limits import MAX_NESTING
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
    return JSONResponse({"detail": json_safe(body)}, status_code=code, headers=headers)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 (`{"detail": [{"type", "loc", "msg", "input", "ctx"}]}`), JSON-safe."""
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        error = dict(error)
        if error.get("type") == "finite_number":
            field = next((p for p in reversed(error.get("loc", ())) if isinstance(p, str)), "")
            error["msg"] = (
                f"{field or 'the value'} must be a finite number, got {error.get('input')}"
            )
        errors.append(json_safe(error))
    return JSONResponse({"detail": errors}, status_code=422)


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` with what JSON cannot carry rendered as text: non-finite floats, bytes, huge
    integers, lone surrogates, any other object (and nesting beyond `MAX_NESTING`)."""
    if value is None or isinstance(value, (bool, str, float, int)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, int) and value.bit_length() > 10_000:
            return f"an integer of {value.bit_length()} bits"
        return safe_text(value) if isinstance(value, str) else value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if depth >= MAX_NESTING:
        return "..."
    if isinstance(value, dict):
        return {safe_text(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v, depth + 1) for v in value]
    return safe_text(str(value))


def safe_text(text: str) -> str:
    """`text`, its lone surrogates (which UTF-8 cannot encode) escaped as `\\udXXX`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def install(app: FastAPI) -> None:
    app.add_exception_handler(TunerError, tuner_error)
    app.add_exception_handler(RequestValidationError, validation_error)
