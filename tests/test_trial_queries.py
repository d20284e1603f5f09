"""Server-side sorting and filtering of a study's trials, and metric histories across trials.

A small study is written straight through the repository (what the study manager writes for
each trial, without trial processes), on SQLite and on PostgreSQL; the routes are exercised
in process through FastAPI's TestClient. Expected orders come from a plain-Python model of the
same trials, so every key is checked both ways with its missing values last.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.main import create_app
from tests.conftest import REPO, new_backend
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import QueryError
from tuner.domain.spec import Goal, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.outputs.events import ScalarValue
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries as tq
from tuner.persistence.models import TrialRunRow
from tuner.study.operations import Backend

OPTIMIZERS = ["sgd", "adam", "adagrad"]  # not alphabetical: categoricals sort in spec order
BASE = datetime(2024, 3, 1, tzinfo=UTC)
NAN = math.nan


@dataclass
class T:
    """One trial as the test means it: what each sort key and filter should see."""

    number: int
    state: str
    params: dict[str, Any]
    #: eval dir -> [(step, {tag: value})]
    evals: dict[str, list[tuple[int, dict[str, float]]]]
    started_minute: int
    duration: float | None
    objective_counts: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def rmse_steps(self) -> list[tuple[int, float]]:
        return [(s, m["rmse"]) for s, m in self.evals.get("eval", []) if "rmse" in m]

    @property
    def best(self) -> tuple[int, dict[str, float]] | None:
        finite = [(s, m) for s, m in self.evals.get("eval", []) if math.isfinite(m["rmse"])]
        return min(finite, key=lambda sm: (sm[1]["rmse"], sm[0])) if finite else None

    @property
    def objective(self) -> float | None:
        if not self.objective_counts or self.best is None:
            return None
        return self.best[1]["rmse"]

    @property
    def started(self) -> datetime:
        return BASE + timedelta(minutes=self.started_minute)

    @property
    def ended(self) -> datetime | None:
        return None if self.duration is None else self.started + timedelta(seconds=self.duration)

    def value(self, key: str) -> Any:
        """The trial's value for a sort key or filter subject (None: missing)."""
        steps = [s for runs in self.evals.values() for s, _ in runs]
        if key == "objective":
            return self.objective
        if key == "number":
            return self.number
        if key == "startedAt":
            return self.started
        if key == "endedAt":
            return self.ended
        if key == "duration":
            return self.duration
        if key == "state":
            return self.state
        if key == "bestStep":
            return self.best[0] if self.best else None
        if key == "lastStep":
            return max(steps, default=None)
        kind, _, name = key.partition(":")
        if kind == "metric":
            value = self.best[1].get(name) if self.best else None
            return None if value is None or math.isnan(value) else value
        if kind == "param":
            if name == "optimizer":
                return OPTIMIZERS.index(self.params[name])
            return self.params.get(name)
        raise AssertionError(key)


def evals(*rows: tuple[int, float, float]) -> list[tuple[int, dict[str, float]]]:
    return [(step, {"rmse": rmse, "accuracy": acc}) for step, rmse, acc in rows]


TRIALS = [
    T(
        0,
        "COMPLETED",
        {"lr": 0.01, "units": 32, "optimizer": "adam"},
        {
            "eval": evals((10, 0.9, 0.6), (20, 0.5, 0.8), (30, 0.6, 0.82)),
            # a second eval dir with the same tag: never the default for the history
            "eval_train": [(10, {"rmse": 0.1}), (20, {"rmse": 0.05})],
        },
        started_minute=5,
        duration=100,
    ),
    T(
        1,
        "COMPLETED",
        {"lr": 0.001, "units": 64, "optimizer": "sgd"},
        {"eval": evals((10, 0.7, 0.7), (20, 0.3, 0.9))},
        started_minute=3,
        duration=50,
    ),
    T(
        2,
        "PRUNED",
        {"lr": 0.1, "units": 16, "optimizer": "adagrad"},
        {"eval": evals((10, 1.2, 0.5))},
        started_minute=6,
        duration=10,
    ),
    # FAILED: no objective, but its best step (and that step's metrics) stay
    T(
        3,
        "FAILED",
        {"lr": 0.005, "units": 128, "optimizer": "adam"},
        {"eval": evals((10, 0.4, 0.7))},
        started_minute=1,
        duration=30,
        objective_counts=False,
    ),
    # RUNNING, only a NaN so far: no best step, no objective, no end
    T(
        4,
        "RUNNING",
        {"lr": 0.02, "units": 32, "optimizer": "sgd"},
        {"eval": evals((10, NAN, 0.1))},
        started_minute=0,
        duration=None,
    ),
    # ties trial 1 on the objective, lr, units and duration: the number decides
    T(
        5,
        "COMPLETED",
        {"lr": 0.001, "units": 64, "optimizer": "adam"},
        {
            "eval": [
                (10, {"rmse": 0.8, "accuracy": 0.6, "label/mean": 1.5}),
                (30, {"rmse": 0.3, "accuracy": 0.85, "label/mean": 2.0}),
            ]
        },
        started_minute=2,
        duration=50,
    ),
    # STOPPED before its first eval
    T(
        6,
        "STOPPED",
        {"lr": 0.05, "units": 8, "optimizer": "sgd"},
        {},
        started_minute=4,
        duration=5,
        objective_counts=False,
    ),
]
BY_NUMBER = {t.number: t for t in TRIALS}
SORT_KEYS = [
    *tq.PLAIN_SORT_KEYS,
    "metric:accuracy",
    "metric:rmse",
    "metric:never-written",
    "param:lr",
    "param:units",
    "param:optimizer",
]


def make_spec() -> Any:
    return parse_spec(
        {
            "name": "queries",
            "trainer": "synthetic",
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "maxTrials": 50,
                "maxParallelTrials": 50,
                "params": [
                    {
                        "parameterName": "lr",
                        "type": "DOUBLE",
                        "minValue": 1e-4,
                        "maxValue": 1,
                        "scaleType": "UNIT_LOG_SCALE",
                    },
                    {"parameterName": "units", "type": "INTEGER", "minValue": 1, "maxValue": 512},
                    {
                        "parameterName": "optimizer",
                        "type": "CATEGORICAL",
                        "categoricalValues": OPTIMIZERS,
                    },
                ],
            },
        }
    )


def write_trial(backend: Backend, study: Study, trial: T) -> None:
    """What the manager writes for a trial: the run, its eval values, objective, end."""
    with backend.db.session() as s:
        run_id = repo.reserve_run(s, study.id, worker="test:1")
        assert run_id is not None
        repo.attach_trial(
            s,
            run_id,
            number=trial.number,
            optuna_trial_id=1000 + trial.number,
            params=trial.params,
            output_dir=f"queries/trial-{trial.number}",
            log_path=f"queries/trial-{trial.number}.log",
        )
    values = [
        ScalarValue(name, step, trial.started.timestamp() + step, tag, value)
        for name, rows in trial.evals.items()
        for step, metrics in rows
        for tag, value in metrics.items()
    ]
    with backend.db.session() as s:
        observations = repo.record_eval_values(s, run_id, values, {}, objective_tag="rmse")
        ids = {(o.eval_name, o.step): o.eval_step_id for o in observations}
        best = trial.best
        best_id = ids["eval", best[0]] if best else None
        repo.set_objective_steps(
            s,
            run_id,
            best_step_id=best_id,
            objective_step_id=best_id,
            objective_rank=repo.objective_rank(best[1]["rmse"] if best else None, Goal.MINIMIZE),
        )
        if trial.state != "RUNNING":
            repo.finish_run(s, run_id, state=trial.state, exit_code=0)
        s.execute(
            update(TrialRunRow)
            .where(TrialRunRow.id == run_id)
            .values(started_at=trial.started, ended_at=trial.ended)
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    """One database per dialect for the whole module: every test here only reads."""
    with new_backend(request.param, tmp_path_factory.mktemp("queries")) as connected:
        yield connected


@pytest.fixture(scope="module")
def study(backend: Backend) -> Study:
    with backend.db.session() as s:
        created = repo.create_study(s, make_spec())
    for trial in TRIALS:
        write_trial(backend, created, trial)
    with backend.db.session() as s:
        return repo.get_study(s, "queries")


@pytest.fixture(scope="module")
def http(
    backend: Backend, study: Study, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = Settings(
        database_url=backend.db.url,
        artifact_root=tmp_path_factory.mktemp("artifacts"),
        trainers_file=REPO / "trainers.yaml",
        public_reads=True,
    )
    registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    with TestClient(create_app(settings, backend=backend, registry=registry)) as client:
        yield client


def expected(key: str, descending: bool = False, trials: list[T] | None = None) -> list[int]:
    """Trial numbers as a sort should give them: by value, ties by number, missing last."""
    pool = TRIALS if trials is None else trials
    have = [t for t in pool if t.value(key) is not None]
    missing = [t.number for t in pool if t.value(key) is None]
    have.sort(key=lambda t: t.number)
    have.sort(key=lambda t: t.value(key), reverse=descending)  # stable: ties stay by number
    return [t.number for t in have] + sorted(missing)


def numbers(
    backend: Backend, study: Study, query: tq.TrialQuery, *, limit: int = 50, offset: int = 0
) -> tuple[list[int], int]:
    with backend.db.session() as s:
        rows, total = tq.list_trials(s, study, query, limit=limit, offset=offset)
    return [r.number for r in rows], total


def parsed(study: Study, **kwargs: Any) -> tq.TrialQuery:
    return tq.parse_query(study.spec, **kwargs)


# -- the repository, on both databases -----------------------------------------------------------


def test_every_sort_key_both_ways_missing_values_last(backend, study):
    for key in SORT_KEYS:
        for descending in (False, True):
            text = f"-{key}" if descending else key
            got, total = numbers(backend, study, parsed(study, sort=text))
            assert total == len(TRIALS)
            assert got == expected(key, descending), text
            # pages of 2 stitch into the same order (across the missing-values boundary)
            paged = [
                n
                for offset in range(0, len(TRIALS), 2)
                for n in numbers(backend, study, parsed(study, sort=text), limit=2, offset=offset)[
                    0
                ]
            ]
            assert paged == got, text
    # spot checks of the model itself
    assert expected("objective") == [1, 5, 0, 2, 3, 4, 6]
    assert expected("param:optimizer") == [1, 4, 6, 0, 3, 5, 2]
    assert expected("duration", True) == [0, 1, 5, 3, 2, 6, 4]


def test_default_order_is_the_leaderboard(backend, study):
    with backend.db.session() as s:
        rows, total = repo.leaderboard(s, study)
        completed, done = repo.leaderboard(s, study, state="COMPLETED", limit=2, offset=1)
    assert [r.number for r in rows] == expected("objective") and total == len(TRIALS)
    assert [r.number for r in completed] == [5, 0] and done == 3
    first = rows[0]
    assert (first.objective, first.best_step, first.last_step) == (0.3, 20, 20)
    assert first.duration_seconds == 50


FILTER_CASES = [
    ("metric:rmse", 0.4),
    ("metric:accuracy", 0.8),
    ("param:lr", 0.001),
    ("param:units", 32),
    ("objective", 0.5),
]
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "!=": operator.ne,
}


def test_filters_with_each_operator(backend, study):
    for subject, bound in FILTER_CASES:
        for op, compare in OPS.items():
            text = f"{subject}{op}{bound}"
            want = [
                t.number
                for t in TRIALS
                if t.value(subject) is not None and compare(t.value(subject), bound)
            ]
            got, total = numbers(backend, study, parsed(study, sort="number", filters=[text]))
            assert (got, total) == (want, len(want)), text
    for text, want in [
        ("param:optimizer=adam", [0, 3, 5]),
        ("param:optimizer != adam", [1, 2, 4, 6]),
        (" metric:rmse >= 0.5 ", [0, 2]),
    ]:
        assert numbers(backend, study, parsed(study, sort="number", filters=[text]))[0] == want


def test_combined_filters_states_and_pagination(backend, study):
    query = parsed(
        study,
        sort="-metric:accuracy",
        states=["COMPLETED", "PRUNED", "FAILED"],
        filters=["param:units>=32", "metric:rmse<1"],
    )
    want = expected("metric:accuracy", True, [t for t in TRIALS if t.number in (0, 1, 3, 5)])
    assert want == [1, 5, 0, 3]
    assert numbers(backend, study, query) == (want, 4)
    assert numbers(backend, study, query, limit=3, offset=0) == (want[:3], 4)
    assert numbers(backend, study, query, limit=3, offset=3) == (want[3:], 4)
    assert numbers(backend, study, query, limit=3, offset=9) == ([], 4)
    # a filter no trial passes, and repeated states
    nothing = parsed(study, states=["RUNNING", "RUNNING"], filters=["objective<1"])
    assert numbers(backend, study, nothing) == ([], 0)


def test_bad_sort_and_filter_name_the_parameter():
    spec = make_spec()
    for sort in ["bogus", "metric:", "-param:nope", "--number", "param:"]:
        with pytest.raises(QueryError) as info:
            tq.parse_query(spec, sort=sort)
        assert [field for field, _ in info.value.problems] == ["sort"], sort
    for text in [
        "rmse<0.5",
        "metric:rmse",
        "metric:rmse<",
        "metric:rmse<abc",
        "metric:rmse<nan",
        "param:nope=1",
        "param:optimizer<adam",
        "param:optimizer=adma",
        "param:lr==0.1",
        "objective~1",
        "x" * 600,
    ]:
        with pytest.raises(QueryError) as info:
            tq.parse_query(spec, filters=[text])
        assert [field for field, _ in info.value.problems] == ["filter"], text
    with pytest.raises(QueryError) as info:
        tq.parse_query(spec, sort="nope", filters=["a", "metric:x<1", "b"])
    assert [f for f, _ in info.value.problems] == ["sort", "filter", "filter"]
    with pytest.raises(QueryError):
        tq.parse_query(spec, filters=["metric:x<1"] * (tq.MAX_FILTERS + 1))


def test_metric_history_of_several_trials(backend, study):
    with backend.db.session() as s:
        histories, total = tq.metric_history(s, study, "rmse")
        train, train_total = tq.metric_history(s, study, "rmse", eval_name="eval_train")
        slash, _ = tq.metric_history(s, study, "label/mean")
        none, none_total = tq.metric_history(s, study, "never-written")
        page, page_total = tq.metric_history(s, study, "rmse", limit=2, offset=2)
        chosen, chosen_total = tq.metric_history(
            s, study, "rmse", numbers=[5, 0, 99], states=["COMPLETED"]
        )
        no_points, no_points_total = tq.metric_history(s, study, "rmse", limit=1, offset=6)
        past, past_total = tq.metric_history(s, study, "rmse", offset=7)
        thinned, _ = tq.metric_history(s, study, "rmse", numbers=[0], max_points=2)
    # pages of the trials selected, listing those that wrote the tag (6 never evaluated)
    assert total == len(TRIALS) and [h.number for h in histories] == [0, 1, 2, 3, 4, 5]
    for history in histories:
        trial = BY_NUMBER[history.number]
        assert history.eval_name == "eval" and history.state == trial.state
        got = [(p.step, p.value) for p in history.points]
        assert len(got) == len(trial.rmse_steps()) == history.point_count
        for (step, value), (want_step, want) in zip(got, trial.rmse_steps(), strict=True):
            assert step == want_step
            assert (math.isnan(value) and math.isnan(want)) or value == want
        assert all(p.wall_time == trial.started.timestamp() + p.step for p in history.points)
    assert [(h.number, h.eval_name, [p.value for p in h.points]) for h in train] == [
        (0, "eval_train", [0.1, 0.05])
    ] and train_total == len(TRIALS)
    assert [(h.number, [p.step for p in h.points]) for h in slash] == [(5, [10, 30])]
    assert (none, none_total) == ([], len(TRIALS))
    assert [h.number for h in page] == [2, 3] and page_total == len(TRIALS)
    assert [h.number for h in chosen] == [0, 5] and chosen_total == 2
    assert (no_points, no_points_total) == ([], len(TRIALS))
    assert (past, past_total) == ([], len(TRIALS))
    (only,) = thinned
    assert [p.step for p in only.points] == [10, 30] and only.point_count == 3


def test_thin_keeps_first_and_last():
    from tuner.domain.entities import MetricPoint

    points = [MetricPoint(step, float(step), 0.0) for step in range(10)]
    assert [p.step for p in tq.thin(points, 4)] == [0, 3, 6, 9]
    assert tq.thin(points, 10) == points
    assert [p.step for p in tq.thin(points, 1)] == [9]


# -- the routes ----------------------------------------------------------------------------------


def test_list_trials_route_and_its_422s(http):
    url = "/api/v1/studies/queries/trials"
    body = http.get(url).json()
    assert [r["number"] for r in body["data"]] == expected("objective")
    assert body["count"] == len(TRIALS)
    response = http.get(
        url,
        params=[
            ("sort", "-param:lr"),
            ("state", "COMPLETED"),
            ("state", "PRUNED"),
            ("filter", "metric:rmse<1"),
            ("filter", "param:optimizer!=sgd"),
            ("limit", "1"),
            ("offset", "1"),
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 2  # trials 0 and 5; 2 has rmse 1.2
    assert [r["number"] for r in response.json()["data"]] == [5]
    by_start = http.get(url, params={"sort": "startedAt", "limit": 3}).json()
    assert [r["number"] for r in by_start["data"]] == [4, 3, 5]
    assert by_start["data"][0]["endedAt"] is None and by_start["data"][0]["bestStep"] is None
    assert http.get("/api/v1/studies/nope/trials").status_code == 404

    for params, name in [
        ({"sort": "bogus"}, "sort"),
        ({"sort": "param:nope"}, "sort"),
        ({"filter": "metric:rmse<<1"}, "filter"),
        ({"filter": "param:optimizer=adma"}, "filter"),
        ({"state": "DONE"}, "state"),
    ]:
        response = http.get(url, params=params)
        assert response.status_code == 422, (params, response.text)
        assert name in response.text, (params, response.text)
    listed = http.get(url, params={"sort": "bogus"}).text
    assert "metric:<tag>" in listed and "lastStep" in listed
    assert "metric:rmse<<1" in http.get(url, params={"filter": "metric:rmse<<1"}).text


def test_metric_history_route(http):
    url = "/api/v1/studies/queries/metrics/rmse/history"
    body = http.get(url).json()
    assert body["count"] == len(TRIALS)
    first = body["data"][0]
    assert first["number"] == 0 and first["evalName"] == "eval" and first["pointCount"] == 3
    assert first["points"][0] == {
        "step": 10,
        "value": 0.9,
        "wallTime": BY_NUMBER[0].started.timestamp() + 10,
    }
    running = next(h for h in body["data"] if h["number"] == 4)
    assert running["points"][0]["value"] is None  # NaN as null
    picked = http.get(url, params=[("trials", 1), ("trials", 5), ("state", "COMPLETED")]).json()
    assert [h["number"] for h in picked["data"]] == [1, 5] and picked["count"] == 2
    train = http.get(url, params={"evalName": "eval_train"}).json()
    assert [h["number"] for h in train["data"]] == [0]
    paged = http.get(url, params={"limit": 2, "offset": 4, "maxPoints": 2}).json()
    assert [h["number"] for h in paged["data"]] == [4, 5] and paged["count"] == len(TRIALS)
    slash = http.get("/api/v1/studies/queries/metrics/label/mean/history").json()
    assert [h["number"] for h in slash["data"]] == [5]
    encoded = http.get("/api/v1/studies/queries/metrics/label%2Fmean/history").json()
    assert encoded == slash
    empty = http.get("/api/v1/studies/queries/metrics/nope/history")
    assert empty.status_code == 200 and empty.json() == {"data": [], "count": len(TRIALS)}
    assert http.get("/api/v1/studies/nope/metrics/rmse/history").status_code == 404
    for params in [{"trials": -1}, {"state": "DONE"}, {"maxPoints": 0}, {"limit": 501}]:
        assert http.get(url, params=params).status_code == 422, params
