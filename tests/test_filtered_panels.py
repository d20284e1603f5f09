"""The importances and the Pareto front of the trials the leaderboard's state and filter keep
(`GET .../importances` and `GET .../pareto` with the trial list's `state` and `filter`).

Trials are written through the repository as the study manager writes them (the run, its eval
values, its ranking step, its end), on SQLite and PostgreSQL, and asked through a real
`tuner serve` on a loopback port. The filtered front is the front of the kept trials computed
in full in Python; a filtered importance counts the kept COMPLETED trials; without the
parameters both answer as before; a bad filter or state is a 422 naming it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import new_backend
from tests.server import RunningServer, start_server
from tuner.domain.pareto import nondominated, to_minimize
from tuner.domain.spec import StudySpec, parse_spec
from tuner.outputs.events import ScalarValue
from tuner.persistence import repository as repo
from tuner.persistence.ranked import ranked_trials
from tuner.study.operations import Backend

PARAMS = [
    {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1},
    {"parameterName": "optimizer", "type": "CATEGORICAL", "categoricalValues": ["adam", "sgd"]},
]
PAIR = "pair"  # two objectives and a safety metric
SINGLE = "single"  # one objective
TRIALS = 120


def make_spec(name: str, metrics: list[dict[str, Any]]) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "trainer": "synthetic",
            "hyperparameters": {
                "metrics": metrics,
                "maxTrials": 500,
                "maxParallelTrials": 500,
                "params": PARAMS,
            },
        }
    )


SPECS = {
    PAIR: make_spec(
        PAIR,
        [
            {"metricId": "rmse", "goal": "MINIMIZE"},
            {"metricId": "acc", "goal": "MAXIMIZE"},
            {"metricId": "size", "goal": "MINIMIZE", "safetyConfig": {"safetyThreshold": 2.5}},
        ],
    ),
    SINGLE: make_spec(SINGLE, [{"metricId": "rmse", "goal": "MINIMIZE"}]),
}


def value(rng: random.Random) -> float:
    """Coarse values (ties happen), now and then NaN."""
    return math.nan if rng.random() < 0.03 else rng.randint(0, 12) / 4


def write_trials(backend: Backend, spec: StudySpec, seed: int) -> None:
    """Trials numbered 0.. with x = number / TRIALS, adam on every third; most COMPLETED."""
    rng = random.Random(seed)
    with backend.db.session() as s:
        study = repo.create_study(s, spec)
    first = spec.objectives[0]
    for number in range(TRIALS):
        params = {"x": number / TRIALS, "optimizer": "adam" if number % 3 == 0 else "sgd"}
        with backend.db.session() as s:
            run_id = repo.reserve_run(s, study.id, worker="test:1")
            assert run_id is not None
            repo.attach_trial(
                s,
                run_id,
                number=number,
                optuna_trial_id=10_000 * (seed + 1) + number,
                params=params,
                output_dir=f"t/{number}",
                log_path=f"t/{number}.log",
            )
        values = [
            ScalarValue("eval", 10, 1000.0 + number, tag, value(rng)) for tag in spec.ranked_metrics
        ]
        with backend.db.session() as s:
            observations = repo.record_eval_values(
                s, run_id, values, {}, objective_tag=first.metric
            )
            step_id = observations[0].eval_step_id
            found = {v.tag: v.value for v in values}
            repo.set_objective_steps(
                s,
                run_id,
                best_step_id=step_id,
                objective_step_id=step_id,
                objective_rank=repo.objective_rank(found[first.metric], first.goal),
            )
            state = "PRUNED" if number % 7 == 6 else "FAILED" if number % 11 == 10 else None
            if number < TRIALS - 2:  # the last two still RUNNING
                repo.finish_run(s, run_id, state=state or "COMPLETED", exit_code=0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Backend]]:
    tmp: Path = tmp_path_factory.mktemp(f"filtered-{request.param}")
    with ExitStack() as stack:
        backend = stack.enter_context(new_backend(request.param, tmp))
        url = backend.db.url
        for seed, spec in enumerate(SPECS.values()):
            write_trials(backend, spec, seed)
        server = start_server(url, tmp, slots=0)
        stack.callback(server.stop)
        yield server, backend


def ask(server: RunningServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1/studies/{path}",
        params=params,
        headers={"Authorization": f"Bearer {server.read_token}"},
        timeout=60,
    )


def body(server: RunningServer, path: str, **params: Any) -> Any:
    response = ask(server, path, **params)
    assert response.status_code == 200, response.text
    return response.json()


def keeps(params: dict[str, Any], optimizer: str | None, min_x: float | None) -> bool:
    """What `param:optimizer=<optimizer>` and `param:x>=<min_x>` keep."""
    return (optimizer is None or params["optimizer"] == optimizer) and (
        min_x is None or params["x"] >= min_x
    )


def expected_front(
    backend: Backend, name: str, optimizer: str | None, min_x: float | None
) -> tuple[list[int], int, int]:
    """Front numbers, ranked and infeasible counts of the kept trials, read in full."""
    with backend.db.session() as s:
        study = repo.get_study(s, name)
        ranked = [t for t in ranked_trials(s, study) if keeps(t.params, optimizer, min_x)]
    feasible = [t for t in ranked if t.feasible]
    objectives = study.spec.objectives
    points = to_minimize(
        [[t.objectives[o.metric] for o in objectives] for t in feasible],
        [o.goal for o in objectives],
    )
    mask = nondominated(points).tolist() if feasible else []
    front = sorted(t.number for t, keep in zip(feasible, mask, strict=True) if keep)
    return front, len(ranked), len(ranked) - len(feasible)


def filters_of(optimizer: str | None, min_x: float | None) -> list[str]:
    out = [f"param:optimizer={optimizer}"] if optimizer else []
    return out + ([f"param:x>={min_x}"] if min_x is not None else [])


@pytest.mark.parametrize("name", [PAIR, SINGLE])
def test_the_front_of_the_filtered_trials(served, name):
    server, backend = served
    whole = body(server, f"{name}/pareto")
    assert whole["filtered"] is False and whole["matchedCount"] is None
    front, ranked, infeasible = expected_front(backend, name, None, None)
    assert sorted(m["number"] for m in whole["data"]) == front
    assert (whole["rankedCount"], whole["infeasibleCount"]) == (ranked, infeasible)
    # The front is the kept trials' own, with its counts: a member the filter drops leaves it,
    # and a trial it dominated may join it.
    changed = False
    for optimizer, min_x in [("adam", None), ("sgd", 0.5), (None, 0.25)]:
        found = body(server, f"{name}/pareto", filter=filters_of(optimizer, min_x))
        front, ranked, infeasible = expected_front(backend, name, optimizer, min_x)
        numbers = sorted(m["number"] for m in found["data"])
        assert numbers == front, (optimizer, min_x)
        assert front and found["filtered"] is True
        assert (found["rankedCount"], found["infeasibleCount"]) == (ranked, infeasible)
        listed = body(server, f"{name}/trials", filter=filters_of(optimizer, min_x), limit=1)[
            "count"
        ]
        assert found["matchedCount"] == listed
        for member in found["data"]:
            assert keeps(member["params"], optimizer, min_x)
        changed |= numbers != sorted(m["number"] for m in whole["data"])
    assert changed  # the data is not degenerate: some filter changes the front
    # A state without COMPLETED trials keeps no front; COMPLETED alone is the whole front.
    none = body(server, f"{name}/pareto", state="PRUNED")
    assert (none["count"], none["data"], none["rankedCount"]) == (0, [], 0)
    assert none["filtered"] is True and none["matchedCount"] > 0
    completed = body(server, f"{name}/pareto", state="COMPLETED")
    assert [m["number"] for m in completed["data"]] == [m["number"] for m in whole["data"]]


def completed_with_objective(backend: Backend, optimizer: str | None, min_x: float | None) -> int:
    with backend.db.session() as s:
        study = repo.get_study(s, SINGLE)
        return len([t for t in ranked_trials(s, study) if keeps(t.params, optimizer, min_x)])


def test_importances_of_the_filtered_trials(served):
    server, backend = served
    path = f"{SINGLE}/importances"
    whole = body(server, path)
    assert whole["filtered"] is False
    assert whole["trialCount"] == completed_with_objective(backend, None, None)
    assert whole["matchedCount"] == TRIALS
    adam = body(server, path, filter="param:optimizer=adam")
    assert adam["filtered"] is True
    assert adam["trialCount"] == completed_with_objective(backend, "adam", None)
    assert 2 <= adam["trialCount"] < whole["trialCount"]
    listed = body(server, f"{SINGLE}/trials", filter="param:optimizer=adam", limit=1)["count"]
    assert adam["matchedCount"] == listed
    # One evaluation kept per query: the same filter is a cached answer, the whole study's too.
    again = body(server, path, filter="param:optimizer=adam")
    assert again["cached"] is True and again["trialCount"] == adam["trialCount"]
    assert body(server, path)["trialCount"] == whole["trialCount"]
    both = body(server, path, filter=["param:optimizer=sgd", "param:x>=0.5"], state="COMPLETED")
    assert both["trialCount"] == completed_with_objective(backend, "sgd", 0.5)
    # Too few kept trials: the "not enough trials" answer, with the count.
    few = ask(server, path, filter="param:x<0.001")  # trial 0 alone
    assert few.status_code == 409, few.text
    error = few.json()["error"]
    assert error["code"] == "STUDY_STATE_CONFLICT"
    kept = completed_with_objective(backend, None, None) - completed_with_objective(
        backend, None, 0.001
    )
    assert kept <= 1
    assert f"has {kept} COMPLETED trial(s)" in error["message"]
    assert "among the 1 trial(s) the state and filter keep" in error["message"]
    assert "at least 2" in error["message"]
    none = ask(server, path, state="RUNNING")
    assert none.status_code == 409
    assert "has 0 COMPLETED trial(s)" in none.json()["error"]["message"]


@pytest.mark.parametrize("endpoint", ["importances", "pareto"])
def test_a_bad_filter_or_state_is_named(served, endpoint):
    server, _ = served
    for params, field, words in [
        ({"filter": "param:nope=1"}, "filter", "nope"),
        ({"filter": "rmse<<1"}, "filter", "expected"),
        ({"state": "DONE"}, "state", "DONE"),
    ]:
        response = ask(server, f"{PAIR}/{endpoint}", **params)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert field in response.text and words in response.text, error
