"""`tuner serve` watches its embedded study manager: `/readyz` says when it is down, a crashed
manager is restarted after a back-off, and a crash loop ends the process (non-zero).

The manager is made to crash for real: its loop reads `tuner_studies` at every tick, and the
test renames that table away with a SQL statement of its own (and back to restore it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import httpx
import psycopg
import pytest

from tests.server import RunningServer, start_server

AWAY = "tuner_studies_away"


def execute(db_url: str, statement: str) -> None:
    if db_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=30)) as conn:
            conn.execute(statement)
            conn.commit()
    else:
        conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement)


def hide_studies(db_url: str) -> None:
    execute(db_url, f"ALTER TABLE tuner_studies RENAME TO {AWAY}")


def restore_studies(db_url: str) -> None:
    execute(db_url, f"ALTER TABLE {AWAY} RENAME TO tuner_studies")


def readiness(server: RunningServer) -> tuple[int, Any]:
    response = httpx.get(f"{server.url}/readyz", timeout=5)
    return response.status_code, response.json()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"not in {timeout} s: {what}")


@pytest.fixture
def stopper() -> Iterator[list[RunningServer]]:
    started: list[RunningServer] = []
    yield started
    for server in started:
        server.stop()


def test_readyz_follows_the_manager_and_a_crash_is_restarted(db_url, tmp_path, stopper):
    server = start_server(db_url, tmp_path, slots=1)
    stopper.append(server)
    assert readiness(server) == (200, {"status": "ok"})

    hide_studies(db_url)
    _, body = wait_for(lambda: (r := readiness(server))[0] == 503 and r, 10, "/readyz answers 503")
    assert body["status"] == "manager unavailable"
    assert "crashed" in body["reason"]
    assert "the embedded study manager crashed" in server.log()
    log = server.log()  # the exception, logged with its traceback
    assert "no such table: tuner_studies" in log or 'relation "tuner_studies" does not' in log

    restore_studies(db_url)
    wait_for(lambda: readiness(server) == (200, {"status": "ok"}), 10, "/readyz answers 200")
    assert "restarting the embedded study manager in 1 s" in server.log()
    assert server.process.poll() is None
    # the restarted manager works: a study submitted now gets its trials started
    headers = {"Authorization": f"Bearer {server.write_token}"}
    spec = {
        "name": "after-restart",
        "trainer": "synthetic",
        "args": ["--train-steps=20", "--eval-every-steps=10", "--step-seconds=0.05"],
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": 1,
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
        },
    }
    created = httpx.post(f"{server.url}/api/v1/studies", headers=headers, json=spec)
    assert created.status_code == 201, created.text
    study = f"{server.url}/api/v1/studies/after-restart"
    wait_for(
        lambda: httpx.get(study, headers=headers).json()["state"] == "COMPLETED",
        20,
        "the study completes",
    )


def test_a_crash_loop_ends_the_server_non_zero(sqlite_url, tmp_path, stopper):
    server = start_server(sqlite_url, tmp_path, slots=1)
    stopper.append(server)
    hide_studies(sqlite_url)
    # crashes at about 0, 1, 3, 7 and 15 s (back-off 1, 2, 4, 8 s): the fifth ends it
    code = server.process.wait(timeout=28)
    log = server.log()
    assert code != 0, log[-3000:]
    assert "crashed 5 times in 300 s: giving up" in log
    assert "exiting so the server is restarted" in log
    assert log.count("the embedded study manager crashed\n") == 5


def test_without_slots_readiness_does_not_depend_on_a_manager(sqlite_url, tmp_path, stopper):
    server = start_server(sqlite_url, tmp_path, slots=0)
    stopper.append(server)
    hide_studies(sqlite_url)
    for _ in range(10):
        assert readiness(server) == (200, {"status": "ok"})
        time.sleep(0.1)
