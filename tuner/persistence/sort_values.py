"""Each trial's sort keys other than its objective (`tuner_trial_sort_values`): its params,
written when it is attached, and its metrics at its best step, written whenever the best step
or its values may have changed. The trial list reads a param or metric sort from their index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from tuner.domain.spec import ParamType, StudySpec
from tuner.persistence.models import EvalMetricRow, TrialRunRow, TrialSortValueRow

PARAM_PREFIX = "param:"
METRIC_PREFIX = "metric:"


def param_key(name: str) -> str:
    return PARAM_PREFIX + name


def metric_key(tag: str) -> str:
    return METRIC_PREFIX + tag


def param_sort_values(spec: StudySpec | None, params: Mapping[str, Any]) -> dict[str, float]:
    """The sort value of each param the trial has: a number as itself, a categorical as its
    place in the spec's list (so "small, medium, large" sorts in that order); a value the spec
    does not list, or one that is not a finite number, has none. Without a spec (one that no
    longer parses), the numbers only."""
    out: dict[str, float] = {}
    if spec is None:
        for name, value in params.items():
            if _finite_number(value):
                out[param_key(name)] = float(value)
        return out
    for param in spec.hyperparameters.all_params:
        name = param.parameter_name
        if name not in params:
            continue
        value = params[name]
        if param.type is ParamType.CATEGORICAL:
            places = {v: i for i, v in enumerate(param.categorical_values or [])}
            if isinstance(value, str) and value in places:
                out[param_key(name)] = float(places[value])
        elif _finite_number(value):
            out[param_key(name)] = float(value)
    return out


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def write_param_values(
    session: Session,
    *,
    run_id: int,
    study_id: int,
    number: int,
    spec: StudySpec,
    params: Mapping[str, Any],
) -> None:
    """The trial's param sort values (once: params never change after the attach)."""
    values = param_sort_values(spec, params)
    if values:
        session.execute(
            insert(TrialSortValueRow),
            [
                {"run_id": run_id, "study_id": study_id, "key": k, "value": v, "number": number}
                for k, v in values.items()
            ],
        )


def refresh_metric_values(session: Session, run_id: int) -> None:
    """The run's metric sort values again, from its best step as it stands: what the trial
    list's `metric:` sort and filter read (NaN is stored as null: no row)."""
    session.execute(
        delete(TrialSortValueRow).where(
            TrialSortValueRow.run_id == run_id,
            TrialSortValueRow.key.startswith(METRIC_PREFIX, autoescape=True),
        )
    )
    at_best = (
        select(
            TrialRunRow.id,
            literal(METRIC_PREFIX) + EvalMetricRow.tag,
            TrialRunRow.study_id,
            EvalMetricRow.value,
            TrialRunRow.number,
        )
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == TrialRunRow.best_step_id)
        .where(
            TrialRunRow.id == run_id,
            TrialRunRow.number.is_not(None),
            EvalMetricRow.value.is_not(None),
        )
    )
    session.execute(
        insert(TrialSortValueRow).from_select(
            ["run_id", "key", "study_id", "value", "number"], at_best
        )
    )
