"""Retention: a record per run of what was deleted (or is being deleted) and why, and the pins
of downloads in flight, which retention does not delete under.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tuner_deletions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("paths_json", sa.Text(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('DELETING', 'DONE')", name=op.f("ck_tuner_deletions_state")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["tuner_trial_runs.id"],
            name=op.f("fk_tuner_deletions_run_id_tuner_trial_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["tuner_studies.id"],
            name=op.f("fk_tuner_deletions_study_id_tuner_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuner_deletions")),
        sa.UniqueConstraint("run_id", name=op.f("uq_tuner_deletions_run_id")),
    )
    with op.batch_alter_table("tuner_deletions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tuner_deletions_study_id"), ["study_id"])
    op.create_table(
        "tuner_pins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["tuner_trial_runs.id"],
            name=op.f("fk_tuner_pins_run_id_tuner_trial_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tuner_pins")),
    )
    with op.batch_alter_table("tuner_pins", schema=None) as batch_op:
        batch_op.create_index("ix_tuner_pins_run_expires", ["run_id", "expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("tuner_pins", schema=None) as batch_op:
        batch_op.drop_index("ix_tuner_pins_run_expires")
    op.drop_table("tuner_pins")
    with op.batch_alter_table("tuner_deletions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tuner_deletions_study_id"))
    op.drop_table("tuner_deletions")
