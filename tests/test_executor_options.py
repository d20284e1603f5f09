"""`--executor` and `--ray-address` (and `TUNER_EXECUTOR`): what a wrong combination says, before
anything starts. What the Ray executor does on a real cluster is in tests/test_ray.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import env_for

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]


@pytest.mark.parametrize(
    ("command", "environment", "message"),
    [
        (
            ["worker", "--ray-address", "10.0.0.1:6379"],
            {},
            "error: --ray-address needs --executor ray",
        ),
        (
            ["serve", "--ray-address", "ray://head:10001"],
            {"TUNER_EXECUTOR": "local"},
            "error: --ray-address needs --executor ray",
        ),
        (
            ["worker", "--executor", "ray", "--gpus", "0,1"],
            {},
            "error: --gpus and --cpus count this machine's devices; with --executor ray each Ray "
            "node declares its own",
        ),
        (
            ["run", "spec.yaml", "--cpus", "4"],
            {"TUNER_EXECUTOR": "ray"},
            "error: --gpus and --cpus count this machine's devices",
        ),
        (["worker"], {"TUNER_EXECUTOR": "kubernetes"}, "'kubernetes' is not one of"),
        (["worker", "--executor", "rya"], {}, "'rya' is not one of"),
    ],
)
def test_a_wrong_executor_option_is_refused_by_name(tmp_path, command, environment, message):
    env = env_for(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path) | environment
    done = subprocess.run(
        [*TUNER, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert message in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "tuner.db").exists()  # refused before anything was touched
