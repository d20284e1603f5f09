"""Run leases: every write under a lease checks it; heartbeats renew it; takeovers end it
(the rules are in `tuner.engine.leases`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    Lease,
    TrialRun,
)
from tuner.domain.errors import (
    LeaseLostError,
)
from tuner.persistence.journal import journal_end
from tuner.persistence.models import (
    StudyRow,
    TrialRunRow,
)
from tuner.persistence.rows import ACTIVE_STATE, now


def held_by(lease: Lease) -> Any:
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
    result = session.execute(update(TrialRunRow).where(held_by(lease)).values(heartbeat_at=now()))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLostError(lease.run_id)


def renew_leases(session: Session, leases: Iterable[Lease]) -> set[int]:
    """Renew every lease still held; return the run ids whose lease is lost."""
    lost: set[int] = set()
    stamp = now()
    for lease in leases:
        result = session.execute(
            update(TrialRunRow).where(held_by(lease)).values(heartbeat_at=stamp)
        )
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
    journal_end(session, taken.study_id, taken.number, "STOPPED", reason, taken.exit_code, ended_at)
    return True


def hand_over(
    session: Session, lease: Lease, *, worker: str, executor: str, node: str, task: str
) -> Lease:
    """Pass a run's lease from the manager that claimed it to the supervisor that runs it on
    another machine (a Ray task), recording where it runs; raise `LeaseLostError` if the
    manager no longer holds it. The epoch grows: the manager's lease no longer writes."""
    result = session.execute(
        update(TrialRunRow)
        .where(held_by(lease))
        .values(
            worker=worker,
            lease_epoch=lease.epoch + 1,
            heartbeat_at=now(),
            executor=executor,
            executor_node=node,
            executor_task=task,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLostError(lease.run_id)
    return Lease(lease.run_id, worker, lease.epoch + 1)


def holders(session: Session, run_ids: Iterable[int]) -> dict[int, tuple[Lease, bool]]:
    """Each run's lease as the row has it now, and whether the run is still running."""
    ids = list(run_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(
            TrialRunRow.id, TrialRunRow.worker, TrialRunRow.lease_epoch, TrialRunRow.state
        ).where(TrialRunRow.id.in_(ids))
    ).all()
    return {
        run_id: (Lease(run_id, worker, epoch or 0), state == ACTIVE_STATE)
        for run_id, worker, epoch, state in rows
    }


def request_stop(session: Session, run_ids: Iterable[int], reason: str) -> None:
    """Ask the supervisors of running runs to stop them (the first reason stands)."""
    ids = list(run_ids)
    if ids:
        session.execute(
            update(TrialRunRow)
            .where(
                TrialRunRow.id.in_(ids),
                TrialRunRow.state == ACTIVE_STATE,
                TrialRunRow.stop_request.is_(None),
            )
            .values(stop_request=reason)
        )


def stop_signal(session: Session, run_id: int) -> str | None:
    """Why a run's supervisor must stop it now: a stop request, its study no longer running
    (stopped over the API, failed, deleted); None while it may go on."""
    row = session.execute(
        select(TrialRunRow.stop_request, StudyRow.state, StudyRow.state_reason)
        .join(StudyRow, StudyRow.id == TrialRunRow.study_id)
        .where(TrialRunRow.id == run_id)
    ).one_or_none()
    if row is None:
        return "study deleted"
    stop_request, study_state, study_reason = row
    if stop_request:
        return str(stop_request)
    if study_state == "FAILED":
        return f"study failed: {study_reason}"
    return None if study_state == "RUNNING" else "study stopped"
