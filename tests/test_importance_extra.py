"""Without scikit-learn (a `sklearn` that raises ImportError, as a broken or absent install does
for Python), the API lists fANOVA and mean decrease impurity as unavailable, with why and the
extra to install, and refuses them by name; with it, all three run."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.server import JsonClient, start_server

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=20", "--step-seconds=0.01"]
seed: 3
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 3
  maxParallelTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
    - {{parameterName: layers, type: INTEGER, minValue: 1, maxValue: 4}}
"""
EXTRA = "pip install 'estimator-tuner[analysis]'"


def _completed_study(url: str, token: str, name: str) -> None:
    client = JsonClient(url, token=token)
    client.submit(SPEC.format(name=name))
    deadline = time.monotonic() + 120
    while client.study(name)["state"] != "COMPLETED":
        assert time.monotonic() < deadline, "the study did not complete"
        time.sleep(0.3)


def test_without_scikit_learn_the_forests_are_listed_as_unavailable(sqlite_url, tmp_path):
    shadow = tmp_path / "no-sklearn" / "sklearn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named sklearn')\n")
    server = start_server(sqlite_url, tmp_path, env_overrides={"PYTHONPATH": str(shadow.parent)})
    try:
        _completed_study(server.url, server.write_token, "no-forests")
        headers = {"Authorization": f"Bearer {server.read_token}"}
        url = f"{server.url}/api/v1/studies/no-forests/importances"
        body = httpx.get(url, headers=headers, timeout=30).raise_for_status().json()
        assert body["availableEvaluators"] == ["PED_ANOVA"]
        assert sorted(body["unavailableEvaluators"]) == ["FANOVA", "MEAN_DECREASE_IMPURITY"]
        for name, why in body["unavailableEvaluators"].items():
            assert why.startswith(f"{name} fits a random forest and needs scikit-learn")
            assert "No module named sklearn" in why and why.endswith(EXTRA)
        refused = httpx.get(url, params={"evaluator": "FANOVA"}, headers=headers, timeout=30)
        assert refused.status_code == 422
        [detail] = refused.json()["error"]["details"]
        assert detail["field"] == "evaluator"
        assert EXTRA in detail["message"] and "available: PED_ANOVA" in detail["message"]
    finally:
        server.stop()


def test_with_scikit_learn_every_evaluator_runs(sqlite_url, tmp_path: Path):
    server = start_server(sqlite_url, tmp_path)
    try:
        _completed_study(server.url, server.write_token, "forests")
        headers = {"Authorization": f"Bearer {server.read_token}"}
        url = f"{server.url}/api/v1/studies/forests/importances"
        for evaluator in ("PED_ANOVA", "FANOVA", "MEAN_DECREASE_IMPURITY"):
            answer = httpx.get(url, params={"evaluator": evaluator}, headers=headers, timeout=60)
            body = answer.raise_for_status().json()
            assert body["evaluator"] == evaluator
            assert body["unavailableEvaluators"] == {}
            assert {i["param"] for i in body["importances"]} == {"x", "layers"}
    finally:
        server.stop()
