"""Study operations shared by the CLI, the API and the manager: submit, resume, stop, best.

This module pairs each of our study rows with its Optuna study (same name, same database), so
Optuna's own tools (optuna-dashboard, `optuna.load_study`) can open every study.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import select, update

from tuner.domain.entities import BestModel, Study
from tuner.domain.errors import (
    DuplicateStudyError,
    SpecError,
    StudyNotFoundError,
    StudyStateError,
    TunerError,
)
from tuner.domain.spec import MAX_TRIALS, StudySpec
from tuner.domain.trainers import TrainerRegistry
from tuner.persistence import Database, optuna_engine_kwargs, tune_optuna_engine
from tuner.persistence import repository as repo
from tuner.persistence.models import StudyRow, TrialRunRow
from tuner.study import sampling
from tuner.study.front import several_objectives_error

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class OptunaStudyMissingError(TunerError):
    """A study's Optuna study is gone: deleted (or renamed) outside the tuner, e.g. in
    optuna-dashboard. Its trials can be neither told nor proposed any more."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"its Optuna study {name!r} was deleted outside the tuner (in optuna-dashboard?): "
            "no trial of it can be told or proposed any more; what ran stays in the tuner's "
            "tables: delete the study (`tuner delete`) and submit it again to go on"
        )


@dataclass
class Backend:
    """The database (our tables) and Optuna's storage on the same URL."""

    db: Database
    storage: RDBStorage

    @classmethod
    def connect(cls, url: str, *, auto_init: bool = True, pre_ping: bool = True) -> Backend:
        """Our database and Optuna's storage; `pre_ping=False` for a study manager's own
        (see `create_db_engine`)."""
        db = Database(url, pre_ping=pre_ping)
        db.prepare(auto_init=auto_init)
        storage = RDBStorage(db.url, engine_kwargs=optuna_engine_kwargs(db.url, pre_ping=pre_ping))
        tune_optuna_engine(storage.engine, db.url)
        return cls(db=db, storage=storage)

    def close(self) -> None:
        self.db.dispose()
        self.storage.remove_session()
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            engine.dispose()

    def optuna_study(self, spec: StudySpec, *, seed_offset: int = 0) -> optuna.Study:
        """The Optuna study of `spec`, with a sampler seeded so a resumed study does not repeat.

        Samplers keep no state of their own: TPE and friends rebuild it from the storage, and
        the seed is offset by the number of trials so far when a manager (re)opens the study.
        """
        seeded = spec
        if spec.seed is not None and seed_offset:
            seeded = spec.model_copy(update={"seed": spec.seed + seed_offset})
        return optuna.load_study(
            study_name=spec.name,
            storage=self.storage,
            sampler=sampling.make_sampler(seeded),
            pruner=sampling.make_pruner(spec.pruner),
        )


def submit_study(backend: Backend, spec: StudySpec, registry: TrainerRegistry) -> Study:
    """Create a study (ours and Optuna's); refuse unknown trainers and bad warm starts first."""
    registry.get(spec.trainer)
    sampling.check_available(spec)
    previous = _previous_trials(backend, spec)
    with backend.db.session() as session:
        if repo.find_study(session, spec.name) is not None:
            raise DuplicateStudyError(f"name: a study named {spec.name!r} already exists")
    # Optuna's study first (its own transaction: SQLite has one writer at a time), then ours;
    # if ours cannot be written, Optuna's is removed again.
    try:
        optuna_study = optuna.create_study(
            study_name=spec.name, storage=backend.storage, directions=sampling.directions(spec)
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise DuplicateStudyError(
            f"name: an Optuna study named {spec.name!r} already exists in this database"
        ) from None
    try:
        name_objective(optuna_study, spec)
        with backend.db.session() as session:
            study = repo.create_study(session, spec)
        optuna_study.set_user_attr("tuner_study_id", study.id)
        if previous:
            optuna_study.add_trials(previous)
    except BaseException:
        optuna.delete_study(study_name=spec.name, storage=backend.storage)
        raise
    return study


def name_objective(study: optuna.Study, spec: StudySpec) -> None:
    """Name the study's objective after the metric tag, for optuna-dashboard and Optuna's
    plots (which otherwise say "Objective 0")."""
    with warnings.catch_warnings():  # experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objective.metric for objective in spec.objectives])


def optuna_study_missing(storage: RDBStorage, name: str, optuna_id: int | None = None) -> bool:
    """Whether the Optuna study named `name` (with id `optuna_id`, when given) is gone.

    Deleting a study in optuna-dashboard removes Optuna's study and trials, not ours; renaming
    one there copies it under a new name and deletes the old one.
    """
    try:
        found = storage.get_study_id_from_name(name)
    except KeyError:
        return True
    return optuna_id is not None and found != optuna_id


def release_stale_trial_ids(backend: Backend) -> int:
    """Forget the Optuna trial ids of our runs whose Optuna study is gone; return how many.

    Deleting a study in optuna-dashboard removes its Optuna trials, not our runs. On SQLite the
    freed trial ids are given to the next trials of any study (a row id is the largest one + 1),
    which our runs would still claim (`optuna_trial_id` is unique): each new trial would be
    refused as "taken" and left RUNNING in Optuna.
    """
    with backend.db.session() as session:
        studies = session.execute(select(StudyRow.id, StudyRow.name)).all()
    gone = [study_id for study_id, name in studies if optuna_study_missing(backend.storage, name)]
    if not gone:
        return 0
    with backend.db.session() as session:
        released = session.execute(
            update(TrialRunRow)
            .where(TrialRunRow.study_id.in_(gone), TrialRunRow.optuna_trial_id.is_not(None))
            .values(optuna_trial_id=None)
        )
        count = int(getattr(released, "rowcount", 0) or 0)
    if count:
        logger.warning(
            "released the Optuna trial ids of %d run(s) of studies whose Optuna study was "
            "deleted outside the tuner",
            count,
        )
    return count


def _previous_trials(backend: Backend, spec: StudySpec) -> list[optuna.trial.FrozenTrial]:
    """Finished trials of `resumePreviousJobId`, checked against the new search space."""
    previous_name = spec.hyperparameters.resume_previous_job_id
    if not previous_name:
        return []
    field = "hyperparameters.resumePreviousJobId"
    with backend.db.session() as session:
        previous = repo.find_study(session, previous_name)
    if previous is None:
        raise SpecError([(field, f"no study named {previous_name!r} to resume from")])
    if previous.spec.objectives != spec.objectives:
        theirs = ", ".join(f"{o.metric} ({o.goal.value})" for o in previous.spec.objectives)
        raise SpecError([(field, f"study {previous_name!r} optimized {theirs}")])
    if previous.spec.constraints != spec.constraints:
        raise SpecError([(field, f"study {previous_name!r} has other safety constraints")])
    space = sampling.search_space(spec)
    old = optuna.load_study(study_name=previous_name, storage=backend.storage)
    trials = old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for trial in trials:
        active = {p.parameter_name for p in sampling.active_params(spec, trial.params)}
        if not set(trial.params) <= set(space) or not active <= set(trial.params):
            raise SpecError(
                [
                    (
                        field,
                        f"incompatible search space: {previous_name!r} has params "
                        f"{sorted(trial.params)}, this study {sorted(space)}",
                    )
                ]
            )
        for name, value in trial.params.items():
            dist = space[name]
            if not dist._contains(dist.to_internal_repr(value)):
                raise SpecError(
                    [
                        (
                            field,
                            f"incompatible search space: trial {trial.number} of "
                            f"{previous_name!r} has {name}={value!r}, outside this study's range",
                        )
                    ]
                )
    return [
        optuna.trial.create_trial(
            params=t.params,
            distributions={name: space[name] for name in t.params},
            values=t.values,
            intermediate_values=t.intermediate_values,
            user_attrs={**t.user_attrs, "warm_start_from": f"{previous_name}#{t.number}"},
        )
        for t in trials
    ]


def resume_study(backend: Backend, ref: str | int, *, max_trials: int | None = None) -> Study:
    """Set a stopped, failed or completed study running again, optionally with a larger budget."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        if max_trials is not None:
            if max_trials < study.spec.max_trials:
                raise SpecError(
                    [("maxTrials", f"must be >= the current budget ({study.spec.max_trials})")]
                )
            hp = study.spec.hyperparameters.model_copy(update={"max_trials": max_trials})
            spec = study.spec.model_copy(update={"hyperparameters": hp})
            repo.update_study_spec(session, study.id, spec)
        repo.set_study_state(session, study.id, "RUNNING", None)
        return repo.get_study(session, study.id)


def retry_failed(backend: Backend, ref: str | int) -> Study:
    """Enqueue the params of every FAILED trial as new trials, extending the budget to fit.

    The study runs again (a study that failed on `maxFailedTrials` gets that many more).
    """
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        failed = [r for r in repo.runs(session, study.id, state="FAILED") if r.number is not None]
    optuna_study = optuna.load_study(study_name=study.name, storage=backend.storage)
    trials = optuna_study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    failed = [r for r in failed if r.number not in retried]
    if not failed:
        raise StudyStateError(f"study {study.name!r} has no failed trials to retry")
    frozen = {t.number: t for t in trials}
    for run in failed:
        assert run.number is not None
        optuna_study.enqueue_trial(frozen[run.number].params, user_attrs={"retry_of": run.number})
    hp = study.spec.hyperparameters
    update = {
        "max_trials": min(MAX_TRIALS, hp.max_trials + len(failed)),
        # Room for every retried trial to fail once more before the study fails again.
        "max_failed_trials": (hp.max_failed_trials or len(failed)) + len(failed),
    }
    spec = study.spec.model_copy(update={"hyperparameters": hp.model_copy(update=update)})
    with backend.db.session() as session:
        repo.update_study_spec(session, study.id, spec)
        repo.set_study_state(session, study.id, "RUNNING", f"retrying {len(failed)} failed trials")
        return repo.get_study(session, study.id)


def request_stop(backend: Backend, ref: str | int) -> Study:
    """Mark a study STOPPED; the managers running its trials stop them within a tick."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        if study.state == "RUNNING":
            repo.set_study_state(session, study.id, "STOPPED", "stopped on request")
        return repo.get_study(session, study.id)


def delete_study(backend: Backend, ref: str | int) -> Study:
    """Delete a study's records (ours and Optuna's); refused while any trial runs."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        running = repo.trial_counts(session, study.id).get("RUNNING", 0)
        if running:
            raise StudyStateError(
                f"study {study.name!r} has {running} running trial(s); stop it first"
            )
        repo.delete_study(session, study.id)
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=study.name, storage=backend.storage)
    return study


def best_model(backend: Backend, ref: str | int) -> BestModel:
    """The best COMPLETED trial, its best eval step and that step's checkpoint and export."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        if study.spec.multi_objective:
            raise several_objectives_error(backend, study)
        run = repo.best_completed_run(session, study)
        if run is None or run.number is None:
            raise StudyNotFoundError(
                f"study {study.name!r} has no completed trial with an objective yet"
            )
        detail = repo.trial_detail(session, study, run.number)
    step = next(s for s in detail.steps if s.id == run.objective_step_id)
    objective = step.metrics[study.spec.metric_tag]
    best_step = detail.best_step if detail.best_step is not None else step.step
    checkpoint = next((c for c in detail.checkpoints if c.step == best_step), None)
    matching = [e for e in detail.exports if e.step == best_step]
    export = matching[-1] if matching else None
    return BestModel(
        study=study,
        run=run,
        objective=objective,
        step=best_step,
        checkpoint=checkpoint,
        export=export,
        other_exports=[e for e in detail.exports if e is not export],
    )


def tell(
    study: optuna.Study,
    number: int | optuna.trial.Trial,
    value: float | Sequence[float] | None = None,
    *,
    state: TrialState | None = None,
) -> None:
    """`Study.tell` for trials run outside `optimize()`.

    GridSampler calls `study.stop()` when its grid is exhausted, which Optuna refuses outside
    `optimize()` (after the trial's state is stored); the tuner ends a grid study by its own
    budget, so that refusal is ignored here.
    """
    try:
        if state is None:
            study.tell(number, value, skip_if_finished=True)
        else:
            study.tell(number, state=state, skip_if_finished=True)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def require_state(study: Study, *states: str) -> None:
    if study.state not in states:
        raise StudyStateError(f"study {study.name!r} is {study.state}")
