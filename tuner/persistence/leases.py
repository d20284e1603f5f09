"""Run leases: every write under a lease checks it; heartbeats renew it; takeovers end it
(the rules are in `tuner.engine.leases`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, update
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
