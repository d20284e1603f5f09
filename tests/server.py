"""A real `tuner serve` process on a loopback port, for the API tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tuner.persistence import Database
from tuner.persistence.tokens import create_token

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    write_token: str
    read_token: str
    artifact_root: Path
    db_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    db_url: str,
    tmp_path: Path,
    *,
    slots: int = 2,
    extra_args: tuple[str, ...] = (),
    env_overrides: dict[str, str] | None = None,
) -> RunningServer:
    artifact_root = tmp_path / "artifacts"
    db = Database(db_url)
    db.prepare()
    write_token = create_token(db, scope="write", name="tests")
    read_token = create_token(db, scope="read", name="tests")
    db.dispose()
    port = free_port()
    env = dict(os.environ)
    env.update(
        TUNER_DATABASE_URL=db_url,
        TUNER_ARTIFACT_ROOT=str(artifact_root),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
        TUNER_EVENTS_POLL_INTERVAL="0.1",
        TUNER_MAX_BODY_BYTES="65536",
    )
    env.update(env_overrides or {})
    log_path = tmp_path / f"server-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuner.cli",
                "serve",
                "--port",
                str(port),
                "--slots",
                str(slots),
                *extra_args,
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = RunningServer(url, write_token, read_token, artifact_root, db_url, process, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready: {server.log()}")


class JsonClient:
    """A `tuner.client.rest.Client` whose answers are the JSON documents the server sent (camelCase
    dicts), for tests that assert on the wire format; `typed` is the client itself."""

    def __init__(self, url: str, *, token: str | None = None) -> None:
        from tuner.client.rest import Client

        self.typed = Client(url, token=token)

    def __getattr__(self, name: str) -> Any:
        from pydantic import BaseModel

        attribute = getattr(self.typed, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            answer = attribute(*args, **kwargs)
            if isinstance(answer, BaseModel):
                return answer.model_dump(mode="json", by_alias=True)
            return answer

        return call

    def __enter__(self) -> JsonClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.typed.close()
