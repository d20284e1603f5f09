"""Row <-> entity conversions and the lookups every aggregate shares."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    Checkpoint,
    Placement,
    StopByHand,
    StoredArchive,
    Study,
    TrialRun,
)
from tuner.domain.errors import (
    StudyNotFoundError,
)
from tuner.domain.spec import StudySpec, parse_spec
from tuner.persistence.models import (
    CheckpointRow,
    ExportRow,
    StudyRow,
    TrialRunRow,
)

#: Trial states that use up the study's budget (a STOPPED trial is run again).
COUNTED_STATES = ("COMPLETED", "PRUNED", "FAILED")


ACTIVE_STATE = "RUNNING"


def now() -> datetime:
    return datetime.now(UTC)


def study_row(session: Session, ref: str | int) -> StudyRow:
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


def spec_of(row: StudyRow) -> StudySpec:
    return parsed_spec(row.spec_json, row.name)


@functools.lru_cache(maxsize=256)
def parsed_spec(spec_json: str, name: str) -> StudySpec:
    """A stored spec, validated once per distinct JSON (each tick reads every running study's
    spec; specs are never mutated, only copied)."""
    return parse_spec(json.loads(spec_json), source=f"study {name}")


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def to_study(row: StudyRow) -> Study:
    return Study(
        id=row.id,
        name=row.name,
        spec=spec_of(row),
        state=row.state,
        state_reason=row.state_reason,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


def to_run(row: TrialRunRow) -> TrialRun:
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
        started_at=aware(row.started_at),
        heartbeat_at=aware(row.heartbeat_at),
        ended_at=aware(row.ended_at) if row.ended_at else None,
        best_step_id=row.best_step_id,
        objective_step_id=row.objective_step_id,
        lease_epoch=row.lease_epoch or 0,
        executor=Placement(row.executor or "local", row.executor_node, row.executor_task),
        stop_by_hand=(
            StopByHand(aware(row.stop_requested_at), row.stop_requested_by or "")
            if row.stop_requested_at is not None
            else None
        ),
    )


def to_checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        step=row.step,
        source_path=row.source_path,
        kept_path=row.kept_path,
        archive=stored_archive(row),
    )


def stored_archive(row: CheckpointRow | ExportRow) -> StoredArchive | None:
    if row.archive_path is None or row.archive_sha256 is None or row.archive_size is None:
        return None
    return StoredArchive(row.archive_path, row.archive_sha256, row.archive_size)
