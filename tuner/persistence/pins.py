"""Pins: a download (or pull) in flight holds one on the run whose artifacts it reads, renewed
while it streams; retention does not delete a run's artifacts under an unexpired pin.

Taking a pin writes the run's row first, as a retention claim does (`retention.hold_run`), so
the two follow one another: a pin is refused once the run's deletion is recorded, and a claim
sees every pin taken before it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from tuner.domain.entities import Deletion
from tuner.persistence.models import PinRow
from tuner.persistence.retention import deletion_of, hold_run
from tuner.persistence.rows import now


def pin_run(
    session: Session, run_id: int, *, holder: str, expires_at: datetime
) -> tuple[int | None, Deletion | None]:
    """Pin the run's artifacts until `expires_at`: (the pin's id, None), or (None, its
    deletion) when retention has deleted them, or started to."""
    hold_run(session, run_id)
    deleted = deletion_of(session, run_id)
    if deleted is not None:
        return None, deleted
    row = PinRow(run_id=run_id, holder=holder[:255], created_at=now(), expires_at=expires_at)
    session.add(row)
    session.flush()
    return row.id, None


def renew_pin(session: Session, pin_id: int, expires_at: datetime) -> None:
    session.execute(update(PinRow).where(PinRow.id == pin_id).values(expires_at=expires_at))


def purge_pins(session: Session, expired_before: datetime) -> int:
    """Delete the pins that expired before `expired_before`; return how many."""
    result = session.execute(delete(PinRow).where(PinRow.expires_at < expired_before))
    return int(getattr(result, "rowcount", 0) or 0)
