"""Every study's trial counts by state in one grouped query, for `GET /metrics`."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuner.persistence.models import StudyRow, TrialRunRow


def trial_census(session: Session) -> list[tuple[str, str, str | None, int]]:
    """(study name, study state, trial state, count) per study and trial state; a study
    without trials has one row with trial state None and count 0."""
    rows = session.execute(
        select(StudyRow.name, StudyRow.state, TrialRunRow.state, func.count(TrialRunRow.id))
        .select_from(StudyRow)
        .outerjoin(TrialRunRow, TrialRunRow.study_id == StudyRow.id)
        .group_by(StudyRow.name, StudyRow.state, TrialRunRow.state)
    ).all()
    return [(name, study_state, state, int(n)) for name, study_state, state, n in rows]
