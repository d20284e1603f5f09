"""Queries and updates of the tuner's tables; every function takes a session, returns entities."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    Checkpoint,
    EvalStep,
    Export,
    JournalEntry,
    LeaderboardRow,
    Lease,
    Observation,
    StoredArchive,
    Study,
    StudyEvent,
    TrialDetail,
    TrialRun,
)
from tuner.domain.errors import (
    DuplicateStudyError,
    LeaseLostError,
    StudyNotFoundError,
    TrialNotFoundError,
    TrialTakenError,
)
from tuner.domain.spec import Goal, StudySpec, parse_spec, spec_to_json
from tuner.outputs.events import CheckpointPathValue, ScalarValue
from tuner.persistence import trial_queries
from tuner.persistence.database import JOURNAL_KEY
from tuner.persistence.models import (
    ApiTokenRow,
    CheckpointRow,
    EvalMetricRow,
    EvalStepRow,
    EventFileRow,
    ExportRow,
    StudyEventRow,
    StudyRow,
    TrialRunRow,
)

#: Trial states that use up the study's budget (a STOPPED trial is run again).
COUNTED_STATES = ("COMPLETED", "PRUNED", "FAILED")
ACTIVE_STATE = "RUNNING"


def now() -> datetime:
    return datetime.now(UTC)


# -- studies -------------------------------------------------------------------------------------


def create_study(session: Session, spec: StudySpec) -> Study:
    stamp = now()
    row = StudyRow(
        name=spec.name,
        spec_json=spec_to_json(spec),
        trainer=spec.trainer,
        state="RUNNING",
        created_at=stamp,
        updated_at=stamp,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise DuplicateStudyError(f"name: a study named {spec.name!r} already exists") from None
    return _study(row)


def get_study(session: Session, ref: str | int) -> Study:
    return _study(_study_row(session, ref))


def find_study(session: Session, name: str) -> Study | None:
    row = session.scalar(select(StudyRow).where(StudyRow.name == name))
    return _study(row) if row else None


def list_studies(
    session: Session, *, state: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Study], int]:
    query = select(StudyRow)
    count = select(func.count(StudyRow.id))
    if state:
        query = query.where(StudyRow.state == state)
        count = count.where(StudyRow.state == state)
    rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)).all()
    return [_study(r) for r in rows], int(session.scalar(count) or 0)


def running_studies(session: Session, names: Sequence[str] | None = None) -> list[Study]:
    query = select(StudyRow).where(StudyRow.state == "RUNNING")
    if names is not None:
        query = query.where(StudyRow.name.in_(list(names)))
    return [_study(r) for r in session.scalars(query.order_by(StudyRow.id)).all()]


def set_study_state(session: Session, study_id: int, state: str, reason: str | None) -> None:
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(state=state, state_reason=reason, updated_at=now())
    )
    spec_json = session.scalar(select(StudyRow.spec_json).where(StudyRow.id == study_id))
    if spec_json is not None:
        budget = json.loads(spec_json).get("hyperparameters", {}).get("maxTrials")
        data = {"state": state, "reason": reason, "maxTrials": budget}
        journal(session, study_id, [("study", None, data)])


def update_study_spec(session: Session, study_id: int, spec: StudySpec) -> None:
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(spec_json=spec_to_json(spec), updated_at=now())
    )


def delete_study(session: Session, study_id: int) -> None:
    session.execute(delete(StudyRow).where(StudyRow.id == study_id))


def trial_counts(session: Session, study_id: int) -> dict[str, int]:
    rows = session.execute(
        select(TrialRunRow.state, func.count(TrialRunRow.id))
        .where(TrialRunRow.study_id == study_id)
        .group_by(TrialRunRow.state)
    ).all()
    return {state: int(n) for state, n in rows}


# -- claiming and running ------------------------------------------------------------------------


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
    spec = _parsed_spec(locked.spec_json, locked.name)
    counts = trial_counts(session, study_id)
    running = counts.get(ACTIVE_STATE, 0)
    counted = sum(counts.get(s, 0) for s in COUNTED_STATES)
    if running >= spec.hyperparameters.max_parallel_trials:
        return None
    if counted + running >= spec.max_trials:
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
    data = {
        "number": number,
        "state": state,
        "params": params,
        "startedAt": _aware(started_at).isoformat(),
    }
    journal(session, study_id, [("created", number, data)])


def drop_reservation(session: Session, run_id: int) -> None:
    session.execute(delete(TrialRunRow).where(TrialRunRow.id == run_id))


def set_pid(session: Session, run_id: int, pid: int) -> None:
    session.execute(update(TrialRunRow).where(TrialRunRow.id == run_id).values(pid=pid))


def _held(lease: Lease) -> Any:
    return and_(
        TrialRunRow.id == lease.run_id,
        TrialRunRow.worker == lease.worker,
        TrialRunRow.lease_epoch == lease.epoch,
        TrialRunRow.state == ACTIVE_STATE,
    )


def hold_lease(session: Session, lease: Lease) -> None:
    """Renew the lease, or raise `LeaseLostError`: call first in every write about a run.

    The UPDATE takes the run row's lock (PostgreSQL) or the write lock (SQLite) for the rest of
    the transaction, so a takeover cannot slip in between this check and the writes after it.
    """
    result = session.execute(update(TrialRunRow).where(_held(lease)).values(heartbeat_at=now()))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLostError(lease.run_id)


def renew_leases(session: Session, leases: Iterable[Lease]) -> set[int]:
    """Renew every lease still held; return the run ids whose lease is lost."""
    lost: set[int] = set()
    stamp = now()
    for lease in leases:
        result = session.execute(update(TrialRunRow).where(_held(lease)).values(heartbeat_at=stamp))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            lost.add(lease.run_id)
    return lost


def take_over(session: Session, run: TrialRun, *, reason: str) -> bool:
    """End a run whose manager is gone (STOPPED), if it is still exactly as judged stale.

    Conditional on the worker, the epoch and the very heartbeat that was seen to go stale: an
    owner that renewed in the meantime keeps its run. The epoch grows, fencing the old owner.
    """
    ended_at = now()
    taken = session.execute(
        update(TrialRunRow)
        .where(
            TrialRunRow.id == run.id,
            TrialRunRow.state == ACTIVE_STATE,
            TrialRunRow.worker == run.worker,
            TrialRunRow.lease_epoch == run.lease_epoch,
            TrialRunRow.heartbeat_at == run.heartbeat_at,
        )
        .values(
            state="STOPPED",
            failure_reason=reason,
            ended_at=ended_at,
            lease_epoch=TrialRunRow.lease_epoch + 1,
            objective_step_id=None,
            objective_rank=None,
        )
        .returning(TrialRunRow.study_id, TrialRunRow.number, TrialRunRow.exit_code)
    ).one_or_none()
    if taken is None:
        return False
    _journal_end(
        session, taken.study_id, taken.number, "STOPPED", reason, taken.exit_code, ended_at
    )
    return True


def finish_run(
    session: Session,
    run_id: int,
    *,
    state: str,
    exit_code: int | None = None,
    reason: str | None = None,
    lease: Lease | None = None,
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
    if state in ("FAILED", "STOPPED"):
        values.update(objective_step_id=None, objective_rank=None)
    where = _held(lease) if lease is not None else TrialRunRow.id == run_id
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
    _journal_end(session, study_id, number, state, reason, exit_code, values["ended_at"])


def _journal_end(
    session: Session,
    study_id: int,
    number: int | None,
    state: str,
    reason: str | None,
    exit_code: int | None,
    ended_at: datetime,
) -> None:
    """The `state` event of a run's end (from the values just written: no re-read)."""
    if number is None:
        return  # a reservation never attached to a trial: no client has heard of it
    data = {
        "number": number,
        "state": state,
        "reason": reason,
        "exitCode": exit_code,
        "endedAt": _aware(ended_at).isoformat(),
    }
    journal(session, study_id, [("state", number, data)])


def journal(
    session: Session, study_id: int, events: Sequence[tuple[str, int | None, dict[str, Any]]]
) -> None:
    """Append `(kind, trial number, data)` events to the study's journal.

    Call it last in a transaction: it updates the study row, which holds that row (on
    PostgreSQL) until the commit, and a transaction that locks nothing after it cannot deadlock
    on it. That hold is what makes a study's events commit in `seq` order.
    """
    if not events:
        return
    seq = session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(event_seq=StudyRow.event_seq + len(events))
        .returning(StudyRow.event_seq)
    ).scalar_one_or_none()
    if seq is None:
        return  # the study was deleted
    created = now()
    first = seq - len(events) + 1
    session.info.setdefault(JOURNAL_KEY, []).extend(
        JournalEntry(study_id, first + i, kind, number, data)
        for i, (kind, number, data) in enumerate(events)
    )
    session.execute(
        insert(StudyEventRow),
        [
            {
                "study_id": study_id,
                "seq": seq - len(events) + i + 1,
                "kind": kind,
                "number": number,
                "data_json": json.dumps(data, allow_nan=False),
                "created_at": created,
            }
            for i, (kind, number, data) in enumerate(events)
        ],
    )


def events_after(
    session: Session, study_id: int, seq: int, *, limit: int = 1000
) -> list[StudyEvent]:
    """The study's journal after `seq`, oldest first."""
    rows = session.execute(
        select(StudyEventRow.seq, StudyEventRow.kind, StudyEventRow.data_json)
        .where(StudyEventRow.study_id == study_id, StudyEventRow.seq > seq)
        .order_by(StudyEventRow.seq)
        .limit(limit)
    ).all()
    return [StudyEvent(seq=r.seq, kind=r.kind, data=json.loads(r.data_json)) for r in rows]


def event_seq(session: Session, study_id: int, *, hold: bool = False) -> int:
    """The seq of the study's newest event. With `hold`, no new event commits until this
    transaction ends (a snapshot read after it is consistent with that seq)."""
    query = select(StudyRow.event_seq).where(StudyRow.id == study_id)
    if hold and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    value = session.scalar(query)
    if value is None:
        raise StudyNotFoundError(f"study id {study_id} not found")
    return int(value)


def add_problems(session: Session, run_id: int, problems: Sequence[str]) -> None:
    if not problems:
        return
    row = session.get_one(TrialRunRow, run_id)
    row.problems_json = json.dumps([*json.loads(row.problems_json or "[]"), *problems])


def get_run(session: Session, run_id: int) -> TrialRun:
    return _run(session.get_one(TrialRunRow, run_id))


def get_run_by_number(session: Session, study_id: int, number: int) -> TrialRun:
    row = session.scalar(
        select(TrialRunRow).where(TrialRunRow.study_id == study_id, TrialRunRow.number == number)
    )
    if row is None:
        name = session.scalar(select(StudyRow.name).where(StudyRow.id == study_id))
        raise TrialNotFoundError(f"study {name!r} has no trial {number}")
    return _run(row)


def runs(session: Session, study_id: int, *, state: str | None = None) -> list[TrialRun]:
    query = select(TrialRunRow).where(TrialRunRow.study_id == study_id)
    if state:
        query = query.where(TrialRunRow.state == state)
    return [_run(r) for r in session.scalars(query.order_by(TrialRunRow.id)).all()]


def active_runs(session: Session) -> list[TrialRun]:
    rows = session.scalars(select(TrialRunRow).where(TrialRunRow.state == ACTIVE_STATE)).all()
    return [_run(r) for r in rows]


# -- eval metrics --------------------------------------------------------------------------------


def event_offsets(session: Session, run_id: int) -> dict[str, int]:
    rows = session.execute(
        select(EventFileRow.path, EventFileRow.offset).where(EventFileRow.run_id == run_id)
    ).all()
    return {path: int(offset) for path, offset in rows}


def record_eval_values(
    session: Session,
    run_id: int,
    values: Sequence[ScalarValue | CheckpointPathValue],
    offsets: dict[str, int],
    *,
    objective_tag: str,
    study_id: int | None = None,
    number: int | None = None,
) -> list[Observation]:
    """Store new eval values and file offsets together; return new objective observations.

    Storing both in one transaction means a restarted manager neither loses nor doubles values.
    `study_id` and `number` (the run's, when the caller knows them) save a read.
    """
    steps: dict[tuple[str, int], EvalStepRow] = {}
    #: Steps created here, and the values stored for them: they have no other metrics.
    fresh: dict[int, list[float | None]] = {}
    observations: list[Observation] = []

    def step_row(eval_name: str, step: int, wall_time: float) -> EvalStepRow:
        key = (eval_name, step)
        if key not in steps:
            row = session.scalar(
                select(EvalStepRow).where(
                    EvalStepRow.run_id == run_id,
                    EvalStepRow.eval_name == eval_name,
                    EvalStepRow.step == step,
                )
            )
            if row is None:
                row = EvalStepRow(
                    run_id=run_id, eval_name=eval_name, step=step, wall_time=wall_time
                )
                session.add(row)
                session.flush()
                fresh[row.id] = []
            steps[key] = row
        return steps[key]

    objective_rows: list[tuple[EvalStepRow, float, float]] = []
    told: dict[tuple[str, int], dict[str, float | None]] = {}
    for value in values:
        row = step_row(value.eval_name, value.step, value.wall_time)
        if isinstance(value, CheckpointPathValue):
            row.checkpoint_path = value.path
            continue
        stored = None if math.isnan(value.value) else value.value
        existing = None
        if row.id in fresh:
            fresh[row.id].append(stored)
        else:
            existing = session.scalar(
                select(EvalMetricRow).where(
                    EvalMetricRow.eval_step_id == row.id, EvalMetricRow.tag == value.tag
                )
            )
        if existing is None:
            session.add(
                EvalMetricRow(
                    eval_step_id=row.id, tag=value.tag, value=stored, wall_time=value.wall_time
                )
            )
        else:
            existing.value = stored
            existing.wall_time = value.wall_time
        row.wall_time = max(row.wall_time, value.wall_time)
        told.setdefault((row.eval_name, row.step), {})[value.tag] = (
            value.value if math.isfinite(value.value) else None
        )
        if value.tag == objective_tag:
            objective_rows.append((row, value.value, value.wall_time))
    session.flush()
    for row, objective, wall_time in objective_rows:
        observations.append(
            Observation(
                eval_step_id=row.id,
                eval_name=row.eval_name,
                step=row.step,
                value=objective,
                checkpoint_path=row.checkpoint_path,
                wall_time=wall_time,
                all_zero=(
                    _all_zero(fresh[row.id])
                    if row.id in fresh
                    else _all_metrics_zero(session, row.id)
                ),
            )
        )
    save_offsets(session, run_id, offsets)
    if told:
        if study_id is None or number is None:
            study_id, number = session.execute(
                select(TrialRunRow.study_id, TrialRunRow.number).where(TrialRunRow.id == run_id)
            ).one()
        events = [
            (
                "eval",
                number,
                {
                    "number": number,
                    "step": step,
                    "evalName": eval_name,
                    "wallTime": steps[(eval_name, step)].wall_time,
                    "objective": metrics.get(objective_tag),
                    "metrics": metrics,
                },
            )
            for (eval_name, step), metrics in told.items()
        ]
        journal(session, study_id, events)
    return observations


def _all_metrics_zero(session: Session, eval_step_id: int) -> bool:
    """Whether every metric of an eval step is exactly 0 (what an eval of no batch writes)."""
    values = session.scalars(
        select(EvalMetricRow.value).where(EvalMetricRow.eval_step_id == eval_step_id)
    ).all()
    return _all_zero(values)


def _all_zero(values: Sequence[float | None]) -> bool:
    return bool(values) and all(v is not None and v == 0.0 for v in values)


def save_offsets(session: Session, run_id: int, offsets: dict[str, int]) -> None:
    """Store how far each event file was read: one upsert for them all."""
    if not offsets:
        return
    insert_for = _UPSERT_INSERTS.get(session.get_bind().dialect.name)
    if insert_for is None:  # another database: read, then insert or update
        for path, offset in offsets.items():
            row = session.scalar(
                select(EventFileRow).where(EventFileRow.run_id == run_id, EventFileRow.path == path)
            )
            if row is None:
                session.add(EventFileRow(run_id=run_id, path=path, offset=offset))
            else:
                row.offset = offset
        return
    statement = insert_for(EventFileRow).values(
        [{"run_id": run_id, "path": path, "offset": offset} for path, offset in offsets.items()]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[EventFileRow.run_id, EventFileRow.path],
            set_={"offset": statement.excluded.offset},
        )
    )


_UPSERT_INSERTS: dict[str, Any] = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


def objective_rank(value: float | None, goal: Goal) -> float | None:
    """An objective as a sort key, smaller is better; None (ranked last) for none or NaN."""
    if value is None or math.isnan(value):
        return None
    return -value if goal is Goal.MAXIMIZE else value


def set_objective_steps(
    session: Session,
    run_id: int,
    *,
    best_step_id: int | None,
    objective_step_id: int | None,
    objective_rank: float | None,
) -> None:
    session.execute(
        update(TrialRunRow)
        .where(TrialRunRow.id == run_id)
        .values(
            best_step_id=best_step_id,
            objective_step_id=objective_step_id,
            objective_rank=objective_rank,
        )
    )


def tags_seen(session: Session, run_id: int, eval_name: str | None = None) -> list[str]:
    """Metric tags stored for a run (of one eval name, if given)."""
    query = (
        select(EvalMetricRow.tag)
        .join(EvalStepRow, EvalStepRow.id == EvalMetricRow.eval_step_id)
        .where(EvalStepRow.run_id == run_id)
    )
    if eval_name is not None:
        query = query.where(EvalStepRow.eval_name == eval_name)
    return sorted(session.scalars(query.distinct()).all())


def eval_steps(session: Session, run_id: int) -> list[EvalStep]:
    step_rows = session.scalars(
        select(EvalStepRow)
        .where(EvalStepRow.run_id == run_id)
        .order_by(EvalStepRow.step, EvalStepRow.eval_name)
    ).all()
    return _with_metrics(session, list(step_rows))


def _with_metrics(session: Session, step_rows: list[EvalStepRow]) -> list[EvalStep]:
    """Eval steps as entities, with every metric of each (one query for all of them)."""
    metrics: dict[int, dict[str, float]] = {r.id: {} for r in step_rows}
    if step_rows:
        for step_id, tag, value in session.execute(
            select(EvalMetricRow.eval_step_id, EvalMetricRow.tag, EvalMetricRow.value).where(
                EvalMetricRow.eval_step_id.in_(list(metrics))
            )
        ):
            metrics[step_id][tag] = math.nan if value is None else float(value)
    return [
        EvalStep(
            id=r.id,
            eval_name=r.eval_name,
            step=r.step,
            wall_time=r.wall_time,
            checkpoint_path=r.checkpoint_path,
            metrics=metrics[r.id],
        )
        for r in step_rows
    ]


# -- checkpoints and exports ---------------------------------------------------------------------


def add_checkpoint(
    session: Session, run_id: int, *, step: int, source_path: str, kept_path: str
) -> None:
    existing = session.scalar(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.step == step)
    )
    if existing is not None:
        # The step's reported `checkpoint_path` replaces an earlier guess.
        existing.source_path = source_path
        existing.kept_path = kept_path
    else:
        session.add(
            CheckpointRow(
                run_id=run_id,
                step=step,
                source_path=source_path,
                kept_path=kept_path,
                created_at=now(),
            )
        )


def remove_checkpoints_except(session: Session, run_id: int, keep_step: int) -> list[Checkpoint]:
    rows = session.scalars(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id, CheckpointRow.step != keep_step)
    ).all()
    removed = [_checkpoint(r) for r in rows]
    for row in rows:
        session.delete(row)
    return removed


def checkpoints(session: Session, run_id: int) -> list[Checkpoint]:
    rows = session.scalars(
        select(CheckpointRow).where(CheckpointRow.run_id == run_id).order_by(CheckpointRow.step)
    ).all()
    return [_checkpoint(r) for r in rows]


def known_exports(session: Session, run_id: int) -> set[tuple[str, str]]:
    rows = session.execute(
        select(ExportRow.exporter, ExportRow.version).where(ExportRow.run_id == run_id)
    ).all()
    return {(e, v) for e, v in rows}


def add_export(
    session: Session,
    run_id: int,
    *,
    exporter: str,
    version: str,
    path: str,
    wall_time: float,
    global_step: int | None,
    eval_name: str | None,
) -> None:
    """Record an export, matched to the eval step it was made from.

    With the global step read from the export's variables, that step (in the objective's eval
    dir `eval_name` when it has one) is the match, now or once it is read. Without it, the
    export goes to the last eval step written before it: estimators export right after an
    eval's summaries and before training on.
    """
    row = ExportRow(
        run_id=run_id, exporter=exporter, version=version, path=path, global_step=global_step
    )
    session.add(row)
    if global_step is None:
        row.eval_step_id = session.scalar(
            select(EvalStepRow.id)
            .where(EvalStepRow.run_id == run_id, EvalStepRow.wall_time <= wall_time)
            .order_by(EvalStepRow.wall_time.desc(), EvalStepRow.step.desc())
            .limit(1)
        )
        row.matched_by = "write_time" if row.eval_step_id is not None else None
    else:
        session.flush()
        match_exports_by_step(session, run_id, eval_name)


def match_exports_by_step(session: Session, run_id: int, eval_name: str | None) -> bool:
    """Tie exports whose global step is known to that step's eval, once it has been read.

    Returns whether any export was matched.
    """
    pending = session.scalars(
        select(ExportRow).where(
            ExportRow.run_id == run_id,
            ExportRow.global_step.is_not(None),
            ExportRow.matched_by.is_(None),
        )
    ).all()
    matched = False
    for export in pending:
        candidates = session.execute(
            select(EvalStepRow.id, EvalStepRow.eval_name).where(
                EvalStepRow.run_id == run_id, EvalStepRow.step == export.global_step
            )
        ).all()
        if not candidates:
            continue
        preferred = [i for i, name in candidates if name == eval_name]
        export.eval_step_id = (preferred or [min(i for i, _ in candidates)])[0]
        export.matched_by = "global_step"
        matched = True
    return matched


def unmatched_exports(session: Session, run_id: int) -> list[tuple[str, str, int | None]]:
    """(exporter, version, global step) of the exports tied to no eval step."""
    rows = session.execute(
        select(ExportRow.exporter, ExportRow.version, ExportRow.global_step).where(
            ExportRow.run_id == run_id, ExportRow.eval_step_id.is_(None)
        )
    ).all()
    return [(e, v, g) for e, v, g in rows]


def exports_to_keep(
    session: Session, run_id: int, best_step_id: int | None
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(exports of the best step not yet kept, kept copies of other steps), as (id, path)."""
    rows = session.execute(
        select(ExportRow.id, ExportRow.path, ExportRow.kept_path, ExportRow.eval_step_id).where(
            ExportRow.run_id == run_id
        )
    ).all()
    keep = [(i, p) for i, p, k, step in rows if step == best_step_id and k is None]
    drop = [(i, k) for i, _, k, step in rows if step != best_step_id and k is not None]
    return keep, drop


def set_export_kept(session: Session, export_id: int, kept_path: str | None) -> None:
    session.execute(update(ExportRow).where(ExportRow.id == export_id).values(kept_path=kept_path))


def exports(session: Session, run_id: int) -> list[Export]:
    rows = session.execute(
        select(ExportRow, EvalStepRow.step)
        .outerjoin(EvalStepRow, EvalStepRow.id == ExportRow.eval_step_id)
        .where(ExportRow.run_id == run_id)
        .order_by(ExportRow.version, ExportRow.exporter)
    ).all()
    return [
        Export(
            exporter=e.exporter,
            version=e.version,
            path=e.kept_path or e.path,
            step=step,
            matched_by=e.matched_by if step is not None else None,
            archive=_stored(e),
        )
        for e, step in rows
    ]


def kept_exports(session: Session, run_id: int) -> list[tuple[int, str]]:
    """(export id, kept path) of the run's kept exports (those of its best step)."""
    rows = session.execute(
        select(ExportRow.id, ExportRow.kept_path).where(
            ExportRow.run_id == run_id, ExportRow.kept_path.is_not(None)
        )
    ).all()
    return [(row.id, row.kept_path) for row in rows]


def set_checkpoint_archive(
    session: Session, run_id: int, step: int, archive: StoredArchive
) -> None:
    session.execute(
        update(CheckpointRow)
        .where(CheckpointRow.run_id == run_id, CheckpointRow.step == step)
        .values(archive_path=archive.path, archive_sha256=archive.sha256, archive_size=archive.size)
    )


def set_export_archive(session: Session, export_id: int, archive: StoredArchive) -> None:
    session.execute(
        update(ExportRow)
        .where(ExportRow.id == export_id)
        .values(archive_path=archive.path, archive_sha256=archive.sha256, archive_size=archive.size)
    )


def _stored(row: CheckpointRow | ExportRow) -> StoredArchive | None:
    if row.archive_path is None or row.archive_sha256 is None or row.archive_size is None:
        return None
    return StoredArchive(row.archive_path, row.archive_sha256, row.archive_size)


# -- leaderboard ---------------------------------------------------------------------------------


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
    return _run(row) if row else None


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
    )


# -- conversions ---------------------------------------------------------------------------------


def _study_row(session: Session, ref: str | int) -> StudyRow:
    """The study `ref` names: an int (or a string of digits) is an id, anything else a name.

    Names are never all digits (the spec refuses them), so the two cannot be confused.
    """
    if isinstance(ref, int) or (ref.isascii() and ref.isdigit()):
        number = int(ref)
        row = session.get(StudyRow, number) if 0 < number < 2**31 else None
        if row is None:
            raise StudyNotFoundError(f"study id {number} not found")
        return row
    row = None if len(ref) > 128 else session.scalar(select(StudyRow).where(StudyRow.name == ref))
    if row is None:
        raise StudyNotFoundError(f"study {ref!r} not found")
    return row


def _spec(row: StudyRow) -> StudySpec:
    return _parsed_spec(row.spec_json, row.name)


@functools.lru_cache(maxsize=256)
def _parsed_spec(spec_json: str, name: str) -> StudySpec:
    """A stored spec, validated once per distinct JSON (each tick reads every running study's
    spec; specs are never mutated, only copied)."""
    return parse_spec(json.loads(spec_json), source=f"study {name}")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _study(row: StudyRow) -> Study:
    return Study(
        id=row.id,
        name=row.name,
        spec=_spec(row),
        state=row.state,
        state_reason=row.state_reason,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
    )


def _run(row: TrialRunRow) -> TrialRun:
    return TrialRun(
        id=row.id,
        study_id=row.study_id,
        number=row.number,
        optuna_trial_id=row.optuna_trial_id,
        state=row.state,
        params=json.loads(row.params_json or "{}"),
        worker=row.worker,
        output_dir=row.output_dir,
        log_path=row.log_path,
        pid=row.pid,
        exit_code=row.exit_code,
        failure_reason=row.failure_reason,
        problems=json.loads(row.problems_json or "[]"),
        started_at=_aware(row.started_at),
        heartbeat_at=_aware(row.heartbeat_at),
        ended_at=_aware(row.ended_at) if row.ended_at else None,
        best_step_id=row.best_step_id,
        objective_step_id=row.objective_step_id,
        lease_epoch=row.lease_epoch or 0,
    )


def _checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        step=row.step, source_path=row.source_path, kept_path=row.kept_path, archive=_stored(row)
    )


# -- API tokens ----------------------------------------------------------------------------------


def create_token(session: Session, *, name: str, token_hash: str, scope: str) -> int:
    row = ApiTokenRow(name=name, token_hash=token_hash, scope=scope, created_at=now())
    session.add(row)
    session.flush()
    return row.id


def token_scope(session: Session, token_hash: str) -> str | None:
    """The scope of a live token with this hash, or None."""
    return session.scalar(
        select(ApiTokenRow.scope).where(
            ApiTokenRow.token_hash == token_hash, ApiTokenRow.revoked_at.is_(None)
        )
    )


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(
        update(ApiTokenRow)
        .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_tokens(session: Session) -> list[tuple[int, str, str, datetime, datetime | None]]:
    rows = session.execute(
        select(
            ApiTokenRow.id,
            ApiTokenRow.name,
            ApiTokenRow.scope,
            ApiTokenRow.created_at,
            ApiTokenRow.revoked_at,
        ).order_by(ApiTokenRow.id)
    ).all()
    return [(i, n, s, _aware(c), _aware(r) if r else None) for i, n, s, c, r in rows]


# -- change feed (event streams) -----------------------------------------------------------------
