"""Studies: create, find, list, change state, count trials."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuner.domain.entities import (
    Study,
)
from tuner.domain.errors import (
    DuplicateStudyError,
)
from tuner.domain.spec import StudySpec, spec_to_json
from tuner.persistence.journal import journal
from tuner.persistence.models import (
    StudyRow,
    TrialRunRow,
)
from tuner.persistence.rows import now, study_row, to_study


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
    return to_study(row)


def get_study(session: Session, ref: str | int) -> Study:
    return to_study(study_row(session, ref))


def find_study(session: Session, name: str) -> Study | None:
    row = session.scalar(select(StudyRow).where(StudyRow.name == name))
    return to_study(row) if row else None


def list_studies(
    session: Session, *, state: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Study], int]:
    query = select(StudyRow)
    count = select(func.count(StudyRow.id))
    if state:
        query = query.where(StudyRow.state == state)
        count = count.where(StudyRow.state == state)
    rows = session.scalars(query.order_by(StudyRow.id.desc()).limit(limit).offset(offset)).all()
    return [to_study(r) for r in rows], int(session.scalar(count) or 0)


def running_studies(session: Session, names: Sequence[str] | None = None) -> list[Study]:
    query = select(StudyRow).where(StudyRow.state == "RUNNING")
    if names is not None:
        query = query.where(StudyRow.name.in_(list(names)))
    return [to_study(r) for r in session.scalars(query.order_by(StudyRow.id)).all()]


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
