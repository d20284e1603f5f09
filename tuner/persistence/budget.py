"""What a study has spent, read from the run table, for `tuner.domain.budget`'s rules.

One query over the study's runs (their last global step, start and end), plus, for the
no-progress rules, the order in which finished trials improved the objective. A run's cost
counts whatever its state: a pruned, failed or stopped trial spent its compute too.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuner.domain.budget import RunCost, Spent
from tuner.domain.entities import Study
from tuner.domain.pareto import Points, dominates, to_minimize
from tuner.persistence.models import EvalStepRow, TrialRunRow
from tuner.persistence.ranked import ranked_trials
from tuner.persistence.rows import aware

FINISHED = ("COMPLETED", "PRUNED", "FAILED")


def spent(session: Session, study: Study, *, now: datetime | None = None) -> Spent:
    """The study's spend so far and its progress history."""
    now = now or datetime.now(UTC)
    last_step = (
        select(func.max(EvalStepRow.step))
        .where(EvalStepRow.run_id == TrialRunRow.id)
        .correlate(TrialRunRow)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            TrialRunRow.id,
            TrialRunRow.state,
            TrialRunRow.trainer_started_at,
            TrialRunRow.trainer_ended_at,
            TrialRunRow.ended_at,
            TrialRunRow.objective_rank,
            last_step,
        ).where(TrialRunRow.study_id == study.id, TrialRunRow.number.is_not(None))
    ).all()
    runs: list[RunCost] = []
    ended: list[tuple[datetime, int, str, float | None]] = []
    for run_id, state, started, exited, ended_at, rank, step in rows:
        seconds = _trainer_seconds(started, exited or ended_at, now)
        runs.append(RunCost(steps=int(step or 0), seconds=seconds, finished=state in FINISHED))
        if state in FINISHED and ended_at is not None:
            ended.append((aware(ended_at), run_id, state, rank))
    ended.sort()
    improved_at = _last_improvement(session, study, ended)
    created = aware(study.created_at)
    since_index = 0 if improved_at is None else improved_at[0] + 1
    since_time = created if improved_at is None else improved_at[1]
    return Spent(
        runs=runs,
        wall_seconds=max(0.0, (now - created).total_seconds()),
        finished=len(ended),
        since_progress=len(ended) - since_index,
        seconds_since_progress=max(0.0, (now - since_time).total_seconds()),
    )


def _last_improvement(
    session: Session, study: Study, ended: list[tuple[datetime, int, str, float | None]]
) -> tuple[int, datetime] | None:
    """The position (in end order) and end time of the last trial that improved the study: a
    better objective, or, with several objectives, a trial no earlier one dominated."""
    if not ended:
        return None
    last: tuple[int, datetime] | None = None
    if not study.spec.multi_objective:
        best: float | None = None
        for index, (when, _, state, rank) in enumerate(ended):
            if state == "COMPLETED" and rank is not None and (best is None or rank < best):
                best, last = rank, (index, when)
        return last
    objectives = study.spec.objectives
    feasible = [t for t in ranked_trials(session, study) if t.feasible]
    points = to_minimize(
        [[t.objectives[o.metric] for o in objectives] for t in feasible],
        [o.goal for o in objectives],
    )
    vectors = {t.run_id: point for t, point in zip(feasible, points, strict=True)}
    seen: list[Points] = []
    for index, (when, run_id, _, _) in enumerate(ended):
        vector = vectors.get(run_id)
        if vector is None:
            continue
        if not any(dominates(other, vector) for other in seen):
            last = (index, when)
        seen.append(vector)
    return last


def _trainer_seconds(started: datetime | None, ended: datetime | None, now: datetime) -> float:
    """A trial's trainer-seconds: its process from start to exit (to its recorded end when its
    exit was not seen, e.g. its manager was lost; to now while it runs); none before it
    started."""
    if started is None:
        return 0.0
    end = aware(ended) if ended is not None else now
    return max(0.0, (end - aware(started)).total_seconds())
