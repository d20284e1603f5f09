"""Each COMPLETED trial's objectives and safety metrics at its ranking step, for the Pareto
front: one query for the study, grouped here."""

from __future__ import annotations

import json
import math

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuner.domain.entities import RankedTrial, Study
from tuner.persistence.models import EvalMetricRow, EvalStepRow, TrialRunRow


def ranked_trials(session: Session, study: Study) -> list[RankedTrial]:
    """The study's COMPLETED trials that have a finite value for every objective and safety
    metric at their ranking step, in trial-number order."""
    spec = study.spec
    tags = spec.ranked_metrics
    rows = session.execute(
        select(
            TrialRunRow.id,
            TrialRunRow.number,
            TrialRunRow.params_json,
            EvalStepRow.step,
            EvalMetricRow.tag,
            EvalMetricRow.value,
        )
        .join(EvalStepRow, EvalStepRow.id == TrialRunRow.objective_step_id)
        .join(EvalMetricRow, EvalMetricRow.eval_step_id == EvalStepRow.id)
        .where(
            TrialRunRow.study_id == study.id,
            TrialRunRow.state == "COMPLETED",
            TrialRunRow.number.is_not(None),
            EvalMetricRow.tag.in_(tags),
        )
        .order_by(TrialRunRow.number)
    ).all()
    by_run: dict[int, tuple[int, str, int, dict[str, float | None]]] = {}
    for run_id, number, params, step, tag, value in rows:
        entry = by_run.setdefault(run_id, (int(number or 0), params, int(step), {}))
        entry[3][tag] = value
    out: list[RankedTrial] = []
    for run_id, (number, params, step, values) in by_run.items():
        finite = {t: float(v) for t, v in values.items() if v is not None and math.isfinite(v)}
        if any(tag not in finite for tag in tags):
            continue
        constraints = {c.metric_id: finite[c.metric_id] for c in spec.constraints}
        out.append(
            RankedTrial(
                run_id=run_id,
                number=number,
                params=json.loads(params),
                step=step,
                objectives={o.metric: finite[o.metric] for o in spec.objectives},
                constraints=constraints,
                feasible=all(c.violation(constraints[c.metric_id]) <= 0 for c in spec.constraints),
            )
        )
    return out
