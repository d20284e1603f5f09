"""The `two_objectives` trainer of `tests/trainers/`, run as the tuner runs it.

Its command is built from its entry in `tests/trainers/trainers.yaml` by the tuner's own
`build_command`; its eval event files are read with the tuner's own reader. A study with two
objectives needs both metrics at every eval step (a trial's vector comes from one step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from tuner.domain.trainers import TrainerRegistry
from tuner.outputs.events import CheckpointPathValue, EvalDirWatcher, ScalarValue
from tuner.outputs.exports import find_exports
from tuner.trial.execution import build_command

REPO = Path(__file__).resolve().parents[1]
REGISTRY = REPO / "tests" / "trainers" / "trainers.yaml"


def command(job_dir: Path, params: dict[str, object], args: list[str]) -> subprocess.Popen[str]:
    trainer = TrainerRegistry.from_file(REGISTRY, missing_ok=False).get("two_objectives")
    built = build_command(
        trainer,
        args=args,
        params=params,
        output_dir_flag="--job-dir",
        output_dir=job_dir,
        trial_number=0,
        study_name="two-objectives",
    )
    return subprocess.Popen(
        built.argv,
        env=built.env,
        cwd=built.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.tf
def test_every_eval_step_has_both_objectives_and_the_model_is_exported(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    process = command(
        job_dir,
        {"units": 4, "optimizer": "sgd", "momentum": 0.9, "learning_rate": 0.02},
        ["--train-steps=30", "--eval-every-steps=10"],
    )
    log, _ = process.communicate(timeout=120)
    assert process.returncode == 0, log[-3000:]

    poll = EvalDirWatcher(job_dir, ["eval"]).poll()
    assert poll.problems == []
    tags: dict[int, dict[str, float]] = defaultdict(dict)
    checkpoints: dict[int, str] = {}
    for value in poll.values:
        if isinstance(value, ScalarValue):
            assert value.eval_name == "eval"
            tags[value.step][value.tag] = value.value
        else:
            assert isinstance(value, CheckpointPathValue)
            checkpoints[value.step] = value.path
    assert sorted(tags) == [10, 20, 30]
    for step, metrics in tags.items():
        assert {"rmse", "model_size", "loss"} <= set(metrics), (step, metrics)
        assert metrics["model_size"] == 6 * 4 + 1  # hidden 4x4 + 4, output 4x1 + 1
        assert 0 < metrics["rmse"] < 10
    assert tags[30]["rmse"] < tags[10]["rmse"]  # it trains
    assert checkpoints == {step: str(job_dir / f"model.ckpt-{step}") for step in (10, 20, 30)}

    exports = find_exports(job_dir)
    assert {e.exporter for e in exports} == {"latest"} and len(exports) >= 1
    newest = max(exports, key=lambda e: int(e.version)).path
    # The export serves: loaded by TensorFlow in a process of its own, it predicts.
    probe = (
        "import json, sys, tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "fn = model.signatures['serving_default']\n"
        "out = fn(x=tf.zeros([3, 4]))\n"
        "print(json.dumps({'inputs': sorted(fn.structured_input_signature[1]),"
        " 'outputs': {k: v.shape.as_list() for k, v in out.items()}}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe, str(newest)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.splitlines()[-1]) == {
        "inputs": ["x"],
        "outputs": {"prediction": [3]},
    }


def test_momentum_with_adam_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    process = command(
        job_dir, {"units": 4, "optimizer": "adam", "momentum": 0.5, "learning_rate": 0.01}, []
    )
    log, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "--momentum=0.5 is only for --optimizer=sgd, got --optimizer=adam" in log
    assert not job_dir.exists()


def test_sgd_without_momentum_and_adam_flags_are_accepted() -> None:
    from tests.trainers import two_objectives

    sgd = two_objectives.parse_args(["--job-dir=d", "--optimizer=sgd", "--units=3"])
    assert (sgd.optimizer, sgd.momentum, sgd.units) == ("sgd", None, 3)
    adam = two_objectives.parse_args(["--job-dir=d", "--learning_rate=0.1"])
    assert (adam.optimizer, adam.momentum, adam.learning_rate) == ("adam", None, 0.1)
