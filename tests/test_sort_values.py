"""The trial list's param and metric sorts and filters read `tuner_trial_sort_values`; its
totals are kept per study journal position. On SQLite and PostgreSQL:

- the sort values the manager's writes leave (attach, best step, end) give the same pages as
  the values the migration fills in for trials recorded before it (dropped, then refilled by
  `downgrade 0011` + `upgrade`), a conditional param absent from trials without it;
- a kept total follows every change a user can see: a new trial, a trial's end, a new best
  step of a running trial under a metric filter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command

from tests.conftest import new_backend
from tuner.domain.entities import Study
from tuner.domain.spec import Goal, parse_spec
from tuner.outputs.events import ScalarValue
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries as tq
from tuner.persistence.database import alembic_config
from tuner.study.operations import Backend

SPEC = {
    "name": "sorts",
    "trainer": "synthetic",
    "hyperparameters": {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": 100,
        "maxParallelTrials": 100,
        "params": [
            {"parameterName": "lr", "type": "DOUBLE", "minValue": 0.001, "maxValue": 1},
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["sgd", "adam"],
                "conditionalParameterSpecs": [
                    {
                        "parentCategoricalValues": {"values": ["sgd"]},
                        "parameterSpec": {
                            "parameterName": "momentum",
                            "type": "DOUBLE",
                            "minValue": 0,
                            "maxValue": 0.9,
                        },
                    }
                ],
            },
        ],
    },
}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Backend]:
    with new_backend(request.param, tmp_path) as connected:
        yield connected


def start(backend: Backend, study: Study, number: int, params: dict[str, Any]) -> int:
    with backend.db.session() as s:
        run_id = repo.reserve_run(s, study.id, worker="test:1")
        assert run_id is not None
        repo.attach_trial(
            s,
            run_id,
            number=number,
            optuna_trial_id=5000 + number,
            params=params,
            output_dir=f"t/{number}",
            log_path=f"t/{number}.log",
        )
    return run_id


def evaluate(backend: Backend, run_id: int, step: int, rmse: float, mae: float) -> None:
    """One eval, which becomes the run's best step (as the ingest path writes it)."""
    values = [
        ScalarValue("eval", step, 1000.0 + step, "rmse", rmse),
        ScalarValue("eval", step, 1000.0 + step, "mae", mae),
    ]
    with backend.db.session() as s:
        [obs] = repo.record_eval_values(s, run_id, values, {}, objective_tag="rmse")
    with backend.db.session() as s:
        repo.set_objective_steps(
            s,
            run_id,
            best_step_id=obs.eval_step_id,
            objective_step_id=obs.eval_step_id,
            objective_rank=repo.objective_rank(rmse, Goal.MINIMIZE),
        )


def finish(backend: Backend, run_id: int) -> None:
    with backend.db.session() as s:
        repo.finish_run(s, run_id, state="COMPLETED", exit_code=0)


def page(backend: Backend, study: Study, **query: Any) -> tuple[list[int], int]:
    with backend.db.session() as s:
        rows, total = tq.list_trials(s, study, tq.parse_query(study.spec, **query))
    return [r.number for r in rows], total


QUERIES: list[dict[str, Any]] = [
    {"sort": "param:lr"},
    {"sort": "-param:lr"},
    {"sort": "param:optimizer"},
    {"sort": "-param:momentum"},
    {"sort": "metric:mae"},
    {"sort": "-metric:mae", "filters": ["param:optimizer=sgd"]},
    {"sort": "param:lr", "filters": ["metric:mae<0.5", "param:optimizer!=adam"]},
    {"sort": "param:momentum", "states": ["COMPLETED"]},
]


def test_the_migration_fills_what_the_writes_leave(backend: Backend) -> None:
    with backend.db.session() as s:
        study = repo.create_study(s, parse_spec(SPEC))
    for n in range(12):
        optimizer = ["sgd", "adam"][n % 2]
        params: dict[str, Any] = {"lr": round(0.05 * ((n * 7) % 12) + 0.01, 3)}
        params["optimizer"] = optimizer
        if optimizer == "sgd":
            params["momentum"] = 0.1 * (n % 4)  # ties
        run_id = start(backend, study, n, params)
        if n != 11:  # trial 11 never evaluated: no metric
            evaluate(backend, run_id, 10, rmse=1.0 - 0.05 * n, mae=((n * 5) % 12) / 10)
        if n < 10:
            finish(backend, run_id)
    written = [page(backend, study, **q) for q in QUERIES]
    # momentum 0.2 (ties by number), then 0, then adam's trials, which have none
    assert written[3] == ([2, 6, 10, 0, 4, 8, 1, 3, 5, 7, 9, 11], 12)
    assert written[5] == ([2, 4, 6, 8, 10, 0], 6)  # sgd's, mae 1.0 down to 0

    config = alembic_config(backend.db.url)
    command.downgrade(config, "0011")
    command.upgrade(config, "head")
    assert [page(backend, study, **q) for q in QUERIES] == written


def test_a_kept_total_follows_every_change(backend: Backend) -> None:
    with backend.db.session() as s:
        study = repo.create_study(s, parse_spec(SPEC))
    first = start(backend, study, 0, {"lr": 0.1, "optimizer": "adam"})
    evaluate(backend, first, 10, rmse=0.9, mae=0.9)
    assert page(backend, study, filters=["param:optimizer=adam"]) == ([0], 1)
    assert page(backend, study, filters=["metric:mae<0.5"]) == ([], 0)
    # A better eval of the running trial: the metric filter's total follows at once.
    evaluate(backend, first, 20, rmse=0.3, mae=0.3)
    assert page(backend, study, filters=["metric:mae<0.5"]) == ([0], 1)
    # A new trial, then the first one's end: each changes the kept totals.
    second = start(backend, study, 1, {"lr": 0.2, "optimizer": "adam"})
    assert page(backend, study, filters=["param:optimizer=adam"]) == ([0, 1], 2)
    assert page(backend, study, states=["COMPLETED"]) == ([], 0)
    finish(backend, first)
    assert page(backend, study, states=["COMPLETED"]) == ([0], 1)
    finish(backend, second)
    # Nothing runs: a metric filter's total is kept, and still right after the next change.
    assert page(backend, study, filters=["metric:mae<0.5"]) == ([0], 1)
    assert page(backend, study, filters=["metric:mae<0.5"]) == ([0], 1)
    third = start(backend, study, 2, {"lr": 0.3, "optimizer": "sgd", "momentum": 0.5})
    evaluate(backend, third, 10, rmse=0.2, mae=0.1)
    finish(backend, third)
    assert page(backend, study, filters=["metric:mae<0.5"]) == ([2, 0], 2)
    assert page(backend, study, sort="param:momentum") == ([2, 0, 1], 3)
