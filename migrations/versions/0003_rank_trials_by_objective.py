"""Rank trials by objective: `tuner_trial_runs.objective_rank`, indexed with the study.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('tuner_trial_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('objective_rank', sa.Float(), nullable=True))
        batch_op.create_index(
            'ix_tuner_trial_runs_study_rank', ['study_id', 'objective_rank', 'number'], unique=False
        )
    conn = op.get_bind()
    for study_id, spec_json in conn.execute(sa.text('SELECT id, spec_json FROM tuner_studies')):
        hyperparameters = json.loads(spec_json).get('hyperparameters', {})
        sign = -1.0 if hyperparameters.get('goal') == 'MAXIMIZE' else 1.0
        conn.execute(
            sa.text(
                'UPDATE tuner_trial_runs SET objective_rank = :sign * ('
                ' SELECT m.value FROM tuner_eval_metrics m'
                ' WHERE m.eval_step_id = tuner_trial_runs.objective_step_id AND m.tag = :tag)'
                ' WHERE study_id = :study_id AND objective_step_id IS NOT NULL'
            ),
            {'sign': sign, 'tag': hyperparameters.get('hyperparameterMetricTag'), 'study_id': study_id},
        )


def downgrade() -> None:
    with op.batch_alter_table('tuner_trial_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_tuner_trial_runs_study_rank')
        batch_op.drop_column('objective_rank')
