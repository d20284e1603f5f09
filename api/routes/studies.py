"""Studies: submit, list, inspect, stop, resume, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api.deps import (
    BackendDep,
    ReadAccess,
    RegistryDep,
    StoreDep,
    StudyPath,
    WriteAccess,
)
from api.errors import safe_text
from api.limits import too_deep, yaml_problem
from api.query_params import FiltersQuery, SortQuery, StatesQuery
from tuner.domain.errors import SpecError, StudyNotFoundError
from tuner.domain.spec import StudySpec, load_spec_text
from tuner.domain.trainers import TrainerRegistry
from tuner.persistence import repository as repo
from tuner.public.schemas import (
    ErrorResponse,
    NotePublic,
    NoteRequest,
    Page,
    ResumeRequest,
    StudyPublic,
)
from tuner.study import answers as service
from tuner.study import operations as study_ops
from tuner.study.answers import overview
from tuner.study.trials_csv import trials_csv

router = APIRouter(prefix="/studies", tags=["studies"])

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
STUDY_STATES = ("RUNNING", "COMPLETED", "FAILED", "STOPPED")
#: Every route may answer these, always with an `ErrorResponse` body.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Bad request"),
        (401, "Missing or invalid token"),
        (403, "The token's scope does not allow this"),
        (404, "No such study, trial, artifact or route"),
        (409, "Conflicts with the study's state"),
        (413, "Request body too large"),
        (422, "Invalid spec or request parameters"),
        (503, "The database is unavailable; retry after `Retry-After` seconds"),
        (500, "An unexpected error; the server log has the details"),
    )
}
_HYPERPARAMETERS = {
    "type": "object",
    "description": "AI Platform's HyperparameterSpec (docs/spec.md).",
    "required": ["goal", "hyperparameterMetricTag", "params"],
    "properties": {
        "goal": {"type": "string", "enum": ["MAXIMIZE", "MINIMIZE"]},
        "hyperparameterMetricTag": {"type": "string", "minLength": 1},
        "maxTrials": {"type": "integer", "minimum": 1},
        "maxParallelTrials": {"type": "integer", "minimum": 1},
        "maxFailedTrials": {"type": "integer", "minimum": 0},
        "params": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["parameterName", "type"],
                "properties": {
                    "parameterName": {"type": "string"},
                    "type": {
                        "type": "string",
                        "enum": ["DOUBLE", "INTEGER", "CATEGORICAL", "DISCRETE"],
                    },
                },
            },
        },
    },
}
#: What the server refuses a body without (the spec's parser says why, field by field; the
#: full list of fields is in docs/spec.md): the schema tells the same truth.
SPEC_SCHEMA = {
    "type": "object",
    "description": "A study spec: AI Platform's hyperparameter config (the `hyperparameters` "
    "block, or `trainingInput: {hyperparameters: ...}`) plus the study's name and trainer.",
    "required": ["name", "trainer"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
        "trainer": {"type": "string", "minLength": 1},
        "args": {"type": "array", "items": {"type": "string"}},
        "outputDirFlag": {"type": "string"},
        "seed": {"type": "integer"},
        "hyperparameters": _HYPERPARAMETERS,
        "trainingInput": {
            "type": "object",
            "required": ["hyperparameters"],
            "properties": {"hyperparameters": _HYPERPARAMETERS},
        },
    },
    "anyOf": [{"required": ["hyperparameters"]}, {"required": ["trainingInput"]}],
}
SPEC_BODY = {
    "requestBody": {
        "required": True,
        "description": "A study spec: AI Platform's hyperparameter config plus the trainer.",
        "content": {
            "application/json": {"schema": SPEC_SCHEMA},
            "application/yaml": {
                "schema": {"type": "string", "description": "The same spec, as YAML."}
            },
        },
    }
}


def _parse_body(
    body: bytes, content_type: str, registry: TrainerRegistry
) -> tuple[StudySpec, list[str]]:
    warnings: list[str] = []
    if not body.strip():
        raise SpecError([("", "the request body is empty: send a study spec")])
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError([("", "the request body is not UTF-8 text")]) from None
    kind = content_type.split(";")[0].strip().lower()
    if kind not in YAML_TYPES and kind != "application/json" and kind:
        raise SpecError([("", f"unsupported Content-Type {kind!r}: send JSON or YAML")])
    # The spec loader tries JSON, then YAML, whatever the Content-Type: a body that is not JSON
    # is measured as YAML first (`NestingLimit` has measured its brackets already).
    if not _is_json(text) and (problem := yaml_problem(text)):
        raise HTTPException(400, detail=problem)
    try:
        spec = load_spec_text(
            text, source="request body", warnings=warnings, trainers=registry.names()
        )
    except RecursionError:  # not expected past the scanners; still a client's error
        raise too_deep() from None
    except (ValueError, OverflowError) as exc:  # from YAML's constructors: a 5,000-digit int
        raise SpecError([("", f"not valid YAML or JSON: {exc}")]) from None
    problems = list(_unstorable(spec.to_document()))
    if problems:
        raise SpecError(problems)
    return spec, [safe_text(w) for w in warnings]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _unstorable(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """The strings of a spec document that no trainer command line or database can carry."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _unstorable(key, path)
            yield from _unstorable(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _unstorable(item, f"{path}[{index}]")
    elif isinstance(value, str):
        if "\x00" in value:
            yield path, "must not contain NUL characters"
        elif safe_text(value) != value:
            yield path, "must be valid Unicode text (it holds a lone surrogate)"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=StudyPublic,
    responses=ERRORS,
    openapi_extra=SPEC_BODY,
    dependencies=[WriteAccess],
    summary="Submit a study",
)
async def create_study(
    request: Request, response: Response, backend: BackendDep, registry: RegistryDep
) -> StudyPublic:
    """Validate the spec once, here; 422 names each bad field, 409 a duplicate name."""
    body = await request.body()
    # Parsing a YAML body takes a while: not on the event loop.
    spec, warnings = await run_in_threadpool(
        _parse_body, body, request.headers.get("content-type", ""), registry
    )

    def submit() -> StudyPublic:
        study = study_ops.submit_study(backend, spec, registry)
        return overview(backend, study, warnings)

    created = await run_in_threadpool(submit)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.id}"
    return created


@router.get("", response_model=Page[StudyPublic], dependencies=[ReadAccess], responses=ERRORS)
def list_studies(
    backend: BackendDep,
    state: Annotated[str | None, Query(pattern="^(RUNNING|COMPLETED|FAILED|STOPPED)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[StudyPublic]:
    with backend.db.session() as session:
        found, total = repo.list_studies(session, state=state, limit=limit, offset=offset)
    return Page[StudyPublic](data=[overview(backend, s) for s in found], count=total)


@router.get("/{study}", response_model=StudyPublic, dependencies=[ReadAccess], responses=ERRORS)
def get_study(study_id: StudyPath, backend: BackendDep) -> StudyPublic:
    """Spec, state, trial counts by state, best so far."""
    return service.get_study(backend, _ref(study_id))


@router.post(
    "/{study}/stop", response_model=StudyPublic, dependencies=[WriteAccess], responses=ERRORS
)
def stop_study(study_id: StudyPath, backend: BackendDep) -> StudyPublic:
    """Stop running trials cleanly (SIGTERM, then SIGKILL after the grace); state STOPPED."""
    return overview(backend, study_ops.request_stop(backend, _ref(study_id)))


@router.post(
    "/{study}/resume", response_model=StudyPublic, dependencies=[WriteAccess], responses=ERRORS
)
def resume_study(
    study_id: StudyPath,
    backend: BackendDep,
    request: Annotated[ResumeRequest | None, Body()] = None,
) -> StudyPublic:
    """Run a stopped, failed or finished study again, optionally with a larger `maxTrials`."""
    max_trials = request.max_trials if request else None
    return overview(backend, study_ops.resume_study(backend, _ref(study_id), max_trials=max_trials))


@router.post(
    "/{study}/retry", response_model=StudyPublic, dependencies=[WriteAccess], responses=ERRORS
)
def retry_failed_trials(study_id: StudyPath, backend: BackendDep) -> StudyPublic:
    """Enqueue the params of every failed trial as new trials (and extend the budget)."""
    return overview(backend, study_ops.retry_failed(backend, _ref(study_id)))


@router.put(
    "/{study}/note", response_model=NotePublic, dependencies=[WriteAccess], responses=ERRORS
)
def set_study_note(study_id: StudyPath, backend: BackendDep, request: NoteRequest) -> NotePublic:
    """Replace the study's note (markdown); an empty `note` clears it. It is `note` in the
    study's body."""
    return service.set_study_note(backend, _ref(study_id), request.note)


@router.get(
    "/{study}/trials.csv",
    response_class=StreamingResponse,
    dependencies=[ReadAccess],
    tags=["trials"],
    responses={**ERRORS, 200: {"content": {"text/csv": {}}}},
)
def download_trials_csv(
    study_id: StudyPath,
    backend: BackendDep,
    sort: SortQuery = None,
    state: StatesQuery = None,
    filters: FiltersQuery = None,
) -> StreamingResponse:
    """Every trial the same query of `GET .../trials` lists, in its order, as CSV: number,
    state, reason, times, steps, one column per parameter (`param:<name>`), the objective(s)
    and each metric at the trial's best step (`metric:<tag>`); streamed a page at a time."""
    table = trials_csv(
        backend, _ref(study_id), sort=sort, states=state or (), filters=filters or ()
    )
    return StreamingResponse(
        table.chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{table.filename}"'},
    )


@router.delete(
    "/{study}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[WriteAccess],
    responses=ERRORS,
)
def delete_study(
    study_id: StudyPath,
    backend: BackendDep,
    store: StoreDep,
    delete_artifacts: Annotated[bool, Query(alias="deleteArtifacts")] = False,
) -> Response:
    """Delete the study's records; its artifacts only with `deleteArtifacts=true`.

    Refused (409) while any of its trials runs.
    """
    service.delete_study(backend, store, _ref(study_id), delete_artifacts=delete_artifacts)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _ref(study_id: str) -> str | int:
    """A study's id (digits only: study names never are) or its name."""
    if "\x00" in study_id or safe_text(study_id) != study_id:
        # PostgreSQL refuses NUL in a query parameter; no study name holds one (or a surrogate)
        raise StudyNotFoundError(f"study {safe_text(study_id)!r} not found")
    if study_id.isascii() and study_id.isdigit():
        if not 0 < int(study_id) < 2**31:
            raise StudyNotFoundError(f"study id {study_id} not found")
        return int(study_id)
    return study_id
