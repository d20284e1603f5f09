"""A trial's end: decide its outcome once, record it, update the viewers, tell Optuna.

The run's end is recorded first, conditional on the lease (`LeaseLostError` if another manager
took the run over: then nothing is told or enqueued). Each step is done once (`Step`), so a
finish retried after a database error picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tuner.artifacts.infrastructure import artifact_store_problem
from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.entities import Lease, Study
from tuner.domain.errors import LeaseLostError
from tuner.domain.spec import ObjectiveMode
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.cold_retry import ColdRetries
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import Decision, RunState, Step
from tuner.engine.store_sync import BackOff, StoreSync
from tuner.engine.verdict import decide, final_problems, ranking_vector
from tuner.engine.writes import LeaseWrites
from tuner.outputs import hparams
from tuner.persistence.evals import step_metrics, tags_seen
from tuner.persistence.kept import unmatched_exports
from tuner.persistence.runs import add_problems, finish_run
from tuner.study import viewers
from tuner.study.operations import Backend
from tuner.trial.execution import tail_lines


def viewers_outcome(
    trial: ActiveTrial, decision: Decision, exit_code: int | None
) -> viewers.Outcome:
    """The decided outcome as the viewers show it."""
    source = trial.best if trial.spec.objective is ObjectiveMode.BEST else trial.last
    objective = None
    if decision.objective is not None and source is not None:
        metrics = [o.metric for o in trial.spec.objectives]
        others = dict(zip(metrics[1:], decision.values[1:], strict=False))
        objective = hparams.Objective(step=source.step, value=decision.objective, others=others)
    return viewers.Outcome(
        decision.state.value,
        decision.reason,
        exit_code=exit_code,
        best_step=trial.best.step if trial.best else None,
        objective=objective,
    )


class Finisher:
    """Decides and records the end of one trial."""

    def __init__(
        self,
        backend: Backend,
        store: ArtifactStore,
        settings: Settings,
        writes: LeaseWrites,
        optuna_link: OptunaLink,
        store_sync: StoreSync,
        cold_retries: ColdRetries,
        *,
        back_off: BackOff,
    ) -> None:
        self.backend = backend
        self.store = store
        self.settings = settings
        self.writes = writes
        self.optuna = optuna_link
        self.store_sync = store_sync
        self.cold_retries = cold_retries
        self.back_off = back_off

    def decide(self, trial: ActiveTrial, code: int) -> Decision:
        """The trial's outcome, decided once."""
        if trial.decision is None:
            verdict = decide(
                trial,
                code,
                log_tail=tail_lines(trial.paths.log_path, self.settings.log_tail_lines),
                store_problem=lambda: artifact_store_problem(self.store.root),
                tags_seen=lambda name: self.writes.db.run(
                    lambda s: tags_seen(s, trial.run_id, name)
                ),
            )
            if verdict.infrastructure is not None:
                self.back_off(trial.study, verdict.infrastructure)
            trial.decision = self._with_vector(
                trial,
                Decision(
                    verdict.state, verdict.reason, verdict.objective, self._final_problems(trial)
                ),
            )
            self.cold_retries.judge(trial, code)
        return trial.decision

    def _with_vector(self, trial: ActiveTrial, decision: Decision) -> Decision:
        """A COMPLETED trial of a study with several metrics, with every objective and
        constraint read from its ranking step; FAILED when one is missing there."""
        spec = trial.spec
        source = trial.best if spec.objective is ObjectiveMode.BEST else trial.last
        if decision.state is not RunState.COMPLETED or source is None:
            return decision
        if not (spec.multi_objective or spec.constraints):
            return decision
        metrics = self.writes.db.run(lambda s: step_metrics(s, source.eval_step_id))
        vector = ranking_vector(spec, source.step, metrics)
        if isinstance(vector, str):
            return Decision(RunState.FAILED, vector, None, decision.problems)
        return replace(decision, values=vector.values, constraints=vector.constraints)

    def _final_problems(self, trial: ActiveTrial) -> tuple[str, ...]:
        if not trial.has_exports:
            return tuple(final_problems(trial, []))  # nothing recorded, nothing unmatched
        unmatched = self.writes.db.run(lambda s: unmatched_exports(s, trial.run_id))
        return tuple(final_problems(trial, unmatched))

    def finish(self, trial: ActiveTrial, code: int) -> None:
        """Decide, then record the end, update the viewers, tell Optuna, requeue a STOPPED
        trial's params: each step once."""
        decision = self.decide(trial, code)
        if Step.RECORDED not in trial.done:
            self._record(trial, decision, code)
        if Step.VIEWERS not in trial.done:
            self._update_viewers(trial, decision, code)
        self.store_sync.store_session_end(trial)
        if Step.TOLD not in trial.done:
            self.optuna.tell(trial.study, trial.optuna_trial or trial.number, decision)
            trial.done.add(Step.TOLD)
        if decision.state is RunState.STOPPED and Step.REQUEUED not in trial.done:
            params = self.optuna.trial(trial.optuna_trial_id).params
            self.optuna.requeue(trial.study, params, retry_of=trial.number)
            trial.done.add(Step.REQUEUED)
        trial.log.info("%s %s", decision.state, decision.reason or "")

    def _record(self, trial: ActiveTrial, decision: Decision, code: int) -> None:
        """The run's end, its deferred writes and its problems, in one transaction."""

        def record(session: Any) -> None:
            for work in trial.unflushed:
                work(session)
            if decision.problems:
                add_problems(session, trial.run_id, list(decision.problems))
            finish_run(
                session,
                trial.run_id,
                state=decision.state.value,
                exit_code=code,
                reason=decision.reason,
                lease=trial.lease,
                trainer_ended_at=trial.exited_at,
            )

        self.writes.write(trial.lease, record)
        trial.unflushed.clear()
        trial.done.add(Step.RECORDED)

    def _update_viewers(self, trial: ActiveTrial, decision: Decision, code: int) -> None:
        viewers.trial_finished(
            self.backend,
            self.store,
            trial.study,
            trial.run_id,
            viewers_outcome(trial, decision, code),
            optuna_attrs_too=Step.TOLD not in trial.done,
            known=viewers.RunFacts(
                number=trial.number,
                optuna_trial_id=trial.optuna_trial_id,
                output_dir=self.store.relative(trial.paths.output_dir),
                params=trial.params,
                started_at=trial.started_at,
            ),
        )
        trial.done.add(Step.VIEWERS)


def end_unstarted(
    backend: Backend,
    store: ArtifactStore,
    optuna_link: OptunaLink,
    study: Study,
    lease: Lease,
    *,
    number: int,
    optuna_params: Mapping[str, Any],
    state: RunState,
    reason: str,
) -> bool:
    """Record the end of a claimed run whose trainer never ran: STOPPED (the machine's or the
    cluster's fault: its params run again), FAILED (the trainer's) or PRUNED (stopped by hand
    before it started); the viewers updated and Optuna told. False when the run's lease was
    lost meanwhile (nothing recorded)."""
    try:
        backend.db.run(
            lambda s: finish_run(s, lease.run_id, state=state, reason=reason, lease=lease)
        )
    except LeaseLostError:
        return False
    viewers.trial_finished(backend, store, study, lease.run_id, viewers.Outcome(state, reason))
    if optuna_link.gone(study):
        return True
    if state is RunState.STOPPED:
        optuna_link.fail_and_requeue(study, number, optuna_params)
    elif state is RunState.PRUNED:
        optuna_link.tell(study, number, Decision(RunState.PRUNED, reason))
    else:
        optuna_link.fail(study, number)
    return True
