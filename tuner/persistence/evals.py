"""Eval metrics: every metric of every eval step, the event files' offsets, the objective's
steps and rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    EvalStep,
    Observation,
)
from tuner.domain.spec import Goal
from tuner.outputs.events import CheckpointPathValue, ScalarValue
from tuner.persistence.journal import journal
from tuner.persistence.models import (
    EvalMetricRow,
    EvalStepRow,
    EventFileRow,
    TrialRunRow,
)
from tuner.persistence.sort_values import refresh_metric_values


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
    batch = _EvalBatch(session, run_id)
    objective_rows: list[tuple[EvalStepRow, float, float]] = []
    for value in values:
        row = batch.step_row(value.eval_name, value.step, value.wall_time)
        if isinstance(value, CheckpointPathValue):
            row.checkpoint_path = value.path
            continue
        batch.store(row, value)
        if value.tag == objective_tag:
            objective_rows.append((row, value.value, value.wall_time))
    session.flush()
    observations = [batch.observation(*item) for item in objective_rows]
    save_offsets(session, run_id, offsets)
    if batch.told:
        if study_id is None or number is None:
            study_id, number = session.execute(
                select(TrialRunRow.study_id, TrialRunRow.number).where(TrialRunRow.id == run_id)
            ).one()
        journal(session, study_id, batch.events(number, objective_tag))
    return observations


class _EvalBatch:
    """The eval steps one `record_eval_values` call touches, and what it stored for them."""

    def __init__(self, session: Session, run_id: int) -> None:
        self.session = session
        self.run_id = run_id
        self.steps: dict[tuple[str, int], EvalStepRow] = {}
        #: Steps created here, and the values stored for them: they have no other metrics.
        self.fresh: dict[int, list[float | None]] = {}
        #: The finite values stored, by (eval name, step), for the journal.
        self.told: dict[tuple[str, int], dict[str, float | None]] = {}

    def step_row(self, eval_name: str, step: int, wall_time: float) -> EvalStepRow:
        key = (eval_name, step)
        if key not in self.steps:
            row = self.session.scalar(
                select(EvalStepRow).where(
                    EvalStepRow.run_id == self.run_id,
                    EvalStepRow.eval_name == eval_name,
                    EvalStepRow.step == step,
                )
            )
            if row is None:
                row = EvalStepRow(
                    run_id=self.run_id, eval_name=eval_name, step=step, wall_time=wall_time
                )
                self.session.add(row)
                self.session.flush()
                self.fresh[row.id] = []
            self.steps[key] = row
        return self.steps[key]

    def store(self, row: EvalStepRow, value: ScalarValue) -> None:
        """Insert (or, read again, update) one metric of a step."""
        stored = None if math.isnan(value.value) else value.value
        existing = None
        if row.id in self.fresh:
            self.fresh[row.id].append(stored)
        else:
            existing = self.session.scalar(
                select(EvalMetricRow).where(
                    EvalMetricRow.eval_step_id == row.id, EvalMetricRow.tag == value.tag
                )
            )
        if existing is None:
            self.session.add(
                EvalMetricRow(
                    eval_step_id=row.id, tag=value.tag, value=stored, wall_time=value.wall_time
                )
            )
        else:
            existing.value = stored
            existing.wall_time = value.wall_time
        row.wall_time = max(row.wall_time, value.wall_time)
        self.told.setdefault((row.eval_name, row.step), {})[value.tag] = (
            value.value if math.isfinite(value.value) else None
        )

    def observation(self, row: EvalStepRow, objective: float, wall_time: float) -> Observation:
        all_zero = (
            _all_zero(self.fresh[row.id])
            if row.id in self.fresh
            else _all_metrics_zero(self.session, row.id)
        )
        return Observation(
            eval_step_id=row.id,
            eval_name=row.eval_name,
            step=row.step,
            value=objective,
            checkpoint_path=row.checkpoint_path,
            wall_time=wall_time,
            all_zero=all_zero,
        )

    def events(
        self, number: int | None, objective_tag: str
    ) -> list[tuple[str, int | None, dict[str, Any]]]:
        """One `eval` journal event per step stored."""
        return [
            (
                "eval",
                number,
                {
                    "number": number,
                    "step": step,
                    "evalName": eval_name,
                    "wallTime": self.steps[(eval_name, step)].wall_time,
                    "objective": metrics.get(objective_tag),
                    "metrics": metrics,
                },
            )
            for (eval_name, step), metrics in self.told.items()
        ]


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
    refresh_metric_values(session, run_id)


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
    return with_metrics(session, list(step_rows))


def with_metrics(session: Session, step_rows: list[EvalStepRow]) -> list[EvalStep]:
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


def step_metrics(session: Session, eval_step_id: int) -> dict[str, float | None]:
    """Every metric of one eval step, by tag (None: NaN was written)."""
    rows = session.execute(
        select(EvalMetricRow.tag, EvalMetricRow.value).where(
            EvalMetricRow.eval_step_id == eval_step_id
        )
    ).all()
    return {tag: value for tag, value in rows}
