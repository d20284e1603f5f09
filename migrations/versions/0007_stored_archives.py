"""Kept checkpoints and exports record their archive in the object store, once it is there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('tuner_checkpoints', 'tuner_exports')


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('archive_path', sa.Text(), nullable=True))
            batch_op.add_column(sa.Column('archive_sha256', sa.String(length=64), nullable=True))
            batch_op.add_column(sa.Column('archive_size', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('archive_size')
            batch_op.drop_column('archive_sha256')
            batch_op.drop_column('archive_path')
