"""One error body for every status, from a real server: what a client parses on each."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL, _pg_conninfo, new_pg_database
from tests.server import RunningServer, start_server
from tuner.client.rest import Client
from tuner.public.schemas import ErrorResponse

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10", "--step-seconds={pace}"{export}]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 1
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    with new_pg_database() as url:
        running = start_server(url, tmp_path_factory.mktemp("errors"), slots=2)
        yield running
        running.stop()


def error_of(response: httpx.Response, status: int, code: str) -> ErrorResponse:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = ErrorResponse.model_validate_json(response.content)  # the documented shape
    assert set(response.json()) == {"error"}
    assert body.error.code == code, body
    assert body.error.message
    return body


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_each_status_has_the_one_error_shape(server):
    api = f"{server.url}/api/v1"
    write, read = headers(server.write_token), headers(server.read_token)
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name="done", pace=0, export=""))
        client.submit(SPEC.format(name="busy", pace=5, export=""))
        deadline = time.monotonic() + 60
        while client.study("done").state == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.2)
        while not client.study("busy").counts.get("RUNNING") and time.monotonic() < deadline:
            time.sleep(0.2)

    error_of(httpx.post(f"{api}/studies", headers=write, content="[" * 100), 400, "BAD_REQUEST")
    unauthenticated = httpx.get(f"{api}/studies")
    assert "tuner token create" in error_of(unauthenticated, 401, "UNAUTHENTICATED").error.message
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    error_of(httpx.post(f"{api}/studies/done/stop", headers=read), 403, "FORBIDDEN")

    error_of(httpx.get(f"{api}/studies/nope", headers=read), 404, "STUDY_NOT_FOUND")
    no_trial = error_of(
        httpx.get(f"{api}/studies/done/trials/99", headers=read), 404, "TRIAL_NOT_FOUND"
    )
    assert no_trial.error.message == "study 'done' has no trial 99"  # no internal id
    no_model = httpx.get(f"{api}/studies/done/best/model", headers=read)
    missing = error_of(no_model, 404, "ARTIFACT_NOT_FOUND").error.message
    assert "no SavedModel of it was recorded" in missing
    error_of(httpx.get(f"{api}/nothing-here", headers=read), 404, "NOT_FOUND")
    error_of(httpx.put(f"{api}/studies", headers=write), 405, "METHOD_NOT_ALLOWED")

    duplicate = httpx.post(
        f"{api}/studies", headers=write, content=SPEC.format(name="done", pace=0, export="")
    )
    error_of(duplicate, 409, "STUDY_EXISTS")
    busy = httpx.delete(f"{api}/studies/busy", headers=write)
    assert "stop it first" in error_of(busy, 409, "STUDY_STATE_CONFLICT").error.message

    huge = httpx.post(f"{api}/studies", headers=write, content="#" * 100_000)
    error_of(huge, 413, "BODY_TOO_LARGE")

    bad = SPEC.format(name="bad", pace=0, export="").replace("minValue: -1", "minValue: 5")
    bad = bad.replace("trainer: synthetic", "trainer: nope")
    spec_error = error_of(
        httpx.post(f"{api}/studies", headers=write, content=bad), 422, "SPEC_INVALID"
    )
    assert [d.field for d in spec_error.error.details] == [
        "trainer",
        "hyperparameters.params[0].maxValue",
    ]
    query = error_of(httpx.get(f"{api}/studies?limit=0", headers=read), 422, "REQUEST_INVALID")
    [detail] = query.error.details
    assert (detail.location, detail.field) == ("query", "limit")
    sort = httpx.get(f"{api}/studies/done/trials?sort=colour", headers=read)
    assert error_of(sort, 422, "REQUEST_INVALID").error.details[0].field == "sort"
    httpx.post(f"{api}/studies/busy/stop", headers=write)


def test_ids_and_names_cannot_be_confused(server):
    api = f"{server.url}/api/v1"
    write = headers(server.write_token)
    digits = httpx.post(
        f"{api}/studies", headers=write, content=SPEC.format(name='"2"', pace=0, export="")
    )
    [detail] = error_of(digits, 422, "SPEC_INVALID").error.details
    assert detail.field == "name" and "ids" in detail.message
    created = httpx.post(
        f"{api}/studies", headers=write, content=SPEC.format(name="by-id", pace=0, export="")
    )
    assert created.status_code == 201
    study_id = created.json()["id"]
    assert created.headers["location"].endswith(f"/studies/{study_id}")
    assert httpx.get(f"{api}/studies/{study_id}", headers=write).json()["name"] == "by-id"
    assert httpx.get(f"{api}/studies/by-id", headers=write).json()["id"] == study_id
    gone = httpx.get(f"{api}/studies/{study_id + 1000}", headers=write)
    assert (
        error_of(gone, 404, "STUDY_NOT_FOUND").error.message
        == f"study id {study_id + 1000} not found"
    )


def test_a_database_outage_is_a_503_in_the_error_shape(tmp_path):
    with new_pg_database() as url:
        running = start_server(url, tmp_path, slots=0)
        try:
            assert httpx.get(f"{running.url}/readyz").status_code == 200
            name = url.rsplit("/", 1)[1]
            with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            down = httpx.get(
                f"{running.url}/api/v1/studies", headers=headers(running.read_token), timeout=30
            )
            error_of(down, 503, "UNAVAILABLE")
            assert down.headers["retry-after"]
            ready = httpx.get(f"{running.url}/readyz", timeout=30)
            assert ready.status_code == 503
            body = ready.json()
            assert (
                body["status"] == "database unavailable" and body["error"]["code"] == "UNAVAILABLE"
            )
        finally:
            running.stop()


def test_options_and_405_name_every_method_of_the_path(server):
    api = f"{server.url}/api/v1"
    expected = {
        "/studies": "GET, OPTIONS, POST",
        "/studies/some-study": "DELETE, GET, OPTIONS",
        "/studies/some-study/trials/0": "GET, OPTIONS",
    }
    for path, allow in expected.items():
        answer = httpx.options(api + path)
        assert (answer.status_code, answer.headers["Allow"]) == (204, allow), path
    refused = httpx.patch(f"{api}/studies", headers=headers(server.write_token))
    error = error_of(refused, 405, "METHOD_NOT_ALLOWED")
    assert refused.headers["Allow"] == "GET, OPTIONS, POST"
    assert "GET, OPTIONS, POST" in error.error.message
    assert httpx.options(f"{api}/no-such-route").status_code == 404


def test_the_schema_marks_what_a_study_body_needs(server):
    """What the server refuses a body without is required in the OpenAPI schema too."""
    schema = httpx.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/api/v1/studies"]["post"]["requestBody"]
    spec = body["content"]["application/json"]["schema"]
    assert body["required"] is True
    assert set(spec["required"]) == {"name", "trainer"}
    assert {"required": ["hyperparameters"]} in spec["anyOf"]
    hyper = spec["properties"]["hyperparameters"]
    assert set(hyper["required"]) == {"goal", "hyperparameterMetricTag", "params"}
    refused = httpx.post(
        f"{server.url}/api/v1/studies", json={}, headers=headers(server.write_token)
    )
    details = {d.field for d in error_of(refused, 422, "SPEC_INVALID").error.details}
    assert {"name", "trainer"} <= details
