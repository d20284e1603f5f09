"""A journal of study events, numbered per study, for resumable event streams.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tuner_studies', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('event_seq', sa.Integer(), nullable=False, server_default='0')
        )
    op.create_table(
        'tuner_study_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('number', sa.Integer(), nullable=True),
        sa.Column('data_json', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['study_id'],
            ['tuner_studies.id'],
            name=op.f('fk_tuner_study_events_study_id_tuner_studies'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tuner_study_events')),
        sa.UniqueConstraint('study_id', 'seq', name='uq_tuner_study_events_seq'),
    )


def downgrade() -> None:
    op.drop_table('tuner_study_events')
    with op.batch_alter_table('tuner_studies', schema=None) as batch_op:
        batch_op.drop_column('event_seq')
