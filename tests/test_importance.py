"""Hyperparameter importances: Optuna's evaluators over the tuner's COMPLETED trials, cached
until the study finishes another trial, and the route's answers in the API's error shape.

Trials are written straight through the repository (what the study manager writes), on SQLite;
the route is exercised in process through FastAPI's TestClient.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import REPO
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import QueryError, StudyStateError
from tuner.domain.spec import Goal, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.outputs.events import ScalarValue
from tuner.persistence import repository as repo
from tuner.study import importance
from tuner.study.operations import Backend


def make_spec(name: str, goal: str = "MINIMIZE") -> dict[str, object]:
    return {
        "name": name,
        "trainer": "synthetic",
        "hyperparameters": {
            "goal": goal,
            "hyperparameterMetricTag": "rmse",
            "maxTrials": 500,
            "params": [
                {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
                {
                    "parameterName": "y",
                    "type": "DOUBLE",
                    "minValue": 0.001,
                    "maxValue": 1,
                    "scaleType": "UNIT_REVERSE_LOG_SCALE",
                },
                {
                    "parameterName": "optimizer",
                    "type": "CATEGORICAL",
                    "categoricalValues": ["adam", "sgd"],
                },
            ],
        },
    }


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    connected = Backend.connect(f"sqlite:///{tmp_path / 'tuner.db'}")
    yield connected
    connected.close()


def new_study(backend: Backend, name: str, goal: str = "MINIMIZE") -> Study:
    with backend.db.session() as session:
        return repo.create_study(session, parse_spec(make_spec(name, goal)))


def add_trial(
    backend: Backend, study: Study, params: dict[str, object], value: float | None, state: str
) -> None:
    """A finished trial as the manager leaves it: its run, one eval, its objective, its end."""
    with backend.db.session() as session:
        number = sum(repo.trial_counts(session, study.id).values())
        run_id = repo.reserve_run(session, study.id, worker="test:1")
        assert run_id is not None
        repo.attach_trial(
            session,
            run_id,
            number=number,
            optuna_trial_id=10_000 * study.id + number,
            params=params,
            output_dir=f"{study.name}/trial-{number}",
            log_path=f"{study.name}/trial-{number}.log",
        )
    with backend.db.session() as session:
        if value is not None:
            observations = repo.record_eval_values(
                session,
                run_id,
                [ScalarValue("eval", 100, 1.0e9 + number, "rmse", value)],
                {},
                objective_tag="rmse",
            )
            step_id = observations[0].eval_step_id
            repo.set_objective_steps(
                session,
                run_id,
                best_step_id=step_id,
                objective_step_id=step_id,
                objective_rank=repo.objective_rank(value, study.spec.goal),
            )
        repo.finish_run(session, run_id, state=state, exit_code=0)


def fill(backend: Backend, study: Study, n: int, *, sign: float = 1.0) -> None:
    """Trials whose objective is x² (plus a little of y): x matters, the optimizer does not."""
    rng = random.Random(7)
    for _ in range(n):
        x, y = rng.uniform(-1, 1), 10 ** rng.uniform(-3, 0)
        params = {"x": x, "y": y, "optimizer": rng.choice(["adam", "sgd"])}
        add_trial(backend, study, params, sign * (x * x + 0.01 * y), "COMPLETED")


def test_the_parameter_the_objective_depends_on_comes_first(backend):
    study = new_study(backend, "bowl")
    fill(backend, study, 40)
    found = importance.param_importances(backend, "bowl")
    names = [name for name, _ in found.params]
    assert names[0] == "x" and set(names) == {"x", "y", "optimizer"}
    assert found.trial_count == 40 and found.evaluator == "PED_ANOVA"
    assert sum(value for _, value in found.params) == pytest.approx(1.0)

    maximized = new_study(backend, "cap", goal="MAXIMIZE")
    fill(backend, maximized, 40, sign=-1.0)
    assert importance.param_importances(backend, "cap").params[0][0] == "x"


def test_kept_until_the_study_finishes_another_trial(backend):
    study = new_study(backend, "cached")
    fill(backend, study, 10)
    first = importance.param_importances(backend, "cached")
    again = importance.param_importances(backend, study.id)
    assert not first.cached and again.cached and again.params == first.params
    # Neither a start nor a stop is a finished trial; a PRUNED or FAILED one is.
    with backend.db.session() as session:
        run_id = repo.reserve_run(session, study.id, worker="test:1")
        assert run_id is not None
    assert importance.param_importances(backend, "cached").cached
    with backend.db.session() as session:
        repo.drop_reservation(session, run_id)
    add_trial(backend, study, {"x": 0.5, "y": 0.1, "optimizer": "adam"}, None, "FAILED")
    recomputed = importance.param_importances(backend, "cached")
    assert not recomputed.cached and recomputed.finished_count == first.finished_count + 1
    assert recomputed.trial_count == 10  # a FAILED trial has no objective: not used


def test_too_few_trials_and_unknown_evaluators_are_refused(backend):
    study = new_study(backend, "young")
    add_trial(backend, study, {"x": 0.1, "y": 0.5, "optimizer": "sgd"}, 0.3, "COMPLETED")
    add_trial(backend, study, {"x": 0.2, "y": 0.5, "optimizer": "sgd"}, 0.2, "PRUNED")
    with pytest.raises(StudyStateError, match="1 COMPLETED trial"):
        importance.param_importances(backend, "young")
    with pytest.raises(QueryError):
        importance.param_importances(backend, "young", "SHAP")  # type: ignore[arg-type]
    if importlib.util.find_spec("sklearn") is None:
        assert importance.available_evaluators() == ["PED_ANOVA"]
        with pytest.raises(QueryError, match="scikit-learn"):
            importance.make_evaluator("FANOVA")


def test_a_reversed_log_scale_is_reflected_back_for_the_sampler():
    spec = parse_spec(make_spec("reflect"))
    received = {"x": 0.25, "y": 0.9, "optimizer": "adam"}
    internal = importance.sampler_values(spec, received)
    assert internal["x"] == 0.25 and internal["optimizer"] == "adam"
    assert internal["y"] == pytest.approx(0.001 + 1 - 0.9)
    assert spec.goal is Goal.MINIMIZE


@pytest.fixture
def http(backend: Backend, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=backend.db.url,
        artifact_root=tmp_path / "artifacts",
        trainers_file=REPO / "trainers.yaml",
        public_reads=True,
    )
    registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    with TestClient(create_app(settings, backend=backend, registry=registry)) as client:
        yield client


def test_the_route_answers_importances_and_errors_in_the_api_shape(backend, http):
    study = new_study(backend, "routed")
    fill(backend, study, 12)
    body = http.get("/api/v1/studies/routed/importances").raise_for_status().json()
    assert body["study"] == "routed" and body["evaluator"] == "PED_ANOVA"
    assert body["importances"][0]["param"] == "x" and body["trialCount"] == 12
    assert "PED_ANOVA" in body["availableEvaluators"] and body["cached"] is False
    assert http.get("/api/v1/studies/routed/importances").json()["cached"] is True

    missing = http.get("/api/v1/studies/nope/importances")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "STUDY_NOT_FOUND"
    bad = http.get("/api/v1/studies/routed/importances", params={"evaluator": "SHAP"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "evaluator"
    new_study(backend, "empty")
    early = http.get("/api/v1/studies/empty/importances")
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "STUDY_STATE_CONFLICT"


def test_whoami_tells_what_a_token_may_do(http):
    assert http.get("/api/v1/whoami").json() == {
        "scope": None,
        "publicReads": True,
        "canRead": True,
        "canWrite": False,
    }
    refused = http.get("/api/v1/whoami", headers={"Authorization": "Bearer tnr_unknown"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHENTICATED"


def test_the_page_and_its_assets_come_from_the_package(http):
    page = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<meta name="tuner-root" content="">' in page.text
    asset = http.get("/ui/js/main.js", headers={"Accept-Encoding": "gzip"})
    assert asset.status_code == 200 and asset.headers["content-encoding"] == "gzip"
    assert asset.headers["content-type"].startswith("text/javascript")
    again = http.get("/ui/js/main.js", headers={"If-None-Match": asset.headers["etag"]})
    assert again.status_code == 304
    assert http.get("/ui/vendor/uPlot.iife.min.js").status_code == 200
    for outside in ("/ui/../main.py", "/ui/index.html", "/ui/nope.js"):
        answer = http.get(outside)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "NOT_FOUND"
