"""Slow clients are timed out, and a client that leaves is not a server error.

A real `tuner serve` on loopback, with its header and body deadlines shortened
(`TUNER_HEADER_TIMEOUT_SECONDS`, `TUNER_BODY_TIMEOUT_SECONDS`); clients are raw sockets that
dribble a byte at a time, as a slowloris does.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server import RunningServer, start_server

HEADER_SECONDS = 2.0
BODY_SECONDS = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> RunningServer:
    tmp = tmp_path_factory.mktemp("slow")
    running = start_server(
        f"sqlite:///{tmp / 'tuner.db'}",
        tmp,
        slots=0,
        env_overrides={
            "TUNER_HEADER_TIMEOUT_SECONDS": str(HEADER_SECONDS),
            "TUNER_BODY_TIMEOUT_SECONDS": str(BODY_SECONDS),
        },
    )
    yield running
    running.stop()


def connect(server: RunningServer) -> socket.socket:
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port))
    sock.settimeout(0.2)
    return sock


def dribble(
    sock: socket.socket, data: bytes, *, every: float, within: float
) -> tuple[float, bytes]:
    """Send `data` a byte at a time until the server answers or closes; (seconds, answer)."""
    started = time.monotonic()
    answer = b""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        try:
            chunk = sock.recv(65536)
            answer += chunk
            if not chunk or answer:
                break
        except TimeoutError:
            pass
        assert time.monotonic() - started < within, "the slow client was never cut off"
        time.sleep(every)
    sock.settimeout(within)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return time.monotonic() - started, answer


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with connect(server) as sock:
        took, answer = dribble(sock, request, every=0.1, within=HEADER_SECONDS + 5)
    assert took < HEADER_SECONDS + 2, took
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 2 s" in answer


def test_a_body_sent_a_byte_at_a_time_is_cut_off(server):
    body = b'{"name": "slow", "trainer": "synthetic"}' + b" " * 400
    head = (
        b"POST /api/v1/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {server.write_token}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    with connect(server) as sock:
        sock.sendall(head)
        took, answer = dribble(sock, body, every=0.1, within=BODY_SECONDS + 5)
    assert took < BODY_SECONDS + 2, took
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"body did not arrive within 3 s" in answer


def test_clients_that_leave_leave_no_traceback(server):
    before = len(server.log())
    # A body cut short, and an event stream left while it runs.
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/v1/studies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {server.write_token}\r\n".encode()
            + b'Content-Length: 1000\r\n\r\n{"name": '
        )
        time.sleep(0.3)
    with connect(server) as sock:
        sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        time.sleep(0.5)
    time.sleep(1.0)
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    log = server.log()[before:]
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
