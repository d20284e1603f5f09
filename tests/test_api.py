"""The REST API through a real uvicorn server on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import JsonClient, RunningServer, start_server
from tuner.client.rest import ApiError

SPEC = """
name: {name}
trainer: synthetic
args: [{args}]
seed: 11
trainingInput:
  scaleTier: BASIC
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: rmse
    maxTrials: {max_trials}
    maxParallelTrials: 2
    params:
      - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
      - {{parameterName: optimizer, type: CATEGORICAL, categoricalValues: [adam, sgd]}}
"""
FAST = '"--train-steps=60", "--eval-every-steps=20", "--export", "--step-seconds=0.1"'
SLOW = '"--train-steps=400", "--eval-every-steps=20", "--step-seconds=0.5"'


def spec(name: str = "api-study", *, args: str = FAST, max_trials: int = 3) -> str:
    return SPEC.format(name=name, args=args, max_trials=max_trials)


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(db_url, tmp_path)
    yield running
    running.stop()


def writer(server: RunningServer) -> JsonClient:
    return JsonClient(server.url, token=server.write_token)


def wait_for(predicate, timeout: float = 60, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def test_submit_watch_leaderboard_and_download(server, tmp_path):
    client = writer(server)
    created = client.submit(spec())
    assert created["name"] == "api-study" and created["state"] == "RUNNING"
    assert "trainingInput.scaleTier: ignored, it does not concern tuning" in created["warnings"]

    events = list(client.events("api-study"))
    kinds = [e.kind for e in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "end"
    created_numbers = {e.data["number"] for e in events if e.kind == "created"}
    assert created_numbers == {0, 1, 2}
    evals = [e.data for e in events if e.kind == "eval"]
    assert {(d["number"], d["step"]) for d in evals} == {
        (n, s) for n in range(3) for s in (20, 40, 60)
    }
    states = {e.data["number"]: e.data["state"] for e in events if e.kind == "state"}
    assert states == {0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    # eval events of a trial come before its state event
    for number in range(3):
        last_eval = max(
            i for i, e in enumerate(events) if e.kind == "eval" and e.data["number"] == number
        )
        state_at = next(
            i for i, e in enumerate(events) if e.kind == "state" and e.data["number"] == number
        )
        assert last_eval < state_at

    study = client.study("api-study")
    assert study["state"] == "COMPLETED"
    assert study["counts"] == {"COMPLETED": 3}
    board = client.trials("api-study")
    assert board["count"] == 3
    objectives = [row["objective"] for row in board["data"]]
    assert objectives == sorted(objectives)
    assert study["best"]["number"] == board["data"][0]["number"]
    assert all(row["lastStep"] == 60 and row["durationSeconds"] > 0 for row in board["data"])

    detail = client.trial("api-study", board["data"][0]["number"])
    assert [s["step"] for s in detail["steps"]] == [20, 40, 60]
    assert set(detail["steps"][0]["metrics"]) == {"rmse", "loss"}
    assert detail["logTail"] and "step 60" in detail["logTail"][-1]
    last = max(detail["steps"], key=lambda s: s["step"])
    assert board["data"][0]["lastObjective"] == pytest.approx(last["metrics"]["rmse"])
    assert sorted(e["step"] for e in detail["exports"]) == [20, 40, 60]

    log = httpx.get(
        f"{server.url}/api/v1/studies/api-study/trials/0/log",
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert log.status_code == 200 and "TF_CONFIG" not in log.text and "step 20" in log.text

    best = client.best("api-study")
    assert best["number"] == board["data"][0]["number"]
    assert best["export"]["step"] == best["step"] == 60
    pulled = client.download_model("api-study", tmp_path / "pulled")
    assert pulled.name == best["export"]["version"]
    assert (pulled / "saved_model.pb").read_text() == "step 60\n"
    ckpt = client.download_checkpoint("api-study", tmp_path / "ckpt")
    assert (ckpt / "model.ckpt-60.index").read_text() == "step 60\n"
    assert not (ckpt / "model.ckpt-40.index").exists()

    # the same over the reader token; the archive is a real gzip'd tar
    response = httpx.get(
        f"{server.url}/api/v1/studies/api-study/trials/1/model",
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert any(name.endswith("/saved_model.pb") for name in tar.getnames())


def test_access_control(server):
    url = f"{server.url}/api/v1/studies"
    assert httpx.get(url).status_code == 401
    assert "tuner token create" in httpx.get(url).json()["error"]["message"]
    bad = httpx.get(url, headers={"Authorization": "Bearer tnr_nope"})
    assert bad.status_code == 401 and bad.json()["error"]["message"] == "invalid or revoked token"
    read = {"Authorization": f"Bearer {server.read_token}"}
    assert httpx.get(url, headers=read).status_code == 200
    denied = httpx.post(url, headers=read, content=spec())
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        "code": "FORBIDDEN",
        "message": "this token has scope 'read'; 'write' needed",
        "details": [],
    }
    assert httpx.post(f"{url}/x/stop", headers=read).status_code == 403
    assert httpx.delete(f"{url}/x", headers=read).status_code == 403
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # no token needed


def test_bad_input_gets_clear_4xx(server):
    client = writer(server)
    headers = {"Authorization": f"Bearer {server.write_token}"}
    url = f"{server.url}/api/v1/studies"

    bad = spec().replace("minValue: -1", "minValue: 2")
    response = httpx.post(url, headers={**headers, "Content-Type": "application/yaml"}, content=bad)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "SPEC_INVALID"
    assert {
        "field": "trainingInput.hyperparameters.params[0].maxValue",
        "message": "must be > minValue (2)",
    } in response.json()["error"]["details"]

    unknown = spec().replace("trainer: synthetic", "trainer: /bin/sh")
    response = httpx.post(
        url, headers={**headers, "Content-Type": "application/yaml"}, content=unknown
    )
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "trainer"
    assert "'/bin/sh' is not a registered trainer" in detail["message"]

    # an unknown trainer is reported with the spec's other problems, not instead of them
    both = bad.replace("trainer: synthetic", "trainer: /bin/sh")
    response = httpx.post(
        url, headers={**headers, "Content-Type": "application/yaml"}, content=both
    )
    fields = [d["field"] for d in response.json()["error"]["details"]]
    assert fields == ["trainer", "trainingInput.hyperparameters.params[0].maxValue"]

    for body, content_type in [
        ("{not json", "application/json"),
        ("", "application/json"),
        ("[1, 2]", "application/json"),
        ("a: b", "text/csv"),
    ]:
        response = httpx.post(url, headers={**headers, "Content-Type": content_type}, content=body)
        assert response.status_code == 422, (body, response.text)

    huge = spec() + "#" * 70_000
    response = httpx.post(
        url, headers={**headers, "Content-Type": "application/yaml"}, content=huge
    )
    assert response.status_code == 413

    client.submit(spec(max_trials=1))
    with pytest.raises(ApiError) as info:
        client.submit(spec(max_trials=1))
    assert info.value.status == 409

    for path in [
        "/studies/nope",
        "/studies/nope/trials",
        "/studies/api-study/trials/99",
        "/studies/..%2F..%2Fetc%2Fpasswd/best",
        "/studies/99999999999999999999999",
        "/studies/api-study/trials/0/log%2F..%2F..%2F..%2Fetc%2Fpasswd",
    ]:
        response = httpx.get(server.url + "/api/v1" + path, headers=headers)
        assert response.status_code in (404, 422), (path, response.status_code)
    response = httpx.get(f"{url}/api-study/trials/-1", headers=headers)
    assert response.status_code == 422
    response = httpx.get(f"{url}?limit=100000", headers=headers)
    assert response.status_code == 422


def test_stop_resume_delete(server):
    client = writer(server)
    client.submit(spec("stoppable", args=SLOW, max_trials=2))
    wait_for(lambda: client.trials("stoppable", state="RUNNING")["count"] == 2)
    with pytest.raises(ApiError) as info:
        client.delete("stoppable")
    assert info.value.status == 409 and "running trial" in str(info.value.detail)

    stopped = client.stop("stoppable")
    assert stopped["state"] == "STOPPED"
    wait_for(lambda: client.study("stoppable")["counts"] == {"STOPPED": 2}, timeout=30)
    rows = client.trials("stoppable")["data"]
    assert all(r["state"] == "STOPPED" for r in rows)

    resumed = client.resume("stoppable", max_trials=3)
    assert resumed["state"] == "RUNNING" and resumed["maxTrials"] == 3
    wait_for(lambda: client.trials("stoppable", state="RUNNING")["count"] >= 1)
    client.stop("stoppable")
    wait_for(lambda: client.trials("stoppable", state="RUNNING")["count"] == 0, timeout=30)

    study_dir = server.artifact_root / "stoppable"
    assert study_dir.is_dir()
    client.delete("stoppable")
    assert study_dir.is_dir()  # artifacts are kept unless asked
    with pytest.raises(ApiError) as info:
        client.study("stoppable")
    assert info.value.status == 404


def test_delete_with_artifacts(server):
    client = writer(server)
    client.submit(spec("short", max_trials=1))
    wait_for(lambda: client.study("short")["state"] == "COMPLETED")
    assert (server.artifact_root / "short").is_dir()
    client.delete("short", delete_artifacts=True)
    assert not (server.artifact_root / "short").exists()


def test_public_reads_and_root_path(db_url, tmp_path):
    running = start_server(
        db_url, tmp_path, slots=0, extra_args=("--public-reads", "--root-path", "/tuner")
    )
    try:
        assert httpx.get(f"{running.url}/api/v1/studies").status_code == 200
        assert httpx.post(f"{running.url}/api/v1/studies", content=spec()).status_code == 401
        openapi = httpx.get(f"{running.url}/openapi.json").json()
        assert openapi["servers"] == [{"url": "/tuner"}]
        docs = httpx.get(f"{running.url}/docs").text
        assert "/tuner/openapi.json" in docs
        # a proxy that forwards the prefix unchanged reaches the same routes
        assert httpx.get(f"{running.url}/tuner/api/v1/studies").status_code == 200
    finally:
        running.stop()


def test_openapi_lists_the_endpoints(server):
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in [
        "/api/v1/studies",
        "/api/v1/studies/{study}",
        "/api/v1/studies/{study}/trials",
        "/api/v1/studies/{study}/best",
        "/api/v1/studies/{study}/best/model",
        "/api/v1/studies/{study}/events",
        "/api/v1/studies/{study}/trials/{number}/log",
    ]:
        assert path in paths
    body = paths["/api/v1/studies"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}


def test_json_spec_and_python_client_errors(server):
    client = writer(server)
    import yaml

    document = yaml.safe_load(spec("as-json", max_trials=1))
    created = client.submit(document)
    assert created["name"] == "as-json"
    assert json.dumps(created["spec"]["hyperparameters"]["params"][0]) == json.dumps(
        {"parameterName": "x", "type": "DOUBLE", "minValue": -1.0, "maxValue": 1.0}
    )
    with pytest.raises(ApiError) as info:
        client.best("nope")
    assert info.value.status == 404
