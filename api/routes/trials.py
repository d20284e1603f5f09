"""Trials: the sorted and filtered list, one trial in full, its log."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import (
    BackendDep,
    ReadAccess,
    SettingsDep,
    StoreDep,
    StudyPath,
    TrialNumber,
)
from api.routes.studies import ERRORS, _ref
from tuner.public.schemas import Page, TrialDetailPublic, TrialRowPublic
from tuner.study import answers as service

router = APIRouter(prefix="/studies/{study}/trials", tags=["trials"], responses=ERRORS)


#: A trial state, as the `state` query parameter takes it (repeatable).
TrialState = Literal["RUNNING", "COMPLETED", "PRUNED", "FAILED", "STOPPED"]
StatesQuery = Annotated[
    list[TrialState] | None,
    Query(description="Only trials in these states; repeat for several (OR)."),
]


@router.get("", response_model=Page[TrialRowPublic], dependencies=[ReadAccess])
def list_trials(
    study_id: StudyPath,
    backend: BackendDep,
    sort: Annotated[
        str | None,
        Query(
            max_length=300,
            description="One key, '-' first for descending: objective (the default: best "
            "first), number, startedAt, endedAt, duration, state, bestStep, lastStep, "
            "metric:<tag> (its value at the trial's best step), param:<name>. Ties go by trial "
            "number; trials without the value come last in either direction.",
        ),
    ] = None,
    state: StatesQuery = None,
    filters: Annotated[
        list[str] | None,
        Query(
            alias="filter",
            description="<subject><op><value>, subject metric:<tag>, param:<name> or "
            "objective, op one of <, <=, >, >=, =, != (e.g. metric:rmse<0.5, "
            "param:optimizer=adam); repeat for several (AND). A trial without the value "
            "passes none.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[TrialRowPublic]:
    """Trials sorted and filtered on the server; `count` is the filtered total."""
    return service.list_trials(
        backend,
        _ref(study_id),
        sort=sort,
        states=state or (),
        filters=filters or (),
        limit=limit,
        offset=offset,
    )


@router.get("/{number}", response_model=TrialDetailPublic, dependencies=[ReadAccess])
def get_trial(
    study_id: StudyPath,
    number: TrialNumber,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
) -> TrialDetailPublic:
    """Params, state, failure reason, every eval metric per step, checkpoints, exports, log tail."""
    return service.get_trial(backend, store, _ref(study_id), number, tail=settings.log_tail_lines)


@router.get(
    "/{number}/log",
    response_class=StreamingResponse,
    dependencies=[ReadAccess],
    responses={200: {"content": {"text/plain": {}}}},
)
def get_trial_log(
    study_id: StudyPath,
    number: TrialNumber,
    backend: BackendDep,
    store: StoreDep,
    offset: Annotated[
        int,
        Query(
            ge=0,
            le=2**62,
            description="Start at this byte (what a follower has read so far); `X-Log-Size` "
            "says how long the log was when it was read.",
        ),
    ] = 0,
) -> StreamingResponse:
    """The trial's log (stdout and stderr) from `offset` on, streamed."""
    log = service.log_file(backend, store, _ref(study_id), number)
    return StreamingResponse(
        log.chunks(offset),
        media_type="text/plain; charset=utf-8",
        headers={"X-Log-Size": str(log.size)},
    )
