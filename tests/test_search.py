"""Early stopping, algorithms, warm starts and retries, with real trial processes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.test_manager import make_spec, run_study
from tuner.domain.errors import SpecError, StudyStateError
from tuner.domain.spec import parse_spec
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops

OPTIMIZERS = {
    "parameterName": "optimizer",
    "type": "CATEGORICAL",
    "categoricalValues": ["adam", "adagrad", "sgd", "bad"],
}
SLOW = ["--train-steps=200", "--eval-every-steps=20", "--step-seconds=0.12"]


def pruning_spec(name: str = "s", *, parallel: int = 1, pruner: dict[str, Any] | None = None):
    spec = make_spec(
        name,
        args=SLOW,
        maxTrials=4,
        maxParallelTrials=parallel,
        algorithm="GRID_SEARCH",
        params=[OPTIMIZERS],
    )
    document = spec.to_document()
    document["earlyStopping"] = pruner or {"type": "median", "startupTrials": 1}
    document["seed"] = 4
    return parse_spec(document)


@pytest.mark.parametrize("parallel", [1, 2])
def test_pruned_trials_are_stopped_and_keep_their_metrics(backend, registry, settings, parallel):
    manager = run_study(backend, registry, settings, pruning_spec(parallel=parallel))
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
        details = {r.number: repo.trial_detail(s, study, r.number) for r in runs}
    assert study.state == "COMPLETED"
    pruned = [r for r in runs if r.state == "PRUNED"]
    assert pruned, [(r.number, r.params, r.state) for r in runs]
    assert {r.state for r in runs} <= {"COMPLETED", "PRUNED"}
    optuna_states = {
        t.number: t.state.name
        for t in optuna.load_study(study_name="s", storage=backend.storage).trials
    }
    for run in pruned:
        detail = details[run.number]
        steps = [st.step for st in detail.steps]
        assert steps and max(steps) <= 200
        assert run.exit_code is not None and run.exit_code < 0  # by a signal
        assert "stopped early at step" in (run.failure_reason or "")
        assert detail.checkpoints and detail.checkpoints[0].step == detail.best_step
        kept = settings.artifact_root / detail.checkpoints[0].kept_path
        assert Path(f"{kept}.index").is_file()
        assert optuna_states[run.number] == "PRUNED"
    # pruning saves compute: at least one trial was stopped well before its budget
    assert min(max(st.step for st in details[r.number].steps) for r in pruned) < 200
    assert manager.prune_latencies  # every decision's latency is measured


@pytest.mark.parametrize(
    "pruner",
    [
        {"type": "percentile", "percentile": 25.0, "startupTrials": 1},
        {"type": "successive_halving", "minResource": 20, "reductionFactor": 2},
        {"type": "hyperband", "minResource": 20, "maxResource": 200, "reductionFactor": 3},
    ],
)
def test_every_pruner_kind_runs(backend, registry, settings, pruner):
    run_study(backend, registry, settings, pruning_spec(pruner=pruner))
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        counts = repo.trial_counts(s, study.id)
    assert study.state == "COMPLETED"
    assert sum(counts.values()) == 4
    assert set(counts) <= {"COMPLETED", "PRUNED"}


def test_grid_is_exhaustive_and_never_repeats(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=20", "--eval-every-steps=20"],
        maxTrials=50,
        maxParallelTrials=2,
        algorithm="GRID_SEARCH",
        params=[
            {"parameterName": "layers", "type": "INTEGER", "minValue": 1, "maxValue": 3},
            {"parameterName": "x", "type": "DISCRETE", "discreteValues": [-0.5, 0.5]},
        ],
    )
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"  # the grid ended it before maxTrials
    combos = sorted((r.params["layers"], r.params["x"]) for r in runs)
    assert combos == sorted(itertools.product([1, 2, 3], [-0.5, 0.5]))


@pytest.mark.parametrize("algorithm", ["ALGORITHM_UNSPECIFIED", "RANDOM_SEARCH", "QMC"])
def test_a_seeded_study_reproduces_its_params(backend, registry, settings, algorithm):
    def params_of(name: str) -> list[dict[str, Any]]:
        spec = make_spec(
            name,
            args=["--train-steps=20", "--eval-every-steps=20"],
            maxTrials=4,
            algorithm=algorithm,
        )
        run_study(backend, registry, settings, spec)
        with backend.db.session() as s:
            return [r.params for r in repo.runs(s, repo.get_study(s, name).id)]

    first, second = params_of("first"), params_of("second")
    assert first == second
    assert len({str(p) for p in first}) == 4


def test_warm_start_adds_the_old_trials_to_the_history(backend, registry, settings):
    fast = ["--train-steps=20", "--eval-every-steps=20"]
    run_study(backend, registry, settings, make_spec("old", args=fast, maxTrials=3))
    new = make_spec("new", args=fast, maxTrials=2, resumePreviousJobId="old")
    run_study(backend, registry, settings, new)

    optuna_new = optuna.load_study(study_name="new", storage=backend.storage)
    warm = [t for t in optuna_new.trials if "warm_start_from" in t.user_attrs]
    assert sorted(t.user_attrs["warm_start_from"] for t in warm) == ["old#0", "old#1", "old#2"]
    old_values = sorted(
        t.value for t in optuna.load_study(study_name="old", storage=backend.storage).trials
    )
    assert sorted(t.value for t in warm) == old_values
    with backend.db.session() as s:
        study = repo.get_study(s, "new")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"
    assert [r.number for r in runs] == [3, 4]  # numbered after the history


def test_warm_start_refuses_an_incompatible_search_space(backend, registry, settings):
    fast = ["--train-steps=20", "--eval-every-steps=20"]
    run_study(backend, registry, settings, make_spec("old", args=fast, maxTrials=2))
    narrower = make_spec(
        "new",
        args=fast,
        resumePreviousJobId="old",
        params=[
            {"parameterName": "x", "type": "DOUBLE", "minValue": 5, "maxValue": 6},
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "sgd", "with space"],
            },
        ],
    )
    with pytest.raises(SpecError) as info:
        study_ops.submit_study(backend, narrower, registry)
    ((field, reason),) = info.value.problems
    assert field == "hyperparameters.resumePreviousJobId"
    assert "incompatible search space" in reason and "outside this study's range" in reason
    other_params = make_spec(
        "new2",
        args=fast,
        resumePreviousJobId="old",
        params=[{"parameterName": "y", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
    )
    with pytest.raises(SpecError, match="has params"):
        study_ops.submit_study(backend, other_params, registry)
    missing = make_spec("new3", args=fast, resumePreviousJobId="nope")
    with pytest.raises(SpecError, match="no study named 'nope'"):
        study_ops.submit_study(backend, missing, registry)


def test_extending_a_finished_study_continues_its_history(backend, registry, settings):
    spec = make_spec(args=["--train-steps=20", "--eval-every-steps=20"], maxTrials=2)
    run_study(backend, registry, settings, spec)
    study_ops.resume_study(backend, "s", max_trials=4)
    StudyManager(backend, registry, settings, slots=1, studies=["s"]).run()
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"
    assert [r.number for r in runs] == [0, 1, 2, 3]
    trials = optuna.load_study(study_name="s", storage=backend.storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4


def test_retry_failed_runs_their_params_again(backend, registry, settings):
    crashing = make_spec(
        args=["--train-steps=40", "--eval-every-steps=20", "--crash-at-step=40"],
        maxTrials=2,
        maxFailedTrials=5,
    )
    run_study(backend, registry, settings, crashing)
    with backend.db.session() as s:
        failed = repo.runs(s, repo.get_study(s, "s").id)
    assert [r.state for r in failed] == ["FAILED", "FAILED"]
    # the trainer is fixed, then the failed trials are retried
    fixed = crashing.model_copy(update={"args": ["--train-steps=40", "--eval-every-steps=20"]})
    with backend.db.session() as s:
        repo.update_study_spec(s, repo.get_study(s, "s").id, fixed)
    retried = study_ops.retry_failed(backend, "s")
    assert retried.state == "RUNNING" and retried.spec.max_trials == 4
    StudyManager(backend, registry, settings, slots=1, studies=["s"]).run()
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"
    assert [r.state for r in runs] == ["FAILED", "FAILED", "COMPLETED", "COMPLETED"]
    assert [r.params for r in runs[2:]] == [r.params for r in failed]
    # each failed trial is retried once
    with pytest.raises(StudyStateError, match="no failed trials to retry"):
        study_ops.retry_failed(backend, "s")
