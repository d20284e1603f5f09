"""`tuner` commands as a user runs them: real subprocesses, real signals, both databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner.persistence import Database
from tuner.persistence import repository as repo

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]

SPEC = """
name: cli-study
trainer: synthetic
args: [{args}]
seed: 5
trainingInput:
  scaleTier: BASIC
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: rmse
    maxTrials: {max_trials}
    maxParallelTrials: 2
    params:
      - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
      - {{parameterName: layers, type: INTEGER, minValue: 1, maxValue: 3}}
"""


def env_for(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUNER_DATABASE_URL=db_url,
        TUNER_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
    )
    return env


def write_spec(tmp_path: Path, *, args: str, max_trials: int) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(args=args, max_trials=max_trials))
    return path


def tuner(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNER, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_run_then_inspect_best_and_export(db_url, tmp_path):
    env = env_for(db_url, tmp_path)
    spec = write_spec(
        tmp_path, args='"--train-steps=40", "--eval-every-steps=20", "--export"', max_trials=3
    )
    done = tuner(env, "run", str(spec), "--no-view")
    assert done.returncode == 0, done.stderr
    assert "cli-study: COMPLETED" in done.stdout
    assert "trainingInput.scaleTier: ignored" in done.stderr

    board = tuner(env, "leaderboard", "cli-study")
    assert board.returncode == 0
    assert board.stdout.count("COMPLETED") >= 3

    best = tuner(env, "best", "cli-study")
    assert best.returncode == 0, best.stderr
    assert "best step   40" in best.stdout
    assert "checkpoint  " in best.stdout and ".kept/model.ckpt-40" in best.stdout
    assert "/export/latest/" in best.stdout

    out = tmp_path / "serving"
    exported = tuner(env, "export", "cli-study", "--to", str(out))
    assert exported.returncode == 0, exported.stderr
    (version,) = (out / "cli-study").iterdir()
    assert version.name.isdigit()
    assert (version / "saved_model.pb").read_text() == "step 40\n"

    trials = tuner(env, "trials", "cli-study")
    assert trials.stdout.count("COMPLETED") == 3

    again = tuner(env, "run", str(spec), "--no-view")
    assert again.returncode == 0  # a complete study is not run again
    db = Database(db_url)
    with db.session() as s:
        assert repo.trial_counts(s, repo.get_study(s, "cli-study").id) == {"COMPLETED": 3}
    db.dispose()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_trials_and_rerun_resumes(db_url, tmp_path, sig):
    env = env_for(db_url, tmp_path)
    slow = '"--train-steps=100", "--eval-every-steps=20", "--step-seconds=0.5"'
    spec = write_spec(tmp_path, args=slow, max_trials=3)
    proc = subprocess.Popen(
        [*TUNER, "run", str(spec), "--no-view"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = Database(db_url)
    pids: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with db.session() as s:
                runs = repo.active_runs(s)
                pids = [r.pid for r in runs if r.pid]
                steps = [len(repo.eval_steps(s, r.id)) for r in runs]
            if len(pids) == 2 and min(steps, default=0) >= 1:  # each has a metric stored
                break
        except Exception:
            pass
        time.sleep(0.2)
    assert len(pids) == 2, "two trials should run in parallel"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Run the same command again to resume" in err
    for pid in pids:  # whole process groups are gone
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    with db.session() as s:
        study = repo.get_study(s, "cli-study")
        runs = repo.runs(s, study.id)
        kept_steps = [len(repo.eval_steps(s, r.id)) for r in runs]
    assert [r.state for r in runs] == ["STOPPED", "STOPPED"], [r.failure_reason for r in runs]
    assert all("interrupted" in (r.failure_reason or "") for r in runs)
    assert all(n >= 1 for n in kept_steps)  # metrics read so far are kept

    resumed = tuner(env, "run", str(spec), "--no-view", timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study 'cli-study'" in resumed.stderr
    with db.session() as s:
        study = repo.get_study(s, "cli-study")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"
    states = [r.state for r in runs]
    assert states.count("COMPLETED") == 3 and states.count("STOPPED") == 2
    # the interrupted trials' params were run again first
    assert {str(r.params) for r in runs[:2]} == {str(r.params) for r in runs[2:4]}
    db.dispose()


def test_bad_spec_is_refused_before_anything_runs(tmp_path, sqlite_url):
    env = env_for(sqlite_url, tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\ntrainer: synthetic\nhyperparameters:\n  goal: MINIMIZE\n"
        "  hyperparameterMetricTag: rmse\n  params:\n"
        "  - {parameterName: a, type: DOUBLE, minValue: 0, maxValue: 1}\n"
        "  - {parameterName: b, type: INTEGER, minValue: 1, maxValue: 5}\n"
        "  - {parameterName: lr, type: DOUBLE, minValue: 0, maxValue: 1, "
        "scaleType: UNIT_LOG_SCALE}\n"
    )
    done = tuner(env, "run", str(spec), "--no-view")
    assert done.returncode == 4  # an invalid spec
    assert "hyperparameters.params[2].minValue: must be > 0 with UNIT_LOG_SCALE" in done.stderr
    assert not (tmp_path / "artifacts").exists()


def test_unknown_trainer_is_refused(tmp_path, sqlite_url):
    env = env_for(sqlite_url, tmp_path)
    spec = write_spec(tmp_path, args="", max_trials=1)
    spec.write_text(spec.read_text().replace("trainer: synthetic", "trainer: rm -rf /"))
    done = tuner(env, "run", str(spec), "--no-view")
    assert done.returncode == 4  # an invalid spec
    assert "trainer: 'rm -rf /' is not a registered trainer" in done.stderr
    assert "synthetic" in done.stderr  # lists what is registered


def test_old_schema_fails_with_the_upgrade_command(tmp_path, sqlite_url):
    env = env_for(sqlite_url, tmp_path)
    db = Database(sqlite_url)
    db.upgrade()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE tuner_alembic_version SET version_num = '0000'")
    db.dispose()
    done = tuner(env, "leaderboard", "x")
    assert done.returncode == 1
    assert "run `tuner db upgrade`" in done.stderr
