"""Keep the best step's export: a hard-linked copy out of the exporter's clean-up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tuner_exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kept_path', sa.Text(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('tuner_exports', schema=None) as batch_op:
        batch_op.drop_column('kept_path')

