"""Trials: the sorted and filtered list, one trial in full, its log, its note, stopping it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse

from api.deps import (
    BackendDep,
    ReadAccess,
    SettingsDep,
    StoreDep,
    StudyPath,
    TrialNumber,
    WriteAccess,
    Writer,
)
from api.query_params import FiltersQuery, SortQuery, StatesQuery, TrialState
from api.routes.studies import ERRORS, _ref
from tuner.public.schemas import NotePublic, NoteRequest, Page, TrialDetailPublic, TrialRowPublic
from tuner.study import answers as service

router = APIRouter(prefix="/studies/{study}/trials", tags=["trials"], responses=ERRORS)

__all__ = ["StatesQuery", "TrialState", "router"]


@router.get("", response_model=Page[TrialRowPublic], dependencies=[ReadAccess])
def list_trials(
    study_id: StudyPath,
    backend: BackendDep,
    sort: SortQuery = None,
    state: StatesQuery = None,
    filters: FiltersQuery = None,
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


@router.put("/{number}/note", response_model=NotePublic, dependencies=[WriteAccess])
def set_trial_note(
    study_id: StudyPath, number: TrialNumber, backend: BackendDep, request: NoteRequest
) -> NotePublic:
    """Replace the trial's note (markdown), whatever its state; an empty `note` clears it. It
    is `note` in the trial's body."""
    return service.set_trial_note(backend, _ref(study_id), number, request.note)


@router.post(
    "/{number}/stop",
    response_model=TrialDetailPublic,
    status_code=status.HTTP_202_ACCEPTED,
)
def stop_trial(
    study_id: StudyPath,
    number: TrialNumber,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    writer: Writer,
) -> TrialDetailPublic:
    """Stop one running trial: whoever supervises it sends SIGTERM (SIGKILL after the grace)
    within a second, and it ends PRUNED ("stopped by hand at step N (request from <token> at
    <time>)"): told to Optuna as pruned, its best step's checkpoint and exports kept, counted
    toward the budget, not run again. 202 with the trial as it is now (`stopRequestedAt`); a
    repeated request changes nothing; 409 `TRIAL_STATE_CONFLICT` once it has ended."""
    return service.stop_trial(
        backend, store, _ref(study_id), number, by=writer, tail=settings.log_tail_lines
    )
