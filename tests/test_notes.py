"""Notes on a study and on a trial: over a real server with real tokens (set, read back in the
study and trial bodies, cleared, refused with a clear error), through `tuner note` locally and
remotely, and stored the same on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.client.rest import ApiError, Client
from tuner.domain.spec import parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.public.schemas import MAX_NOTE_CHARS
from tuner.study import answers
from tuner.study import operations as study_ops

SPEC = """
name: noted
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10"]
seed: 3
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 2
  maxParallelTrials: 2
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""
NOTE = "# Baseline\n\n- lr from the *paper*\n- `adam` diverged at step 40\n\nünïcode ✓"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("notes")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    with Client(running.url, token=running.write_token) as client:
        client.submit(SPEC)
        deadline = time.monotonic() + 60
        while client.study("noted").state == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
    yield running
    running.stop()


def put(server: RunningServer, path: str, body: object, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.put(f"{server.url}/api/v1{path}", json=body, headers=headers, timeout=10)


def get(server: RunningServer, path: str) -> dict:
    headers = {"Authorization": f"Bearer {server.read_token}"}
    response = httpx.get(f"{server.url}/api/v1{path}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_study_note_is_set_shown_and_cleared(server):
    assert get(server, "/studies/noted")["note"] is None
    before = datetime.now().astimezone()
    answer = put(server, "/studies/noted/note", {"note": NOTE}, server.write_token)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["note"] == NOTE
    assert datetime.fromisoformat(body["updatedAt"]) >= before.replace(microsecond=0)
    assert get(server, "/studies/noted")["note"] == NOTE
    listed = get(server, "/studies")["data"]
    assert next(s for s in listed if s["name"] == "noted")["note"] == NOTE
    # by id as well as by name
    study_id = get(server, "/studies/noted")["id"]
    replaced = put(server, f"/studies/{study_id}/note", {"note": "second"}, server.write_token)
    assert replaced.json()["note"] == "second"
    assert get(server, "/studies/noted")["note"] == "second"
    cleared = put(server, "/studies/noted/note", {"note": ""}, server.write_token)
    assert cleared.status_code == 200 and cleared.json()["note"] == ""
    assert get(server, "/studies/noted")["note"] is None


def test_a_trial_note_is_set_on_any_state_and_shown_in_its_detail(server):
    assert get(server, "/studies/noted/trials/1")["note"] is None
    answer = put(server, "/studies/noted/trials/1/note", {"note": NOTE}, server.write_token)
    assert answer.status_code == 200, answer.text
    assert answer.json()["note"] == NOTE
    detail = get(server, "/studies/noted/trials/1")
    assert detail["state"] == "COMPLETED" and detail["note"] == NOTE
    assert get(server, "/studies/noted/trials/0")["note"] is None  # its own note only
    with Client(server.url, token=server.write_token) as client:
        saved = client.set_trial_note("noted", 1, "")
        assert saved.note == ""
        assert client.trial("noted", 1).note is None


def test_writes_need_a_write_token(server):
    for path in ("/studies/noted/note", "/studies/noted/trials/0/note"):
        read_only = put(server, path, {"note": "x"}, server.read_token)
        assert read_only.status_code == 403
        assert read_only.json()["error"]["code"] == "FORBIDDEN"
        assert "'write' needed" in read_only.json()["error"]["message"]
        anonymous = put(server, path, {"note": "x"}, None)
        assert anonymous.status_code == 401
    assert get(server, "/studies/noted")["note"] is None


def test_bad_notes_are_refused_naming_the_field(server):
    too_long = put(
        server, "/studies/noted/note", {"note": "x" * (MAX_NOTE_CHARS + 1)}, server.write_token
    )
    assert too_long.status_code == 422
    error = too_long.json()["error"]
    assert error["code"] == "REQUEST_INVALID"
    assert error["details"][0]["field"] == "note"
    assert f"at most {MAX_NOTE_CHARS} characters" in error["details"][0]["message"]
    for body in ({}, {"note": 3}, {"note": "x", "other": 1}, ["x"]):
        refused = put(server, "/studies/noted/note", body, server.write_token)
        assert refused.status_code == 422, body
        assert refused.json()["error"]["code"] == "REQUEST_INVALID"
    missing = put(server, "/studies/noted/trials/99/note", {"note": "x"}, server.write_token)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "TRIAL_NOT_FOUND",
        "message": "study 'noted' has no trial 99",
        "details": [],
    }
    no_study = put(server, "/studies/nope/note", {"note": "x"}, server.write_token)
    assert no_study.status_code == 404 and no_study.json()["error"]["code"] == "STUDY_NOT_FOUND"
    with Client(server.url, token=server.write_token) as client, pytest.raises(ApiError) as raised:
        client.set_study_note("noted", "x" * (MAX_NOTE_CHARS + 1))
    assert raised.value.status == 422 and raised.value.details[0]["field"] == "note"


def tuner(server: RunningServer, *args: str, remote: bool, stdin: str | None = None):
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
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


@pytest.mark.parametrize("remote", [True, False], ids=["server", "local"])
def test_tuner_note_prints_sets_and_clears(server, tmp_path, remote):
    empty = tuner(server, "note", "noted", "--trial", "0", remote=remote)
    assert empty.returncode == 0, empty.stderr
    assert "no note on trial 0 of study noted" in empty.stdout
    assert "tuner note noted --trial 0 TEXT" in empty.stdout
    saved = tuner(server, "note", "noted", "a *study* note", remote=remote)
    assert saved.returncode == 0, saved.stderr
    assert "study noted: note saved (14 characters)" in saved.stdout
    assert tuner(server, "note", "noted", remote=remote).stdout == "a *study* note\n"
    written = tmp_path / "note.md"
    written.write_text(NOTE, encoding="utf-8")
    from_file = tuner(
        server, "note", "noted", "--trial", "0", "--file", str(written), remote=remote
    )
    assert from_file.returncode == 0, from_file.stderr
    assert tuner(server, "note", "noted", "--trial", "0", remote=remote).stdout == NOTE + "\n"
    piped = tuner(server, "note", "noted", "--file", "-", remote=remote, stdin="from stdin\n")
    assert piped.returncode == 0, piped.stderr
    assert tuner(server, "note", "noted", remote=remote).stdout == "from stdin\n"
    # what the one wrote, the other reads
    assert get(server, "/studies/noted/trials/0")["note"] == NOTE
    for trial in ([], ["--trial", "0"]):
        cleared = tuner(server, "note", "noted", *trial, "--clear", remote=remote)
        assert cleared.returncode == 0 and "note cleared" in cleared.stdout
    assert get(server, "/studies/noted")["note"] is None
    assert get(server, "/studies/noted/trials/0")["note"] is None
    both = tuner(server, "note", "noted", "text", "--clear", remote=remote)
    assert both.returncode != 0 and "TEXT and --clear: give one of" in both.stderr
    unknown = tuner(server, "note", "noted", "--trial", "99", "x", remote=remote)
    assert unknown.returncode != 0 and "has no trial 99" in unknown.stderr


def test_notes_are_stored_alike_on_both_databases(backend, registry):
    spec = parse_spec(
        {
            "name": "kept-notes",
            "trainer": "synthetic",
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
            },
        }
    )
    study_ops.submit_study(backend, spec, registry)
    long_note = "ü" * MAX_NOTE_CHARS  # the longest, in characters of several bytes
    saved = answers.set_study_note(backend, "kept-notes", long_note)
    assert saved.note == long_note
    assert answers.get_study(backend, "kept-notes").note == long_note
    assert answers.set_study_note(backend, "kept-notes", "").note == ""
    assert answers.get_study(backend, "kept-notes").note is None


@pytest.fixture
def registry() -> TrainerRegistry:
    return TrainerRegistry.from_file(REPO / "trainers.yaml")
