"""A bounded chaos soak on loopback: real workers, real trainers, real PostgreSQL, random faults.

**What.** One study of the synthetic trainer (`examples.synthetic.task`, 10 evals of 0.5 s:
trials of about 5-8 s) is run by `--workers` `tuner worker --slots 2` processes sharing a fresh
PostgreSQL database, with `TUNER_HEARTBEAT_TIMEOUT=6`, `TUNER_STOP_GRACE_SECONDS=2` and
`TUNER_POLL_INTERVAL=0.1`. For `--duration` seconds faults are injected one after the other at
random moments (seeded by `--seed`; each block of four faults holds each kind once, in random
order, with 3-10 s between the end of one fault and the next):

- `kill-worker`: SIGKILL of a worker (one running trials if there is one); a new worker is
  started 2-5 s later.
- `pause-worker`: SIGSTOP of a worker for 5-15 s, then SIGCONT.
- `kill-trainer`: SIGKILL of one live trainer process of the study.
- `db-outage`: the study's database refuses connections for 3-12 s (`ALTER DATABASE ...
  ALLOW_CONNECTIONS false` and `pg_terminate_backend` of its sessions, as tests/test_faults.py
  does); with `--pg-restart` the whole server is restarted instead (`pg_ctlcluster
  --skip-systemctl-redirect <version> main restart`: this disturbs everything on the machine).

After the fault window the soak ends any fault still under way, restarts missing workers, waits
for the study to end (at most 60 s plus twice the expected time of the trials left), and stops
the workers with SIGTERM. The study (x DOUBLE and optimizer CATEGORICAL, seed `--seed`,
maxParallelTrials 3) gets `--max-trials`, by default duration x 3 / 6.5 s (83 for 180 s), so
that it outlasts the fault window; no fault is injected once it has ended.

**Why.** Leases, self-fencing, the watchdog and takeovers (tuner/engine/leases.py,
tuner/trial/watchdog.py,
`Liveness.reap_stale`, `Fencing.fence_if_unrenewed` in tuner/engine/) each have their own tests with
one fault at a time. The soak mixes them, at random moments, for minutes, and checks the
invariants from outside: the process table and the event files on disk, not only our tables.

**How to read the numbers** (the table printed at the end; each goal is 0):

- `trials`: the study's runs by state. STOPPED runs (taken over, fenced, or stopped at the
  end) do not use up the budget: their params are enqueued once more.
- `duplicates` (goal 0): runs that repeat the params of an earlier run without being its one
  explicit retry. A run counts when (a) it was live (two trainer processes in one sample of the
  process table) or RUNNING in the database (overlapping [started_at, ended_at]) at the same
  time as another run with the same params; or (b) its params had already finished
  (COMPLETED/PRUNED/FAILED) in another run; or (c) it repeats the params of an earlier run but
  its Optuna trial is not marked `retry_of` a STOPPED run with those params, or that STOPPED run
  was retried more than once. A STOPPED run's params run again once: not a duplicate.
- `parallelism`: live trainer processes of the study in each sample of /proc (every 0.1 s;
  zombies do not count). `peak` is the most seen at once; `violations` (goal 0) the number of
  episodes (consecutive samples) above maxParallelTrials, with the samples in brackets.
- `budget violations` (goal 0): episodes in which the study's finished runs
  (COMPLETED+PRUNED+FAILED, read from the database every 0.1 s while it answers, and at the end)
  were above maxTrials.
- `lost metrics` / `doubled metrics` (goal 0): for every COMPLETED, PRUNED or FAILED run, the
  (eval dir, step) pairs in the trial's event files on disk (read with
  `tuner.outputs.events.EvalDirWatcher`) against the eval steps stored for the run: on disk but not
  stored = lost, stored but not on disk = doubled (phantom). Values that differ between the
  two for the same step and tag are listed as `metric values differ` (also goal 0).
- `recovery`: for each fault, the seconds from its injection (t0) until the first sample at or
  after t_eff in which the live trainer processes number at least
  target = min(maxParallelTrials, maxTrials - finished runs) (0 once the study is no longer
  RUNNING), where t_eff, the moment the fault has fully taken effect, is the latest of t0, the
  disappearance from /proc of every trainer process the fault takes away, and, for an outage,
  the moment the database accepted connections again. The processes a fault takes away: the
  killed trainer; the trainers that were children of the killed or paused worker at t0; for an
  outage, the trainers live at t0 that died before the database was back, or whose runs ended
  STOPPED. So recovery includes the time the fault needs to act (a paused worker's trials die
  when its watchdog fences them, ~3-5 s; another worker takes the runs over after its own
  6 s observation) and one ordinary trial turnover. p50/p95 are nearest-rank over every fault;
  a fault not recovered by the end of the soak is counted as `unrecovered`.
- also goals: the study ends COMPLETED within the bounded wait; no worker exits by itself; and
  no run is FAILED but the ones whose trainer the soak killed (`FAILED runs the soak did not
  kill`): a fault of the machine must leave a run STOPPED and its params to run again, not burn
  the budget.

Each worker's database sessions carry `application_name=chaos-worker-N`; when a worker is
paused the soak notes whether it was stopped inside an open transaction, and just before
SIGCONT which sessions were waiting for a lock and whose (`fault notes`). The table of faults
names the trials each fault took away (`trials taken`) and the report lists, for duplicates and
unexpected failures, the runs with their worker (`worker-N.log`) and times in soak seconds.

The temp dir (worker logs `worker-N.log`, trial outputs and logs under `artifacts/`) and the
database are removed at the end unless `--keep`. Exit code 0 when every goal is met, else 1.

    python bench/chaos.py                            # 180 s of faults, seed 0, 3 workers
    python bench/chaos.py --duration 180 --seed 1 --keep
    python bench/chaos.py --pg-restart               # restarts the real server (whole machine)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from tuner.domain.entities import TrialRun
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.outputs.events import EVENT_FILE_GLOB, EvalDirWatcher, ScalarValue
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STUDY = "chaos"
TRAINER_MODULE = b"examples.synthetic.task"
TRAINER_ARGS = ["--train-steps=40", "--eval-every-steps=4", "--step-seconds=0.5"]
MAX_PARALLEL = 3
SLOTS = 2
#: Rough wall seconds per trial under load (10 x 0.5 s of evals, the interpreter's start, the
#: manager's poll): sizes the default budget so that the study outlasts the fault window.
TRIAL_SECONDS = 6.5
WORKER_ENV = {
    "TUNER_HEARTBEAT_TIMEOUT": "6",
    "TUNER_STOP_GRACE_SECONDS": "2",
    "TUNER_POLL_INTERVAL": "0.1",
}
SAMPLE_EVERY = 0.1
KINDS = ("kill-worker", "pause-worker", "kill-trainer", "db-outage")
GAP = (3.0, 10.0)  # seconds from the end of one fault to the next
FIRST_FAULT = (6.0, 10.0)  # the first trials are under way (and some done) by then
PAUSE = (5.0, 15.0)
OUTAGE = (3.0, 12.0)
RESTART_AFTER = (2.0, 5.0)
FINISHED_STATES = ("COMPLETED", "PRUNED", "FAILED")


def app_name(index: int) -> str:
    return f"chaos-worker-{index}"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the study and its database ------------------------------------------------------------------


def make_spec(max_trials: int, seed: int) -> StudySpec:
    """Like tests/test_manager.py `make_spec`: x DOUBLE and optimizer CATEGORICAL."""
    return parse_spec(
        {
            "name": STUDY,
            "trainer": "synthetic",
            "seed": seed,
            "args": TRAINER_ARGS,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "maxTrials": max_trials,
                "maxParallelTrials": MAX_PARALLEL,
                "params": [
                    {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
                    {
                        "parameterName": "optimizer",
                        "type": "CATEGORICAL",
                        "categoricalValues": ["adam", "sgd", "with space"],
                    },
                ],
            },
        }
    )


def conninfo(url: str) -> str:
    """A libpq URL (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database: (its name, its SQLAlchemy URL)."""
    name = f"tuner_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return name, url.render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_outage(admin_url: str, name: str, *, down: bool) -> None:
    """What tests/test_outage.py `set_outage` does, on the given server."""
    with psycopg.connect(conninfo(admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def server_major_version(admin_url: str) -> str:
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None
    return str(int(row[0]) // 10000)


# -- what is sampled -----------------------------------------------------------------------------


@dataclass
class TrainerProc:
    """A live trainer process of the study, as seen in /proc."""

    pid: int
    ppid: int
    key: tuple[str, ...]  # its argv without the output dir: equal params, equal key
    trial_dir: str  # e.g. "trial-0007"
    first_seen: int  # sample index
    last_seen: int


def scan_trainers(study_dir: Path) -> dict[int, tuple[int, tuple[str, ...], str]]:
    """pid -> (ppid, params key, trial dir name) of the live (not zombie) trainers of a study."""
    needle = os.fsencode(str(study_dir)) + b"/"
    found: dict[int, tuple[int, tuple[str, ...], str]] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
                if TRAINER_MODULE not in cmdline or needle not in cmdline:
                    continue
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] in ("Z", "X"):
                continue
            argv = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
            trial_dir = ""
            key: list[str] = []
            for arg in argv:
                if str(study_dir) + "/" in arg:
                    trial_dir = arg.rsplit("/", 1)[-1]
                else:
                    key.append(arg)
            found[int(entry.name)] = (int(fields[1]), tuple(key), trial_dir)
    return found


@dataclass
class DbSample:
    study_state: str
    counts: dict[str, int]

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED_STATES)


class DbSampler:
    """The study's state and run counts, on a connection of its own that survives outages."""

    def __init__(self, url: str) -> None:
        self.conninfo = conninfo(url)
        self.conn: psycopg.Connection[Any] | None = None
        self.last: DbSample | None = None
        self.failures = 0
        self._retry_at = 0.0

    def sample(self) -> DbSample | None:
        """The current sample, or None while the database does not answer."""
        now = time.monotonic()
        if self.conn is None and now < self._retry_at:
            return None
        try:
            if self.conn is None:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2)
            rows = self.conn.execute(
                "SELECT s.state, r.state, count(r.id) FROM tuner_studies s "
                "LEFT JOIN tuner_trial_runs r ON r.study_id = s.id "
                "WHERE s.name = %s GROUP BY s.state, r.state",
                (STUDY,),
            ).fetchall()
        except psycopg.Error:
            self.failures += 1
            self.close()
            self._retry_at = now + 0.3
            return None
        if not rows:
            return None
        counts = {str(r[1]): int(r[2]) for r in rows if r[1] is not None}
        self.last = DbSample(str(rows[0][0]), counts)
        return self.last

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        self.conn = None


# -- workers -------------------------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    log_path: Path
    paused: bool = False
    killed: bool = False
    _id: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def worker_id(self) -> str:
        """The id it printed at start (`worker <id>: ...`), or its pid."""
        if self._id is None:
            with contextlib.suppress(OSError), open(self.log_path, errors="replace") as lines:
                for line in lines:
                    if line.startswith("worker ") and ":" in line:
                        self._id = line.split()[1].rstrip(":")
                        break
        return self._id or f"pid {self.pid}"


# -- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    t0: float  # seconds since the soak started
    detail: str
    #: pids of the trainer processes this fault takes away (known at t0; outages: post hoc)
    doomed: set[int] = field(default_factory=set)
    live_at_t0: set[int] = field(default_factory=set)
    #: when the fault was lifted (SIGCONT, the database back, the worker restarted)
    ended: float | None = None
    t_eff: float | None = None
    recovery: float | None = None
    #: what the database showed about the fault (open transactions, lock waits)
    notes: list[str] = field(default_factory=list)
    worker: Worker | None = None


@dataclass
class Soak:
    args: argparse.Namespace
    workdir: Path
    db_name: str
    url: str
    max_trials: int
    rng: random.Random
    env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    next_index: int = 0
    start: float = field(default_factory=time.monotonic)
    start_wall: float = field(default_factory=time.time)
    # the timeline
    sample_times: list[float] = field(default_factory=list)
    sample_live: list[frozenset[int]] = field(default_factory=list)
    sample_target: list[int] = field(default_factory=list)
    trainers: dict[int, TrainerProc] = field(default_factory=dict)
    concurrent_pairs: set[tuple[str, str]] = field(default_factory=set)
    peak: int = 0
    over_samples: int = 0
    over_episodes: int = 0
    budget_samples: int = 0
    budget_episodes: int = 0
    peak_finished: int = 0
    peak_running_rows: int = 0
    _over: bool = False
    _over_budget: bool = False
    # faults
    faults: list[Fault] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    ongoing: Fault | None = None
    lift_at: float = 0.0
    lift: Callable[[], None] | None = None
    next_fault_at: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)
    restart_process: subprocess.Popen[bytes] | None = None
    outage_db_down: bool = False
    unexpected_exits: list[str] = field(default_factory=list)
    stopping: bool = False
    db: DbSampler | None = None

    @property
    def study_dir(self) -> Path:
        return self.workdir / "artifacts" / STUDY

    def now(self) -> float:
        return time.monotonic() - self.start

    # -- workers --

    def start_worker(self) -> Worker:
        self.next_index += 1
        log_path = self.workdir / f"worker-{self.next_index}.log"
        # Its sessions are named after it in pg_stat_activity (who holds or waits for locks).
        url = make_url(self.url).update_query_dict({"application_name": app_name(self.next_index)})
        env = {**self.env, "TUNER_DATABASE_URL": url.render_as_string(hide_password=False)}
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tuner.cli", "-v", "worker", "--slots", str(SLOTS)],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(self.next_index, process, log_path)
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Worker]:
        return [w for w in self.workers if not w.killed and w.process.poll() is None]

    def check_workers(self) -> None:
        """A worker that exited without being killed is a finding; a new one replaces it."""
        if self.stopping:
            return
        for worker in self.workers:
            if worker.killed or worker.process.poll() is None:
                continue
            worker.killed = True
            message = (
                f"{self.now():.1f} s: worker-{worker.index} (pid {worker.pid}) exited by itself "
                f"with code {worker.process.returncode}"
            )
            self.unexpected_exits.append(message)
            log(f"!! {message}; starting another")
            self.start_worker()

    def stop_workers(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.process.poll() is None:
                if worker.paused:
                    worker.process.send_signal(signal.SIGCONT)
                    worker.paused = False
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"!! worker-{worker.index} ignored SIGTERM for 30 s; SIGKILL")
                worker.process.kill()
                worker.process.wait()

    # -- sampling --

    def sample(self) -> None:
        index = len(self.sample_times)
        t = self.now()
        seen = scan_trainers(self.study_dir)
        for pid, (ppid, key, trial_dir) in seen.items():
            proc = self.trainers.get(pid)
            if proc is None or proc.trial_dir != trial_dir:
                self.trainers[pid] = TrainerProc(pid, ppid, key, trial_dir, index, index)
            else:
                proc.last_seen = index
                proc.ppid = ppid
        by_key: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for pid in seen:
            by_key[self.trainers[pid].key].append(self.trainers[pid].trial_dir)
        for dirs in by_key.values():
            if len(dirs) > 1:
                ordered = sorted(dirs)
                for i, first in enumerate(ordered):
                    for second in ordered[i + 1 :]:
                        self.concurrent_pairs.add((first, second))
        live = len(seen)
        self.peak = max(self.peak, live)
        over = live > MAX_PARALLEL
        self.over_samples += over
        self.over_episodes += over and not self._over
        self._over = over
        assert self.db is not None
        db = self.db.sample() or self.db.last
        target = MAX_PARALLEL
        if db is not None:
            self.peak_finished = max(self.peak_finished, db.finished)
            self.peak_running_rows = max(self.peak_running_rows, db.counts.get("RUNNING", 0))
            over_budget = db.finished > self.max_trials
            self.budget_samples += over_budget
            self.budget_episodes += over_budget and not self._over_budget
            self._over_budget = over_budget
            target = min(MAX_PARALLEL, max(0, self.max_trials - db.finished))
            if db.study_state != "RUNNING":
                target = 0
        self.sample_times.append(t)
        self.sample_live.append(frozenset(seen))
        self.sample_target.append(target)

    def study_running(self) -> bool:
        last = self.db.last if self.db is not None else None
        return last is None or last.study_state == "RUNNING"

    def trainers_of(self, worker: Worker) -> set[int]:
        return {
            pid for pid, (ppid, _, _) in scan_trainers(self.study_dir).items() if ppid == worker.pid
        }

    # -- faults --

    def next_kind(self) -> str:
        if not self.kinds:
            self.kinds = list(KINDS)
            self.rng.shuffle(self.kinds)
        return self.kinds.pop(0)

    def pick_worker(self) -> Worker | None:
        candidates = [w for w in self.live_workers() if not w.paused]
        busy = [w for w in candidates if self.trainers_of(w)]
        pool = busy or candidates
        return self.rng.choice(pool) if pool else None

    def inject(self, kind: str) -> bool:
        """Start one fault; False if it cannot be injected now (tried again shortly)."""
        t0 = self.now()
        live = set(scan_trainers(self.study_dir))
        if kind in ("kill-worker", "pause-worker"):
            worker = self.pick_worker()
            if worker is None:
                return False
            doomed = self.trainers_of(worker)
            label = f"worker-{worker.index} {worker.worker_id()} ({len(doomed)} trainers)"
            if kind == "kill-worker":
                worker.process.send_signal(signal.SIGKILL)
                worker.killed = True
                worker.process.wait()  # reaped at once: its pid is gone for the others
                delay = self.rng.uniform(*RESTART_AFTER)
                fault = Fault(kind, t0, f"SIGKILL {label}; new worker after {delay:.1f} s")
                self.lift_at = t0 + delay

                def restart() -> None:
                    self.start_worker()

                self.lift = restart
            else:
                worker.process.send_signal(signal.SIGSTOP)
                worker.paused = True
                delay = self.rng.uniform(*PAUSE)
                fault = Fault(kind, t0, f"SIGSTOP {label} for {delay:.1f} s", worker=worker)
                self.lift_at = t0 + delay
                self.note_transactions(fault, worker)

                def resume(worker: Worker = worker) -> None:
                    if worker.process.poll() is None:
                        worker.process.send_signal(signal.SIGCONT)
                    worker.paused = False

                self.lift = resume
            fault.doomed = doomed
        elif kind == "kill-trainer":
            if not live:
                return False
            pid = self.rng.choice(sorted(live))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            name = self.trainers[pid].trial_dir if pid in self.trainers else "?"
            fault = Fault(kind, t0, f"SIGKILL trainer pid {pid} ({name})", doomed={pid})
            self.lift_at = t0
            self.lift = None
        else:
            delay = self.rng.uniform(*OUTAGE)
            if self.args.pg_restart:
                version = server_major_version(self.args.pg_admin_url)
                command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
                self.restart_process = subprocess.Popen(
                    [*command, "restart"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
                fault = Fault(kind, t0, f"pg_ctlcluster {version} main restart")
                self.lift_at = math.inf  # until the restart is done and the server answers
            else:
                set_outage(self.args.pg_admin_url, self.db_name, down=True)
                self.outage_db_down = True
                fault = Fault(kind, t0, f"database refuses connections for {delay:.1f} s")
                self.lift_at = t0 + delay

                def restore() -> None:
                    set_outage(self.args.pg_admin_url, self.db_name, down=False)
                    self.outage_db_down = False

                self.lift = restore
        fault.live_at_t0 = live
        self.faults.append(fault)
        self.ongoing = fault
        log(f"[{t0:6.1f} s] {kind}: {fault.detail}")
        return True

    def step_faults(self, *, window_open: bool) -> None:
        """Lift the ongoing fault when its time has come; inject the next one when due."""
        t = self.now()
        if self.ongoing is not None:
            if self.restart_process is not None:
                if self.restart_process.poll() is None or not self._server_answers():
                    return
                self.restart_process = None
                self.lift_at = t
            if t < self.lift_at and window_open:
                return
            if self.ongoing.kind == "pause-worker":
                self.note_lock_waits(self.ongoing)
            if self.lift is not None:
                self.lift()
            self.ongoing.ended = self.now()
            if self.ongoing.kind != "kill-trainer":
                log(f"[{self.ongoing.ended:6.1f} s] {self.ongoing.kind} lifted")
            self.ongoing, self.lift = None, None
            self.next_fault_at = self.now() + self.rng.uniform(*GAP)
            return
        if not window_open or t < self.next_fault_at or not self.study_running():
            return
        kind = self.next_kind()
        if not self.inject(kind):
            self.skipped[kind] += 1
            self.kinds.insert(0, kind)
            self.next_fault_at = t + 0.5

    def _activity(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        try:
            with psycopg.connect(
                conninfo(self.args.pg_admin_url), autocommit=True, connect_timeout=2
            ) as conn:
                return list(conn.execute(query, (self.db_name, *params)).fetchall())
        except psycopg.Error as exc:
            return [("?", f"pg_stat_activity not read: {exc}")]

    def note_transactions(self, fault: Fault, worker: Worker) -> None:
        """Whether the worker was stopped inside a transaction (its locks stay held)."""
        time.sleep(0.05)  # its backend has noticed that the client went quiet
        rows = self._activity(
            "SELECT state, round(extract(epoch FROM now() - xact_start)::numeric, 2), "
            "left(query, 90) FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = %s AND xact_start IS NOT NULL",
            app_name(worker.index),
        )
        for state, age, query in rows:
            fault.notes.append(f"paused with a transaction open ({state}, {age} s): {query}")

    def note_lock_waits(self, fault: Fault) -> None:
        """Sessions waiting for a lock just before the pause ends, and who holds it."""
        rows = self._activity(
            "SELECT a.application_name, round(extract(epoch FROM now() - a.query_start)::numeric,"
            " 1), left(a.query, 90), array(SELECT b.application_name FROM pg_stat_activity b "
            "WHERE b.pid = ANY(pg_blocking_pids(a.pid))) FROM pg_stat_activity a "
            "WHERE a.datname = %s AND cardinality(pg_blocking_pids(a.pid)) > 0"
        )
        for row in rows:
            if len(row) == 4:
                waiter, age, query, holders = row
                fault.notes.append(
                    f"before SIGCONT: {waiter} waited {age} s for a lock held by "
                    f"{', '.join(holders)}: {query}"
                )
            else:
                fault.notes.append(str(row[1]))

    def _server_answers(self) -> bool:
        try:
            with psycopg.connect(conninfo(self.url), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def end_faults(self) -> None:
        """Lift whatever is still under way (at the end of the window, or on an error)."""
        if self.restart_process is not None:
            self.restart_process.wait()
            self.restart_process = None
        if self.ongoing is not None:
            if self.lift is not None:
                with contextlib.suppress(Exception):
                    self.lift()
            self.ongoing.ended = self.now()
            self.ongoing, self.lift = None, None
        for worker in self.workers:
            if worker.paused and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
                worker.paused = False
        if self.outage_db_down:
            set_outage(self.args.pg_admin_url, self.db_name, down=False)
            self.outage_db_down = False

    # -- the loop --

    def run_for(self, seconds: float, *, window_open: bool, until_over: bool) -> None:
        end = self.now() + seconds
        tick = self.now()
        while self.now() < end:
            self.sample()
            self.check_workers()
            self.step_faults(window_open=window_open)
            if until_over and not self.study_running():
                return
            tick += SAMPLE_EVERY
            time.sleep(max(0.0, tick - self.now()))


# -- the analysis --------------------------------------------------------------------------------


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def overlaps(a: TrialRun, b: TrialRun) -> bool:
    far = datetime.max.replace(tzinfo=a.started_at.tzinfo)
    return a.started_at < (b.ended_at or far) and b.started_at < (a.ended_at or far)


def find_duplicates(
    runs: list[TrialRun], retry_of: dict[int, int | None], concurrent_dirs: set[tuple[str, str]]
) -> dict[str, set[int]]:
    """Run numbers flagged per kind of duplicate (see the module docstring)."""
    flagged: dict[str, set[int]] = {
        "live at once (process table)": set(),
        "RUNNING at once (database)": set(),
        "finished twice": set(),
        "not an explicit retry": set(),
    }
    by_dir = {Path(r.output_dir).name: r for r in runs if r.output_dir}
    for first, second in concurrent_dirs:
        one, two = by_dir.get(first), by_dir.get(second)
        later = max((r for r in (one, two) if r is not None), key=lambda r: r.id, default=None)
        if later is not None and later.number is not None:
            flagged["live at once (process table)"].add(later.number)
    groups: dict[str, list[TrialRun]] = defaultdict(list)
    for run in runs:
        if run.number is not None and run.params:
            groups[params_key(run.params)].append(run)
    by_number = {r.number: r for r in runs if r.number is not None}
    retries: Counter[int] = Counter()
    for group in groups.values():
        group.sort(key=lambda r: r.id)
        finished = 0
        for i, run in enumerate(group):
            assert run.number is not None
            if any(overlaps(run, earlier) for earlier in group[:i]):
                flagged["RUNNING at once (database)"].add(run.number)
            if run.state in FINISHED_STATES:
                finished += 1
                if finished > 1:
                    flagged["finished twice"].add(run.number)
            if i == 0:
                continue
            source = retry_of.get(run.number)
            origin = by_number.get(source) if source is not None else None
            if (
                origin is None
                or origin.state != "STOPPED"
                or params_key(origin.params) != params_key(run.params)
                or origin.id >= run.id
            ):
                flagged["not an explicit retry"].add(run.number)
            else:
                retries[origin.number or 0] += 1
                if retries[origin.number or 0] > 1:
                    flagged["not an explicit retry"].add(run.number)
    return flagged


@dataclass
class MetricCheck:
    runs: int = 0
    lost: int = 0
    doubled: int = 0
    differ: int = 0
    damaged_files: int = 0
    details: list[str] = field(default_factory=list)


def on_disk_values(output_dir: Path) -> tuple[dict[tuple[str, int], dict[str, float]], int]:
    """(eval dir, step) -> {tag: value} from every event file of a trial; damaged files."""
    dirs = sorted(
        {p.parent.relative_to(output_dir).as_posix() for p in output_dir.rglob(EVENT_FILE_GLOB)}
    )
    steps: dict[tuple[str, int], dict[str, float]] = {}
    if not dirs:
        return steps, 0
    watcher = EvalDirWatcher(output_dir, dirs)
    result = watcher.poll()
    for value in result.values:
        tags = steps.setdefault((value.eval_name, value.step), {})
        if isinstance(value, ScalarValue):
            tags[value.tag] = value.value
    return steps, len(result.problems) + len(watcher.finish())


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-6 * max(1.0, abs(a))


def check_metrics(backend: Backend, runs: Iterable[TrialRun], artifact_root: Path) -> MetricCheck:
    check = MetricCheck()
    for run in runs:
        if run.state not in FINISHED_STATES or not run.output_dir:
            continue
        check.runs += 1
        disk, damaged = on_disk_values(artifact_root / run.output_dir)
        check.damaged_files += damaged
        with backend.db.session() as s:
            stored = {(st.eval_name, st.step): st.metrics for st in repo.eval_steps(s, run.id)}
        lost = sorted(set(disk) - set(stored))
        doubled = sorted(set(stored) - set(disk))
        differ = [
            (key, tag)
            for key in set(disk) & set(stored)
            for tag in disk[key]
            if not same(disk[key][tag], stored[key].get(tag))
        ]
        check.lost += len(lost)
        check.doubled += len(doubled)
        check.differ += len(differ)
        if lost or doubled or differ:
            check.details.append(
                f"trial {run.number} ({run.state}): lost steps {[s for _, s in lost]}, "
                f"doubled steps {[s for _, s in doubled]}, differing values {sorted(differ)}"
            )
    return check


def death_time(soak: Soak, pid: int) -> float:
    """When a trainer process was first missing from /proc (its last sample if never)."""
    proc = soak.trainers.get(pid)
    if proc is None:
        return 0.0  # gone before the first sample that could have seen it
    if proc.last_seen + 1 >= len(soak.sample_times):
        return math.inf  # alive to the end
    return soak.sample_times[proc.last_seen + 1]


def measure_recovery(soak: Soak, runs: list[TrialRun]) -> None:
    """Fill in each fault's t_eff and recovery (defined in the module docstring)."""
    stopped_pids = {r.pid for r in runs if r.state == "STOPPED" and r.pid}
    times = soak.sample_times
    for fault in soak.faults:
        if fault.kind == "db-outage":
            back = fault.ended if fault.ended is not None else times[-1]
            fault.doomed = {
                pid
                for pid in fault.live_at_t0
                if death_time(soak, pid) <= back or pid in stopped_pids
            }
        t_eff = max([fault.t0, *(death_time(soak, pid) for pid in fault.doomed)])
        if fault.kind == "db-outage":
            t_eff = max(t_eff, fault.ended if fault.ended is not None else math.inf)
        fault.t_eff = t_eff
        for t, live, target in zip(times, soak.sample_live, soak.sample_target, strict=True):
            if t >= t_eff and len(live) >= target:
                fault.recovery = t - fault.t0
                break


def worker_name(soak: Soak, worker_id: str) -> str:
    """`worker-N` for a worker id of this soak (its log is `worker-N.log`)."""
    for worker in soak.workers:
        if worker.worker_id() == worker_id:
            return f"worker-{worker.index}"
    return worker_id


def soak_time(soak: Soak, value: datetime | None) -> str:
    """A database timestamp as seconds since the soak started."""
    if value is None:
        return "-"
    return f"{value.timestamp() - soak.start_wall:.1f} s"


def describe_duplicates(
    soak: Soak, runs: list[TrialRun], retry_of: dict[int, int | None], flagged: set[int]
) -> list[str]:
    """For each params group with a flagged run (*): its runs, in order."""
    groups: dict[str, list[TrialRun]] = defaultdict(list)
    for run in runs:
        if run.number is not None:
            groups[params_key(run.params)].append(run)
    lines = []
    for key, group in groups.items():
        if not any(r.number in flagged for r in group):
            continue
        parts = []
        for r in sorted(group, key=lambda r: r.id):
            retry = retry_of.get(r.number) if r.number is not None else None
            parts.append(
                f"{'*' if r.number in flagged else ''}trial {r.number} {r.state} "
                f"({worker_name(soak, r.worker)}, {soak_time(soak, r.started_at)} to "
                f"{soak_time(soak, r.ended_at)}"
                + (f", retry of {retry}" if retry is not None else "")
                + ")"
            )
        lines.append(f"{key}: " + "; ".join(parts))
    return lines


def classify(run: TrialRun) -> str:
    """A short name for why a run was STOPPED or FAILED."""
    reason = run.failure_reason or ""
    for phrase, name in [
        ("stopped renewing its lease", "taken over (owner gone or paused)"),
        ("lease was not renewed", "fenced by its own manager"),
        ("killed by SIGKILL", "trainer killed by SIGKILL"),
        ("killed by SIGTERM", "trainer killed by SIGTERM"),
        ("interrupted", "stopped with its worker"),
    ]:
        if phrase in reason:
            return f"{run.state} {name}"
    return f"{run.state} {reason.splitlines()[0][:80] if reason else '(no reason)'}"


def trial_dirs(soak: Soak, pids: Iterable[int]) -> str:
    names = sorted(
        soak.trainers[p].trial_dir.removeprefix("trial-") for p in pids if p in soak.trainers
    )
    return ", ".join(n.lstrip("0") or "0" for n in names)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def log_findings(workdir: Path) -> list[str]:
    """Tracebacks and error lines in the worker logs (first few of each log)."""
    found: list[str] = []
    for path in sorted(workdir.glob("worker-*.log"), key=lambda p: int(p.stem.split("-")[1])):
        lines = path.read_text(errors="replace").splitlines()
        hits = [
            f"{path.name}:{i + 1}: {line[:160]}"
            for i, line in enumerate(lines)
            if "Traceback" in line or " ERROR " in line or " CRITICAL " in line
        ]
        found.extend(hits[:5])
        if len(hits) > 5:
            found.append(f"{path.name}: {len(hits) - 5} more")
    return found


# -- the report ----------------------------------------------------------------------------------


def report(soak: Soak) -> bool:
    backend = Backend.connect(soak.url)
    try:
        with backend.db.session() as s:
            study = repo.get_study(s, STUDY)
            runs = repo.runs(s, study.id)
        study_state, study_reason = study.state, study.state_reason
        optuna_id = backend.storage.get_study_id_from_name(STUDY)
        trials = backend.storage.get_all_trials(optuna_id, deepcopy=False)
        retry_of = {t.number: t.user_attrs.get("retry_of") for t in trials}
        optuna_state = {t._trial_id: t.state.name for t in trials}
        metrics = check_metrics(backend, runs, soak.workdir / "artifacts")
    finally:
        backend.close()
    measure_recovery(soak, runs)
    duplicates = find_duplicates(runs, retry_of, soak.concurrent_pairs)
    duplicated = set().union(*duplicates.values())
    duplicate_lines = describe_duplicates(soak, runs, retry_of, duplicated)
    killed = {pid for f in soak.faults if f.kind == "kill-trainer" for pid in f.doomed}
    unintended = [r for r in runs if r.state == "FAILED" and r.pid not in killed]
    states = Counter(r.state for r in runs)
    finished = sum(states.get(s, 0) for s in FINISHED_STATES)
    expected_optuna = {"COMPLETED": "COMPLETE", "PRUNED": "PRUNED"}
    optuna_mismatch = [
        f"trial {r.number}: {r.state}, Optuna {optuna_state.get(r.optuna_trial_id)}"
        for r in runs
        if r.optuna_trial_id is not None
        and optuna_state.get(r.optuna_trial_id) != expected_optuna.get(r.state, "FAIL")
    ]
    reasons = Counter(classify(r) for r in runs if r.state in ("STOPPED", "FAILED"))
    kinds = Counter(f.kind for f in soak.faults)
    recovered = [f.recovery for f in soak.faults if f.recovery is not None]
    unrecovered = sum(f.recovery is None for f in soak.faults)
    leftover_running = states.get("RUNNING", 0)

    goals: list[tuple[str, str, bool]] = []

    def goal(name: str, value: str, ok: bool) -> None:
        goals.append((name, value, ok))

    by_state = ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
    print()
    print(
        f"chaos soak: seed {soak.args.seed}, {soak.args.duration:g} s of faults, "
        f"{soak.args.workers} workers x {SLOTS} slots, maxTrials {soak.max_trials}, "
        f"maxParallelTrials {MAX_PARALLEL}, {len(soak.sample_times)} samples over "
        f"{soak.sample_times[-1]:.0f} s"
    )
    print()
    print("| fault | t0 (s) | what | trials taken | lifted (s) | effect (s) | recovery (s) |")
    print("|---|---:|---|---|---:|---:|---:|")
    for f in soak.faults:
        lifted = f"{f.ended:.1f}" if f.ended is not None and f.kind != "kill-trainer" else ""
        effect = f"{f.t_eff - f.t0:.1f}" if f.t_eff is not None and f.t_eff < math.inf else "-"
        rec = f"{f.recovery:.1f}" if f.recovery is not None else "unrecovered"
        taken = trial_dirs(soak, f.doomed)
        print(f"| {f.kind} | {f.t0:.1f} | {f.detail} | {taken} | {lifted} | {effect} | {rec} |")
    print()
    print("| measure | value | goal |")
    print("|---|---|---|")
    rows: list[tuple[str, str, str]] = [
        ("trials run (by state)", f"{len(runs)}: {by_state}", ""),
        ("finished (counted against maxTrials)", f"{finished} of {soak.max_trials}", ""),
    ]
    for name, numbers in duplicates.items():
        rows.append((f"duplicates: {name}", f"{len(numbers)} {sorted(numbers) or ''}", ""))
    for name, value, ok in [
        ("duplicates (distinct runs)", str(len(duplicated)), not duplicated),
        (
            "parallelism violations (episodes [samples])",
            f"{soak.over_episodes} [{soak.over_samples}]",
            soak.over_episodes == 0,
        ),
        (
            "budget violations (episodes [samples])",
            f"{soak.budget_episodes} [{soak.budget_samples}]"
            + (f", final {finished}" if finished > soak.max_trials else ""),
            soak.budget_episodes == 0 and finished <= soak.max_trials,
        ),
        ("lost metrics (eval steps)", str(metrics.lost), metrics.lost == 0),
        ("doubled metrics (eval steps)", str(metrics.doubled), metrics.doubled == 0),
        ("metric values differ", str(metrics.differ), metrics.differ == 0),
        ("study final state", f"{study_state} ({study_reason or ''})", study_state == "COMPLETED"),
        (
            "workers that exited by themselves",
            str(len(soak.unexpected_exits)),
            not soak.unexpected_exits,
        ),
        (
            "FAILED runs the soak did not kill",
            f"{len(unintended)} {sorted(r.number or 0 for r in unintended) or ''}",
            not unintended,
        ),
    ]:
        goal(name, value, ok)
    for name, value, ok in goals:
        rows.append((name, value, "ok" if ok else "**MISSED**"))
    rec = (
        f"p50 {percentile(recovered, 0.5):.1f}, p95 {percentile(recovered, 0.95):.1f}, "
        f"max {max(recovered):.1f} ({len(recovered)} faults)"
        if recovered
        else "-"
    )
    rows += [
        ("parallelism peak (live trainers)", str(soak.peak), f"<= {MAX_PARALLEL}"),
        (
            "peak RUNNING rows / finished (database)",
            f"{soak.peak_running_rows} / {soak.peak_finished}",
            "",
        ),
        ("recovery time (s)", rec, ""),
        ("unrecovered faults", str(unrecovered), ""),
    ]
    for kind in KINDS:
        times = [f.recovery for f in soak.faults if f.kind == kind and f.recovery is not None]
        summary = f"p50 {percentile(times, 0.5):.1f}, max {max(times):.1f}" if times else "-"
        rows.append((f"faults: {kind}", f"{kinds.get(kind, 0)} (recovery {summary})", ""))
    if soak.skipped:
        rows.append(("fault attempts postponed", str(dict(soak.skipped)), ""))
    rows += [
        ("metrics checked", f"{metrics.runs} finished runs", ""),
        ("damaged event files", str(metrics.damaged_files), ""),
        ("runs left RUNNING after the workers stopped", str(leftover_running), ""),
        ("Optuna state differs from the run's", str(len(optuna_mismatch)), ""),
        ("database samples missed (outages)", str(soak.db.failures if soak.db else 0), ""),
    ]
    for name, value, mark in rows:
        print(f"| {name} | {value} | {mark} |")
    print()
    print("STOPPED/FAILED runs: " + "; ".join(f"{n}x {r}" for r, n in reasons.most_common()))
    for title, lines in [
        ("duplicates", duplicate_lines),
        (
            "FAILED runs the soak did not kill",
            [
                f"trial {r.number} ({worker_name(soak, r.worker)}, ended "
                f"{soak_time(soak, r.ended_at)}): {(r.failure_reason or '').splitlines()[0]}"
                for r in unintended
            ],
        ),
        ("fault notes", [f"{f.kind} at {f.t0:.1f} s: {n}" for f in soak.faults for n in f.notes]),
        ("metric mismatches", metrics.details),
        ("Optuna mismatches", optuna_mismatch),
        ("workers that exited by themselves", soak.unexpected_exits),
        ("worker log errors", log_findings(soak.workdir)),
    ]:
        if lines:
            print(f"{title}:")
            for line in lines[:20]:
                print(f"  {line}")
    met = all(ok for _, _, ok in goals)
    print()
    print(
        "all goals met" if met else "GOALS MISSED: " + ", ".join(n for n, _, ok in goals if not ok)
    )
    return met


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of faults")
    parser.add_argument("--workers", type=int, default=3, help="tuner worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seeds the faults and the study")
    parser.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help=f"the study's budget (default: enough for the window, duration x "
        f"{MAX_PARALLEL} / {TRIAL_SECONDS:g} s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and temp dir")
    parser.add_argument(
        "--pg-restart",
        action="store_true",
        help="outages restart the PostgreSQL server itself (affects the whole machine)",
    )
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.duration <= 0:
        parser.error("--workers must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    max_trials = args.max_trials or max(10, round(args.duration * MAX_PARALLEL / TRIAL_SECONDS))
    workdir = Path(tempfile.mkdtemp(prefix="tuner-chaos-"))
    db_name, url = create_database(args.pg_admin_url)
    log(f"temp dir {workdir}, database {db_name}")
    soak = Soak(args, workdir, db_name, url, max_trials, random.Random(args.seed))
    met = False
    try:
        soak.env = dict(os.environ)
        soak.env.update(
            WORKER_ENV,
            TUNER_DATABASE_URL=url,
            TUNER_ARTIFACT_ROOT=str(workdir / "artifacts"),
            TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
            PYTHONUNBUFFERED="1",
        )
        with open(workdir / "db-upgrade.log", "wb") as out:
            subprocess.run(
                [sys.executable, "-m", "tuner.cli", "db", "upgrade"],
                cwd=REPO,
                env=soak.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        backend = Backend.connect(url, auto_init=False)
        try:
            registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
            study_ops.submit_study(backend, make_spec(max_trials, args.seed), registry)
        finally:
            backend.close()
        soak.db = DbSampler(url)
        soak.start, soak.start_wall = time.monotonic(), time.time()
        for _ in range(args.workers):
            soak.start_worker()
        soak.next_fault_at = soak.rng.uniform(*FIRST_FAULT)
        soak.run_for(args.duration, window_open=True, until_over=True)
        if not soak.study_running():
            log(f"[{soak.now():6.1f} s] the study ended inside the fault window")
        soak.end_faults()
        while len(soak.live_workers()) < args.workers:
            soak.start_worker()
        last = soak.db.last
        remaining = max_trials - (last.finished if last else 0)
        bound = 60 + remaining * TRIAL_SECONDS * 2 / MAX_PARALLEL
        log(f"[{soak.now():6.1f} s] faults over; waiting up to {bound:.0f} s for the study")
        soak.run_for(bound, window_open=False, until_over=True)
        log(f"[{soak.now():6.1f} s] stopping the workers")
        soak.stop_workers()
        soak.run_for(1.0, window_open=False, until_over=False)
        leftover = scan_trainers(soak.study_dir)
        for pid in leftover:  # descendants of our workers that outlived them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftover:
            soak.unexpected_exits.append(f"{len(leftover)} trainers outlived their workers")
        soak.db.close()
        met = report(soak)
    finally:
        with contextlib.suppress(Exception):
            soak.end_faults()
        for worker in soak.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        if soak.db is not None:
            soak.db.close()
        if args.keep:
            log(f"kept: temp dir {workdir}, database {url}")
        else:
            drop_database(args.pg_admin_url, db_name)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
