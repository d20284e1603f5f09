"""Hyperparameter importances of a study, by Optuna's own evaluators, cached per study.

The trials come from the tuner's tables (the COMPLETED trials' params and objectives, the
values the leaderboard ranks by), not from Optuna's copy, and are handed to the evaluator in an
in-memory Optuna study. An evaluation is kept until the study's count of finished trials
changes, so a page that asks after every event costs one COUNT query, not a new forest.

With the leaderboard's state and filter (`trial_queries.parse_query`), the evaluation uses the
COMPLETED trials they keep (the same SQL conditions as the trial list), kept per query.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Container, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import optuna
from optuna.distributions import BaseDistribution
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from sqlalchemy import select

from tuner.domain.entities import Study
from tuner.domain.errors import QueryError, StudyStateError
from tuner.domain.spec import Goal, ParamType, ScaleType, StudySpec
from tuner.persistence import repository as repo
from tuner.persistence.models import TrialRunRow
from tuner.persistence.trial_queries import TrialQuery, count_matching, matching, parse_query
from tuner.study import sampling
from tuner.study.operations import Backend

Evaluator = Literal["PED_ANOVA", "FANOVA", "MEAN_DECREASE_IMPURITY"]
EVALUATORS: tuple[Evaluator, ...] = ("PED_ANOVA", "FANOVA", "MEAN_DECREASE_IMPURITY")
#: Evaluators that fit a random forest: scikit-learn, which the tuner does not depend on.
NEEDS_SKLEARN: tuple[Evaluator, ...] = ("FANOVA", "MEAN_DECREASE_IMPURITY")
#: Fewest COMPLETED trials with an objective an importance is computed from.
MIN_TRIALS = 2
#: Studies (times evaluators) whose last evaluation is kept.
CACHE_SIZE = 128
FINISHED_STATES = ("COMPLETED", "PRUNED", "FAILED")


@dataclass(frozen=True)
class Importances:
    study: str
    evaluator: Evaluator
    #: (parameter, importance), most important first; the importances sum to 1.
    params: list[tuple[str, float]]
    #: COMPLETED trials with a finite objective the evaluation used.
    trial_count: int
    #: COMPLETED + PRUNED + FAILED when it was computed: the cache's key.
    finished_count: int
    computed_at: datetime
    cached: bool = False
    #: Whether a state or filter narrowed the trials.
    filtered: bool = False
    #: Trials (any state) the state and filter kept when it was computed; every trial of the
    #: study without them.
    matched_count: int = 0


#: What to install for the evaluators that need scikit-learn.
ANALYSIS_EXTRA = "pip install 'estimator-tuner[analysis]'"


@functools.cache
def _sklearn_problem() -> str | None:
    """Why scikit-learn cannot be used here (None if it imports): imported once, for real, so
    a broken install counts as absent too."""
    try:
        importlib.import_module("sklearn")
    except Exception as exc:  # ImportError, or anything a broken install raises
        return f"scikit-learn cannot be imported on the server ({type(exc).__name__}: {exc})"
    return None


def unavailable_evaluators() -> dict[Evaluator, str]:
    """The evaluators this server cannot run, each with why and what to install."""
    problem = _sklearn_problem()
    if problem is None:
        return {}
    reason = f"fits a random forest and needs scikit-learn: {problem}; {ANALYSIS_EXTRA}"
    return {e: f"{e} {reason}" for e in NEEDS_SKLEARN}


def available_evaluators() -> list[Evaluator]:
    """The evaluators this server can run (the forests need scikit-learn)."""
    missing = unavailable_evaluators()
    return [e for e in EVALUATORS if e not in missing]


def make_evaluator(name: Evaluator) -> BaseImportanceEvaluator:
    missing = unavailable_evaluators()
    if name in missing:
        available = ", ".join(available_evaluators())
        raise QueryError([("evaluator", f"{missing[name]} (available: {available})")])
    if name == "FANOVA":
        return FanovaImportanceEvaluator(seed=0)
    if name == "MEAN_DECREASE_IMPURITY":
        return MeanDecreaseImpurityImportanceEvaluator(seed=0)
    return PedAnovaImportanceEvaluator()


class ImportanceCache:
    """The last evaluation per (study, evaluator), valid while the finished count is the same.

    One lock per key: watchers of one study that ask at once wait for one evaluation.
    """

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], Importances] = OrderedDict()
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(
        self,
        backend: Backend,
        ref: str | int,
        evaluator: Evaluator,
        *,
        states: Sequence[str] = (),
        filters: Sequence[str] = (),
    ) -> Importances:
        if evaluator not in EVALUATORS:
            raise QueryError([("evaluator", f"must be one of {', '.join(EVALUATORS)}")])
        study, finished = _study_and_count(backend, ref)
        query = parse_query(study.spec, states=states, filters=filters)
        key = (study.id, study.created_at, evaluator, tuple(sorted(query.states)), query.filters)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                found = self._entries.get(key)
                if found is not None and found.finished_count == finished:
                    self._entries.move_to_end(key)
                    return replace(found, cached=True)
            computed = compute(backend, study, evaluator, finished, query)
            with self._guard:
                self._entries[key] = computed
                self._entries.move_to_end(key)
                while len(self._entries) > self.size:
                    old, _ = self._entries.popitem(last=False)
                    self._locks.pop(old, None)
            return computed


def _study_and_count(backend: Backend, ref: str | int) -> tuple[Study, int]:
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        counts = repo.trial_counts(session, study.id)
    finished = sum(counts.get(state, 0) for state in FINISHED_STATES)
    return study, finished


def compute(
    backend: Backend,
    study: Study,
    evaluator: Evaluator,
    finished: int,
    query: TrialQuery | None = None,
) -> Importances:
    """Evaluate importances from the COMPLETED trials' params (as Optuna's distributions hold
    them) and objectives (the tuner's, in the goal's direction); of the trials `query`'s states
    and filters keep, when it has any."""
    spec, name = study.spec, study.name
    filtered = query is not None and bool(query.states or query.filters)
    with backend.db.session() as session:
        where = [TrialRunRow.study_id == study.id, TrialRunRow.number.is_not(None)]
        if filtered:
            assert query is not None
            where = matching(session, study, query)
        matched = count_matching(session, where)
        rows = session.execute(
            select(TrialRunRow.params_json, TrialRunRow.objective_rank).where(
                *where,
                TrialRunRow.state == "COMPLETED",
                TrialRunRow.objective_rank.is_not(None),
            )
        ).all()
    distributions = sampling.search_space(spec)
    sign = -1.0 if spec.goal is Goal.MAXIMIZE else 1.0
    trials: list[optuna.trial.FrozenTrial] = []
    for params_json, rank in rows:
        if rank is None or not math.isfinite(rank):
            continue
        params = sampler_values(spec, json.loads(params_json))
        trial = _frozen(len(trials), params, distributions, sign * float(rank))
        if trial is not None:
            trials.append(trial)
    if len(trials) < MIN_TRIALS:
        among = f" among the {matched} trial(s) the state and filter keep" if filtered else ""
        raise StudyStateError(
            f"study {name!r} has {len(trials)} COMPLETED trial(s) with an objective{among}: "
            f"importances need at least {MIN_TRIALS}"
        )
    given = _TrialsStudy(trials, sampling.direction(spec.goal))
    with warnings.catch_warnings():  # "experimental", "few trials in the top quantile"
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(
            given, evaluator=make_evaluator(evaluator), params=list(distributions)
        )
    return Importances(
        study=name,
        evaluator=evaluator,
        params=[(p, float(v) if math.isfinite(v) else 0.0) for p, v in found.items()],
        trial_count=len(trials),
        finished_count=finished,
        computed_at=datetime.now(UTC),
        filtered=filtered,
        matched_count=matched,
    )


class _TrialsStudy(optuna.Study):
    """A study whose trials are given: what the evaluators read, without `add_trials` (which
    deep-copies each trial into the storage: most of the time on 10,000 trials)."""

    def __init__(
        self, trials: list[optuna.trial.FrozenTrial], direction: optuna.study.StudyDirection
    ) -> None:
        storage = optuna.storages.InMemoryStorage()
        storage.create_new_study([direction], "importances")
        super().__init__(study_name="importances", storage=storage)
        self._given = trials

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[optuna.trial.TrialState] | None = None,
    ) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self._given if states is None or t.state in states]


def _frozen(
    number: int, params: dict[str, Any], distributions: dict[str, BaseDistribution], value: float
) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE trial numbered `number` (PED-ANOVA tells trials apart by id), or None for
    params the study's space no longer holds."""
    if set(params) != set(distributions):
        return None
    try:
        checked = optuna.trial.create_trial(params=params, distributions=distributions, value=value)
    except ValueError:
        return None
    return optuna.trial.FrozenTrial(
        number=number,
        state=checked.state,
        value=value,
        datetime_start=checked.datetime_start,
        datetime_complete=checked.datetime_complete,
        params=checked.params,
        distributions=checked.distributions,
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def sampler_values(spec: StudySpec, received: dict[str, Any]) -> dict[str, Any]:
    """The sampler's internal values from the trainer's (`sampling.trainer_values` inverted:
    a reversed log scale is reflected back)."""
    out = dict(received)
    for param in spec.hyperparameters.params:
        name = param.parameter_name
        if name not in out:
            continue
        if param.scale is ScaleType.UNIT_REVERSE_LOG_SCALE and param.type in (
            ParamType.DOUBLE,
            ParamType.INTEGER,
        ):
            assert param.min_value is not None and param.max_value is not None
            value = param.min_value + param.max_value - out[name]
            value = min(max(value, param.min_value), param.max_value)
            out[name] = round(value) if param.type is ParamType.INTEGER else value
    return out


#: The server's cache (one per process).
CACHE = ImportanceCache()


def param_importances(
    backend: Backend,
    ref: str | int,
    evaluator: Evaluator = "PED_ANOVA",
    *,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
) -> Importances:
    """Importances of study `ref`'s params for its objective, over the COMPLETED trials the
    leaderboard's `states` and `filters` keep (every one without them), from the cache when the
    study has finished no trial since."""
    return CACHE.get(backend, ref, evaluator, states=states, filters=filters)
