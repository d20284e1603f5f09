"""Every study command against a real server and against the same database locally: the
same output either way, and errors that say what to type next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.client.rest import Client

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps=30", "--eval-every-steps=10", "--export", "--step-seconds={pace}"]
seed: 8
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: {trials}
  maxParallelTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""

READS = [
    ("leaderboard", "parity"),
    ("leaderboard", "parity", "--sort", "-param:x", "--limit", "2"),
    ("trials", "parity"),
    ("trial", "parity", "1"),
    ("show", "parity"),
    ("best", "parity"),
    ("studies",),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("parity")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    with Client(running.url, token=running.write_token) as client:
        client.submit(SPEC.format(name="parity", trials=3, pace=0.02))
        deadline = time.monotonic() + 60
        while client.study("parity").state == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
    yield running
    running.stop()


def tuner(
    server: RunningServer, *args: str, remote: bool, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TUNER_SERVER", None)
    env.update(
        TUNER_DATABASE_URL=server.db_url,
        TUNER_ARTIFACT_ROOT=str(server.artifact_root),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        COLUMNS="200",
    )
    if remote:
        env.update(TUNER_SERVER=server.url, TUNER_TOKEN=server.write_token)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", READS, ids=["-".join(c) for c in READS])
def test_json_is_the_same_locally_and_through_the_server(server, command):
    local = tuner(server, *command, "--json", remote=False)
    remote = tuner(server, *command, "--json", remote=True)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    assert json.loads(local.stdout) == json.loads(remote.stdout)


@pytest.mark.parametrize("command", READS[:5], ids=["-".join(c) for c in READS[:5]])
def test_text_is_the_same_locally_and_through_the_server(server, command):
    local = tuner(server, *command, remote=False)
    remote = tuner(server, *command, remote=True)
    assert local.returncode == 0, local.stderr
    assert local.stdout == remote.stdout
    assert "parity" in local.stdout


def test_what_the_commands_show(server):
    board = tuner(server, "leaderboard", "parity", remote=True).stdout
    assert "3/3 trials finished" in board and board.count("COMPLETED") >= 3
    one = tuner(server, "trial", "parity", "1", remote=True).stdout
    assert "eval steps" in one and "rmse" in one and "step 30" in one
    assert "x=" in one and "export" in one
    best = tuner(server, "best", "parity", remote=True).stdout
    assert "best step   30" in best and "tuner pull parity" in best
    log = tuner(server, "logs", "parity", "0", remote=True)
    assert log.returncode == 0 and "step 30" in log.stdout
    assert log.stdout == tuner(server, "logs", "parity", "0", remote=False).stdout


def test_write_commands_work_both_ways(server):
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name="steered", trials=4, pace=5))
    for remote in (True, False):
        stopped = tuner(server, "stop", "steered", remote=remote)
        assert stopped.returncode == 0, stopped.stderr
        assert "STOPPED" in stopped.stdout and "tuner resume steered" in stopped.stdout
        resumed = tuner(server, "resume", "steered", "--max-trials", "5", remote=remote)
        assert resumed.returncode == 0, resumed.stderr
        assert "RUNNING, budget 5" in resumed.stdout
    tuner(server, "stop", "steered", remote=True)
    with Client(server.url, token=server.read_token) as client:
        deadline = time.monotonic() + 30
        while client.study("steered").counts.get("RUNNING") and time.monotonic() < deadline:
            time.sleep(0.2)
    refused = tuner(server, "retry", "steered", "--failed", remote=True)
    assert refused.returncode == 1 and "no failed trials" in refused.stderr
    deleted = tuner(server, "delete", "steered", "--yes", remote=True)
    assert deleted.returncode == 0, deleted.stderr
    gone = tuner(server, "show", "steered", remote=False)
    assert gone.returncode == 3 and "not found" in gone.stderr


def test_errors_say_what_to_type_next(server, tmp_path):
    for remote in (True, False):
        missing = tuner(server, "show", "nope", remote=remote)
        assert missing.returncode == 3
        assert "study 'nope' not found" in missing.stderr and "tuner studies" in missing.stderr
        no_trial = tuner(server, "trial", "parity", "99", remote=remote)
        assert no_trial.returncode == 3 and "tuner trials parity" in no_trial.stderr
    unauthenticated = tuner(server, "studies", remote=True, extra_env={"TUNER_TOKEN": ""})
    assert unauthenticated.returncode == 1 and "tuner token create" in unauthenticated.stderr
    down = tuner(server, "studies", remote=True, extra_env={"TUNER_SERVER": "http://127.0.0.1:9"})
    assert down.returncode == 5 and "tuner serve" in down.stderr
    # only TUNER_SERVER set: no local database is created or read
    nowhere = tmp_path / "absent.db"
    only_server = tuner(
        server,
        "leaderboard",
        "parity",
        remote=True,
        extra_env={"TUNER_DATABASE_URL": f"sqlite:///{nowhere}"},
    )
    assert only_server.returncode == 0 and not nowhere.exists()
    local_missing = tuner(
        server, "studies", remote=False, extra_env={"TUNER_DATABASE_URL": f"sqlite:///{nowhere}"}
    )
    assert local_missing.returncode == 3 and "--server" in local_missing.stderr
    assert not nowhere.exists()
