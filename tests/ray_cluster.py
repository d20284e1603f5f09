"""A real Ray cluster on this machine for the tests: `ray start` processes, each a node.

Ray binds to the machine's interface address even when told 127.0.0.1, so the tests that use it
run in a network namespace with only loopback up (scripts/test.sh runs them under
`unshare -n`). Each node has its own temp dir and its own process group, and is stopped by
killing that group (never `ray stop`, which would stop every Ray node of the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = Path(sys.executable).parent / "ray"


def loopback_only() -> bool:
    """Whether this process's network namespace has no interface but loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayNode:
    name: str
    process: subprocess.Popen[bytes]
    temp_dir: Path
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the node's whole process group: its raylet, its workers, their tasks."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@dataclass
class RayCluster:
    address: str
    #: What a driver needs to join it (its token: Ray's token authentication, on).
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[RayNode] = field(default_factory=list)

    def node_ids(self) -> dict[str, str]:
        """Node name -> Ray node id of the nodes alive now (read by a driver of its own)."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']}\n"
            "                  for n in ray.nodes() if n['Alive']]))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env},
        )
        assert done.returncode == 0, done.stderr
        nodes: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        found = {}
        for node in nodes:
            for key in node["resources"]:
                if key.startswith("test_node_"):
                    found[key.removeprefix("test_node_")] = node["id"]
        return found

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()


def auth_env(directory: Path) -> dict[str, str]:
    """Ray's token authentication with a token of this cluster's own: whatever a
    `~/.ray/auth_token` of this machine holds (a local `ray.init()` writes one) does not
    decide whether the nodes and the drivers can talk."""
    token = directory / "ray-auth-token"
    token.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def start_node(
    name: str,
    *,
    head_address: str | None,
    port: int | None = None,
    cpus: float,
    gpus: int,
    env: Mapping[str, str],
    log_dir: Path,
) -> RayNode:
    """Start one node (`--block`: the `ray start` process lives as long as the node) in a
    process group of its own, and wait until it says it runs."""
    temp_dir = Path(tempfile.mkdtemp(prefix=f"ray-{name}-", dir="/tmp"))
    command = [
        str(RAY),
        "start",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={cpus:g}",
        f"--num-gpus={gpus}",
        f"--resources={json.dumps({f'test_node_{name}': 1})}",
        "--disable-usage-stats",
    ]
    if head_address is None:
        command += ["--head", f"--port={port}", "--include-dashboard=false"]
    else:
        command += [f"--address={head_address}"]
    log_path = log_dir / f"ray-{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "RAY_USAGE_STATS_ENABLED": "0"},
            start_new_session=True,
        )
    node = RayNode(name, process, temp_dir, log_path)
    deadline = time.monotonic() + 90
    while b"Ray runtime started" not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            node.kill()
            raise RuntimeError(f"Ray node {name} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.2)
    return node


def start_cluster(
    node_envs: Mapping[str, Mapping[str, str]], *, cpus: float, gpus: int, log_dir: Path
) -> RayCluster:
    """A head node and one more node per further entry of `node_envs` (name -> environment)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    cluster = RayCluster(address, auth_env(log_dir))
    try:
        for index, (name, env) in enumerate(node_envs.items()):
            cluster.nodes.append(
                start_node(
                    name,
                    head_address=None if index == 0 else address,
                    port=port,
                    cpus=cpus,
                    gpus=gpus,
                    env={**env, **cluster.env},
                    log_dir=log_dir,
                )
            )
        deadline = time.monotonic() + 60
        while len(cluster.node_ids()) < len(node_envs):
            assert time.monotonic() < deadline, "the Ray nodes did not all join"
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster
