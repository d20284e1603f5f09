"""What the study page's analysis charts draw, read in bounded amounts whatever the study's size.

The charts follow the leaderboard: the same states and filters select the trials
(`trial_queries.matching`). A chart never gets more than `MAX_POINTS` trials: the matched
trials are ordered as narrow rows (id and rank, or id and number, from the study's indexes) and
a deterministic sample of them is read in full, the best ones always in it. The empirical
distribution is aggregated instead: at most `EDF_POINTS` quantiles of every matched objective.

- ranked charts (parallel coordinates, slice, rank, contour): COMPLETED trials with a finite
  objective, ordered best first; each point carries its place in that order (0 = best);
- the timeline: every matched trial by number, the RUNNING ones always kept;
- the EDF: the COMPLETED trials' finite objectives, as quantile points.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session

from tuner.domain.entities import Study
from tuner.domain.spec import Goal
from tuner.persistence.models import EvalMetricRow, TrialRunRow
from tuner.persistence.trial_queries import TrialQuery, count_matching, matching

#: Trials one chart request returns at most.
MAX_POINTS = 2000
#: Quantile points of an empirical distribution at most.
EDF_POINTS = 200
#: The share of a spread sample given to the best trials (the rest spans the ranking evenly).
BEST_SHARE = 0.1
_INF = float("inf")

Pick = Literal["best", "spread"]


@dataclass(frozen=True)
class ChartPoint:
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None
    #: Place among the chart's ranked trials: 0 = best, 1 = worst (None: not ranked).
    rank: float | None
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class ChartData:
    #: Trials the states and filters select, in any state.
    matched: int
    #: Of those, the ones the chart can draw (ranked: COMPLETED with a finite objective).
    eligible: int
    points: list[ChartPoint]
    #: (objective, share of the eligible trials at or below it), by value.
    edf: list[tuple[float, float]]


def ranked(
    session: Session, study: Study, query: TrialQuery, *, limit: int, pick: Pick
) -> ChartData:
    """COMPLETED trials with a finite objective: the best `limit`, or (`spread`) the best tenth
    of `limit` and the rest evenly over the ranking down to the worst."""
    where = matching(session, study, query)
    matched = count_matching(session, where)
    order = _ranked_order(session, where)
    if pick == "best":
        chosen = list(range(min(limit, len(order))))
    else:
        chosen = spread(len(order), limit, best=max(1, int(limit * BEST_SHARE)))
    last = max(1, len(order) - 1)
    places = {order[i][0]: i / last for i in chosen}
    points = _read(session, study, list(places), places)
    points.sort(key=lambda p: p.rank if p.rank is not None else _INF)
    return ChartData(matched=matched, eligible=len(order), points=points, edf=[])


def edf(session: Session, study: Study, query: TrialQuery) -> ChartData:
    """The empirical distribution of the matched COMPLETED trials' finite objectives."""
    where = matching(session, study, query)
    matched = count_matching(session, where)
    ranks = [rank for _, rank in _ranked_order(session, where)]
    values = sorted(-r if study.spec.goal is Goal.MAXIMIZE else r for r in ranks)
    return ChartData(matched=matched, eligible=len(values), points=[], edf=quantiles(values))


def timeline(session: Session, study: Study, query: TrialQuery, *, limit: int) -> ChartData:
    """Every matched trial by number; past `limit`, the RUNNING ones and the others evenly."""
    where = matching(session, study, query)
    rows = session.execute(
        select(TrialRunRow.id, TrialRunRow.state).where(*where).order_by(TrialRunRow.number)
    ).all()
    running = [i for i, (_, state) in enumerate(rows) if state == "RUNNING"][:limit]
    others = [i for i, (_, state) in enumerate(rows) if state != "RUNNING"]
    kept = [others[i] for i in spread(len(others), limit - len(running), best=0)]
    ids = [rows[i][0] for i in sorted([*running, *kept])]
    points = _read(session, study, ids, {})
    points.sort(key=lambda p: p.number)
    return ChartData(matched=len(rows), eligible=len(rows), points=points, edf=[])


def spread(count: int, limit: int, *, best: int) -> list[int]:
    """Up to `limit` positions of `count`: the first `best`, then the rest evenly spaced to the
    last one (deterministic: the same study gives the same sample)."""
    if limit <= 0:
        return []
    if count <= limit:
        return list(range(count))
    best = min(best, limit)
    head = list(range(best))
    rest = limit - best
    if rest == 0:
        return head
    if rest == 1:
        return [*head, count - 1]
    span = count - 1 - best  # > rest - 1, so the rounded positions are distinct
    return [*head, *(best + round(i * span / (rest - 1)) for i in range(rest))]


def quantiles(values: Sequence[float]) -> list[tuple[float, float]]:
    """The EDF of sorted `values` as (value, share at or below it): every value up to
    `EDF_POINTS`, else `EDF_POINTS` evenly spaced order statistics, the first and last kept."""
    count = len(values)
    positions = spread(count, EDF_POINTS, best=0)
    out: list[tuple[float, float]] = []
    for i in positions:
        # Ties: the share of the last equal value (a step of the EDF, not a point inside it).
        point = (values[i], bisect_right(values, values[i]) / count)
        if not out or out[-1] != point:
            out.append(point)
    return out


def _ranked_order(
    session: Session, where: Sequence[ColumnElement[bool]]
) -> list[tuple[int, float]]:
    """(run id, objective rank) of the matched COMPLETED trials with a finite objective, best
    first: narrow rows from the (study, state, rank, number) index."""
    rank = TrialRunRow.objective_rank
    rows = session.execute(
        select(TrialRunRow.id, rank)
        .where(*where, TrialRunRow.state == "COMPLETED", rank > -_INF, rank < _INF)
        .order_by(rank, TrialRunRow.number)
    ).all()
    return [(int(run_id), float(value)) for run_id, value in rows if value is not None]


def _read(
    session: Session, study: Study, ids: list[int], places: dict[int, float]
) -> list[ChartPoint]:
    """The chosen trials in full (what a chart shows of them), in one query."""
    if not ids:
        return []
    objective = (
        select(EvalMetricRow.value)
        .where(
            and_(
                EvalMetricRow.eval_step_id == TrialRunRow.objective_step_id,
                EvalMetricRow.tag == study.spec.metric_tag,
            )
        )
        .correlate(TrialRunRow)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            TrialRunRow.id,
            TrialRunRow.number,
            TrialRunRow.state,
            TrialRunRow.params_json,
            objective,
            TrialRunRow.started_at,
            TrialRunRow.ended_at,
        ).where(TrialRunRow.id.in_(ids))
    ).all()
    return [
        ChartPoint(
            number=int(number),
            state=state,
            params=json.loads(params),
            objective=None if value is None or math.isnan(value) else float(value),
            rank=places.get(run_id),
            started_at=_aware(started),
            ended_at=_aware(ended) if ended else None,
        )
        for run_id, number, state, params, value, started, ended in rows
    ]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
