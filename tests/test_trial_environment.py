"""A trial's environment is built, not inherited: trainers never see the service's secrets.

Real `tuner run` processes started with the service's credentials in their environment (the
database URL, a token, object-store and cloud keys) run the probe trainer cold and warm; the
probe writes its whole environment (and a warm trainer's preloading parent writes its own), and
none of the secrets is there, except one that the registry entry passes on purpose (`passEnv`).
The Ray executor's trainers are checked the same way in tests/test_ray.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import env_for
from tuner.domain.errors import TrainerRegistryError
from tuner.domain.trainers import TrainerRegistry

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]

#: What a worker of a real deployment holds: none of it is a trainer's.
SECRETS = {
    "TUNER_TOKEN": "tuner-write-token",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYID",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-key",
    "AWS_SESSION_TOKEN": "aws-session-token",
    "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/gcp/key.json",
    "AZURE_STORAGE_ACCOUNT_KEY": "azure-key",
    "AZURE_CLIENT_SECRET": "azure-client-secret",
    "DATABASE_URL": "postgresql://tuner:db-password@db/tuner",
    "PGPASSWORD": "db-password",
}

REGISTRY = f"""
trainers:
  cold:
    module: tests.trainers.device_probe
    workingDir: {REPO}
    env: {{FROM_REGISTRY: "yes"}}
  warm:
    module: tests.trainers.device_probe
    workingDir: {REPO}
    env: {{FROM_REGISTRY: "yes", PARENT_ENV_PROBE: "{{parent}}"}}
    preload: [tests.trainers.parent_env_probe, examples.synthetic.task]
  with_bucket:
    module: tests.trainers.device_probe
    workingDir: {REPO}
    passEnv: [AWS_ACCESS_KEY_ID, NOT_SET_ANYWHERE]
"""

SPEC = """
name: env-{trainer}
trainer: {trainer}
args: ["--train-steps=10", "--eval-every-steps=10"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 1
  params: [{{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}}]
"""


def run_probe(tmp_path: Path, trainer: str) -> tuple[dict[str, str], dict[str, str]]:
    """Run one trial of `trainer` with the secrets in the worker's environment; the trial's
    environment and the worker's."""
    parent = tmp_path / "parent-env.json"
    registry = tmp_path / "trainers.yaml"
    registry.write_text(REGISTRY.replace("{parent}", str(parent)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(trainer=trainer))
    env = env_for(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path) | SECRETS
    env["TUNER_TRAINERS_FILE"] = str(registry)
    done = subprocess.run(
        [*TUNER, "run", str(spec), "--no-view"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    facts: dict[str, Any] = json.loads(
        (tmp_path / "artifacts" / f"env-{trainer}" / "trial-0000" / "devices.json").read_text()
    )
    return facts["environ"], env


def assert_no_service_secret(seen: dict[str, str], *, passed: tuple[str, ...] = ()) -> None:
    leaked = sorted(k for k in seen if k.startswith("TUNER_"))
    leaked += sorted(k for k in SECRETS if k in seen and k not in passed)
    assert not leaked, f"the trainer saw the service's {leaked}"
    values = set(SECRETS.values())
    assert not [k for k, v in seen.items() if v in values and k not in passed]


@pytest.mark.parametrize("trainer", ["cold", "warm"])
def test_a_trainer_sees_ordinary_variables_and_its_own_never_the_services(tmp_path, trainer):
    seen, worker = run_probe(tmp_path, trainer)
    assert_no_service_secret(seen)
    assert "sqlite:" not in json.dumps(seen)  # the database URL in no form
    # What a trainer needs is there: the machine's search path and home, the AI Platform and
    # Vertex variables, its registry entry's own variables.
    assert seen["PATH"] == worker["PATH"]
    assert seen["HOME"] == worker["HOME"]
    assert json.loads(seen["TF_CONFIG"]) == {"task": {"trial": "0"}}
    assert seen["CLOUD_ML_TRIAL_ID"] == "0"
    assert seen["AIP_MODEL_DIR"].endswith("trial-0000/model")
    assert seen["FROM_REGISTRY"] == "yes"
    if trainer == "warm":
        # The preloading parent was built the same way (it imported the probe module).
        parent = json.loads((tmp_path / "parent-env.json").read_text())
        assert_no_service_secret(parent)
        assert parent["PATH"] == worker["PATH"]


def test_a_registry_entry_passes_a_credential_on_purpose_and_only_that_one(tmp_path):
    seen, _ = run_probe(tmp_path, "with_bucket")
    assert seen["AWS_ACCESS_KEY_ID"] == SECRETS["AWS_ACCESS_KEY_ID"]
    assert "NOT_SET_ANYWHERE" not in seen
    assert_no_service_secret(seen, passed=("AWS_ACCESS_KEY_ID",))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            "[TUNER_DATABASE_URL]",
            "trainers.t.passEnv: TUNER_DATABASE_URL is one of the tuner's own settings, never "
            "passed to a trainer",
        ),
        ("['AWS KEY']", "trainers.t.passEnv: 'AWS KEY' is not an environment variable name"),
    ],
)
def test_a_registry_that_would_pass_the_services_settings_is_refused(tmp_path, names, message):
    path = tmp_path / "trainers.yaml"
    path.write_text(f"trainers:\n  t: {{module: m, passEnv: {names}}}\n")
    with pytest.raises(TrainerRegistryError) as raised:
        TrainerRegistry.from_file(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)
