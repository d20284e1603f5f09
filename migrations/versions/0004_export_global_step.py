"""Match exports to eval steps by evidence: the global step read from the export's variables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tuner_exports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('global_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('matched_by', sa.String(length=16), nullable=True))
    # Exports recorded before this revision were matched by write time.
    op.execute(
        "UPDATE tuner_exports SET matched_by = 'write_time' WHERE eval_step_id IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table('tuner_exports', schema=None) as batch_op:
        batch_op.drop_column('matched_by')
        batch_op.drop_column('global_step')
