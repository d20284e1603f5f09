"""The study page's analysis charts as the API answers them (`GET .../charts/{chart}`)."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.persistence import chart_data
from tuner.persistence import repository as repo
from tuner.persistence.chart_data import ChartData, Pick
from tuner.persistence.trial_queries import parse_query
from tuner.public.schemas import (
    ChartDataPublic,
    ChartKind,
    ChartPointPublic,
    EdfPointPublic,
    finite,
)
from tuner.study.operations import Backend

#: Charts of ranked trials (COMPLETED, with a finite objective).
RANKED: tuple[ChartKind, ...] = ("parallel", "slice", "rank", "contour")


def chart(
    backend: Backend,
    ref: str | int,
    kind: ChartKind,
    *,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
    limit: int = 500,
    pick: Pick = "spread",
) -> ChartDataPublic:
    """One chart's data, for the trials the leaderboard's `states` and `filters` select."""
    limit = max(1, min(limit, chart_data.MAX_POINTS))
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        query = parse_query(study.spec, states=states, filters=filters)
        found: ChartData
        if kind == "edf":
            found = chart_data.edf(session, study, query)
        elif kind == "timeline":
            found = chart_data.timeline(session, study, query, limit=limit)
        else:
            found = chart_data.ranked(session, study, query, limit=limit, pick=pick)
    return ChartDataPublic(
        chart=kind,
        metric=study.spec.metric_tag,
        goal=study.spec.goal.value,
        matched=found.matched,
        eligible=found.eligible,
        sampled=len(found.points),
        points=[
            ChartPointPublic(
                number=p.number,
                state=p.state,
                params=p.params,
                objective=finite(p.objective),
                rank=p.rank,
                started_at=p.started_at,
                ended_at=p.ended_at,
            )
            for p in found.points
        ],
        edf=[EdfPointPublic(value=v, share=s) for v, s in found.edf],
    )
