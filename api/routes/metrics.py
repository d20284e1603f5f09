"""Metrics across trials: one tag's history, step by step, for learning-curve plots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import Field

from api.deps import BackendDep, ReadAccess, StudyPath
from api.routes.studies import ERRORS, _ref
from api.routes.trials import StatesQuery
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries
from tuner.public.schemas import MetricHistoryPublic, Page

router = APIRouter(prefix="/studies/{study}/metrics", tags=["metrics"], responses=ERRORS)

#: Trial numbers in one `trials=` list (each is a bound parameter of one IN clause).
MAX_TRIAL_NUMBERS = 1000


@router.get(
    "/{tag:path}/history", response_model=Page[MetricHistoryPublic], dependencies=[ReadAccess]
)
def get_metric_history(
    study_id: StudyPath,
    tag: Annotated[
        str,
        Path(
            min_length=1,
            max_length=255,
            description="The metric's tag; it may hold '/' (e.g. metrics/accuracy).",
        ),
    ],
    backend: BackendDep,
    trials: Annotated[
        list[Annotated[int, Field(ge=0, le=2**31 - 1)]] | None,
        Query(
            max_length=MAX_TRIAL_NUMBERS,
            description="Only these trial numbers; repeat for several.",
        ),
    ] = None,
    state: StatesQuery = None,
    eval_name: Annotated[
        str | None,
        Query(
            alias="evalName",
            min_length=1,
            max_length=255,
            description="The eval dir to read (default: each trial's objective eval dir).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Trials per page.")] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    max_points: Annotated[
        int,
        Query(
            alias="maxPoints",
            ge=2,
            le=10_000,
            description="Points per trial at most; a longer history is thinned evenly (its "
            f"first and last kept), and a page holds {trial_queries.MAX_HISTORY_POINTS:,} "
            "points at most in all.",
        ),
    ] = 1000,
) -> Page[MetricHistoryPublic]:
    """One metric of many trials, by trial number. Pages (`limit`, `offset`, `count`) are of
    the trials `trials` and `state` select; a page lists those that wrote the tag, so a tag no
    trial wrote yet is an empty list, not an error."""
    with backend.db.session() as session:
        study = repo.get_study(session, _ref(study_id))
        histories, total = trial_queries.metric_history(
            session,
            study,
            tag,
            eval_name=eval_name,
            numbers=trials,
            states=state or (),
            limit=limit,
            offset=offset,
            max_points=max_points,
        )
    return Page[MetricHistoryPublic](
        data=[MetricHistoryPublic.build(h) for h in histories], count=total
    )
