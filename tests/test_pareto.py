"""A Vertex job with two objectives and a conditional parameter, run end to end.

A real server (`tuner serve`, the real PostgreSQL) takes the job as Vertex writes it (YAML over
the API) and runs it through `tests/trainers/two_objectives.py`, a real Estimator that writes
`rmse` and `model_size` at each eval and refuses `--momentum` unless `--optimizer=sgd`. Then:
the front the API answers is the brute-force front of the recorded eval values; a child is
absent wherever its parent's value does not activate it; a front member is pulled, loads and
predicts. `tuner run` does the same on the embedded default (SQLite).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import JsonClient, RunningServer, start_server

REPO = Path(__file__).resolve().parents[1]
TRAINERS = REPO / "tests/trainers/trainers.yaml"
pytestmark = pytest.mark.tf

VERTEX_JOB = """
displayName: {name}
trainer: two_objectives
seed: 7
studySpec:
  metrics:
    - metricId: rmse
      goal: MINIMIZE
    - metricId: model_size
      goal: MINIMIZE
  parameters:
    - parameterId: optimizer
      categoricalValueSpec: {{values: [adam, sgd]}}
      conditionalParameterSpecs:
        - parentCategoricalValues: {{values: [sgd]}}
          parameterSpec:
            parameterId: momentum
            doubleValueSpec: {{minValue: 0.0, maxValue: 0.9}}
    - parameterId: units
      discreteValueSpec: {{values: [1, 4, 16]}}
    - parameterId: learning_rate
      doubleValueSpec: {{minValue: 0.01, maxValue: 0.1}}
      scaleType: UNIT_LOG_SCALE
  algorithm: RANDOM_SEARCH
  measurementSelectionType: BEST_MEASUREMENT
maxTrialCount: {trials}
parallelTrialCount: 2
maxFailedTrialCount: {trials}
trialJobSpec:
  workerPoolSpecs:
    - pythonPackageSpec:
        args: ["--train-steps=20", "--eval-every-steps=10"]
"""
OBJECTIVES = ("rmse", "model_size")
#: Our own shape: two objectives and a safety metric (6 * units + 1 weights at most 30).
SAFE_STUDY: dict[str, Any] = {
    "name": "safe",
    "trainer": "two_objectives",
    "args": ["--train-steps=20", "--eval-every-steps=10"],
    "seed": 1,
    "hyperparameters": {
        "metrics": [
            {"metricId": "rmse", "goal": "MINIMIZE"},
            {"metricId": "loss", "goal": "MINIMIZE"},
            {"metricId": "model_size", "goal": "MINIMIZE", "safetyConfig": {"safetyThreshold": 30}},
        ],
        "algorithm": "GRID_SEARCH",
        "maxTrials": 6,
        "maxParallelTrials": 2,
        "params": [
            {"parameterName": "units", "type": "DISCRETE", "discreteValues": [1, 4, 16]},
            {"parameterName": "learning_rate", "type": "DISCRETE", "discreteValues": [0.02, 0.1]},
        ],
    },
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from tests.conftest import new_pg_database

    tmp_path = tmp_path_factory.mktemp("pareto")
    with new_pg_database() as db_url:
        server = start_server(
            db_url, tmp_path, slots=2, env_overrides={"TUNER_TRAINERS_FILE": str(TRAINERS)}
        )
        try:
            answer = httpx.post(
                f"{server.url}/api/v1/studies",
                content=VERTEX_JOB.format(name="two", trials=6),
                headers={
                    "Content-Type": "application/yaml",
                    "Authorization": f"Bearer {server.write_token}",
                },
                timeout=30,
            )
            assert answer.status_code == 201, answer.text
            assert any("trialJobSpec" in w for w in answer.json()["warnings"])
            with JsonClient(server.url, token=server.write_token) as client:
                client.submit(SAFE_STUDY)
                deadline = time.monotonic() + 600
                for name in ("two", "safe"):
                    while client.study(name)["state"] == "RUNNING" and time.monotonic() < deadline:
                        time.sleep(1)
                    assert client.study(name)["state"] == "COMPLETED", server.log()[-3000:]
            yield server
        finally:
            server.stop()


def details(server: RunningServer, name: str) -> list[dict[str, Any]]:
    with JsonClient(server.url, token=server.read_token) as client:
        rows = client.trials(name, limit=100)["data"]
        return [client.trial(name, row["number"]) for row in rows]


def ranking_vector(detail: dict[str, Any]) -> tuple[int, tuple[float, float]]:
    """BEST_MEASUREMENT, recomputed from the recorded evals: the step with the lowest rmse,
    and both objectives there."""
    evals = [s for s in detail["steps"] if s["evalName"] == "eval" and "rmse" in s["metrics"]]
    best = min(evals, key=lambda s: (s["metrics"]["rmse"], s["step"]))
    return best["step"], tuple(best["metrics"][m] for m in OBJECTIVES)  # type: ignore[return-value]


def brute_force_front(vectors: dict[int, tuple[float, float]]) -> set[int]:
    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return {
        n
        for n, v in vectors.items()
        if not any(dominates(w, v) for m, w in vectors.items() if m != n)
    }


def test_children_are_passed_only_where_their_parent_matches(served):
    trials = details(served, "two")
    assert len(trials) == 6
    for trial in trials:
        # the trainer refuses --momentum with adam: every trial completing proves it was absent
        assert trial["state"] == "COMPLETED", trial["failureReason"]
        assert ("momentum" in trial["params"]) == (trial["params"]["optimizer"] == "sgd")
    optimizers = {t["params"]["optimizer"] for t in trials}
    assert optimizers == {"adam", "sgd"}, "seed 7 draws both optimizers"


def test_front_is_the_brute_force_front_of_the_recorded_values(served):
    trials = details(served, "two")
    vectors = {t["number"]: ranking_vector(t)[1] for t in trials}
    with JsonClient(served.url, token=served.read_token) as client:
        page = client.pareto("two")
        rows = client.trials("two", sort="objective:model_size", limit=100)["data"]
    assert {m["number"] for m in page["data"]} == brute_force_front(vectors)
    assert page["count"] == len(page["data"]) and page["rankedCount"] == 6
    assert [o["metric"] for o in page["objectives"]] == list(OBJECTIVES)
    for member in page["data"]:
        step, vector = ranking_vector(next(t for t in trials if t["number"] == member["number"]))
        assert member["step"] == step
        assert tuple(member["objectives"][m] for m in OBJECTIVES) == pytest.approx(vector)
        assert member["checkpoint"]["step"] == step
        detail = next(t for t in trials if t["number"] == member["number"])
        assert detail["objectives"] == pytest.approx(member["objectives"])
        assert [e["step"] for e in member["exports"]] == [step]
    rmse = [m["objectives"]["rmse"] for m in page["data"]]
    assert rmse == sorted(rmse), "best first on the first objective"
    sizes = [r["objectives"]["model_size"] for r in rows]
    assert sizes == sorted(sizes), "the leaderboard sorts by the second objective"


def test_best_explains_the_front(served):
    answer = httpx.get(
        f"{served.url}/api/v1/studies/two/best",
        headers={"Authorization": f"Bearer {served.read_token}"},
    )
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "SEVERAL_OBJECTIVES"
    assert "Pareto front" in error["message"] and "tuner pull two --trial N" in error["message"]


def test_a_front_member_is_pulled_loads_and_predicts(served, tmp_path):
    with JsonClient(served.url, token=served.read_token) as client:
        member = client.pareto("two")["data"][-1]
    auth = ["--server", served.url, "--token", served.read_token]
    chosen = ["--trial", str(member["number"]), "--to", str(tmp_path / "models")]
    pulled = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "pull", "two", *chosen, *auth],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert "signature serving_default:" in pulled.stdout
    (version,) = (tmp_path / "models" / "two").iterdir()
    assert version.name == member["exports"][0]["version"]
    served_prediction = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tensorflow as tf; m = tf.saved_model.load(sys.argv[1]); "
            "f = m.signatures['serving_default']; "
            "out = f(x=tf.constant([[0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]], tf.float32)); "
            "print({k: v.shape.as_list() for k, v in out.items()})",
            str(version),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert served_prediction.returncode == 0, served_prediction.stderr
    assert "[2]" in served_prediction.stdout


def test_tuner_run_takes_the_vertex_job_on_the_embedded_default(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(VERTEX_JOB.format(name="two-local", trials=3))
    env = {
        **os.environ,
        "TUNER_DATABASE_URL": f"sqlite:///{tmp_path / 'tuner.db'}",
        "TUNER_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TUNER_TRAINERS_FILE": str(TRAINERS),
        "TUNER_POLL_INTERVAL": "0.05",
    }
    env.pop("TUNER_SERVER", None)
    run = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "run", str(job), "--no-view"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Pareto front" in run.stdout
    assert "trialJobSpec: ignored" in run.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "pareto", "two-local", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    page = json.loads(shown.stdout)
    listed = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "trials", "two-local", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    rows = json.loads(listed.stdout)
    rows = rows["data"] if isinstance(rows, dict) else rows
    vectors = {
        r["number"]: tuple(r["objectives"][m] for m in OBJECTIVES)
        for r in rows
        if r["state"] == "COMPLETED"
    }
    assert len(vectors) == 3
    assert {m["number"] for m in page["data"]} == brute_force_front(vectors)
    for member in page["data"]:
        assert set(member) >= {"number", "objectives", "params", "step"}


def test_infeasible_trials_are_never_on_the_front(served):
    with JsonClient(served.url, token=served.read_token) as client:
        page = client.pareto("safe")
        rows = client.trials("safe", limit=100)["data"]
        study = client.study("safe")
    assert [c["metric"] for c in study["constraints"]] == ["model_size"]
    assert [o["metric"] for o in study["objectives"]] == ["rmse", "loss"]
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETED"}
    infeasible = {r["number"] for r in rows if r["params"]["units"] == 16}
    assert len(infeasible) == 2  # the grid has both learning rates with 16 units
    assert {r["number"] for r in rows if r["feasible"] is False} == infeasible
    assert page["infeasibleCount"] == 2 and page["rankedCount"] == 6
    assert page["data"], "the feasible trials have a front"
    assert study["best"] is None, "several objectives: a front, no best"
    for member in page["data"]:
        assert member["number"] not in infeasible
        assert member["constraints"]["model_size"] <= 30
