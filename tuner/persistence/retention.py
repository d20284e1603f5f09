"""Retention's records: which finished runs still hold artifacts, the claim that drops a run's
checkpoint and export rows as it records what is about to be deleted, and its completion.

A claim and a download's pin (`pins.py`) both start by writing the run's row, so that on
PostgreSQL (its row lock) and on SQLite (its write lock) they follow one another: a claim sees
every pin taken before it, and a pin sees every claim.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from tuner.domain.entities import DeletedPath, Deletion, FinishedTrial
from tuner.persistence.models import (
    CheckpointRow,
    DeletionRow,
    ExportRow,
    PinRow,
    TrialRunRow,
)
from tuner.persistence.rows import aware, now

#: The states of a run that has ended: retention may delete what it kept.
FINISHED_STATES = ("COMPLETED", "PRUNED", "FAILED", "STOPPED")


def finished_trials(session: Session, study_id: int) -> list[FinishedTrial]:
    """The study's finished runs with a number, by number, with their rank key and whether
    checkpoint or export rows still point at their files."""
    has_checkpoint = exists().where(CheckpointRow.run_id == TrialRunRow.id)
    has_export = exists().where(ExportRow.run_id == TrialRunRow.id)
    rows = session.execute(
        select(
            TrialRunRow.id,
            TrialRunRow.number,
            TrialRunRow.state,
            TrialRunRow.objective_rank,
            has_checkpoint | has_export,
        )
        .where(
            TrialRunRow.study_id == study_id,
            TrialRunRow.state.in_(FINISHED_STATES),
            TrialRunRow.number.is_not(None),
        )
        .order_by(TrialRunRow.number)
    ).all()
    return [
        FinishedTrial(run_id=i, number=int(n or 0), state=s, rank=r, has_artifacts=bool(held))
        for i, n, s, r, held in rows
    ]


def trial_artifacts(
    session: Session, run_id: int
) -> tuple[list[tuple[str, str, str | None]], list[tuple[str, str | None, str | None]]]:
    """What the run's rows point at: (kept prefix, source prefix, archive key) per checkpoint
    and (path, kept copy, archive key) per export, all relative to the artifact root except a
    checkpoint's source (as the estimator named it)."""
    checkpoints = session.execute(
        select(CheckpointRow.kept_path, CheckpointRow.source_path, CheckpointRow.archive_path)
        .where(CheckpointRow.run_id == run_id)
        .order_by(CheckpointRow.step)
    ).all()
    exports = session.execute(
        select(ExportRow.path, ExportRow.kept_path, ExportRow.archive_path)
        .where(ExportRow.run_id == run_id)
        .order_by(ExportRow.id)
    ).all()
    return [(k, s, a) for k, s, a in checkpoints], [(p, k, a) for p, k, a in exports]


def hold_run(session: Session, run_id: int) -> str | None:
    """Write the run's row (nothing changes) so that this transaction holds it until its end;
    return its state (None: no such run)."""
    session.execute(
        update(TrialRunRow)
        .where(TrialRunRow.id == run_id)
        .values(lease_epoch=TrialRunRow.lease_epoch)
    )
    return session.scalar(select(TrialRunRow.state).where(TrialRunRow.id == run_id))


def pinned_until(session: Session, run_id: int, at: datetime) -> datetime | None:
    """The latest expiry of the run's pins unexpired at `at`, or None."""
    latest = session.scalar(
        select(PinRow.expires_at)
        .where(PinRow.run_id == run_id, PinRow.expires_at > at)
        .order_by(PinRow.expires_at.desc())
        .limit(1)
    )
    return aware(latest) if latest is not None else None


def claim_deletion(
    session: Session,
    run_id: int,
    *,
    study_id: int,
    paths: Sequence[DeletedPath],
    policy: str,
    reason: str,
    trigger: str,
    worker: str,
) -> str | None:
    """Record the run's deletion as started (DELETING, with every path and its size) and drop
    its checkpoint and export rows, in this transaction; or return why not: the run is not
    finished, its deletion is recorded already, or a download holds a pin of it."""
    state = hold_run(session, run_id)
    if state not in FINISHED_STATES:
        return f"it is {state or 'gone'}"
    if session.scalar(select(DeletionRow.id).where(DeletionRow.run_id == run_id)) is not None:
        return "its deletion is recorded already"
    stamp = now()
    until = pinned_until(session, run_id, stamp)
    if until is not None:
        return f"a download of it is in flight (pinned until {until:%H:%M:%S %Z})"
    session.execute(delete(CheckpointRow).where(CheckpointRow.run_id == run_id))
    session.execute(delete(ExportRow).where(ExportRow.run_id == run_id))
    session.add(
        DeletionRow(
            run_id=run_id,
            study_id=study_id,
            state="DELETING",
            policy=policy,
            reason=reason,
            trigger=trigger,
            paths_json=json.dumps([asdict(p) for p in paths]),
            bytes=sum(p.bytes for p in paths),
            worker=worker,
            started_at=stamp,
        )
    )
    return None


def finish_deletion(session: Session, run_id: int) -> None:
    """Mark the run's deletion DONE: every path it names is gone."""
    session.execute(
        update(DeletionRow)
        .where(DeletionRow.run_id == run_id, DeletionRow.state == "DELETING")
        .values(state="DONE", deleted_at=now())
    )


def unfinished_deletions(
    session: Session, *, study_id: int | None = None, started_before: datetime | None = None
) -> list[Deletion]:
    """DELETING records (of one study, or all; started before a time, or any), oldest first."""
    query = select(DeletionRow, TrialRunRow.number).join(
        TrialRunRow, TrialRunRow.id == DeletionRow.run_id
    )
    query = query.where(DeletionRow.state == "DELETING")
    if study_id is not None:
        query = query.where(DeletionRow.study_id == study_id)
    if started_before is not None:
        query = query.where(DeletionRow.started_at < started_before)
    rows = session.execute(query.order_by(DeletionRow.id)).all()
    return [to_deletion(row, int(number or 0)) for row, number in rows]


def deletion_of(session: Session, run_id: int) -> Deletion | None:
    found = session.execute(
        select(DeletionRow, TrialRunRow.number)
        .join(TrialRunRow, TrialRunRow.id == DeletionRow.run_id)
        .where(DeletionRow.run_id == run_id)
    ).first()
    return to_deletion(found[0], int(found[1] or 0)) if found else None


def to_deletion(row: DeletionRow, number: int) -> Deletion:
    return Deletion(
        run_id=row.run_id,
        number=number,
        state=row.state,
        policy=row.policy,
        reason=row.reason,
        trigger=row.trigger,
        paths=[DeletedPath(**item) for item in json.loads(row.paths_json)],
        bytes=int(row.bytes),
        started_at=aware(row.started_at),
        deleted_at=aware(row.deleted_at) if row.deleted_at else None,
        worker=row.worker,
    )
