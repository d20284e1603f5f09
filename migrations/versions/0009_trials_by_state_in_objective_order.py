"""A study's trials of one state in objective order: the index (study_id, state,
objective_rank, number) replaces (study_id, state), its prefix.

`/best`, the study overview and the Pareto front of one objective read the best COMPLETED
trial(s) from it, and counts by state are covered by it; with (study_id, state) alone, finding
the best COMPLETED trial or counting the ranked ones read every trial row of the study.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tuner_trial_runs_study_state_rank",
            ["study_id", "state", "objective_rank", "number"],
            unique=False,
        )
        batch_op.drop_index("ix_tuner_trial_runs_study_state")


def downgrade() -> None:
    with op.batch_alter_table("tuner_trial_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tuner_trial_runs_study_state", ["study_id", "state"], unique=False
        )
        batch_op.drop_index("ix_tuner_trial_runs_study_state_rank")
