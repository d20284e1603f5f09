"""Notes people write on a study or a trial (markdown text): read, set, cleared by an empty one.

A note is a column of its study's or run's row, deferred: the rows the managers and the
leaderboard read every tick do not carry it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuner.domain.entities import Note
from tuner.domain.errors import TrialNotFoundError
from tuner.persistence.models import StudyRow, TrialRunRow
from tuner.persistence.rows import aware, now


def study_note(session: Session, study_id: int) -> Note:
    row = session.execute(
        select(StudyRow.note, StudyRow.note_updated_at).where(StudyRow.id == study_id)
    ).one_or_none()
    return _note(row)


def trial_note(session: Session, run_id: int) -> Note:
    row = session.execute(
        select(TrialRunRow.note, TrialRunRow.note_updated_at).where(TrialRunRow.id == run_id)
    ).one_or_none()
    return _note(row)


def set_study_note(session: Session, study_id: int, text: str) -> Note:
    """Replace the study's note; an empty text clears it."""
    stamp = now()
    session.execute(
        update(StudyRow)
        .where(StudyRow.id == study_id)
        .values(note=text or None, note_updated_at=stamp)
    )
    return Note(text or None, stamp)


def set_trial_note(session: Session, study_id: int, number: int, text: str) -> Note:
    """Replace the note of the study's trial `number` (any state); an empty text clears it."""
    stamp = now()
    changed = session.execute(
        update(TrialRunRow)
        .where(TrialRunRow.study_id == study_id, TrialRunRow.number == number)
        .values(note=text or None, note_updated_at=stamp)
        .returning(TrialRunRow.id)
    ).one_or_none()
    if changed is None:
        name = session.scalar(select(StudyRow.name).where(StudyRow.id == study_id))
        raise TrialNotFoundError(f"study {name!r} has no trial {number}")
    return Note(text or None, stamp)


def _note(row: tuple[str | None, object] | None) -> Note:
    if row is None:
        return Note(None, None)
    text, updated_at = row
    return Note(text, aware(updated_at) if updated_at is not None else None)  # type: ignore[arg-type]
