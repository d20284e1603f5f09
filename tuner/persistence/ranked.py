"""Each COMPLETED trial's objectives and safety metrics at its ranking step, for the Pareto
front and the no-progress rule; and the few trials the front can be taken from.

`ranked_trials` reads every ranked trial in full (one query for the study). `front_candidates`
reads what the front needs and no more: with one objective and no safety metric, the best
trial(s) straight from the (study_id, objective_rank, number) index, whatever the study's size;
otherwise each trial's values at its ranking step as narrow rows, the front computed on them
(one vectorized pass per member), and only its members read in full.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from tuner.domain.entities import RankedTrial, Study
from tuner.domain.pareto import to_minimize
from tuner.domain.spec import StudySpec
from tuner.persistence.models import EvalMetricRow, EvalStepRow, TrialRunRow

_INF = math.inf
#: Ids per `IN (...)` list (SQLite allows 32,766 parameters a statement).
_IDS_PER_QUERY = 1000


def ranked_trials(session: Session, study: Study) -> list[RankedTrial]:
    """The study's COMPLETED trials that have a finite value for every objective and safety
    metric at their ranking step, in trial-number order."""
    spec = study.spec
    tags = spec.ranked_metrics
    rows = session.execute(
        select(
            TrialRunRow.id,
            TrialRunRow.number,
            TrialRunRow.params_json,
            EvalStepRow.step,
            EvalMetricRow.tag,
            EvalMetricRow.value,
        )
        .join(EvalStepRow, EvalStepRow.id == TrialRunRow.objective_step_id)
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == EvalStepRow.id)
        .where(
            TrialRunRow.study_id == study.id,
            TrialRunRow.state == "COMPLETED",
            TrialRunRow.number.is_not(None),
            EvalMetricRow.tag.in_(tags),
        )
        .order_by(TrialRunRow.number)
    ).all()
    by_run: dict[int, tuple[int, str, int, dict[str, float | None]]] = {}
    for run_id, number, params, step, tag, value in rows:
        entry = by_run.setdefault(run_id, (int(number or 0), params, int(step), {}))
        entry[3][tag] = value
    out: list[RankedTrial] = []
    for run_id, (number, params, step, values) in by_run.items():
        finite = {t: float(v) for t, v in values.items() if v is not None and math.isfinite(v)}
        if any(tag not in finite for tag in tags):
            continue
        out.append(_ranked_trial(spec, run_id, number, params, step, finite))
    return out


@dataclass(frozen=True)
class FrontCandidates:
    """The trials a study's Pareto front is taken from, and how many trials were ranked."""

    #: Feasible ranked trials that may be on the front (every member is), by trial number.
    trials: list[RankedTrial]
    #: COMPLETED trials with a finite value for every objective and safety metric.
    ranked: int
    #: Of those, the ones that miss a safety threshold.
    infeasible: int


def front_candidates(
    session: Session, study: Study, where: Sequence[ColumnElement[bool]] = ()
) -> FrontCandidates:
    """The front's members (and, with one objective, the trials tied with the best), with the
    counts the front reports; the same members `ranked_trials` gives the front, read without
    loading every trial.

    `where` narrows the trials the front is taken from (the leaderboard's state and filter as
    `trial_queries.matching` writes them): added to each query, so only the kept trials are read.

    One objective and no safety metric: the trial's `objective_rank` is its objective in the
    goal's direction (null without a finite one), so the front is the COMPLETED trials of the
    smallest finite rank, read from the index, and the count is one index pass.
    """
    spec = study.spec
    if not spec.multi_objective and not spec.constraints:
        return _best_ranked(session, study, where)
    ranked = _complete(spec, _ranking_values(session, study, where=where))
    feasible = [
        run_id
        for run_id, values in ranked.items()
        if all(c.violation(values[c.metric_id]) <= 0 for c in spec.constraints)
    ]
    metrics = [o.metric for o in spec.objectives]
    points = to_minimize(
        [[ranked[run_id][m] for m in metrics] for run_id in feasible],
        [o.goal for o in spec.objectives],
    )
    members = [run_id for run_id, keep in zip(feasible, _front_mask(points), strict=True) if keep]
    trials = _read_trials(session, spec, {run_id: ranked[run_id] for run_id in members})
    return FrontCandidates(
        trials=trials, ranked=len(ranked), infeasible=len(ranked) - len(feasible)
    )


def _ranked_runs(study: Study) -> list[ColumnElement[bool]]:
    """COMPLETED trials with a finite objective rank (one objective, no safety metric)."""
    rank = TrialRunRow.objective_rank
    return [
        TrialRunRow.study_id == study.id,
        TrialRunRow.state == "COMPLETED",
        TrialRunRow.number.is_not(None),
        rank > -_INF,
        rank < _INF,
    ]


def _best_ranked(
    session: Session, study: Study, kept: Sequence[ColumnElement[bool]]
) -> FrontCandidates:
    where = [*_ranked_runs(study), *kept]
    rank = TrialRunRow.objective_rank
    best = session.scalar(select(rank).where(*where).order_by(rank).limit(1))
    ranked = int(session.scalar(select(func.count()).select_from(TrialRunRow).where(*where)) or 0)
    if best is None:
        return FrontCandidates(trials=[], ranked=ranked, infeasible=0)
    tied = session.scalars(
        select(TrialRunRow.id).where(*where, rank == best).order_by(TrialRunRow.number)
    ).all()
    spec = study.spec
    trials = _read_trials(
        session, spec, _complete(spec, _ranking_values(session, study, run_ids=list(tied)))
    )
    return FrontCandidates(trials=trials, ranked=ranked, infeasible=0)


def _ranking_values(
    session: Session,
    study: Study,
    *,
    run_ids: Sequence[int] | None = None,
    where: Sequence[ColumnElement[bool]] = (),
) -> dict[int, dict[str, float | None]]:
    """Each COMPLETED trial's ranked metrics at its ranking step, by run id, in number order:
    narrow rows (no params, no step); of the trials `where` keeps."""
    query = (
        select(TrialRunRow.id, EvalMetricRow.tag, EvalMetricRow.value)
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == TrialRunRow.objective_step_id)
        .where(
            TrialRunRow.study_id == study.id,
            TrialRunRow.state == "COMPLETED",
            TrialRunRow.number.is_not(None),
            EvalMetricRow.tag.in_(study.spec.ranked_metrics),
            *where,
        )
        .order_by(TrialRunRow.number)
    )
    if run_ids is not None:
        query = query.where(TrialRunRow.id.in_(run_ids))
    out: dict[int, dict[str, float | None]] = {}
    for run_id, tag, value in session.execute(query):
        out.setdefault(run_id, {})[tag] = value
    return out


def _complete(
    spec: StudySpec, values: dict[int, dict[str, float | None]]
) -> dict[int, dict[str, float]]:
    """The runs with a finite value for every ranked metric, with those values, in the order
    given."""
    tags = spec.ranked_metrics
    out: dict[int, dict[str, float]] = {}
    for run_id, found in values.items():
        finite = {t: float(v) for t, v in found.items() if v is not None and math.isfinite(v)}
        if all(tag in finite for tag in tags):
            out[run_id] = finite
    return out


def _read_trials(
    session: Session, spec: StudySpec, values: dict[int, dict[str, float]]
) -> list[RankedTrial]:
    """The given runs (with finite ranked values) as ranked trials, in the order given."""
    ids = list(values)
    rows: dict[int, tuple[int, str, int]] = {}
    for begin in range(0, len(ids), _IDS_PER_QUERY):
        for run_id, number, params, step in session.execute(
            select(TrialRunRow.id, TrialRunRow.number, TrialRunRow.params_json, EvalStepRow.step)
            .join(EvalStepRow, EvalStepRow.id == TrialRunRow.objective_step_id)
            .where(TrialRunRow.id.in_(ids[begin : begin + _IDS_PER_QUERY]))
        ):
            rows[run_id] = (int(number or 0), params, int(step))
    out: list[RankedTrial] = []
    for run_id, finite in values.items():
        out.append(_ranked_trial(spec, run_id, *rows[run_id], finite))
    return out


def _ranked_trial(
    spec: StudySpec, run_id: int, number: int, params: str, step: int, finite: dict[str, float]
) -> RankedTrial:
    constraints = {c.metric_id: finite[c.metric_id] for c in spec.constraints}
    return RankedTrial(
        run_id=run_id,
        number=number,
        params=json.loads(params),
        step=step,
        objectives={o.metric: finite[o.metric] for o in spec.objectives},
        constraints=constraints,
        feasible=all(c.violation(constraints[c.metric_id]) <= 0 for c in spec.constraints),
    )


def _front_mask(points: NDArray[np.float64]) -> list[bool]:
    """The rows no other row dominates (smaller is better; equal rows all kept), with one
    vectorized pass over the rows per member: in lexicographic order the first row not yet
    dominated is a member (no earlier row dominates it, and dominance is transitive), and it
    removes every row it dominates."""
    count = len(points)
    keep = np.zeros(count, dtype=bool)
    if count == 0:
        return []
    order = np.lexsort(points.T[::-1])
    ordered = points[order]
    alive = np.ones(count, dtype=bool)
    position = 0
    while True:
        remaining = np.flatnonzero(alive[position:])
        if len(remaining) == 0:
            break
        position += int(remaining[0])
        member = ordered[position]
        alive[position] = False
        keep[order[position]] = True
        dominated = np.all(member <= ordered, axis=1) & np.any(member < ordered, axis=1)
        alive &= ~dominated
    return [bool(k) for k in keep]
