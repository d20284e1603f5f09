"""Trial run leases: a fencing epoch that grows at every takeover.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tuner_trial_runs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('lease_epoch', sa.Integer(), nullable=False, server_default='0')
        )


def downgrade() -> None:
    with op.batch_alter_table('tuner_trial_runs', schema=None) as batch_op:
        batch_op.drop_column('lease_epoch')
