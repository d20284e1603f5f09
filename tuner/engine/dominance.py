"""Early stopping for several objectives, on the streamed eval vectors (`earlyStopping.type:
dominated`).

Optuna takes no intermediate values for a study with several objectives, so no Optuna pruner
applies; the tuner has every metric of every eval step of every trial in its own tables. A
running trial is stopped at eval step `s` when its objectives there are dominated by those of
at least `minDominating` COMPLETED, feasible trials at `s` (each one's latest eval at or before
`s`): trials that were at least as good on every objective at the same point of training, and
better on one, ended up somewhere the running trial is unlikely to beat. As with the median
rule: not before `startupTrials` trials completed, nor before the warm-up (`auto`: a third of
the longest completed trial's steps), nor at a trial's last eval.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from tuner.domain.entities import Observation, Study
from tuner.domain.pareto import dominated_by_count, to_minimize
from tuner.domain.spec import PrunerSpec, StudySpec
from tuner.persistence import Database
from tuner.persistence.evals import step_metrics
from tuner.persistence.models import EvalMetricRow, EvalStepRow, TrialRunRow


@dataclass
class _Curve:
    """A completed trial's objective vectors by eval step, in step order."""

    number: int
    steps: list[int]
    vectors: list[tuple[float, ...]]

    def at(self, step: int) -> tuple[float, ...] | None:
        """Its vector at its latest eval at or before `step`."""
        index = bisect.bisect_right(self.steps, step) - 1
        return self.vectors[index] if index >= 0 else None


@dataclass
class Judgement:
    stop: bool
    reason: str = ""


@dataclass
class DominanceRule:
    """The rule for one study, with the curves of its completed trials (which never change)."""

    db: Database
    study: Study
    curves: dict[int, _Curve] = field(default_factory=dict)
    #: Completed runs that are infeasible or lack a curve: never compared against.
    ignored: set[int] = field(default_factory=set)

    @property
    def spec(self) -> StudySpec:
        return self.study.spec

    def judge(self, obs: Observation, rule: PrunerSpec) -> Judgement:
        """Whether the trial that wrote `obs` should stop, and why."""
        self.db.run(self._refresh)
        if len(self.curves) < rule.startup_trials:
            return Judgement(False)
        longest = max((c.steps[-1] for c in self.curves.values() if c.steps), default=0)
        warmup = longest / 3 if rule.warmup_steps == "auto" else rule.warmup_steps
        if obs.step < warmup:
            return Judgement(False)
        metrics = self.db.run(lambda s: step_metrics(s, obs.eval_step_id))
        written = [metrics.get(o.metric) for o in self.spec.objectives]
        vector = [v for v in written if v is not None and math.isfinite(v)]
        if len(vector) < len(written):
            return Judgement(False)  # not all objectives written yet at this step
        goals = [o.goal for o in self.spec.objectives]
        others, numbers = [], []
        for curve in self.curves.values():
            at = curve.at(obs.step)
            if at is not None:
                others.append(at)
                numbers.append(curve.number)
        if len(others) < rule.min_dominating:
            return Judgement(False)
        point = to_minimize([vector], goals)[0]
        matrix = to_minimize(others, goals)
        dominating = np.all(matrix <= point, axis=1) & np.any(matrix < point, axis=1)
        count = dominated_by_count(point, matrix)
        if count < rule.min_dominating:
            return Judgement(False)
        by = sorted(n for n, d in zip(numbers, dominating, strict=True) if d)
        shown = ", ".join(f"#{n}" for n in by[:5]) + (" ..." if len(by) > 5 else "")
        values = ", ".join(
            f"{o.metric}={v:.6g}" for o, v in zip(self.spec.objectives, vector, strict=True)
        )
        return Judgement(
            True,
            f"stopped early at step {obs.step} ({values}): dominated by {count} completed "
            f"trial(s) at that step ({shown})",
        )

    def longest_step(self) -> int | None:
        """The last eval step of the longest completed (feasible) trial, None before any."""
        self.db.run(self._refresh)
        return max((c.steps[-1] for c in self.curves.values() if c.steps), default=None)

    def _refresh(self, session: Session) -> None:
        """Read the curves of trials completed since the last look."""
        known = set(self.curves) | self.ignored
        rows = session.execute(
            select(TrialRunRow.id, TrialRunRow.number, TrialRunRow.objective_step_id).where(
                TrialRunRow.study_id == self.study.id,
                TrialRunRow.state == "COMPLETED",
                TrialRunRow.objective_step_id.is_not(None),
            )
        ).all()
        for run_id, number, objective_step_id in rows:
            if run_id in known or number is None or objective_step_id is None:
                continue
            if not self._feasible(session, objective_step_id):
                self.ignored.add(run_id)
                continue
            curve = self._curve(session, run_id, int(number), objective_step_id)
            if curve.steps:
                self.curves[run_id] = curve
            else:
                self.ignored.add(run_id)

    def _feasible(self, session: Session, objective_step_id: int) -> bool:
        if not self.spec.constraints:
            return True
        metrics = step_metrics(session, objective_step_id)
        for constraint in self.spec.constraints:
            value = metrics.get(constraint.metric_id)
            if value is None or constraint.violation(value) > 0:
                return False
        return True

    def _curve(self, session: Session, run_id: int, number: int, objective_step_id: int) -> _Curve:
        """The run's objective vectors at every eval step of its ranking eval dir."""
        ranking = aliased(EvalStepRow)
        tags = [o.metric for o in self.spec.objectives]
        rows = session.execute(
            select(EvalStepRow.step, EvalMetricRow.tag, EvalMetricRow.value)
            .join(EvalMetricRow, EvalMetricRow.eval_step_id == EvalStepRow.id)
            .join(ranking, ranking.id == objective_step_id)
            .where(
                EvalStepRow.run_id == run_id,
                EvalStepRow.eval_name == ranking.eval_name,
                EvalMetricRow.tag.in_(tags),
            )
            .order_by(EvalStepRow.step)
        ).all()
        by_step: dict[int, dict[str, float | None]] = {}
        for step, tag, value in rows:
            by_step.setdefault(int(step), {})[tag] = value
        steps, vectors = [], []
        for step, values in sorted(by_step.items()):
            vector = [values.get(tag) for tag in tags]
            if all(v is not None and math.isfinite(v) for v in vector):
                steps.append(step)
                vectors.append(tuple(float(v or 0.0) for v in vector))
        return _Curve(number, steps, vectors)
