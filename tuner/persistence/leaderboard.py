"""The leaderboard, a trial's detail and the best completed run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    LeaderboardRow,
    Study,
    TrialDetail,
    TrialRun,
)
from tuner.persistence import trial_queries
from tuner.persistence.evals import eval_steps
from tuner.persistence.kept import checkpoints, exports
from tuner.persistence.models import (
    EvalMetricRow,
    TrialRunRow,
)
from tuner.persistence.notes import trial_note
from tuner.persistence.retention import deletion_of
from tuner.persistence.rows import to_run
from tuner.persistence.runs import get_run_by_number


def leaderboard(
    session: Session,
    study: Study,
    *,
    state: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[LeaderboardRow], int]:
    """Trials sorted by objective in the goal's direction (trials without one last).

    Ranked trials come from the (study, objective_rank, number) index in order, then the
    unranked ones by number: a page reads its own rows, whatever the study's size. Other sort
    keys and filters: `trial_queries.list_trials`.
    """
    query = trial_queries.TrialQuery(states=(state,) if state else ())
    return trial_queries.list_trials(session, study, query, limit=limit, offset=offset)


def objective_value(session: Session, run: TrialRun, tag: str) -> float | None:
    if run.objective_step_id is None:
        return None
    value = session.scalar(
        select(EvalMetricRow.value).where(
            EvalMetricRow.eval_step_id == run.objective_step_id, EvalMetricRow.tag == tag
        )
    )
    return None if value is None else float(value)


def best_completed_run(session: Session, study: Study) -> TrialRun | None:
    rank = TrialRunRow.objective_rank
    row = session.scalar(
        select(TrialRunRow)
        .where(
            TrialRunRow.study_id == study.id,
            TrialRunRow.state == "COMPLETED",
            rank.is_not(None),
        )
        .order_by(rank, TrialRunRow.number)
        .limit(1)
    )
    return to_run(row) if row else None


def trial_detail(session: Session, study: Study, number: int) -> TrialDetail:
    run = get_run_by_number(session, study.id, number)
    steps = eval_steps(session, run.id)
    best_step = next((s.step for s in steps if s.id == run.best_step_id), None)
    return TrialDetail(
        run=run,
        objective=objective_value(session, run, study.spec.metric_tag),
        steps=steps,
        checkpoints=checkpoints(session, run.id),
        exports=exports(session, run.id),
        best_step=best_step,
        deleted=deletion_of(session, run.id),
        note=trial_note(session, run.id),
    )
