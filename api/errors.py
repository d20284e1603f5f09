"""Every error the API answers, in one shape: `{"error": {"code", "message", "details"}}`.

Tuner errors, FastAPI's request validation, Starlette's HTTP errors (404 of an unknown route,
405, 401/403 from the access checks), body limits (413) and unexpected failures (500) all
answer with an `ErrorResponse`, so a client has one thing to parse. Error bodies may echo what
the client sent, so they are made JSON-safe first: JSON has no NaN or Infinity, no bytes, and no
lone surrogates in UTF-8.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.limits import MAX_NESTING
from tuner.domain.errors import (
    ArtifactNotFoundError,
    DuplicateStudyError,
    ObjectStoreError,
    QueryError,
    RangeNotSatisfiableError,
    SeveralObjectivesError,
    SpecError,
    StorageUnavailableError,
    StudyNotFoundError,
    StudyStateError,
    TrainerNotFoundError,
    TrialNotFoundError,
    TrialStateError,
    TunerError,
    UnsafePathError,
)
from tuner.public.schemas import ErrorCode

logger = logging.getLogger(__name__)

#: Tuner errors by class, most specific first: (HTTP status, code).
TUNER_ERRORS: list[tuple[type[TunerError], int, ErrorCode]] = [
    (SpecError, 422, "SPEC_INVALID"),
    (TrainerNotFoundError, 422, "SPEC_INVALID"),
    (QueryError, 422, "REQUEST_INVALID"),
    (DuplicateStudyError, 409, "STUDY_EXISTS"),
    (StudyStateError, 409, "STUDY_STATE_CONFLICT"),
    (TrialStateError, 409, "TRIAL_STATE_CONFLICT"),
    (SeveralObjectivesError, 409, "SEVERAL_OBJECTIVES"),
    (StudyNotFoundError, 404, "STUDY_NOT_FOUND"),
    (TrialNotFoundError, 404, "TRIAL_NOT_FOUND"),
    (ArtifactNotFoundError, 404, "ARTIFACT_NOT_FOUND"),
    (UnsafePathError, 404, "ARTIFACT_NOT_FOUND"),
    (RangeNotSatisfiableError, 416, "RANGE_NOT_SATISFIABLE"),
    (StorageUnavailableError, 503, "UNAVAILABLE"),
    (ObjectStoreError, 503, "UNAVAILABLE"),
]

#: Codes of errors raised as HTTP statuses (by Starlette, the access checks, the body limits).
STATUS_CODES: dict[int, ErrorCode] = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "BODY_TOO_LARGE",
    416: "RANGE_NOT_SATISFIABLE",
    422: "REQUEST_INVALID",
    503: "UNAVAILABLE",
}


def error_body(
    code: str, message: str, details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The one error shape, JSON-safe."""
    body = {"error": {"code": code, "message": message, "details": list(details)}}
    safe: dict[str, Any] = json_safe(body)
    return safe


def error_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(code, message, details), status_code=status, headers=dict(headers or {})
    )


def tuner_status(exc: TunerError) -> tuple[int, ErrorCode]:
    for kind, status, code in TUNER_ERRORS:
        if isinstance(exc, kind):
            return status, code
    return 400, "BAD_REQUEST"


def tuner_details(exc: TunerError) -> list[dict[str, str]]:
    if isinstance(exc, SpecError | QueryError):
        return [{"field": path, "message": reason} for path, reason in exc.problems]
    if isinstance(exc, TrainerNotFoundError):
        return [{"field": "trainer", "message": str(exc).removeprefix("trainer: ")}]
    return []


def tuner_message(exc: TunerError) -> str:
    if isinstance(exc, SpecError):
        count = len(exc.problems)
        return "invalid study spec: " + (
            exc.problems[0][1] if count == 1 and not exc.problems[0][0] else f"{count} problem(s)"
        )
    if isinstance(exc, QueryError):
        return "invalid request: " + "; ".join(f"{p}: {r}" for p, r in exc.problems)
    return str(exc)


async def tuner_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TunerError)
    status, code = tuner_status(exc)
    headers = {"Retry-After": "5"} if status == 503 else None
    return error_response(status, code, tuner_message(exc), tuner_details(exc), headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = STATUS_CODES.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = exc.headers
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route: see /docs for the API's routes"
    elif exc.status_code == 405:
        allow = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        message = f"method not allowed on this route (it allows {allow})"
        headers = {**(headers or {}), "Allow": allow}
    return error_response(exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path, and OPTIONS (Starlette's own
    `Allow` names only the first route that matched the path): each method is tried against
    the app's routes, as the router itself would match it."""
    allowed = ["OPTIONS"]
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return sorted(allowed)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation (path, query, body parameters) as `REQUEST_INVALID`."""
    assert isinstance(exc, RequestValidationError)
    details = [_validation_detail(dict(error)) for error in exc.errors()]
    fields = ", ".join(d["field"] for d in details if d["field"]) or "the request"
    return error_response(422, "REQUEST_INVALID", f"invalid request: {fields}", details)


def _validation_detail(error: dict[str, Any]) -> dict[str, str]:
    loc = list(error.get("loc", ()))
    location = str(loc.pop(0)) if loc and loc[0] in ("path", "query", "header", "body") else ""
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else ("." if field else "") + str(part)
    if error.get("type") == "finite_number":
        message = f"{field or 'the value'} must be a finite number, got {error.get('input')}"
    else:
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in error and error.get("type") != "missing":
            message += f" (got {_short(error['input'])})"
    detail = {"field": field, "message": message}
    if location:
        detail["location"] = location
    return detail


def _short(value: Any) -> str:
    text = repr(json_safe(value))
    return text if len(text) <= 80 else text[:77] + "..."


async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.error("unexpected error answering a request", exc_info=exc)
    return error_response(
        500, "INTERNAL", f"internal error ({type(exc).__name__}); the server log has the details"
    )


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
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
