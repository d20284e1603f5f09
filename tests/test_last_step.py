"""A trial is never pruned at its last eval: it has paid its whole cost, and its outcome is a
completed trial's (kept by the sampler and every COMPLETED view).

The last step is the one its flags say it trains to (`--train-steps=N`, `--max_steps N`, ...),
or, without such a flag, the last step of the study's longest completed trial. The studies
below make the median pruner's first decision fall on that step (`warmupSteps` = the last
step): a worse trial that reaches it ends COMPLETED, not PRUNED.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import env_for
from tuner.engine.verdict import final_step_from_flags
from tuner.persistence import Database
from tuner.persistence import repository as repo

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]
SYNTHETIC = ["--trainer-module", "examples.synthetic.task", "--trainer", "synthetic"]


def spec(tmp_path: Path, args: list[str], warmup: int) -> Path:
    document = {
        "name": "last",
        "trainer": "synthetic",
        "seed": 3,
        "args": args,
        "earlyStopping": {"type": "median", "startupTrials": 1, "warmupSteps": warmup},
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": 3,
            "maxParallelTrials": 1,
            "algorithm": "GRID_SEARCH",
            # One good value and two worse at every step, in the grid's seeded order.
            "params": [{"parameterName": "x", "type": "DISCRETE", "discreteValues": [0.3, 5, 6]}],
        },
    }
    path = tmp_path / "last.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("args", "warmup", "why"),
    [
        (["--train-steps=60", "--eval-every-steps=20"], 60, "it trains to step 60"),
        (["--eval-every-steps=25"], 100, "the longest completed trial ended at step 100"),
    ],
)
def test_a_worse_trial_that_reaches_its_last_eval_completes(tmp_path, args, warmup, why):
    env = env_for(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path)
    done = subprocess.run(
        [*TUNER, "-v", "run", str(spec(tmp_path, args, warmup)), "--no-view", *SYNTHETIC],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    db = Database(env["TUNER_DATABASE_URL"])
    try:
        with db.session() as s:
            runs = repo.runs(s, repo.get_study(s, "last").id)
    finally:
        db.dispose()
    assert sorted(r.state for r in runs) == ["COMPLETED"] * 3, [(r.params, r.state) for r in runs]
    assert f"not pruned at step {warmup}: its last eval ({why})" in done.stderr


def test_the_last_step_is_read_from_the_flags_that_say_it():
    assert final_step_from_flags(["--train-steps=200", "--job-dir=x"], {}) == 200
    assert final_step_from_flags(["--max_steps", "50"], {}) == 50
    assert final_step_from_flags([], {"train_steps": 300.0}) == 300
    assert final_step_from_flags(["--num-epochs=3", "--eval-every-steps=10"], {}) is None
    assert final_step_from_flags(["--train-steps=lots"], {}) is None
