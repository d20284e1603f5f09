"""Each trial's params and best-step metrics as sort values, indexed with the study and the key:
a trial list sorted by a param or a metric reads its page from the index (it sorted every
trial of the study). Filled here for the trials already recorded.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tuner.domain.errors import SpecError
from tuner.domain.spec import StudySpec
from tuner.persistence.rows import parsed_spec
from tuner.persistence.sort_values import METRIC_PREFIX, param_sort_values

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Rows per insert while filling the table.
_CHUNK = 5_000


def upgrade() -> None:
    sort_values = op.create_table(
        "tuner_trial_sort_values",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["tuner_trial_runs.id"],
            name=op.f("fk_tuner_trial_sort_values_run_id_tuner_trial_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["tuner_studies.id"],
            name=op.f("fk_tuner_trial_sort_values_study_id_tuner_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "key", name=op.f("pk_tuner_trial_sort_values")),
    )
    op.create_index(
        "ix_tuner_trial_sort_values_order",
        "tuner_trial_sort_values",
        ["study_id", "key", "value", "number", "run_id"],
        unique=False,
    )
    op.create_index(
        "ix_tuner_trial_sort_values_order_desc",
        "tuner_trial_sort_values",
        ["study_id", "key", sa.column("value").desc(), "number", "run_id"],
        unique=False,
    )
    _fill(sort_values)


def _fill(sort_values: sa.Table) -> None:
    """The params of every attached trial (the spec says which are categorical, in which
    order), then each one's metrics at its best step."""
    conn = op.get_bind()
    studies = sa.table(
        "tuner_studies", sa.column("id"), sa.column("name"), sa.column("spec_json")
    )
    runs = sa.table(
        "tuner_trial_runs",
        sa.column("id"),
        sa.column("study_id"),
        sa.column("number"),
        sa.column("params_json"),
        sa.column("best_step_id"),
    )
    metrics = sa.table(
        "tuner_eval_metrics", sa.column("eval_step_id"), sa.column("tag"), sa.column("value")
    )
    for study_id, name, spec_json in conn.execute(
        sa.select(studies.c.id, studies.c.name, studies.c.spec_json)
    ).all():
        try:
            spec: StudySpec | None = parsed_spec(spec_json, name)
        except SpecError:
            spec = None  # a spec this version no longer reads: its numeric params still sort
        rows: list[dict[str, object]] = []
        for run_id, number, params_json in conn.execute(
            sa.select(runs.c.id, runs.c.number, runs.c.params_json).where(
                runs.c.study_id == study_id, runs.c.number.is_not(None)
            )
        ):
            for key, value in param_sort_values(spec, json.loads(params_json or "{}")).items():
                rows.append(
                    {
                        "run_id": run_id,
                        "key": key,
                        "study_id": study_id,
                        "value": value,
                        "number": number,
                    }
                )
            if len(rows) >= _CHUNK:
                conn.execute(sort_values.insert(), rows)
                rows = []
        if rows:
            conn.execute(sort_values.insert(), rows)
    conn.execute(
        sort_values.insert().from_select(
            ["run_id", "key", "study_id", "value", "number"],
            sa.select(
                runs.c.id,
                sa.literal(METRIC_PREFIX) + metrics.c.tag,
                runs.c.study_id,
                metrics.c.value,
                runs.c.number,
            )
            .select_from(runs.join(metrics, metrics.c.eval_step_id == runs.c.best_step_id))
            .where(runs.c.number.is_not(None), metrics.c.value.is_not(None)),
        )
    )


def downgrade() -> None:
    op.drop_index("ix_tuner_trial_sort_values_order_desc", table_name="tuner_trial_sort_values")
    op.drop_index("ix_tuner_trial_sort_values_order", table_name="tuner_trial_sort_values")
    op.drop_table("tuner_trial_sort_values")
