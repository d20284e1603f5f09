"""Notes (markdown) on a study and on a trial, and a trial's stop asked for by hand: when, and
by whom (read by whichever manager or node supervises it, which ends it PRUNED).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tuner_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("note_updated_at", sa.DateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("note_updated_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("stop_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("stop_requested_by", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.drop_column("stop_requested_by")
        batch_op.drop_column("stop_requested_at")
        batch_op.drop_column("note_updated_at")
        batch_op.drop_column("note")
    with op.batch_alter_table("tuner_studies", schema=None) as batch_op:
        batch_op.drop_column("note_updated_at")
        batch_op.drop_column("note")
