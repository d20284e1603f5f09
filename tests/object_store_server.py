"""A real S3-compatible server on loopback (moto's standalone server, from the dev extra),
and a throttling TCP proxy in front of it, for the object-store tests."""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.server import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "tuner-tests",
    "AWS_SECRET_ACCESS_KEY": "tuner-tests-secret",
    "AWS_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        """The standard AWS variables a tuner process reads to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint or self.endpoint}

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(tmp_path: Path) -> S3Server:
    """Start `moto_server` on a free loopback port and wait until it answers."""
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    command = [executable] if executable else [sys.executable, "-m", "moto.server"]
    port = free_port()
    log_path = tmp_path / f"moto-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited: {log_path.read_text()}")
        try:
            httpx.get(server.endpoint, timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto_server did not answer: {log_path.read_text()}")


@dataclass
class ThrottlingProxy:
    """Forwards TCP connections to `target`, at most `bytes_per_second` towards it, and counts
    the bytes passed: a slow link, so that a test can kill a worker in the middle of an upload.
    It can also cut the link (connections dropped) or hang it (connections kept open, nothing
    passed either way: a server that stops answering, as a blackholed network does)."""

    target: tuple[str, int]
    bytes_per_second: float = 1e9
    port: int = field(default_factory=free_port)
    uploaded: int = 0
    #: Flip one byte at this offset of the next connection's upload stream (then pass all).
    corrupt_at: int | None = None
    corrupted: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _cut: threading.Event = field(default_factory=threading.Event)
    _flowing: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThrottlingProxy:
        self._flowing.set()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._flowing.set()

    def cut(self) -> None:
        """An outage: open connections drop, new ones are closed at once."""
        self._cut.set()

    def hang(self) -> None:
        """Nothing passes any more, either way; connections stay open, new ones are accepted
        and get no answer."""
        self._flowing.clear()

    def restore(self) -> None:
        self._cut.clear()
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                if self._cut.is_set():
                    client.close()
                    continue
                threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        self._flowing.wait()  # a hung server does not even answer a new connection
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        chunk = 16 * 1024
        corrupt_at, self.corrupt_at = self.corrupt_at, None
        sent = 0
        try:
            while not (self._stop.is_set() or self._cut.is_set()):
                for key, _ in selector.select(timeout=0.2):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(chunk)
                    if not data:
                        return
                    if source is client:
                        if corrupt_at is not None and sent <= corrupt_at < sent + len(data):
                            at = corrupt_at - sent
                            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                            self.corrupted += 1
                        sent += len(data)
                        self.uploaded += len(data)
                        time.sleep(len(data) / self.bytes_per_second)
                    self._flowing.wait()
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()
