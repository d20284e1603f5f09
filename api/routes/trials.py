"""Trials: the leaderboard, one trial in full, its log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import ReadAccess, SessionDep, SettingsDep, StoreDep, TrialNumber
from api.routes.studies import ERRORS, _ref
from api.schemas import Page, TrialDetailPublic, TrialRowPublic
from tuner.errors import ArtifactNotFoundError
from tuner.execution import tail_lines
from tuner.persistence import repository as repo

router = APIRouter(prefix="/studies/{study_id}/trials", tags=["trials"], responses=ERRORS)


@router.get("", response_model=Page[TrialRowPublic], dependencies=[ReadAccess])
def leaderboard(
    study_id: str,
    session: SessionDep,
    state: Annotated[
        str | None, Query(pattern="^(RUNNING|COMPLETED|PRUNED|FAILED|STOPPED)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[TrialRowPublic]:
    """Trials sorted by objective in the goal's direction (trials without one last)."""
    study = repo.get_study(session, _ref(study_id))
    rows, total = repo.leaderboard(session, study, state=state, limit=limit, offset=offset)
    return Page[TrialRowPublic](data=[TrialRowPublic.build(r) for r in rows], count=total)


@router.get("/{number}", response_model=TrialDetailPublic, dependencies=[ReadAccess])
def get_trial(
    study_id: str,
    number: TrialNumber,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> TrialDetailPublic:
    """Params, state, failure reason, every eval metric per step, checkpoints, exports, log tail."""
    study = repo.get_study(session, _ref(study_id))
    detail = repo.trial_detail(session, study, number)
    tail: list[str] = []
    if detail.run.log_path:
        tail = tail_lines(store.resolve(detail.run.log_path), settings.log_tail_lines)
    return TrialDetailPublic.from_detail(detail, tail)


@router.get(
    "/{number}/log",
    response_class=StreamingResponse,
    dependencies=[ReadAccess],
    responses={200: {"content": {"text/plain": {}}}},
)
def get_log(
    study_id: str, number: TrialNumber, session: SessionDep, store: StoreDep
) -> StreamingResponse:
    """The trial's whole log (stdout and stderr), streamed."""
    study = repo.get_study(session, _ref(study_id))
    run = repo.get_run_by_number(session, study.id, number)
    if not run.log_path:
        raise ArtifactNotFoundError(f"trial {number} has no log yet")
    path = store.resolve(run.log_path)
    if not path.is_file():
        raise ArtifactNotFoundError(f"trial {number}: its log file is gone")

    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(64 * 1024):
                yield chunk

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")
