"""Fault injection with real processes and signals: a trial runs in one place only, and no single
fault stops the manager. Invariants are sampled from the process table, not from our tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from sqlalchemy.engine import make_url

from tests.test_manager import make_spec
from tests.test_outage import set_outage
from tests.test_workers import start_worker, stop, worker_env
from tuner.domain.config import Settings
from tuner.engine.leases import WorkerId, fence_after, new_worker_id
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend

#: Pauses and outages measured against lease timeouts: run alone (scripts/test.sh).
pytestmark = pytest.mark.serial

LONG = ["--train-steps=30", "--eval-every-steps=2", "--step-seconds=0.5"]  # 7.5 s


def trainer_pids(study_dir: Path) -> list[int]:
    """Live (not zombie) trainer processes writing under `study_dir`."""
    found = []
    needle = os.fsencode(str(study_dir))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"examples.synthetic.task" in cmdline and needle in cmdline and state not in "ZX":
            found.append(int(entry.name))
    return found


def start_worker_elsewhere(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker that sees another host name (its own UTS namespace): it cannot signal, nor
    even recognise, processes of workers on "this" host."""
    script = 'hostname other-host && exec "$0" "$@"'
    command = ["unshare", "-u", "sh", "-c", script, sys.executable, "-m", "tuner.cli"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*command, "worker", "--slots", "1"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def fault_env(settings: Settings) -> dict[str, str]:
    env = worker_env(settings)
    env.update(TUNER_HEARTBEAT_TIMEOUT="6", TUNER_STOP_GRACE_SECONDS="2")
    return env


def counts(backend: Backend, name: str) -> tuple[str, dict[str, int]]:
    with backend.db.session() as s:
        study = repo.get_study(s, name)
        return study.state, repo.trial_counts(s, study.id)


def test_lease_timing_leaves_room_for_the_stop() -> None:
    for timeout, grace in [(60, 10), (6, 2), (30, 3), (4, 10)]:
        assert fence_after(timeout, grace) < timeout
    assert fence_after(60, 10) == 40
    first, second = new_worker_id(), new_worker_id()
    assert first != second  # unique per start, even with the same host and pid
    assert WorkerId.parse(first).pid == os.getpid()
    assert WorkerId.parse("old-host:123") == WorkerId("old-host", 123)


@pytest.mark.postgres
@pytest.mark.parametrize("elsewhere", [False, True], ids=["same-host", "other-host"])
def test_a_paused_worker_never_runs_a_trial_twice(pg_url, registry, tmp_path, elsewhere):
    """SIGSTOP a worker past the heartbeat timeout: its trial dies before another worker runs
    the params again, and on SIGCONT the paused worker records nothing over the new owner.

    On the same host the taker kills the paused owner's trial; from another host only the
    owner's own watchdog can, before the taker's full timeout is over."""
    if elsewhere and subprocess.run(["unshare", "-u", "true"]).returncode != 0:
        pytest.skip("needs unshare -u")
    settings = Settings(database_url=pg_url, artifact_root=tmp_path / "artifacts")
    backend = Backend.connect(pg_url)
    try:
        study_ops.submit_study(backend, make_spec(args=LONG, maxTrials=2), registry)
        env = fault_env(settings)
        first = start_worker(env, 1, tmp_path / "first.log")
        study_dir = settings.artifact_root / "s"
        deadline = time.monotonic() + 60
        while not trainer_pids(study_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trainer_pids(study_dir), (tmp_path / "first.log").read_text()
        if elsewhere:
            second = start_worker_elsewhere(env, tmp_path / "second.log")
        else:
            second = start_worker(env, 1, tmp_path / "second.log")
        peak = 0
        try:
            time.sleep(1.0)
            first.send_signal(signal.SIGSTOP)
            paused_at = time.monotonic()
            resumed = False
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                peak = max(peak, len(trainer_pids(study_dir)))
                state, _ = counts(backend, "s")
                if state != "RUNNING":
                    break
                if not resumed and time.monotonic() - paused_at > 12:
                    first.send_signal(signal.SIGCONT)
                    resumed = True
                time.sleep(0.05)
            if not resumed:
                first.send_signal(signal.SIGCONT)
            assert first.poll() is None, "the paused worker crashed on resume"
        finally:
            first.send_signal(signal.SIGCONT)
            stop(first)
            stop(second)
        first_log = (tmp_path / "first.log").read_text()
        with backend.db.session() as s:
            study = repo.get_study(s, "s")
            runs = repo.runs(s, study.id)
        assert peak == 1, f"{peak} trainers at once for maxParallelTrials 1"
        assert study.state == "COMPLETED", study.state_reason
        finished = [r for r in runs if r.state in ("COMPLETED", "FAILED", "PRUNED")]
        assert len(finished) == 2
        taken = [r for r in runs if "stopped renewing its lease" in (r.failure_reason or "")]
        assert len(taken) == 1 and taken[0].lease_epoch == 1
        assert taken[0].worker in first_log or WorkerId.parse(taken[0].worker).pid == first.pid
        retried = [r for r in runs if r.params == taken[0].params and r.id != taken[0].id]
        assert len(retried) == 1  # the params were enqueued once
        assert "Traceback" not in first_log
        # On resuming it says what happened to it, not that the database was away.
        assert "this manager was held up for" in first_log
        assert "database unavailable" not in first_log
    finally:
        backend.close()


@pytest.mark.postgres
def test_an_outage_past_the_timeout_takes_over_no_live_trial(pg_url, registry, tmp_path):
    """All workers lose the database for longer than the timeout: they fence their own trials
    in time, nobody takes over a live trial on reconnect, and the study finishes its budget."""
    settings = Settings(database_url=pg_url, artifact_root=tmp_path / "artifacts")
    backend = Backend.connect(pg_url)
    try:
        spec = make_spec(args=LONG, maxTrials=3, maxParallelTrials=2)
        study_ops.submit_study(backend, spec, registry)
        env = fault_env(settings)
        workers = [start_worker(env, 1, tmp_path / f"w{i}.log") for i in range(2)]
        study_dir = settings.artifact_root / "s"
        db_name = make_url(pg_url).database
        assert db_name
        peak = 0
        try:
            deadline = time.monotonic() + 60
            while len(trainer_pids(study_dir)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            set_outage(db_name, down=True)
            try:
                outage_end = time.monotonic() + 9  # > TUNER_HEARTBEAT_TIMEOUT (6 s)
                while time.monotonic() < outage_end:
                    peak = max(peak, len(trainer_pids(study_dir)))
                    time.sleep(0.05)
                assert trainer_pids(study_dir) == []  # fenced by their own managers
            finally:
                set_outage(db_name, down=False)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                peak = max(peak, len(trainer_pids(study_dir)))
                if counts(backend, "s")[0] != "RUNNING":
                    break
                time.sleep(0.05)
            assert all(w.poll() is None for w in workers)
        finally:
            for worker in workers:
                stop(worker)
        with backend.db.session() as s:
            study = repo.get_study(s, "s")
            runs = repo.runs(s, study.id)
        assert peak <= 2
        assert study.state == "COMPLETED", study.state_reason
        assert not [r for r in runs if "stopped renewing its lease" in (r.failure_reason or "")]
        fenced = [r for r in runs if "lease was not renewed" in (r.failure_reason or "")]
        assert len(fenced) == 2 and all(r.state == "STOPPED" for r in fenced)
        assert sum(r.state == "COMPLETED" for r in runs) == 3
    finally:
        backend.close()


def test_a_hanging_trainer_is_stopped_at_its_deadline(sqlite_url, registry, tmp_path):
    settings = Settings(
        database_url=sqlite_url,
        artifact_root=tmp_path / "a",
        poll_interval=0.05,
        stop_grace_seconds=1,
    )
    backend = Backend.connect(sqlite_url)
    try:
        hang = make_spec("hang", args=["--train-steps=40", "--step-seconds=5"], maxTrials=1)
        hang = hang.model_copy(update={"max_trial_duration_seconds": 1.5})
        stall = make_spec(
            "stall",
            args=["--train-steps=40", "--eval-every-steps=20", "--step-seconds=4"],
            maxTrials=1,
        )
        stall = stall.model_copy(update={"stall_timeout_seconds": 1.5})
        for spec in (hang, stall):
            study_ops.submit_study(backend, spec, registry)
        started = time.monotonic()
        StudyManager(backend, registry, settings, slots=2).run()
        assert time.monotonic() - started < 30
        with backend.db.session() as s:
            (hung,) = repo.runs(s, repo.get_study(s, "hang").id)
            (stalled,) = repo.runs(s, repo.get_study(s, "stall").id)
        assert hung.state == "FAILED"
        assert "ran longer than maxTrialDurationSeconds=1.5 s" in (hung.failure_reason or "")
        assert stalled.state == "FAILED"
        assert "no new metric for" in (stalled.failure_reason or "")
        assert "stallTimeoutSeconds=1.5" in (stalled.failure_reason or "")
        assert trainer_pids(settings.artifact_root) == []
    finally:
        backend.close()


def test_a_study_deleted_from_optunas_tables_pauses_alone(backend, registry, settings):
    """optuna-dashboard deletes a study: that study is paused with the reason, the others run."""
    fast = ["--train-steps=20", "--eval-every-steps=20"]
    study_ops.submit_study(backend, make_spec("gone", args=fast, maxTrials=2), registry)
    study_ops.submit_study(backend, make_spec("kept", args=fast, maxTrials=2), registry)
    optuna.delete_study(study_name="gone", storage=backend.storage)
    StudyManager(backend, registry, settings, slots=2).run()
    with backend.db.session() as s:
        gone, kept = repo.get_study(s, "gone"), repo.get_study(s, "kept")
    assert kept.state == "COMPLETED"
    assert gone.state == "STOPPED"
    assert (gone.state_reason or "").startswith("paused: a trial could not be started")


def test_slots_are_shared_among_studies(backend, registry, settings):
    """A study with a huge budget does not starve one submitted after it."""
    fast = ["--train-steps=20", "--eval-every-steps=20"]
    study_ops.submit_study(backend, make_spec("big", args=fast, maxTrials=1_000_000), registry)
    study_ops.submit_study(backend, make_spec("small", args=fast, maxTrials=3), registry)
    manager = StudyManager(backend, registry, settings, slots=1)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and counts(backend, "small")[0] == "RUNNING":
            manager.tick()
            time.sleep(0.02)
    finally:
        manager.shutdown()
    assert counts(backend, "small")[0] == "COMPLETED"
    assert counts(backend, "big")[1].get("COMPLETED", 0) >= 2  # both got slots in turn


def _mount(target: Path, options: str) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


def _remount(target: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(target)], check=True)


def test_a_read_only_or_full_artifact_store_burns_no_budget(sqlite_url, registry, tmp_path):
    """Trials are not started (and not counted) while the store is read-only or full; the
    manager says so, keeps serving, and goes on when the store is fixed."""
    root = tmp_path / f"store-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    if os.geteuid() != 0 or not _mount(root, "size=1m,ro"):
        pytest.skip("needs to mount a tmpfs")
    settings = Settings(
        database_url=sqlite_url, artifact_root=root / "artifacts", poll_interval=0.05
    )
    backend = Backend.connect(sqlite_url)
    try:
        fast = ["--train-steps=20", "--eval-every-steps=20"]
        study_ops.submit_study(backend, make_spec(args=fast, maxTrials=2), registry)
        manager = StudyManager(backend, registry, settings, slots=1)
        for options in ("ro", "rw"):  # read-only, then writable but full (1 MiB)
            _remount(root, options)
            end = time.monotonic() + 3
            while time.monotonic() < end:
                assert manager.tick() is True
                time.sleep(0.05)
            state, seen = counts(backend, "s")
            assert state == "RUNNING" and seen == {}  # nothing started, nothing counted
        _remount(root, "size=256m")
        deadline = time.monotonic() + 60
        while manager.tick() and time.monotonic() < deadline:
            time.sleep(0.05)
        manager.shutdown()
        assert counts(backend, "s") == ("COMPLETED", {"COMPLETED": 2})
    finally:
        backend.close()
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.postgres
def test_a_lock_held_past_the_fence_stops_and_reruns_the_trial(pg_url, registry, tmp_path):
    """Another session holds a running trial's row lock (as a manager paused inside a
    transaction would): the manager does not freeze, it fences the trial in time, records it
    STOPPED (not FAILED: the watchdog, not the trainer, ended it) and runs its params again."""
    import psycopg

    settings = Settings(
        database_url=pg_url,
        artifact_root=tmp_path / "artifacts",
        poll_interval=0.05,
        heartbeat_timeout=6,
        stop_grace_seconds=2,
    )
    backend = Backend.connect(pg_url)
    try:
        study_ops.submit_study(backend, make_spec(args=LONG, maxTrials=1), registry)
        manager = StudyManager(backend, registry, settings, slots=1)
        deadline = time.monotonic() + 30
        while not manager.active and time.monotonic() < deadline:
            manager.tick()
            time.sleep(0.05)
        (trial,) = manager.active.values()
        conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo) as holder:
            holder.execute(
                "SELECT id FROM tuner_trial_runs WHERE id = %s FOR UPDATE", (trial.run_id,)
            )
            end = time.monotonic() + 6
            while time.monotonic() < end:
                started = time.monotonic()
                assert manager.tick() is True
                assert time.monotonic() - started < 3  # never frozen for a lease's life
                time.sleep(0.05)
            holder.rollback()
        deadline = time.monotonic() + 60
        while manager.tick() and time.monotonic() < deadline:
            time.sleep(0.05)
        manager.shutdown()
        with backend.db.session() as s:
            study = repo.get_study(s, "s")
            runs = repo.runs(s, study.id)
        assert [r.state for r in runs] == ["STOPPED", "COMPLETED"], [r.failure_reason for r in runs]
        assert "lease was not renewed" in (runs[0].failure_reason or "")
        assert runs[1].params == runs[0].params
        assert study.state == "COMPLETED"
    finally:
        backend.close()
