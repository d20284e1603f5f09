"""Stopping one running trial by hand: a real server runs a real study of the synthetic trainer
(real subprocesses, real event files); one trial is stopped over the API (SQLite) or with
`tuner stop STUDY --trial N` on the database itself (PostgreSQL). It ends PRUNED with who asked
and when, early, keeping its best step's checkpoint; it is not run again, the study still spends
exactly its budget, Optuna has it PRUNED, and the event stream tells the end."""

from __future__ import annotations

import getpass
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import optuna
import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.client.rest import ApiError, Client

SPEC = """
name: halt
trainer: synthetic
args: ["--train-steps=400", "--eval-every-steps=10", "--step-seconds=0.4"]
seed: 5
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  algorithm: RANDOM_SEARCH
  maxTrials: 3
  maxParallelTrials: 2
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""
REASON = re.compile(
    r"^stopped by hand at step (\d+) \(request from (.+) at "
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$"
)


def wait_for(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_at_step(client: Client, number: int, step: int) -> bool:
    try:
        trial = client.trial("halt", number)
    except ApiError as exc:
        if exc.code == "TRIAL_NOT_FOUND":  # not claimed yet
            return False
        raise
    return trial.state == "RUNNING" and (trial.last_step or 0) >= step


def stop_with_cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TUNER_SERVER", None)
    env.update(
        TUNER_DATABASE_URL=server.db_url,
        TUNER_ARTIFACT_ROOT=str(server.artifact_root),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
    )
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", "stop", "halt", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("how", ["api-sqlite", "cli-postgresql"])
def test_a_trial_stopped_by_hand_ends_pruned_and_the_study_goes_on(how, tmp_path, request):
    db_url = (
        f"sqlite:///{tmp_path / 'tuner.db'}"
        if how == "api-sqlite"
        else request.getfixturevalue("pg_url")
    )
    server = start_server(db_url, tmp_path, slots=2)
    try:
        with Client(server.url, token=server.write_token) as client:
            client.submit(SPEC)
            wait_for("trial 0 at step 30", lambda: running_at_step(client, 0, 30))
            if how == "api-sqlite":
                answer = httpx.post(
                    f"{server.url}/api/v1/studies/halt/trials/0/stop",
                    headers={"Authorization": f"Bearer {server.write_token}"},
                    timeout=10,
                )
                assert answer.status_code == 202, answer.text
                asked = answer.json()
                assert asked["number"] == 0 and asked["state"] == "RUNNING"
                assert asked["stopRequestedBy"] == "tests" and asked["stopRequestedAt"]
                again = client.stop_trial("halt", 0)  # idempotent: the first request stands
                assert again.stop_requested_at is not None
                assert (
                    again.stop_requested_at.isoformat()
                    == asked["stopRequestedAt"].replace("Z", "+00:00")
                    or again.state == "PRUNED"
                )
                who = "tests"
            else:
                stopped = stop_with_cli(server, "--trial", "0")
                assert stopped.returncode == 0, stopped.stderr
                who = f"{getpass.getuser()}@{socket.gethostname()}"
                assert f"study halt trial 0: stop asked for by {who}" in stopped.stdout
                assert "it ends PRUNED" in stopped.stdout
            ended = wait_for(
                "trial 0 to end",
                lambda: (t := client.trial("halt", 0)).state != "RUNNING" and t,
                timeout=30,
            )
            wait_for("the study to end", lambda: client.study("halt").state != "RUNNING")
            study = client.study("halt")
            trials = list(client.iter_trials("halt", sort="number"))
            events = [
                e for e in client.events("halt", last_event_id="0") if e.kind in ("state", "end")
            ]
    finally:
        server.stop()

    # ended PRUNED, early, saying who asked and when
    assert ended.state == "PRUNED", ended.failure_reason
    match = REASON.match(ended.failure_reason or "")
    assert match, ended.failure_reason
    assert match.group(2) == who
    assert 30 <= int(match.group(1)) < 400
    assert ended.last_step is not None and ended.last_step < 400
    assert ended.stop_requested_by == who
    # like a pruned trial: its best step ranks it and its checkpoint is kept
    assert ended.best_step is not None and ended.objective is not None
    assert [c.step for c in ended.checkpoints] == [ended.best_step]

    # not run again; the budget is spent with it counted
    assert study.state == "COMPLETED", study.state_reason
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state for t in trials] == ["PRUNED", "COMPLETED", "COMPLETED"]
    assert study.counts.get("PRUNED") == 1 and not study.counts.get("STOPPED")

    # Optuna has it PRUNED, with its last reported value
    optuna_trials = optuna.load_study(study_name="halt", storage=db_url).get_trials()
    assert [t.state for t in optuna_trials] == [
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.COMPLETE,
    ]
    pruned = optuna_trials[0]
    assert pruned.intermediate_values
    assert pruned.value == pruned.intermediate_values[max(pruned.intermediate_values)]

    # the event stream tells its end as any other
    ends = [e.data for e in events if e.kind == "state" and e.data["number"] == 0]
    assert [(e["state"], e["reason"]) for e in ends] == [("PRUNED", ended.failure_reason)]
    assert events[-1].kind == "end" and events[-1].data["state"] == "COMPLETED"


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Any:
    tmp = tmp_path_factory.mktemp("stop-refusals")
    server = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.replace("--step-seconds=0.4", "--step-seconds=0").replace("400", "20"))
        wait_for("the study to end", lambda: client.study("halt").state != "RUNNING")
    yield server
    server.stop()


def test_stopping_refuses_what_cannot_be_stopped(finished):
    with Client(finished.url, token=finished.write_token) as client:
        with pytest.raises(ApiError) as ended:
            client.stop_trial("halt", 1)
        assert ended.value.status == 409 and ended.value.code == "TRIAL_STATE_CONFLICT"
        assert ended.value.message == "study 'halt' trial 1 is not running: it ended COMPLETED"
        with pytest.raises(ApiError) as unknown:
            client.stop_trial("halt", 99)
        assert unknown.value.status == 404 and unknown.value.code == "TRIAL_NOT_FOUND"
        assert unknown.value.message == "study 'halt' has no trial 99"
        with pytest.raises(ApiError) as no_study:
            client.stop_trial("nope", 0)
        assert no_study.value.status == 404 and no_study.value.code == "STUDY_NOT_FOUND"
        assert client.trial("halt", 1).stop_requested_at is None
    for token, status in ((finished.read_token, 403), (None, 401)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        refused = httpx.post(
            f"{finished.url}/api/v1/studies/halt/trials/0/stop", headers=headers, timeout=10
        )
        assert refused.status_code == status
    cli = stop_with_cli(finished, "--trial", "2")
    assert cli.returncode != 0
    assert "study 'halt' trial 2 is not running: it ended COMPLETED" in cli.stderr
