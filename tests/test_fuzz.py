"""schemathesis against the live server's OpenAPI schema: no input gets a 5xx, and every
answer, error bodies included, conforms to the documented status codes and schemas."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL
from tests.server import RunningServer, start_server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_server(request, tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "sqlite":
        url, drop = f"sqlite:///{tmp / 'tuner.db'}", None
    else:
        name = f"tuner_fuzz_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url, drop = (
            PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
            + f"/{name}",
            name,
        )
    running = start_server(url, tmp, slots=0)
    yield running
    running.stop()
    if drop:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{drop}" WITH (FORCE)')


def test_no_input_gets_a_server_error(fuzz_server, tmp_path):
    """Every operation, a bounded number of generated inputs each (including invalid ones)."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{fuzz_server.url}/openapi.json",
            "--checks",
            # no 5xx, and every answer (errors included) is one the schema documents
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            # an event stream stays open while its study runs: not request/response
            "--exclude-path-regex",
            "/events$",
            "-H",
            f"Authorization: Bearer {fuzz_server.write_token}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    report = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    passed = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert passed, report
    assert int(passed.group(2)) > 300, report  # every operation was exercised
    assert "failed" not in done.stdout.split("SUMMARY")[-1].lower(), report
