"""The study journal: the ordered events the API's stream and in-process listeners serve."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    JournalEntry,
    StudyEvent,
)
from tuner.domain.errors import (
    StudyNotFoundError,
)
from tuner.persistence.database import JOURNAL_KEY
from tuner.persistence.models import (
    StudyEventRow,
    StudyRow,
)
from tuner.persistence.rows import aware, now


def journal_end(
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
        "endedAt": aware(ended_at).isoformat(),
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
