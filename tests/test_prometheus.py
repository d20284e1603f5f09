"""`GET /metrics`: a real study through a real server, scraped during and after it, and a
worker's own metrics port with uploads to a real S3 server; parsed with prometheus_client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.routes.prometheus import CENSUS_SECONDS
from tests.server import REPO, JsonClient, RunningServer, free_port, start_server

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps=60", "--eval-every-steps=20", "--step-seconds={seconds}", "--export"]
seed: 5
trainingInput:
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: rmse
    maxTrials: 4
    maxParallelTrials: 2
    params:
      - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
earlyStopping: {{type: median, startupTrials: 1, warmupSteps: 0}}
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, token: str | None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def wait_for(predicate, timeout: float = 90, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(db_url, tmp_path)
    yield running
    running.stop()


def test_metrics_follow_a_study_through_the_server(server):
    client = JsonClient(server.url, token=server.write_token)
    client.submit(SPEC.format(name="scraped", seconds=0.15))

    def running_seen() -> Samples | None:
        samples = scrape(server.url, server.read_token)
        key = ("tuner_trials", (("state", "RUNNING"), ("study", "scraped")))
        claimed = samples[("tuner_trial_claims_total", ())]
        return samples if samples.get(key, 0) >= 1 and claimed >= 1 else None

    during = wait_for(running_seen, timeout=60)
    assert value(during, "tuner_studies", state="RUNNING") == 1
    assert value(during, "tuner_database_census_up") == 1

    study = wait_for(
        lambda: (s := client.study("scraped"))["state"] == "COMPLETED" and s, timeout=120
    )
    time.sleep(CENSUS_SECONDS + 0.1)  # past the census kept from the scrapes above
    after = scrape(server.url, server.read_token)

    # Trials by state: exactly the API's counts, every state listed (0 included).
    trials = {dict(k)["state"]: v for k, v in series(after, "tuner_trials").items()}
    assert trials == {
        state: float(study["counts"].get(state, 0))
        for state in ("RUNNING", "COMPLETED", "PRUNED", "FAILED", "STOPPED")
    }
    assert sum(trials.values()) == 4 and trials["RUNNING"] == 0
    assert value(after, "tuner_studies", state="COMPLETED") == 1
    assert value(after, "tuner_studies", state="RUNNING") == 0
    # The embedded manager claimed each trial once, in this process.
    assert value(after, "tuner_trial_claims_total") == 4

    # Ingest lag: at least one observation per stored eval step, each well under a minute.
    board = client.trials("scraped")["data"]
    steps = 0
    for row in board:
        steps += len(client.trial("scraped", row["number"])["steps"])
    assert steps >= 4
    lag_count = value(after, "tuner_ingest_lag_seconds_count")
    assert steps <= lag_count <= 2 * steps
    assert value(after, "tuner_ingest_lag_seconds_bucket", le="60.0") == lag_count
    assert 0 < value(after, "tuner_ingest_lag_seconds_sum") < 60 * lag_count
    # Prune decisions: one per objective value reported (a pruned trial's later ones are not).
    decisions = value(after, "tuner_prune_decision_seconds_count")
    assert 4 <= decisions <= steps
    assert value(after, "tuner_prune_decision_seconds_bucket", le="+Inf") == decisions
    # No object store here: nothing uploaded.
    assert value(after, "tuner_artifact_upload_bytes_total") == 0

    # Requests by route template, never the raw path (the study's name is not a route).
    httpx.get(f"{server.url}/api/v1/studies/no-such-study", headers=_auth(server), timeout=10)
    httpx.get(f"{server.url}/no/such/path/{'x' * 40}", timeout=10)
    latency = series(
        scrape(server.url, server.read_token), "tuner_http_request_duration_seconds_count"
    )
    labels = {tuple(sorted(dict(k).items())): v for k, v in latency.items()}
    routes = {dict(k)["route"] for k in labels}
    assert {
        "/api/v1/studies",
        "/api/v1/studies/{study}",
        "/api/v1/studies/{study}/trials",
        "/api/v1/studies/{study}/trials/{number}",
        "/metrics",
    } <= routes
    assert not any("scraped" in route or "xxxx" in route for route in routes)
    get = (("method", "GET"),)
    trial_gets = labels[
        (*get, ("route", "/api/v1/studies/{study}/trials/{number}"), ("status", "200"))
    ]
    assert trial_gets == len(board)
    assert labels[(*get, ("route", "/api/v1/studies/{study}"), ("status", "200"))] >= 2
    assert labels[(*get, ("route", "/api/v1/studies/{study}"), ("status", "404"))] == 1
    assert labels[(*get, ("route", "unmatched"), ("status", "404"))] == 1


def bucket_bytes(endpoint: str, bucket: str) -> int:
    import boto3

    from tests.object_store_server import CREDENTIALS

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += sum(item["Size"] for item in page.get("Contents", []))
    return total


def _auth(server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.read_token}"}


def test_metrics_need_a_read_token_unless_public(sqlite_url, tmp_path):
    server = start_server(sqlite_url, tmp_path, slots=0)
    try:
        anonymous = httpx.get(f"{server.url}/metrics", timeout=10)
        assert anonymous.status_code == 401
        assert "missing bearer token" in anonymous.json()["error"]["message"]
        wrong = httpx.get(
            f"{server.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10
        )
        assert wrong.status_code == 401
        assert value(scrape(server.url, server.read_token), "tuner_studies", state="RUNNING") == 0
    finally:
        server.stop()
    public = start_server(
        sqlite_url, tmp_path, slots=0, env_overrides={"TUNER_METRICS_PUBLIC": "1"}
    )
    try:
        assert "tuner_trials" in httpx.get(f"{public.url}/metrics", timeout=10).text
        # Only /metrics became public: the API still asks for a token.
        assert httpx.get(f"{public.url}/api/v1/studies", timeout=10).status_code == 401
    finally:
        public.stop()


def test_a_worker_serves_its_own_metrics_with_upload_bytes(db_url, tmp_path):
    from tests.object_store_server import start_s3_server

    s3 = start_s3_server(tmp_path)
    s3.create_bucket("metrics")
    root = "s3://metrics/root"
    server = start_server(
        db_url,
        tmp_path,
        slots=0,
        env_overrides={
            **s3.env(),
            "TUNER_ARTIFACT_ROOT": root,
            "TUNER_WORK_DIR": str(tmp_path / "api-work"),
        },
    )
    port = free_port()
    env = dict(os.environ)
    env.update(
        s3.env(),
        TUNER_DATABASE_URL=db_url,
        TUNER_ARTIFACT_ROOT=root,
        TUNER_WORK_DIR=str(tmp_path / "worker-work"),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner.cli",
                "worker",
                "--slots",
                "2",
                "--metrics-port",
                str(port),
                "--metrics-host",
                "127.0.0.1",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        client = JsonClient(server.url, token=server.write_token)
        client.submit(SPEC.format(name="uploaded", seconds=0.05))
        wait_for(lambda: client.study("uploaded")["state"] == "COMPLETED", timeout=120)
        worker_url = f"http://127.0.0.1:{port}"
        samples = scrape(worker_url, None)
        assert value(samples, "tuner_trial_claims_total") == 4
        uploaded = value(samples, "tuner_artifact_upload_bytes_total")
        # Every object in the bucket was uploaded by the worker at least once (logs are
        # uploaded again as they grow, HParams session files at the trial's end).
        stored = bucket_bytes(s3.endpoint, "metrics")
        assert stored > 0
        assert stored <= uploaded <= 3 * stored
        assert value(samples, "tuner_ingest_lag_seconds_count") >= 4
        # The API process ran no trial: its counters say so, its census has them all.
        api = scrape(server.url, server.read_token)
        assert value(api, "tuner_trial_claims_total") == 0
        assert value(api, "tuner_artifact_upload_bytes_total") == 0
        time.sleep(CENSUS_SECONDS + 0.1)
        api = scrape(server.url, server.read_token)
        trials = series(api, "tuner_trials")
        assert sum(v for k, v in trials.items() if dict(k)["study"] == "uploaded") == 4
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=60)
        server.stop()
        s3.stop()
