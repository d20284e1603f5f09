"""The engine's link to Optuna: open a study once, report, tell, fail and requeue.

Optuna's storage is the sampler's view of a study; the run table is ours. A trial is told
exactly once, by the manager that holds its lease; a trial that must run again (STOPPED, taken
over, not started through the machine's fault) is failed in Optuna and its params enqueued, so
the next ask runs them first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.domain.entities import Study
from tuner.engine.outcome import Decision, RunState
from tuner.study import sampling, viewers
from tuner.study.operations import (
    Backend,
    OptunaStudyMissingError,
    optuna_study_missing,
    release_stale_trial_ids,
    tell,
)

logger = logging.getLogger(__name__)


class OptunaLink:
    """Opened Optuna studies of one manager, and what it tells them."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._opened: dict[int, optuna.Study] = {}

    def study(self, study: Study) -> optuna.Study:
        """The study's Optuna study, opened once (seeded by how many trials it has)."""
        if study.id not in self._opened:
            try:
                optuna_id = self.backend.storage.get_study_id_from_name(study.name)
                existing = len(self.backend.storage.get_all_trials(optuna_id))
                opened = self.backend.optuna_study(study.spec, seed_offset=existing)
            except KeyError:
                raise OptunaStudyMissingError(study.name) from None
            viewers.name_study_objective(opened, study)
            self._opened[study.id] = opened
        return self._opened[study.id]

    def gone(self, study: Study) -> bool:
        """Whether the study's Optuna study was deleted (or renamed) outside the tuner."""
        opened = self._opened.get(study.id)
        optuna_id = opened._study_id if opened is not None else None
        return optuna_study_missing(self.backend.storage, study.name, optuna_id)

    def forget(self, study: Study) -> None:
        """Drop a study whose Optuna study is gone, and the trial ids it held."""
        self._opened.pop(study.id, None)
        release_stale_trial_ids(self.backend)

    def trial(self, optuna_trial_id: int) -> FrozenTrial:
        return self.backend.storage.get_trial(optuna_trial_id)

    def report(self, optuna_trial_id: int, step: int, value: float) -> None:
        """`Trial.report` without building a `Trial` (whose constructor re-reads the trial from
        storage on every report). `UpdateFinishedTrialError` if it was told already."""
        self.backend.storage.set_trial_intermediate_value(optuna_trial_id, step, value)

    def should_prune(self, study: Study, optuna_trial_id: int) -> bool:
        """`Trial.should_prune`, from the trial's stored intermediate values."""
        opened = self.study(study)
        return opened.pruner.prune(opened, self.backend.storage.get_trial(optuna_trial_id))

    def tell(self, study: Study, trial: int | optuna.trial.Trial, decision: Decision) -> None:
        """Tell the decided outcome: a value for COMPLETED, PRUNED, or FAIL for the others."""
        opened = self.study(study)
        number = trial if isinstance(trial, int) else trial.number
        try:
            if decision.state is RunState.COMPLETED:
                if decision.constraints:
                    trial_id = self._trial_id(opened, trial)
                    self.backend.storage.set_trial_user_attr(
                        trial_id, sampling.CONSTRAINTS_ATTR, list(decision.constraints)
                    )
                tell(opened, trial, list(decision.values) or decision.objective)
            else:
                pruned = decision.state is RunState.PRUNED
                tell(opened, trial, state=TrialState.PRUNED if pruned else TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            logger.warning("study %s trial %d: already told", study.name, number)

    @staticmethod
    def _trial_id(opened: optuna.Study, trial: int | optuna.trial.Trial) -> int:
        if isinstance(trial, optuna.trial.Trial):
            return trial._trial_id
        return opened._storage.get_trial_id_from_study_id_trial_number(opened._study_id, trial)

    def longest_completed_step(self, study: Study) -> int | None:
        """The last reported step of the study's longest COMPLETED trial (None: none yet)."""
        trials = self.study(study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        steps = [max(t.intermediate_values) for t in trials if t.intermediate_values]
        return max(steps, default=None)

    def fail(self, study: Study, number: int | optuna.trial.Trial) -> None:
        tell(self.study(study), number, state=TrialState.FAIL)

    def requeue(self, study: Study, params: Mapping[str, Any], *, retry_of: int) -> None:
        """Enqueue a trial's params again: the study's next ask runs them first."""
        self.study(study).enqueue_trial(dict(params), user_attrs={"retry_of": retry_of})

    def fail_and_requeue(
        self, study: Study, trial: int | optuna.trial.Trial, params: Mapping[str, Any]
    ) -> None:
        """Fail a trial that is not the trainer's fault and run its params again."""
        number = trial if isinstance(trial, int) else trial.number
        self.fail(study, trial)
        self.requeue(study, params, retry_of=number)
