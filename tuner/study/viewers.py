"""What the manager writes for the viewers users open on a study: optuna-dashboard (user attrs
of each Optuna trial, `tuner.study.optuna_attrs`) and TensorBoard (HParams summaries,
`tuner.outputs.hparams`).

These are copies for viewing: each write is tried once, and a failure is a warning, never a
failed trial (our tables are the authority and were written first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna

from tuner.artifacts.store import ArtifactStore, TrialPaths
from tuner.domain.entities import Study, TrialRun
from tuner.outputs import hparams
from tuner.persistence import repository as repo
from tuner.study import optuna_attrs
from tuner.study.operations import Backend, name_objective

__all__ = [
    "Outcome",
    "name_study_objective",
    "session_group",
    "trial_finished",
    "trial_started",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the manager recorded it."""

    state: str
    reason: str | None
    exit_code: int | None = None
    best_step: int | None = None
    #: Only a COMPLETED trial has one (the value told to Optuna).
    objective: hparams.Objective | None = None


def _attempt(what: str, study: str, number: int, work: Callable[[], object]) -> None:
    try:
        work()
    except optuna.exceptions.UpdateFinishedTrialError:
        logger.warning(
            "study %s trial %d: %s not written: its Optuna trial was already finished "
            "(told outside the tuner?)",
            study,
            number,
            what,
        )
    except Exception as exc:
        logger.warning("study %s trial %d: %s not written: %s", study, number, what, exc)


def session_group(study: str, number: int, store: ArtifactStore) -> str:
    """A trial's HParams group name: its dir relative to the artifact root, unique across
    studies (sessions of one group are merged into one row of TensorBoard's table)."""
    return store.relative(store.trial_paths(study, number).output_dir)


def trial_started(
    backend: Backend,
    store: ArtifactStore,
    study: Study,
    *,
    number: int,
    optuna_trial_id: int,
    paths: TrialPaths,
    trainer_values: Mapping[str, Any],
) -> None:
    """At launch: the Optuna trial's launch attrs, the study's HParams experiment (once) and
    the trial's HParams session start."""
    name = study.name
    _attempt(
        "optuna-dashboard attrs",
        name,
        number,
        lambda: optuna_attrs.set_attrs(
            backend.storage,
            optuna_trial_id,
            optuna_attrs.launch_attrs(store, paths, trainer_values),
        ),
    )
    _attempt(
        "TensorBoard experiment summary",
        name,
        number,
        lambda: hparams.write_experiment(store.study_dir(name), study.spec),
    )
    _attempt(
        "TensorBoard session start",
        name,
        number,
        lambda: hparams.write_session_start(
            paths.output_dir,
            spec=study.spec,
            group=session_group(name, number, store),
            params=trainer_values,
            start_time=time.time(),
        ),
    )


@dataclass(frozen=True)
class RunFacts:
    """What the viewers need of a run at its end (its manager knows them: no read)."""

    number: int | None
    optuna_trial_id: int | None
    output_dir: str | None
    params: Mapping[str, Any]
    started_at: datetime


def trial_finished(
    backend: Backend,
    store: ArtifactStore,
    study: Study,
    run_id: int,
    outcome: Outcome,
    *,
    optuna_attrs_too: bool = True,
    known: RunFacts | None = None,
) -> None:
    """At the end, after the run's end is recorded and before Optuna is told (Optuna refuses
    attrs on a finished trial): the outcome attrs, then the HParams session end."""
    run: RunFacts | TrialRun
    if known is not None:
        run = known
    else:
        try:
            run = backend.db.run(lambda s: repo.get_run(s, run_id))
        except Exception as exc:
            logger.warning("study %s run %d: viewers not updated: %s", study.name, run_id, exc)
            return
    if run.number is None or run.output_dir is None:
        return
    number = run.number
    if optuna_attrs_too and run.optuna_trial_id is not None:
        attrs = optuna_attrs.outcome_attrs(
            outcome.state, outcome.reason, exit_code=outcome.exit_code, best_step=outcome.best_step
        )
        trial_id = run.optuna_trial_id
        _attempt(
            "optuna-dashboard attrs",
            study.name,
            number,
            lambda: optuna_attrs.set_attrs(backend.storage, trial_id, attrs),
        )
    output_dir = run.output_dir
    _attempt(
        "TensorBoard session end",
        study.name,
        number,
        lambda: hparams.write_session_end(
            store.resolve(output_dir),
            spec=study.spec,
            group=session_group(study.name, number, store),
            params=run.params,
            start_time=run.started_at.timestamp(),
            state=outcome.state,
            end_time=time.time(),
            objective=outcome.objective,
        ),
    )


def name_study_objective(optuna_study: optuna.Study, study: Study) -> None:
    """Name the objective of a study submitted before studies were named at submit time."""
    try:
        if optuna_study.metric_names is None:
            name_objective(optuna_study, study.spec)
    except Exception as exc:
        logger.warning("study %s: objective name not written: %s", study.name, exc)
