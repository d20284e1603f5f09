"""The Pareto front read from narrow rows (`front_candidates`, what `/pareto` answers) is the
front computed on every ranked trial in full (`ranked_trials` + `nondominated`), on SQLite and
PostgreSQL: one objective with ties, NaN and infinite values; two objectives; a safety metric.

Trials are written through the repository as the study manager writes them (the run, its eval
values, its ranking step, its end), in random states, so the two readings must agree on which
trials count as ranked, which are infeasible and which are on the front.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import new_backend
from tuner.domain.pareto import nondominated, to_minimize
from tuner.domain.spec import Goal, StudySpec, parse_spec
from tuner.outputs.events import ScalarValue
from tuner.persistence import repository as repo
from tuner.persistence.ranked import front_candidates, ranked_trials
from tuner.study.operations import Backend

PARAM = {"parameterName": "lr", "type": "DOUBLE", "minValue": 0.001, "maxValue": 1.0}


def spec(name: str, metrics: list[dict[str, Any]]) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "trainer": "synthetic",
            "hyperparameters": {
                "metrics": metrics,
                "maxTrials": 500,
                "maxParallelTrials": 500,
                "params": [PARAM],
            },
        }
    )


SPECS = {
    "one": spec("one", [{"metricId": "rmse", "goal": "MINIMIZE"}]),
    "one_max": spec("one_max", [{"metricId": "acc", "goal": "MAXIMIZE"}]),
    "two": spec(
        "two",
        [{"metricId": "rmse", "goal": "MINIMIZE"}, {"metricId": "acc", "goal": "MAXIMIZE"}],
    ),
    "safety": spec(
        "safety",
        [
            {"metricId": "rmse", "goal": "MINIMIZE"},
            {"metricId": "acc", "goal": "MAXIMIZE"},
            {"metricId": "size", "goal": "MINIMIZE", "safetyConfig": {"safetyThreshold": 1.5}},
        ],
    ),
    "one_safety": spec(
        "one_safety",
        [
            {"metricId": "rmse", "goal": "MINIMIZE"},
            {"metricId": "size", "goal": "MINIMIZE", "safetyConfig": {"safetyThreshold": 1.5}},
        ],
    ),
}


def value(rng: random.Random) -> float:
    """Coarse values (ties are common), now and then NaN or infinite."""
    roll = rng.random()
    if roll < 0.04:
        return math.nan
    if roll < 0.06:
        return rng.choice([math.inf, -math.inf])
    return rng.randint(0, 12) / 4


def write_trials(backend: Backend, spec: StudySpec, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with backend.db.session() as s:
        study = repo.create_study(s, spec)
    first = spec.objectives[0]
    for number in range(count):
        with backend.db.session() as s:
            run_id = repo.reserve_run(s, study.id, worker="test:1")
            assert run_id is not None
            repo.attach_trial(
                s,
                run_id,
                number=number,
                optuna_trial_id=10_000 * (seed + 1) + number,
                params={"lr": rng.random()},
                output_dir=f"t/{number}",
                log_path=f"t/{number}.log",
            )
        tags = [m for m in spec.ranked_metrics if rng.random() > 0.03]  # now and then one missing
        steps = [10, 20]
        values = [
            ScalarValue("eval", step, 1000.0 + step, tag, value(rng))
            for step in steps
            for tag in tags
        ]
        with backend.db.session() as s:
            observations = repo.record_eval_values(
                s, run_id, values, {}, objective_tag=first.metric
            )
            ids = {o.step: o.eval_step_id for o in observations}
            ranking = rng.choice(steps) if ids else None
            step_id = ids.get(ranking) if ranking is not None else None
            at_step = {v.tag: v.value for v in values if v.step == ranking}
            repo.set_objective_steps(
                s,
                run_id,
                best_step_id=step_id,
                objective_step_id=step_id,
                objective_rank=repo.objective_rank(at_step.get(first.metric), first.goal)
                if step_id is not None
                else None,
            )
            state = rng.choices(["COMPLETED", "FAILED", "PRUNED", "RUNNING"], [8, 1, 1, 1])[0]
            if state != "RUNNING":
                repo.finish_run(s, run_id, state=state, exit_code=0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    with new_backend(request.param, tmp_path_factory.mktemp("front")) as connected:
        for seed, study_spec in enumerate(SPECS.values()):
            write_trials(connected, study_spec, 160, seed)
        yield connected


def brute_force(backend: Backend, name: str) -> tuple[list[int], int, int]:
    """Front numbers, ranked count and infeasible count from every ranked trial read in full."""
    with backend.db.session() as s:
        study = repo.get_study(s, name)
        ranked = ranked_trials(s, study)
    feasible = [t for t in ranked if t.feasible]
    objectives = study.spec.objectives
    points = to_minimize(
        [[t.objectives[o.metric] for o in objectives] for t in feasible],
        [o.goal for o in objectives],
    )
    mask = nondominated(points).tolist() if feasible else []
    front = sorted(t.number for t, keep in zip(feasible, mask, strict=True) if keep)
    return front, len(ranked), len(ranked) - len(feasible)


@pytest.mark.parametrize("name", list(SPECS))
def test_the_front_from_narrow_rows_is_the_front_of_every_trial(
    backend: Backend, name: str
) -> None:
    front, ranked, infeasible = brute_force(backend, name)
    with backend.db.session() as s:
        study = repo.get_study(s, name)
        candidates = front_candidates(s, study)
    assert ranked > 50 and front  # the data is not degenerate
    assert sorted(t.number for t in candidates.trials) == front
    assert (candidates.ranked, candidates.infeasible) == (ranked, infeasible)
    if study.spec.constraints:
        assert infeasible > 0
    by_number = {t.number: t for t in candidates.trials}
    with backend.db.session() as s:
        full = {t.number: t for t in ranked_trials(s, study)}
    for number, trial in by_number.items():
        assert trial == full[number]  # same values, step, params and feasibility
    if len(study.spec.objectives) == 1 and not study.spec.constraints:
        goal = study.spec.objectives[0].goal
        values = {t.objectives[study.spec.objectives[0].metric] for t in candidates.trials}
        assert len(values) == 1  # the best value, every trial tied with it
        best = min if goal is Goal.MINIMIZE else max
        everything = [t.objectives[study.spec.objectives[0].metric] for t in full.values()]
        assert values == {best(everything)}
