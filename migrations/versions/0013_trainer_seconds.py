"""When a trial's trainer process started and when its exit was seen: a compute budget's
trial-seconds are the trainer's own (the run's claim and end also count the tuner's start-up
and the upload of its artifacts).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trainer_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("trainer_ended_at", sa.DateTime(timezone=True), nullable=True))
    # Runs recorded before: their claim and end are the best measure there is.
    runs = sa.table(
        "tuner_trial_runs",
        sa.column("started_at", sa.DateTime(timezone=True)),
        sa.column("trainer_started_at", sa.DateTime(timezone=True)),
        sa.column("pid", sa.Integer()),
    )
    op.execute(
        runs.update().where(runs.c.pid.is_not(None)).values(trainer_started_at=runs.c.started_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.drop_column("trainer_ended_at")
        batch_op.drop_column("trainer_started_at")
