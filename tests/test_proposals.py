"""Tests of `tuner.study.proposals`: seeded, duplicate-free asks on real Optuna storages.

Every test that touches a database runs on SQLite and on PostgreSQL (see `db_url` in conftest).
Trials are never run: they are proposed and then told by hand, as a manager would.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.study import sampling
from tuner.study.operations import Backend, submit_study, tell
from tuner.study.proposals import DUPLICATE_OF, UNSEEN_FILL, Exhausted, _Grid, ask_seed, propose

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

MIXED: list[dict[str, Any]] = [
    {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
    {
        "parameterName": "lr",
        "type": "DOUBLE",
        "minValue": 0.0001,
        "maxValue": 0.1,
        "scaleType": "UNIT_LOG_SCALE",
    },
    {"parameterName": "units", "type": "INTEGER", "minValue": 1, "maxValue": 64},
    {"parameterName": "optimizer", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]},
]
FINITE: list[dict[str, Any]] = [
    {"parameterName": "layers", "type": "DISCRETE", "discreteValues": [1, 2, 4]},
    {"parameterName": "units", "type": "INTEGER", "minValue": 8, "maxValue": 11},
    {"parameterName": "optimizer", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]},
]
#: 2 x 3 = 6 combinations; `depth` is reverse-log scaled (the trainer gets 4 - z).
TINY: list[dict[str, Any]] = [
    {"parameterName": "cell", "type": "CATEGORICAL", "categoricalValues": ["gru", "lstm"]},
    {
        "parameterName": "depth",
        "type": "INTEGER",
        "minValue": 1,
        "maxValue": 3,
        "scaleType": "UNIT_REVERSE_LOG_SCALE",
    },
]
#: TPE (the default) runs on both databases; the other samplers only on SQLite, as their
#: seeding does not depend on the storage.
OTHER_ALGORITHMS = ["RANDOM_SEARCH", "CMA_ES", "QMC", "GRID_SEARCH"]
if importlib.util.find_spec("torch") is not None:
    OTHER_ALGORITHMS.append("GP")
#: 3 x 2 x 2 = 12 combinations.
SMALL: list[dict[str, Any]] = [
    {"parameterName": "layers", "type": "DISCRETE", "discreteValues": [1, 2, 4]},
    {"parameterName": "units", "type": "INTEGER", "minValue": 8, "maxValue": 9},
    {"parameterName": "optimizer", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]},
]


def make_spec(
    name: str,
    params: list[dict[str, Any]],
    *,
    algorithm: str = "ALGORITHM_UNSPECIFIED",
    seed: int | None = 11,
    max_trials: int = 20,
    parallel: int = 1,
) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "trainer": "synthetic",
            "seed": seed,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "maxTrials": max_trials,
                "maxParallelTrials": parallel,
                "algorithm": algorithm,
                "params": params,
            },
        }
    )


def key(spec: StudySpec, params: dict[str, Any]) -> tuple[str, ...]:
    """The params as the trainer's flags."""
    values = sampling.trainer_values(spec, params)
    return tuple(
        sampling.format_flag_value(values[p.parameter_name]) for p in spec.hyperparameters.params
    )


def objective(params: dict[str, Any]) -> float:
    """A deterministic value, so that seeded studies see the same history."""
    total = 0.0
    for name, value in sorted(params.items()):
        if isinstance(value, str):
            total += len(value) / 10
        else:
            total += (float(value) - 0.3) ** 2 / (1 + len(name))
    return total


def proposed(backend: Backend, spec: StudySpec, ordinal: int, **kw: Any) -> optuna.trial.Trial:
    trial = propose(backend, spec, ordinal=ordinal, **kw)
    assert not isinstance(trial, Exhausted), trial.reason
    return trial


def run_one_at_a_time(backend: Backend, spec: StudySpec, n: int) -> list[tuple[str, ...]]:
    """Propose `n` trials with ordinals 0..n-1, completing each before the next."""
    study = backend.optuna_study(spec)
    keys = []
    for ordinal in range(n):
        trial = proposed(backend, spec, ordinal)
        keys.append(key(spec, trial.params))
        tell(study, trial.number, objective(trial.params))
    return keys


def live_keys(backend: Backend, spec: StudySpec) -> list[tuple[str, ...]]:
    """The params of every trial that was not failed as a duplicate."""
    study = backend.optuna_study(spec)
    return [
        key(spec, t.params)
        for t in study.get_trials(deepcopy=False)
        if DUPLICATE_OF not in t.user_attrs
    ]


def check_duplicates_point_at_holders(backend: Backend, spec: StudySpec) -> int:
    """Every trial failed as a duplicate names an earlier or enqueued trial with its params."""
    trials = {t.number: t for t in backend.optuna_study(spec).get_trials(deepcopy=False)}
    duplicates = [t for t in trials.values() if DUPLICATE_OF in t.user_attrs]
    for dup in duplicates:
        assert dup.state is TrialState.FAIL
        holder = trials[dup.user_attrs[DUPLICATE_OF]]
        assert key(spec, holder.params) == key(spec, dup.params)
        assert DUPLICATE_OF not in holder.user_attrs
    return len(duplicates)


@pytest.fixture
def submit(backend: Backend, registry: TrainerRegistry) -> Callable[[StudySpec], StudySpec]:
    def submit(spec: StudySpec) -> StudySpec:
        submit_study(backend, spec, registry)
        return spec

    return submit


@pytest.fixture
def sqlite_backend(sqlite_url: str) -> Iterator[Backend]:
    connected = Backend.connect(sqlite_url)
    yield connected
    connected.close()


@pytest.fixture
def submit_sqlite(
    sqlite_backend: Backend, registry: TrainerRegistry
) -> Callable[[StudySpec], StudySpec]:
    def submit(spec: StudySpec) -> StudySpec:
        submit_study(sqlite_backend, spec, registry)
        return spec

    return submit


# -- reproducibility -------------------------------------------------------------------------


def test_same_seed_on_a_fresh_study_proposes_the_same_params(backend, submit):
    a = submit(make_spec("a", MIXED, max_trials=8))
    b = submit(make_spec("b", MIXED, max_trials=8))
    other = submit(make_spec("c", MIXED, max_trials=8, seed=12))

    first = run_one_at_a_time(backend, a, 8)  # 2 random startup trials, then TPE proper
    assert run_one_at_a_time(backend, b, 8) == first
    assert len(set(first)) == 8
    assert run_one_at_a_time(backend, other, 3) != first[:3]


def test_ask_seeds_do_not_overlap_between_neighbouring_seeds():
    spec = make_spec("s", MIXED, seed=5)
    next_seed = spec.model_copy(update={"seed": 6})
    seeds = {ask_seed(spec, o, a) for o in range(50) for a in range(5)}
    assert len(seeds) == 250
    assert seeds.isdisjoint(ask_seed(next_seed, o, a) for o in range(50) for a in range(5))
    assert ask_seed(make_spec("s", MIXED, seed=None), 3, 0) is None


# -- several workers -------------------------------------------------------------------------


def test_two_workers_proposing_alternately_never_share_params(db_url, backend, submit):
    """Worker A has the even ordinals and B the odd ones, as reservations hand them out."""
    old = submit(make_spec("old", MIXED))
    new = submit(make_spec("new", MIXED))
    workers = [Backend.connect(db_url), Backend.connect(db_url)]
    try:
        # The old way: each manager opens the study once, seeded with `seed + trials so far`;
        # two managers that open it at the same count draw the same startup params.
        studies = [w.optuna_study(old, seed_offset=0) for w in workers]
        space = sampling.search_space(old)
        for i in range(6):  # all within TPE's random startup trials
            study = studies[i % 2]
            trial = study.ask(space)
            tell(study, trial.number, objective(trial.params))
        counts = Counter(live_keys(backend, old))
        assert sum(c - 1 for c in counts.values()) >= 1  # the collisions this module prevents

        for ordinal in range(20):
            worker = workers[ordinal % 2]
            trial = proposed(worker, new, ordinal)
            tell(worker.optuna_study(new), trial.number, objective(trial.params))
        keys = live_keys(backend, new)
        assert len(keys) == len(set(keys)) == 20
        assert check_duplicates_point_at_holders(backend, new) == 0
    finally:
        for w in workers:
            w.close()


def test_concurrent_workers_share_a_small_space_without_repeats(db_url, backend, submit):
    spec = submit(make_spec("small", SMALL, parallel=3))
    ordinals = itertools.count()
    lock = threading.Lock()
    exhausted: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        worker = Backend.connect(db_url)
        try:
            study = worker.optuna_study(spec)
            while True:
                with lock:
                    ordinal = next(ordinals)
                # Few sampler asks, so that the unseen combinations are also raced for.
                result = propose(worker, spec, ordinal=ordinal, max_attempts=2)
                if isinstance(result, Exhausted):
                    exhausted.append(result.reason)
                    return
                tell(study, result.number, objective(result.params))
        except BaseException as exc:
            errors.append(exc)
        finally:
            worker.close()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(exhausted) == 3
    keys = live_keys(backend, spec)
    assert len(keys) == len(set(keys)) == 12
    check_duplicates_point_at_holders(backend, spec)


# -- duplicates and exhaustion ---------------------------------------------------------------


def exhaust_tiny(backend: Backend, spec: StudySpec) -> tuple[list[tuple[str, ...]], Exhausted]:
    """Propose the 6 combinations of TINY: the first fails, the last two keep running."""
    study = backend.optuna_study(spec)
    keys = []
    for ordinal in range(6):
        trial = proposed(backend, spec, ordinal)
        keys.append(key(spec, trial.params))
        if ordinal == 0:
            tell(study, trial.number, state=TrialState.FAIL)
        elif ordinal < 4:
            tell(study, trial.number, objective(trial.params))
    assert sorted(keys) == sorted((c, str(d)) for c in ("gru", "lstm") for d in (1, 2, 3))
    count = len(study.get_trials(deepcopy=False))
    result = propose(backend, spec, ordinal=6)
    assert isinstance(result, Exhausted)
    assert len(study.get_trials(deepcopy=False)) == count  # nothing was asked
    return keys, result


def test_a_tiny_space_is_proposed_once_each_then_exhausted(backend, submit):
    spec = submit(make_spec("tiny", TINY, max_trials=10))
    _, result = exhaust_tiny(backend, spec)
    assert result.reason == (
        "the search space is exhausted: all 6 combinations have been run or are running "
        "(2 running); 1 of them only in failed trials (`tuner retry` runs those again)"
    )
    check_duplicates_point_at_holders(backend, spec)


@pytest.mark.parametrize("algorithm", OTHER_ALGORITHMS)
def test_every_sampler_replays_its_seed_and_exhausts_a_tiny_space(
    sqlite_backend, submit_sqlite, algorithm
):
    a = submit_sqlite(make_spec("a", TINY, algorithm=algorithm, max_trials=10))
    b = submit_sqlite(make_spec("b", TINY, algorithm=algorithm, max_trials=10))
    keys, result = exhaust_tiny(sqlite_backend, a)
    assert "all 6 combinations" in result.reason
    assert exhaust_tiny(sqlite_backend, b)[0] == keys  # duplicates and fills included
    duplicates = check_duplicates_point_at_holders(sqlite_backend, a)
    if algorithm == "GRID_SEARCH":
        assert duplicates == 0  # GridSampler never repeats; propose keeps it so


def test_an_enqueued_retry_is_proposed_as_is(backend, submit):
    """`tuner retry` enqueues a failed trial's params; they are run again on purpose."""
    spec = submit(make_spec("tiny", TINY))
    study = backend.optuna_study(spec)
    done = proposed(backend, spec, 0)
    tell(study, done.number, objective(done.params))
    failed = proposed(backend, spec, 1)
    tell(study, failed.number, state=TrialState.FAIL)

    study.enqueue_trial(dict(failed.params), user_attrs={"retry_of": failed.number})
    study.enqueue_trial(dict(done.params), user_attrs={"retry_of": done.number})
    retry = proposed(backend, spec, 2)
    again = proposed(backend, spec, 3)
    assert (retry.params, again.params) == (failed.params, done.params)
    for trial in (retry, again):
        frozen = study.get_trials(deepcopy=False)[trial.number]
        assert frozen.state is TrialState.RUNNING
        assert DUPLICATE_OF not in frozen.user_attrs
        assert "retry_of" in frozen.user_attrs
    assert check_duplicates_point_at_holders(backend, spec) == 0

    # Once the space is exhausted, an enqueued trial is still proposed.
    for trial in (retry, again):
        tell(study, trial.number, objective(trial.params))
    ordinal = 4
    while not isinstance(result := propose(backend, spec, ordinal=ordinal), Exhausted):
        tell(study, result.number, objective(result.params))
        ordinal += 1
    study.enqueue_trial(dict(done.params), user_attrs={"retry_of": done.number})
    assert proposed(backend, spec, ordinal).params == done.params
    assert isinstance(propose(backend, spec, ordinal=ordinal + 1), Exhausted)


def test_after_max_attempts_an_unseen_combination_is_asked_for(sqlite_backend, submit_sqlite):
    picked = []
    for name in ("a", "b"):
        spec = submit_sqlite(make_spec(name, FINITE))
        study = sqlite_backend.optuna_study(spec)
        held = set()
        for ordinal in range(3):
            trial = proposed(sqlite_backend, spec, ordinal)
            held.add(key(spec, trial.params))
            tell(study, trial.number, objective(trial.params))
        fill = proposed(sqlite_backend, spec, 3, max_attempts=0)
        assert study.get_trials(deepcopy=False)[fill.number].user_attrs == {UNSEEN_FILL: True}
        assert key(spec, fill.params) not in held
        picked.append(fill.params)
    assert picked[0] == picked[1]  # from the seed


def test_after_max_attempts_an_infinite_space_asks_a_random_sampler(sqlite_backend, submit_sqlite):
    a = submit_sqlite(make_spec("a", MIXED))
    b = submit_sqlite(make_spec("b", MIXED))
    params = [proposed(sqlite_backend, spec, 0, max_attempts=0).params for spec in (a, b)]
    assert params[0] == params[1]
    assert key(a, params[0]) != key(a, proposed(sqlite_backend, a, 1, max_attempts=0).params)


def test_a_trial_still_writing_its_params_is_waited_for(backend, submit):
    """Another worker's ask writes params one by one; a match so far is waited for."""
    spec = submit(make_spec("tiny", TINY))
    study = backend.optuna_study(spec)
    for ordinal in range(5):
        trial = proposed(backend, spec, ordinal)
        tell(study, trial.number, objective(trial.params))
    every = {(c, str(d)) for c in ("gru", "lstm") for d in (1, 2, 3)}
    [(cell, depth)] = every - set(live_keys(backend, spec))
    # "Another worker" has created its trial and written `cell` of the one free combination.
    storage = backend.storage
    space = sampling.search_space(spec)
    writer_id = storage.create_new_trial(storage.get_study_id_from_name(spec.name))
    storage.set_trial_param(writer_id, "cell", space["cell"].to_internal_repr(cell), space["cell"])

    def finish_writing() -> None:
        time.sleep(0.3)
        z = 4 - int(depth)  # reverse-log: the trainer gets 1 + 3 - z
        storage.set_trial_param(writer_id, "depth", float(z), space["depth"])

    writer = threading.Thread(target=finish_writing)
    writer.start()
    try:
        # No sampler asks: the free combination is asked for, and found to be the writer's.
        result = propose(backend, spec, ordinal=5, max_attempts=0)
    finally:
        writer.join()
    assert isinstance(result, Exhausted)
    trials = study.get_trials(deepcopy=False)
    writer_number = storage.get_trial(writer_id).number
    [duplicate] = [t for t in trials if DUPLICATE_OF in t.user_attrs and t.number > writer_number]
    assert duplicate.user_attrs[DUPLICATE_OF] == writer_number
    assert duplicate.user_attrs[UNSEEN_FILL] is True
    assert key(spec, duplicate.params) == (cell, depth)
    assert sorted(live_keys(backend, spec)) == sorted(every)


# -- the combination index -------------------------------------------------------------------


def test_unseen_picks_every_free_combination_uniformly():
    spec = make_spec("s", FINITE)
    grid = _Grid.of(spec, sampling.search_space(spec))
    assert grid.size == spec.hyperparameters.grid_size == 24
    every = [key(spec, grid.params(i)) for i in range(grid.size)]
    assert [grid.index(k) for k in every] == list(range(24))
    rng = random.Random(3)
    held = set(rng.sample(every, 17))
    picks = Counter(key(spec, grid.unseen(held, rng)) for _ in range(700))
    assert set(picks) == set(every) - held
    assert min(picks.values()) > 50  # 7 free combinations, ~100 picks each
