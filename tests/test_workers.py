"""Several `tuner worker` processes sharing one database; a worker that dies is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.test_manager import make_spec
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops

REPO = Path(__file__).resolve().parents[1]


def start_worker(env: dict[str, str], slots: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "worker", "--slots", str(slots)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def worker_env(settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUNER_DATABASE_URL=settings.database_url,
        TUNER_ARTIFACT_ROOT=str(settings.artifact_root),
        TUNER_TRAINERS_FILE=str(settings.trainers_file),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
        TUNER_HEARTBEAT_TIMEOUT="30",
    )
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_two_workers_share_a_study_within_its_parallelism(backend, registry, settings, tmp_path):
    spec = make_spec(
        args=["--train-steps=60", "--eval-every-steps=20", "--step-seconds=0.3"],
        maxTrials=6,
        maxParallelTrials=3,
    )
    study_ops.submit_study(backend, spec, registry)
    env = worker_env(settings)
    workers = [start_worker(env, 2, tmp_path / f"w{i}.log") for i in range(2)]
    peak = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with backend.db.session() as s:
                study = repo.get_study(s, "s")
                counts = repo.trial_counts(s, study.id)
            peak = max(peak, counts.get("RUNNING", 0))
            if study.state != "RUNNING":
                break
            time.sleep(0.05)
    finally:
        for worker in workers:
            stop(worker)
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED", [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert [r.state for r in runs] == ["COMPLETED"] * 6
    assert sorted(r.number for r in runs) == list(range(6))
    assert peak <= 3
    assert len({r.worker for r in runs}) == 2  # both workers ran trials


def test_a_killed_workers_trials_are_taken_over(backend, registry, settings, tmp_path):
    spec = make_spec(
        args=["--train-steps=2000", "--eval-every-steps=20", "--step-seconds=0.3"], maxTrials=1
    )
    study_ops.submit_study(backend, spec, registry)
    env = worker_env(settings)
    first = start_worker(env, 1, tmp_path / "first.log")
    deadline = time.monotonic() + 60
    run = None
    while time.monotonic() < deadline:
        with backend.db.session() as s:
            active = repo.active_runs(s)
        if active and active[0].pid:
            run = active[0]
            break
        time.sleep(0.1)
    assert run is not None and run.pid
    first.send_signal(signal.SIGKILL)  # no clean-up by the worker itself
    first.wait()
    # its watchdog kills the orphaned trial at once, before any other manager is there
    deadline = time.monotonic() + 10
    while alive(run.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(run.pid)

    fast = spec.model_copy(update={"args": ["--train-steps=40", "--eval-every-steps=20"]})
    with backend.db.session() as s:
        repo.update_study_spec(s, repo.get_study(s, "s").id, fast)
    second = start_worker(env, 1, tmp_path / "second.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with backend.db.session() as s:
                if repo.get_study(s, "s").state != "RUNNING":
                    break
            time.sleep(0.2)
    finally:
        stop(second)
    with backend.db.session() as s:
        runs = repo.runs(s, repo.get_study(s, "s").id)
    assert [r.state for r in runs] == ["STOPPED", "COMPLETED"], (
        tmp_path / "second.log"
    ).read_text()
    assert "stopped renewing its lease" in (runs[0].failure_reason or "")
    assert runs[0].lease_epoch == 1  # fenced: the old owner can write nothing more
    assert runs[1].params == runs[0].params  # the lost trial ran again


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is not there does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
