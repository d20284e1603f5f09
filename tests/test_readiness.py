"""`/readyz` answers within 2 s whatever the database does: 503 with `Retry-After` while it
hangs (a blackholed connection, through a real proxy in front of a real PostgreSQL), 200 once
it is back. A probe's usual timeout is 1 to 5 s: a slower answer is a timeout, not a 503."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.object_store_server import ThrottlingProxy
from tests.server import start_server

pytestmark = pytest.mark.postgres


def test_readyz_answers_503_within_2_s_while_the_database_hangs(pg_url, tmp_path):
    host_port = pg_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = ThrottlingProxy((host, int(port))).start()
    proxied = pg_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    server = start_server(proxied, tmp_path, slots=0)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/readyz").status_code == 200
            proxy.hang()
            for _ in range(4):
                asked = time.monotonic()
                answer = http.get("/readyz")
                took = time.monotonic() - asked
                assert answer.status_code == 503, answer.text
                assert took < 2.0, took
                assert answer.headers["Retry-After"]
                assert answer.json()["status"] == "database unavailable"
            assert http.get("/healthz").status_code == 200  # the process itself answers
            proxy.restore()
            deadline = time.monotonic() + 30
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready again after the database came back"
                time.sleep(0.2)
    finally:
        proxy.stop()
        server.stop()
