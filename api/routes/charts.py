"""Analysis charts of a study: bounded chart data for the trials the leaderboard selects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import BackendDep, ReadAccess, StudyPath
from api.routes.studies import ERRORS, _ref
from api.routes.trials import StatesQuery
from tuner.persistence.chart_data import MAX_POINTS, Pick
from tuner.public.schemas import ChartDataPublic, ChartKind
from tuner.study import charts

router = APIRouter(prefix="/studies/{study}/charts", tags=["metrics"], responses=ERRORS)


@router.get("/{chart}", response_model=ChartDataPublic, dependencies=[ReadAccess])
def get_chart(
    study_id: StudyPath,
    chart: Annotated[
        ChartKind,
        Path(
            description="parallel, slice, rank or contour (COMPLETED trials with an objective, "
            "best first), edf (quantiles of their objectives) or timeline (every trial by "
            "number)."
        ),
    ],
    backend: BackendDep,
    state: StatesQuery = None,
    filters: Annotated[
        list[str] | None,
        Query(
            alias="filter",
            description="As the trial list takes it (e.g. param:optimizer=adam); repeat for "
            "several (AND).",
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_POINTS, description="Trials in `points` at most."),
    ] = 500,
    pick: Annotated[
        Pick,
        Query(
            description="Ranked charts: `best` (the best `limit`) or `spread` (the best tenth "
            "of `limit`, the rest evenly over the ranking down to the worst)."
        ),
    ] = "spread",
) -> ChartDataPublic:
    """What one chart draws: at most `limit` trials (2,000) whatever the study's size, sampled
    deterministically with the best ones always in; `matched`, `eligible` and `sampled` say how
    many trials the filters select, the chart can draw, and it got."""
    return charts.chart(
        backend,
        _ref(study_id),
        chart,
        states=state or (),
        filters=filters or (),
        limit=limit,
        pick=pick,
    )
