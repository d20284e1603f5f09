"""`GET /studies/{study}/trials.csv` and `tuner trials STUDY --csv`.

A real server runs a real study of the synthetic trainer with a conditional parameter and a
study whose trials fail (reasons of several lines); the CSV is parsed back and compared with the
API's JSON, trial by trial, for the same queries. A 1,200-trial study built in bulk (as
bench/leaderboard.py builds its own) on SQLite and PostgreSQL is read across pages of 500.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext

import httpx
import pytest

from bench.leaderboard import STUDY, build_study, synthesize
from tests.conftest import new_pg_database
from tests.server import REPO, RunningServer, start_server
from tuner.client.rest import Client

SPEC = """
name: table
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10"]
seed: 11
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  algorithm: RANDOM_SEARCH
  maxTrials: 8
  maxParallelTrials: 2
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
    - parameterName: optimizer
      type: CATEGORICAL
      categoricalValues: [adam, sgd]
      conditionalParameterSpecs:
        - parentCategoricalValues: {values: [sgd]}
          parameterSpec: {parameterName: layers, type: INTEGER, minValue: 1, maxValue: 3}
"""
BROKEN = """
name: broken
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10", "--crash-at-step=10"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 2
  maxFailedTrials: 5
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""
FIXED = [
    "number",
    "state",
    "reason",
    "startedAt",
    "endedAt",
    "durationSeconds",
    "bestStep",
    "lastStep",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("csv")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    with Client(running.url, token=running.write_token) as client:
        client.submit(SPEC)
        client.submit(BROKEN)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            client.study(s).state == "RUNNING" for s in ("table", "broken")
        ):
            time.sleep(0.2)
    yield running
    running.stop()


def download(server: RunningServer, study: str, **params: object) -> httpx.Response:
    return httpx.get(
        f"{server.url}/api/v1/studies/{study}/trials.csv",
        params=params,  # type: ignore[arg-type]
        headers={"Authorization": f"Bearer {server.read_token}"},
        timeout=60,
    )


def rows_of(body: bytes) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(body.decode("utf-8"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_every_trial_with_every_param_objective_and_metric(server):
    response = download(server, "table")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="table-trials.csv"'
    columns, rows = rows_of(response.content)
    assert columns[: len(FIXED)] == FIXED
    assert columns[len(FIXED) : len(FIXED) + 4] == [
        "param:x",
        "param:optimizer",
        "param:layers",
        "objective",
    ]
    assert {"metric:rmse", "metric:loss"} <= set(columns[len(FIXED) + 4 :])
    with Client(server.url, token=server.read_token) as client:
        listed = list(client.iter_trials("table"))
        details = {t.number: client.trial("table", t.number) for t in listed}
    assert [int(r["number"]) for r in rows] == [t.number for t in listed]  # objective order
    assert len(rows) == 8
    for row in rows:
        trial = details[int(row["number"])]
        assert row["state"] == trial.state == "COMPLETED"
        assert row["reason"] == ""
        assert float(row["param:x"]) == trial.params["x"]  # every digit
        assert row["param:optimizer"] == trial.params["optimizer"]
        if trial.params["optimizer"] == "sgd":
            assert int(row["param:layers"]) == trial.params["layers"]
        else:
            assert row["param:layers"] == "" and "layers" not in trial.params
        assert float(row["objective"]) == trial.objective
        best = next(s for s in trial.steps if s.step == trial.best_step)
        assert float(row["metric:rmse"]) == best.metrics["rmse"] == trial.objective
        assert float(row["metric:loss"]) == best.metrics["loss"]
        assert (int(row["bestStep"]), int(row["lastStep"])) == (trial.best_step, 20)
        assert row["startedAt"] == trial.started_at.isoformat()
        assert row["endedAt"] == (trial.ended_at.isoformat() if trial.ended_at else "")
        assert float(row["durationSeconds"]) == pytest.approx(trial.duration_seconds)
    assert {r["param:optimizer"] for r in rows} == {"adam", "sgd"}


def test_the_query_of_the_trial_list_gives_the_same_rows(server):
    queries: list[dict[str, object]] = [
        {"sort": "-param:x"},
        {"sort": "number", "filter": "param:optimizer=sgd"},
        {"filter": ["param:x>-0.5", "metric:rmse<10"], "state": ["COMPLETED", "PRUNED"]},
        {"state": "FAILED"},
    ]
    with Client(server.url, token=server.read_token) as client:
        for query in queries:
            filters = query.get("filter", [])
            listed = client.iter_trials(
                "table",
                sort=query.get("sort"),  # type: ignore[arg-type]
                state=query.get("state"),  # type: ignore[arg-type]
                filters=[filters] if isinstance(filters, str) else filters,  # type: ignore[arg-type]
            )
            _, rows = rows_of(download(server, "table", **query).content)
            assert [int(r["number"]) for r in rows] == [t.number for t in listed], query


def test_failure_reasons_come_whole(server):
    _, rows = rows_of(download(server, "broken", sort="number").content)
    with Client(server.url, token=server.read_token) as client:
        for row in rows:
            trial = client.trial("broken", int(row["number"]))
            assert row["state"] == trial.state == "FAILED"
            assert trial.failure_reason and "\n" in trial.failure_reason
            assert row["reason"] == trial.failure_reason  # every line, quoted
            assert row["objective"] == ""


def test_bad_queries_and_access(server):
    bad = download(server, "table", filter="param:nope<1", sort="sideways")
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "REQUEST_INVALID"
    assert {d["field"] for d in error["details"]} == {"sort", "filter"}
    assert download(server, "nope").json()["error"]["code"] == "STUDY_NOT_FOUND"
    anonymous = httpx.get(f"{server.url}/api/v1/studies/table/trials.csv", timeout=10)
    assert anonymous.status_code == 401


def tuner(server: RunningServer, *args: str, remote: bool) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env.pop("TUNER_SERVER", None)
    env.update(
        TUNER_DATABASE_URL=server.db_url,
        TUNER_ARTIFACT_ROOT=str(server.artifact_root),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
    )
    if remote:
        env.update(TUNER_SERVER=server.url, TUNER_TOKEN=server.read_token)
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )


def test_tuner_trials_csv_writes_the_same_locally_and_remotely(server):
    expected = download(server, "table", sort="number").content
    for remote in (True, False):
        printed = tuner(server, "trials", "table", "--csv", remote=remote)
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout == expected
    only_failed = tuner(server, "trials", "broken", "--csv", "--state", "FAILED", remote=False)
    assert only_failed.stdout == download(server, "broken", sort="number", state="FAILED").content
    both = tuner(server, "trials", "table", "--csv", "--json", remote=False)
    assert both.returncode != 0 and b"--csv and --json: choose one" in both.stderr


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_study_larger_than_a_page_is_read_whole_in_order(kind, tmp_path):
    trials = synthesize(1_200, 2, seed=3)
    sqlite = nullcontext(f"sqlite:///{tmp_path / 'tuner.db'}")
    with new_pg_database() if kind == "postgresql" else sqlite as url:
        build_study(url, trials, artifact_root=tmp_path / "artifacts", batch=600, chunk=300)
        running = start_server(url, tmp_path, slots=0)
        try:
            response = download(running, STUDY)
            adam = download(running, STUDY, sort="number", filter="param:optimizer=adam")
        finally:
            running.stop()
    assert response.status_code == 200
    assert response.headers.get("transfer-encoding") == "chunked"  # streamed, not sized first
    columns, rows = rows_of(response.content)
    assert len(rows) == 1_200
    best_first = sorted(trials, key=lambda t: (t.objective, t.number))
    assert [int(r["number"]) for r in rows] == [t.number for t in best_first]
    by_number = {t.number: t for t in trials}
    for row in rows[::97]:
        trial = by_number[int(row["number"])]
        assert float(row["objective"]) == pytest.approx(trial.objective)
        assert float(row["metric:label/mean"]) == pytest.approx(trial.at_best("label/mean"))
        assert int(row["param:hidden_units"]) == trial.params["hidden_units"]
    assert {"metric:rmse", "metric:loss", "metric:mae", "metric:label/mean"} <= set(columns)
    _, adams = rows_of(adam.content)
    assert [int(r["number"]) for r in adams] == [
        t.number for t in trials if t.params["optimizer"] == "adam"
    ]
