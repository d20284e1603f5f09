"""Hostile request bodies through a real server: always a 4xx (or a legitimate 2xx) whose body
is strict JSON, never a 5xx; on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from api.limits import MAX_NESTING
from tests.conftest import PG_ADMIN_URL
from tests.server import RunningServer, start_server

SPEC = """
name: {name}
trainer: synthetic
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""
JSON = "application/json"
YAML = "application/yaml"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp(f"robust-{request.param}")
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'tuner.db'}"
    else:
        drop = f"tuner_robust_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{drop}"')
        base = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        url = f"{base}/{drop}"
    running = start_server(url, tmp, slots=0)
    headers = {"Authorization": f"Bearer {running.write_token}", "Content-Type": YAML}
    created = httpx.post(
        f"{running.url}/api/v1/studies", headers=headers, content=SPEC.format(name="target")
    )
    assert created.status_code == 201, created.text
    yield running
    running.stop()
    assert "Traceback" not in running.log(), running.log()[-5000:]
    if drop:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


def strict_json(response: httpx.Response) -> Any:
    """The body as JSON, refusing what Python's json accepts but JSON does not."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(response.content.decode("utf-8"), parse_constant=refuse)


def post(server: RunningServer, path: str, body: bytes | str, content_type: str | None = JSON):
    headers = {"Authorization": f"Bearer {server.write_token}"}
    if content_type:
        headers["Content-Type"] = content_type
    return httpx.post(f"{server.url}/api/v1/studies{path}", headers=headers, content=body)


def deep_yaml_mapping(levels: int) -> str:
    return "".join(" " * level + "a:\n" for level in range(levels)) + " " * levels + "b\n"


NESTED = [
    ("json-lists", "[" * 3000, JSON),
    ("json-objects", '{"a": ' * 3000, JSON),
    ("json-closed", '{"name": "x", "args": ' + "[" * 200 + "]" * 200 + "}", JSON),
    ("json-no-type", "[" * 3000, None),
    ("yaml-flow-lists", "[" * 3000, YAML),
    ("yaml-flow-maps", "{a: " * 3000, YAML),
    ("yaml-block-lists", "- " * 3000 + "x\n", YAML),
    ("yaml-block-maps", deep_yaml_mapping(300), YAML),
    ("yaml-in-args", "name: x\ntrainer: synthetic\nargs:\n" + "  - " * 100 + "x\n", YAML),
]


def message(response: httpx.Response) -> str:
    """The error's message and the messages of its details, from a strictly valid JSON body."""
    error = strict_json(response)["error"]
    return " ".join([error["message"], *(d["message"] for d in error["details"])])


@pytest.mark.parametrize(
    ("body", "content_type"), [n[1:] for n in NESTED], ids=[n[0] for n in NESTED]
)
def test_deeply_nested_spec_is_refused(server, body, content_type):
    response = post(server, "", body, content_type)
    assert response.status_code in (400, 422), response.text
    detail = message(response)
    assert "nested too deeply" in detail and str(MAX_NESTING) in detail


@pytest.mark.parametrize("body", ["[" * 3000, '{"maxTrials": ' + "[" * 500 + "]" * 500 + "}"])
def test_deeply_nested_resume_is_refused(server, body):
    response = post(server, "/target/resume", body)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in message(response)


def test_yaml_alias_bombs_are_refused(server):
    laughs = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )
    for body in [
        laughs + "name: x\ntrainer: synthetic\nhyperparameters: {goal: *i}\n",
        "name: &n [*n]\ntrainer: synthetic\n",
    ]:
        response = post(server, "", body, YAML)
        assert response.status_code == 400, response.text
        assert "alias" in message(response)


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])
def test_resume_refuses_non_finite_numbers(server, literal):
    response = post(server, "/target/resume", f'{{"maxTrials": {literal}}}')
    assert response.status_code == 422, response.text
    [error] = strict_json(response)["error"]["details"]
    assert (error["location"], error["field"]) == ("body", "maxTrials")
    assert "maxTrials must be a finite number" in error["message"]


def test_resume_refuses_a_huge_integer(server):
    response = post(server, "/target/resume", f'{{"maxTrials": {10**400}}}')
    assert response.status_code == 422, response.text
    [error] = strict_json(response)["error"]["details"]
    assert error["field"] == "maxTrials" and "100000" in error["message"]


HOSTILE: list[tuple[str, bytes, str | None]] = [
    ("invalid-utf8", b'{"maxTrials": "\xff\xfe"}', JSON),
    ("invalid-utf8-text", b"\xff\xfe\xfd", "text/plain"),
    ("raw-nul-in-string", b'{"name": "a\x00b", "maxTrials": 1}', JSON),
    ("escaped-nul", b'{"name": "a\\u0000b", "maxTrials": "\\u0000"}', JSON),
    ("lone-surrogate", b'{"name": "\\ud800", "args": ["\\udfff"], "maxTrials": "\\ud800"}', JSON),
    ("thousand-keys", json.dumps({f"k{i}": i for i in range(1000)}).encode(), JSON),
    ("empty", b"", JSON),
    ("null", b"null", JSON),
    ("bare-number", b"12", JSON),
    ("huge-int", b'{"seed": ' + b"9" * 5000 + b', "maxTrials": ' + b"9" * 5000 + b"}", JSON),
    ("yaml-bad-date", b"name: x\ntrainer: synthetic\nseed: 2020-13-45\n", YAML),
    ("bom-deep", b"\xef\xbb\xbf" + b"[" * 3000, JSON),
]


@pytest.mark.parametrize(
    ("body", "content_type"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_bodies_get_a_json_4xx(server, body, content_type):
    for path, may_succeed in [("", False), ("/target/resume", True), ("/target/stop", True)]:
        response = post(server, path, body, content_type)
        ok = 200 <= response.status_code < 300 and may_succeed
        assert ok or 400 <= response.status_code < 500, (path, response.status_code, response.text)
        document = strict_json(response)
        if not ok:
            assert document["error"]["code"] and document["error"]["message"], (path, document)
    # nothing unencodable was stored: the listing still renders
    listing = httpx.get(
        f"{server.url}/api/v1/studies", headers={"Authorization": f"Bearer {server.write_token}"}
    )
    assert listing.status_code == 200 and strict_json(listing)["count"] >= 1


def test_unsafe_study_references_are_not_found(server):
    headers = {"Authorization": f"Bearer {server.write_token}"}
    for ref in ["a%00b", "%ff", "%ED%A0%80"]:
        response = httpx.get(f"{server.url}/api/v1/studies/{ref}", headers=headers)
        assert response.status_code == 404, (ref, response.text)
        assert "not found" in message(response)


def test_chunked_body_over_the_limit_gets_413(server):
    def chunks() -> Iterator[bytes]:
        yield b'{"maxTrials": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = httpx.post(
        f"{server.url}/api/v1/studies/target/resume",
        headers={"Authorization": f"Bearer {server.write_token}", "Content-Type": JSON},
        content=chunks(),
    )
    assert response.status_code == 413, response.text
    assert "larger than" in message(response)
