"""Each run records where it ran (the executor, and for Ray its node and task), and carries a
stop request that a trial's supervisor on another machine reads (the database is its only
channel to the manager).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("executor", sa.String(length=16), nullable=False, server_default="local")
        )
        batch_op.add_column(sa.Column("executor_node", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("executor_task", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("stop_request", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.drop_column("stop_request")
        batch_op.drop_column("executor_task")
        batch_op.drop_column("executor_node")
        batch_op.drop_column("executor")
