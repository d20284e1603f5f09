"""Ingest what a running trial wrote, and act on it: store every metric, follow the objective,
report it to Optuna and prune, keep the best step's checkpoint and exports.

One `ingest` per trial per tick reads its event files and hypertune reports from where it
stopped (`TrialOutputs.poll`), stores the new values with the files' offsets in one
transaction, and defers the rest of its writes to the trial's next commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import optuna

from tuner.domain.entities import Observation, Study
from tuner.domain.spec import Check, ObjectiveMode
from tuner.domain.telemetry import INGEST_LAG, PRUNE_LATENCY
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.dominance import DominanceRule
from tuner.engine.keeper import Keeper
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import RunState
from tuner.engine.verdict import final_step_from_flags
from tuner.engine.writes import LeaseWrites
from tuner.outputs.events import CheckpointPathValue
from tuner.persistence.evals import objective_rank, record_eval_values, set_objective_steps

#: Called when a trial read values after its warm start failed and it was run again cold.
ColdRetryWorked = Callable[[ActiveTrial], None]


class Ingestor:
    """Reads, stores and acts on one trial's metrics."""

    def __init__(
        self,
        writes: LeaseWrites,
        keeper: Keeper,
        optuna_link: OptunaLink,
        *,
        cold_retry_worked: ColdRetryWorked,
    ) -> None:
        self.writes = writes
        self.keeper = keeper
        self.optuna = optuna_link
        self.cold_retry_worked = cold_retry_worked
        #: Seconds from an objective value's event being written to the prune decision.
        self.prune_latencies: list[float] = []
        #: The early-stopping rule of each study with several objectives.
        self.dominance_rules: dict[int, DominanceRule] = {}

    def ingest(self, trial: ActiveTrial, *, final: bool = False, flush: bool = True) -> None:
        """Read what the trial wrote, store it, act on it. `flush=False`: the deferred writes
        wait for the end's transaction (the trial has exited)."""
        polled_at = time.time()
        result = trial.outputs.poll(final=final)
        trial.pending_values.extend(result.values)
        trial.pending_offsets.update(result.changed_offsets)
        if result.values:
            trial.progressed = time.monotonic()
            trial.values_read = True
            if trial.warm_failure is not None:
                self.cold_retry_worked(trial)
        for value in result.values:
            if isinstance(value, CheckpointPathValue):
                trial.reported_checkpoints[(value.eval_name, value.step)] = value.path
        observations = self._store_values(trial)
        if result.problems:
            self.writes.add_problems(trial, result.problems)
            for problem in result.problems:
                trial.log.warning("%s", problem)
        for observation in observations:
            self._observe(trial, observation)
        self.keeper.keep_best_checkpoint(trial)
        recorded = self.keeper.record_exports(trial, polled_at)
        trial.has_exports = trial.has_exports or recorded
        matched = bool(observations) and trial.has_exports and self.keeper.match_exports(trial)
        if final and trial.has_exports:
            matched = self.keeper.tie_unevaluated_exports(trial) or matched
        if recorded or matched or (observations and trial.has_exports):
            self.keeper.keep_best_export(trial)
        if flush and not final:
            self.writes.flush(trial)

    def _store_values(self, trial: ActiveTrial) -> list[Observation]:
        """Store the values read (and any kept from a database outage) with their offsets."""
        if not (trial.pending_values or trial.pending_offsets):
            return []
        observations: list[Observation] = self.writes.write(
            trial.lease,
            lambda s: record_eval_values(
                s,
                trial.run_id,
                trial.pending_values,
                trial.pending_offsets,
                objective_tag=trial.spec.metric_tag,
                study_id=trial.study.id,
                number=trial.number,
            ),
        )
        stored_at = time.time()
        step_times: dict[tuple[str, int], float] = {}
        for value in trial.pending_values:
            key = (value.eval_name, value.step)
            step_times[key] = min(step_times.get(key, value.wall_time), value.wall_time)
        for wall_time in step_times.values():
            INGEST_LAG.observe(max(0.0, stored_at - wall_time))
        trial.pending_values = []
        trial.pending_offsets = {}
        return observations

    def _observe(self, trial: ActiveTrial, obs: Observation) -> None:
        """A new objective value: follow the best and the last, report it, maybe prune."""
        if not trial.outputs.accepts_objective_from(obs.eval_name):
            return
        if trial.objective_dir is None:
            trial.objective_dir = obs.eval_name
            trial.outputs.settle()
        if obs.eval_name != trial.objective_dir:
            return
        if obs.all_zero and trial.spec.checks(Check.EMPTY_EVAL):
            trial.empty_steps.append(obs.step)
            trial.log.warning(
                "eval at step %d has every metric exactly 0 (no data?); not counted", obs.step
            )
            return
        trial.trained = trial.trained or obs.step > 0
        if trial.last is None or obs.step >= trial.last.step:
            trial.last = obs
        if obs.is_finite and (
            trial.best is None
            or trial.spec.is_better(obs.value, trial.best.value)
            or self._ranks_last_step(trial, obs)
        ):
            trial.best = obs
        self._point_at_objective(trial)
        if obs.is_finite and trial.stop is None and obs.step not in trial.reported_steps:
            self._report_and_maybe_prune(trial, obs)

    @staticmethod
    def _ranks_last_step(trial: ActiveTrial, obs: Observation) -> bool:
        """With several objectives under `final` (LAST_MEASUREMENT) the kept step is the last
        one: one checkpoint and export stand for the whole vector the trial ranks by."""
        spec = trial.spec
        return (
            spec.multi_objective
            and spec.objective is ObjectiveMode.FINAL
            and trial.best is not None
            and obs.step >= trial.best.step
        )

    def _point_at_objective(self, trial: ActiveTrial) -> None:
        """The run's best and objective eval steps, and its rank, with the next commit."""
        objective = trial.best if trial.spec.objective is ObjectiveMode.BEST else trial.last
        best_id = trial.best.eval_step_id if trial.best else None
        objective_id = objective.eval_step_id if objective else None
        rank = objective_rank(objective.value if objective else None, trial.spec.goal)
        self.writes.later(
            trial,
            lambda s: set_objective_steps(
                s,
                trial.run_id,
                best_step_id=best_id,
                objective_step_id=objective_id,
                objective_rank=rank,
            ),
        )

    def _report_and_maybe_prune(self, trial: ActiveTrial, obs: Observation) -> None:
        trial.reported_steps.add(obs.step)
        try:
            # Optuna takes no intermediate values for several objectives (its samplers then
            # score pruned trials by a direction such a study has not): our tables have them.
            if not trial.spec.multi_objective:
                self.optuna.report(trial.optuna_trial_id, obs.step, obs.value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told by the manager that took the run over (LeaseLostError), or, while the run
            # is still ours, by someone outside the tuner (optuna-dashboard's "tell").
            self.writes.write(trial.lease, lambda s: None)
            self._told_elsewhere(trial, obs)
            return
        rule = trial.spec.pruner
        if rule is None:
            return
        reason = f"stopped early at step {obs.step} ({trial.spec.metric_tag}={obs.value:.6g})"
        if rule.type == "dominated":
            judgement = self._dominance(trial.study).judge(obs, rule)
            prune, reason = judgement.stop, judgement.reason
        else:
            prune = self.optuna.should_prune(trial.study, trial.optuna_trial_id)
        latency = max(0.0, time.time() - obs.wall_time)
        self.prune_latencies.append(latency)
        PRUNE_LATENCY.observe(latency)
        trial.log.debug("step %d: prune decision %.3fs after the eval", obs.step, latency)
        if prune and (last := self._last_step(trial)) is not None and obs.step >= last[0]:
            trial.log.info("not pruned at step %d: its last eval (%s)", obs.step, last[1])
            prune = False
        if prune and trial.stop_with(RunState.PRUNED, reason, level=logging.DEBUG):
            trial.log.info("pruned at step %d", obs.step)

    def _dominance(self, study: Study) -> DominanceRule:
        rule = self.dominance_rules.get(study.id)
        if rule is None or rule.study.spec != study.spec:
            rule = self.dominance_rules[study.id] = DominanceRule(self.writes.db, study)
        return rule

    def _last_step(self, trial: ActiveTrial) -> tuple[int, str] | None:
        """The step of a trial's last eval, and how it is known: a pruner never stops a trial
        there (it has paid its whole cost, and its outcome is a completed trial's)."""
        flagged = final_step_from_flags(list(trial.spec.args), trial.params)
        if flagged is not None:
            return flagged, f"it trains to step {flagged}"
        longest = (
            self._dominance(trial.study).longest_step()
            if trial.spec.multi_objective
            else self.optuna.longest_completed_step(trial.study)
        )
        if longest is not None:
            return longest, f"the longest completed trial ended at step {longest}"
        return None

    def _told_elsewhere(self, trial: ActiveTrial, obs: Observation) -> None:
        """Stop a trial whose Optuna trial was finished outside the tuner; it is FAILED: the
        tuner counts as completed only what it saw the trainer complete."""
        told = self.optuna.trial(trial.optuna_trial_id)
        value = f" (value {told.value})" if told.value is not None else ""
        trial.stop_with(
            RunState.FAILED,
            f"its Optuna trial was told {told.state.name}{value} outside the tuner, e.g. in "
            f"optuna-dashboard, while it ran; stopped at step {obs.step}",
        )
