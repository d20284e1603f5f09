"""Trial runs: reserve a slot, attach the asked trial, record its pid, problems and end."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuner.domain.budget import no_progress, no_room
from tuner.domain.entities import (
    Lease,
    StopByHand,
    TrialRun,
)
from tuner.domain.errors import (
    LeaseLostError,
    TrialNotFoundError,
    TrialStateError,
    TrialTakenError,
)
from tuner.persistence.budget import spent
from tuner.persistence.journal import journal, journal_end
from tuner.persistence.leases import held_by
from tuner.persistence.models import (
    StudyRow,
    TrialRunRow,
)
from tuner.persistence.rows import ACTIVE_STATE, COUNTED_STATES, aware, now, parsed_spec, to_run
from tuner.persistence.sort_values import refresh_metric_values, write_param_values
from tuner.persistence.studies import get_study, trial_counts


def reserve_run(session: Session, study_id: int, *, worker: str) -> int | None:
    """Reserve a trial slot if the study's budget and parallelism allow; return the run id.

    The study row is written first: on PostgreSQL that takes its row lock, on SQLite the
    database write lock, so concurrent managers reserve one at a time.
    """
    reserved = reserve_run_with_ordinal(session, study_id, worker=worker)
    return None if reserved is None else reserved[0]


def reserve_run_with_ordinal(
    session: Session, study_id: int, *, worker: str
) -> tuple[int, int] | None:
    """`reserve_run`, and the run's ordinal: how many runs of the study were reserved before
    it, counted under the study's lock. Unique per claim across managers, and the trial count on
    a single manager, so it seeds proposals reproducibly and never twice the same."""
    locked = session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id, StudyRow.state == "RUNNING")
        .values(updated_at=now())
        .returning(StudyRow.spec_json, StudyRow.name)
    ).one_or_none()
    if locked is None:
        return None
    spec = parsed_spec(locked.spec_json, locked.name)
    counts = trial_counts(session, study_id)
    running = counts.get(ACTIVE_STATE, 0)
    counted = sum(counts.get(s, 0) for s in COUNTED_STATES)
    if running >= spec.hyperparameters.max_parallel_trials:
        return None
    if counted + running >= spec.max_trials:
        return None
    if spec.budget is not None and _budget_refuses(session, study_id):
        return None
    stamp = now()
    row = TrialRunRow(
        study_id=study_id,
        state=ACTIVE_STATE,
        params_json="{}",
        problems_json="[]",
        worker=worker,
        started_at=stamp,
        heartbeat_at=stamp,
    )
    session.add(row)
    session.flush()
    # Every earlier run of the study has a smaller id (ids only grow; the study row is held).
    return row.id, sum(counts.values())


def _budget_refuses(session: Session, study_id: int) -> bool:
    """Whether the study's compute budget (or a no-progress rule) leaves no room for one more
    trial: checked here, under the study's lock, so that managers racing for the last room
    cannot both take it."""
    study = get_study(session, study_id)
    assert study.spec.budget is not None
    used = spent(session, study)
    budget = study.spec.budget
    several = study.spec.multi_objective
    return bool(no_room(budget, used) or no_progress(budget, used, several=several))


def attach_trial(
    session: Session,
    run_id: int,
    *,
    number: int,
    optuna_trial_id: int,
    params: dict[str, Any],
    output_dir: str,
    log_path: str,
) -> None:
    """Attach the asked trial to a reserved run (before its process starts)."""
    values: dict[str, Any] = {
        "number": number,
        "optuna_trial_id": optuna_trial_id,
        "params_json": json.dumps(params),
        "output_dir": output_dir,
        "log_path": log_path,
    }
    try:
        study_id, state, started_at = session.execute(
            update(TrialRunRow)
            .where(TrialRunRow.id == run_id)
            .values(**values)
            .returning(TrialRunRow.study_id, TrialRunRow.state, TrialRunRow.started_at)
        ).one()
    except IntegrityError:
        raise TrialTakenError(f"trial {number} is attached to another run") from None
    spec_json, name = session.execute(
        select(StudyRow.spec_json, StudyRow.name).where(StudyRow.id == study_id)
    ).one()
    write_param_values(
        session,
        run_id=run_id,
        study_id=study_id,
        number=number,
        spec=parsed_spec(spec_json, name),
        params=params,
    )
    data = {
        "number": number,
        "state": state,
        "params": params,
        "startedAt": aware(started_at).isoformat(),
    }
    journal(session, study_id, [("created", number, data)])


def drop_reservation(session: Session, run_id: int) -> None:
    session.execute(delete(TrialRunRow).where(TrialRunRow.id == run_id))


def set_pid(session: Session, run_id: int, pid: int) -> None:
    """The trainer's process, just started (a cold retry's keeps the first start time)."""
    session.execute(
        update(TrialRunRow)
        .where(TrialRunRow.id == run_id)
        .values(pid=pid, trainer_started_at=func.coalesce(TrialRunRow.trainer_started_at, now()))
    )


def add_problems(session: Session, run_id: int, problems: Sequence[str]) -> None:
    if not problems:
        return
    row = session.get_one(TrialRunRow, run_id)
    row.problems_json = json.dumps([*json.loads(row.problems_json or "[]"), *problems])


def get_run(session: Session, run_id: int) -> TrialRun:
    return to_run(session.get_one(TrialRunRow, run_id))


def get_run_by_number(session: Session, study_id: int, number: int) -> TrialRun:
    row = session.scalar(
        select(TrialRunRow).where(TrialRunRow.study_id == study_id, TrialRunRow.number == number)
    )
    if row is None:
        name = session.scalar(select(StudyRow.name).where(StudyRow.id == study_id))
        raise TrialNotFoundError(f"study {name!r} has no trial {number}")
    return to_run(row)


def runs(session: Session, study_id: int, *, state: str | None = None) -> list[TrialRun]:
    query = select(TrialRunRow).where(TrialRunRow.study_id == study_id)
    if state:
        query = query.where(TrialRunRow.state == state)
    return [to_run(r) for r in session.scalars(query.order_by(TrialRunRow.id)).all()]


def active_runs(session: Session) -> list[TrialRun]:
    rows = session.scalars(select(TrialRunRow).where(TrialRunRow.state == ACTIVE_STATE)).all()
    return [to_run(r) for r in rows]


def finish_run(
    session: Session,
    run_id: int,
    *,
    state: str,
    exit_code: int | None = None,
    reason: str | None = None,
    lease: Lease | None = None,
    trainer_ended_at: datetime | None = None,
) -> None:
    """Record a run's end (conditional on `lease` when given: `LeaseLostError` otherwise).

    A FAILED or STOPPED run has no objective and never ranks (its eval steps, and the best
    step's checkpoint, stay for inspection).
    """
    values: dict[str, Any] = {
        "state": state,
        "exit_code": exit_code,
        "failure_reason": reason,
        "ended_at": now(),
    }
    if trainer_ended_at is not None:
        values["trainer_ended_at"] = trainer_ended_at
    if state in ("FAILED", "STOPPED"):
        values.update(objective_step_id=None, objective_rank=None)
    where = held_by(lease) if lease is not None else TrialRunRow.id == run_id
    ended = session.execute(
        update(TrialRunRow)
        .where(where)
        .values(**values)
        .returning(TrialRunRow.study_id, TrialRunRow.number)
    ).one_or_none()
    if ended is None:
        if lease is not None:
            raise LeaseLostError(run_id)
        return
    study_id, number = ended
    refresh_metric_values(session, run_id)  # tags of its best step read after the last eval
    journal_end(session, study_id, number, state, reason, exit_code, values["ended_at"])


def attached_trial_ids(session: Session, optuna_trial_ids: Sequence[int]) -> set[int]:
    """Those of the Optuna trial ids that a run (any state) is attached to."""
    if not optuna_trial_ids:
        return set()
    found = session.scalars(
        select(TrialRunRow.optuna_trial_id).where(
            TrialRunRow.optuna_trial_id.in_(list(optuna_trial_ids))
        )
    )
    return {i for i in found if i is not None}


def request_stop_by_hand(session: Session, study_id: int, number: int, *, by: str) -> TrialRun:
    """Ask whoever supervises the study's running trial `number` to stop it (it ends PRUNED);
    the first request stands, a repeated one changes nothing. `TrialNotFoundError` for an
    unknown trial, `TrialStateError` for one that is not running."""
    session.execute(
        update(TrialRunRow)
        .where(
            TrialRunRow.study_id == study_id,
            TrialRunRow.number == number,
            TrialRunRow.state == ACTIVE_STATE,
            TrialRunRow.stop_requested_at.is_(None),
        )
        .values(stop_requested_at=now(), stop_requested_by=by[:255])
    )
    run = get_run_by_number(session, study_id, number)
    if run.state != ACTIVE_STATE:
        name = session.scalar(select(StudyRow.name).where(StudyRow.id == study_id))
        how = f": {run.failure_reason.splitlines()[0]}" if run.failure_reason else ""
        raise TrialStateError(
            f"study {name!r} trial {number} is not running: it ended {run.state}{how}"
        )
    return run


def stops_by_hand(session: Session, run_ids: Sequence[int]) -> dict[int, StopByHand]:
    """The stops asked for by hand of those runs that are still running."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(TrialRunRow.id, TrialRunRow.stop_requested_at, TrialRunRow.stop_requested_by).where(
            TrialRunRow.id.in_(list(run_ids)),
            TrialRunRow.state == ACTIVE_STATE,
            TrialRunRow.stop_requested_at.is_not(None),
        )
    ).all()
    return {run_id: StopByHand(aware(at), by or "") for run_id, at, by in rows if at is not None}
