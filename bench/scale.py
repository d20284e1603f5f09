"""How the tuner scales out: N `tuner worker` processes claiming trials from one PostgreSQL.

**What.** For each N of `--workers` (1, 2, 4 by default), a fresh study of `--trials` trials of
a short synthetic trainer (`bench/steps_trainer.py`: `--evals` eval events, each after a sleep
of `--eval-seconds`, 4 x 0.125 s by default: about 0.55 s a trial, almost no CPU) is run by N
`tuner worker --slots S` processes (S = `--slots`, 2 by default) sharing one fresh PostgreSQL
database, with the study's maxParallelTrials = N x S so that only the workers limit it. The
workers run with the tuner's default settings (poll 0.25 s, heartbeat timeout 60 s) unless
`--poll-interval` is given. The N values run one after the other in the same run, so N = 1 is
the baseline of the others; with `--rounds 2` the order is 1 2 4 | 4 2 1 (drift and warm-up
then favour no N) and the figures of an N are pooled over its rounds (trials/s also as the
median of its rounds, which one round slowed by other work on the machine moves less).

Each run: the workers start, each logs its id; after `--idle-seconds` of idling (their idle
polling is measured then) the study is submitted; when the study has ended the workers get
SIGTERM. Meanwhile `pg_stat_activity` is sampled every 0.1 s on a connection of the bench's
own (each worker's sessions carry `application_name=scale-<run>-w<i>`).

**The figures** (per N; p50/p95 are nearest-rank):

- `trials/s`: trials / wall time from the first claim (the first run row's reservation,
  `started_at`) to the last trial's end (`ended_at`); `x N=1` its ratio to N = 1 in this run;
  `efficiency` = trials/s / (N x trials/s at N = 1): 1.00 is perfect scaling.
- `claim latency`: how long a free slot stays free. A slot frees when its trainer exits: the
  trainer writes the wall time of its last instruction (`trainer-times.txt`), and the process
  exits right after. The slot is refilled when the next trial's run row is attached (the
  `created` event the attach appends to the study's journal, in the attach's transaction). On
  each worker, each attach is paired with the oldest slot freed there (by recorded end) that
  no earlier attach took: claim latency = attached - trainer exit. It splits into: the
  manager noticing the exit and recording the end (`exit->end`: ingesting the last evals,
  the end's transaction, telling Optuna), until the next reservation (`end->reserve`: the
  viewers, the tick's study query, other trials' ends in the same tick), the proposal
  (`reserve->attach`: Optuna's ask and the attach), and, not part of the claim, the process
  start (`attach->run`: until the trainer's first instruction). The first S claims of each
  worker fill slots that were free since the study appeared: `first claim` is attached -
  submit (it includes the wait for the worker's next tick, up to a poll interval).
- `connections`: peak over the samples of the workers' sessions in `pg_stat_activity`, in all
  and per worker (`busy`: not idle, i.e. running a statement or inside a transaction), and the
  samples with a session waiting for a lock (`wait_event_type = 'Lock'`).
- serialized sections: each worker process is the CLI's `tuner worker`, run through a probe
  (`scale.py _worker ...`) that listens to SQLAlchemy's engine and pool events (a few
  microseconds a statement) and records, per transaction, the first statement that takes a
  study-wide row lock: the reservation (`UPDATE tuner_studies ... RETURNING spec_json`), a
  journal append (`UPDATE tuner_studies SET event_seq`: after an attach, an ingest of evals,
  an end) or Optuna's new trial (`SELECT ... FROM studies ... FOR UPDATE`). `wait` is that
  statement's duration (the lock wait included), `hold` from its return until the connection
  is back in the pool (after the commit): an upper bound of the time the row stays locked.
  Every transaction on the study's row, of every worker, is serialized; their holds per trial
  bound the trials/s of one study.
- per worker: transactions (pool checkouts) per second while idle and while busy, SQL
  statements per trial, the peak of connections checked out at once and open per pool, and
  CPU per trial of the worker, of its children (trainers, watchdog) and of its PostgreSQL
  server processes (their /proc CPU times at each sample: the server must run on this host).
- the machine: the 1-minute load average before and after each run, and the share of all
  CPUs busy during it (/proc/stat; other work on the machine counts too).

Then the arithmetic for 100 workers, from these figures and the server's `max_connections`:
labelled as such, nothing of it is measured.

**Sections.** `--only` picks the measurements to run, by name, from `SECTIONS`: `scaling`
(the above) and `uploads` (throughput to an S3-compatible server on loopback, verified uploads
against bare ones, and a whole trial's upload). Each is a function of the `Bench` (its scratch
database, temp dir and arguments).

    python bench/scale.py                                 # 1, 2, 4 workers x 2 slots, 40 trials
    python bench/scale.py --workers 1,2,4 --trials 40 --rounds 2
    python bench/scale.py --workers 1,4,8 --slots 1 --eval-seconds 0.25 --keep
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from tuner.domain.config import Settings
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.leases import heartbeat_every
from tuner.study import operations as study_ops
from tuner.study.operations import Backend

REPO = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TRAINER = "scale_steps"
TRAINER_MODULE = "bench.steps_trainer"
TIMES_FILE = "trainer-times.txt"  # what bench/steps_trainer.py writes last
WORKER_COMMAND = "_worker"
SAMPLE_EVERY = 0.1
PROJECTED_WORKERS = 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def per_s(seconds: float) -> float:
    """How many of something taking `seconds` fit in a second, one at a time."""
    return 1 / seconds if seconds > 0 else math.nan


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


# -- the probe: runs inside each worker process --------------------------------------------------


def lock_kind(statement: str, previous: str) -> str | None:
    """The study-wide row lock a statement takes, or None: the serialized parts of a claim."""
    text = statement.lstrip()
    if text.startswith("UPDATE tuner_studies SET event_seq"):
        if previous.startswith("UPDATE tuner_trial_runs SET number"):
            return "journal: attach"
        if previous.startswith("UPDATE tuner_trial_runs SET state"):
            return "journal: end"
        if previous.startswith(("INSERT INTO tuner_event_files", "INSERT INTO tuner_eval")):
            return "journal: evals"
        return "journal: " + " ".join(previous.split()[:3]).lower()
    if text.startswith("UPDATE tuner_studies SET"):
        return "reserve" if "RETURNING tuner_studies.spec_json" in text else "study: state"
    if text.endswith("FOR UPDATE") and re.search(r"\sFROM studies\s", text):
        return "optuna: new trial"
    return None


class Probe:
    """Records, in a worker process, what the database sees of it from the client side: the
    study-wide lock sections, transactions and connections per pool; written as JSON at exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started_at = time.time()
        self.times = os.times()
        #: (kind, acquired at, wait s, hold s) per transaction that took a study-wide lock
        self.sections: list[tuple[str, float, float, float]] = []
        #: lock statements that failed (a lock timeout): (kind, started at)
        self.failed: list[tuple[str, float]] = []
        #: (time, pool, statements, own CPU s, children's CPU s) per checkout, at its checkin
        self.checkins: list[tuple[float, str, int, float, float]] = []
        self.out: Counter[str] = Counter()
        self.peak_out: Counter[str] = Counter()
        self.peak_open: Counter[str] = Counter()

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)
        connect = Backend.connect.__func__  # type: ignore[attr-defined]
        probe = self

        def probed_connect(cls: type[Backend], /, url: str, **kwargs: Any) -> Backend:
            backend: Backend = connect(cls, url, **kwargs)
            probe.watch(backend.db.engine, "tuner")
            probe.watch(backend.storage.engine, "optuna")
            return backend

        Backend.connect = classmethod(probed_connect)  # type: ignore[method-assign,assignment]

    def watch(self, engine: Engine, label: str) -> None:
        pool: Any = engine.pool

        def checkout(_dbapi: Any, _record: Any, _proxy: Any) -> None:
            self.out[label] += 1
            self.peak_out[label] = max(self.peak_out[label], self.out[label])
            self.peak_open[label] = max(self.peak_open[label], pool.checkedin() + self.out[label])

        def checkin(_dbapi: Any, record: Any) -> None:
            now = time.time()
            self.out[label] -= 1
            if record is None:
                return
            info = record.info
            lock = info.pop("scale_lock", None)
            pending = info.pop("scale_pending", None)
            if lock is not None:
                kind, acquired, wait = lock
                self.sections.append((kind, acquired, wait, now - acquired))
            if pending is not None:
                self.failed.append(pending)
            cpu = os.times()
            self.checkins.append(
                (
                    now,
                    label,
                    info.pop("scale_statements", 0),
                    cpu.user + cpu.system,
                    cpu.children_user + cpu.children_system,
                )
            )
            info.pop("scale_previous", None)

        event.listen(engine, "checkout", checkout)
        event.listen(engine, "checkin", checkin)

    def _before(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        info = conn.info
        info["scale_statements"] = info.get("scale_statements", 0) + 1
        if "scale_lock" not in info and "scale_pending" not in info:
            kind = lock_kind(statement, info.get("scale_previous", ""))
            if kind is not None:
                info["scale_pending"] = (kind, time.time())
        info["scale_previous"] = statement.lstrip()[:80]

    def _after(self, conn: Any, *_: Any) -> None:
        pending = conn.info.pop("scale_pending", None)
        if pending is not None:
            kind, started = pending
            now = time.time()
            conn.info["scale_lock"] = (kind, now, now - started)

    def dump(self) -> None:
        end = os.times()
        document = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "cpu": end.user + end.system - self.times.user - self.times.system,
            "children_cpu": end.children_user
            + end.children_system
            - self.times.children_user
            - self.times.children_system,
            "sections": self.sections,
            "failed": self.failed,
            "checkins": self.checkins,
            "peak_out": dict(self.peak_out),
            "peak_open": dict(self.peak_open),
        }
        self.path.write_text(json.dumps(document), encoding="utf-8")


def run_worker(argv: list[str]) -> int:
    """`scale.py _worker STATS.json [tuner CLI args]`: the CLI with a probe, its JSON at exit."""
    probe = Probe(Path(argv[0]))
    probe.install()
    from tuner.cli.main import app

    code = 0
    try:
        app(args=argv[1:], prog_name="tuner")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        probe.dump()
    return code


# -- the scratch database ------------------------------------------------------------------------


def conninfo(url: str) -> str:
    """A libpq URL (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_app_name(url: str, name: str) -> str:
    return make_url(url).update_query_dict({"application_name": name}).render_as_string(False)


@contextmanager
def scratch_database(admin_url: str, keep: bool) -> Iterator[tuple[str, str]]:
    """A fresh database, `tuner db upgrade`d: (its name, its SQLAlchemy URL); dropped after."""
    name = f"bench_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    try:
        env = {**os.environ, "TUNER_DATABASE_URL": rendered, "PYTHONPATH": pythonpath()}
        subprocess.run(
            [sys.executable, "-m", "tuner.cli", "db", "upgrade"],
            cwd=REPO,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield name, rendered
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pythonpath() -> str:
    """This tree first, so workers and trainers run this checkout's code."""
    rest = os.environ.get("PYTHONPATH")
    return f"{REPO}{os.pathsep}{rest}" if rest else str(REPO)


@dataclass(frozen=True)
class ServerFacts:
    max_connections: int
    reserved: int
    client_backends: int  # on the whole server, before the runs (others' work included)
    version: str


def server_facts(url: str) -> ServerFacts:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:

        def one(query: str) -> Any:
            row = conn.execute(query).fetchone()
            assert row is not None
            return row[0]

        return ServerFacts(
            max_connections=int(one("SHOW max_connections")),
            reserved=int(one("SHOW superuser_reserved_connections")),
            client_backends=int(
                one(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )
            ),
            version=str(one("SHOW server_version")),
        )


# -- sampling ------------------------------------------------------------------------------------


@dataclass
class Sample:
    at: float
    by_worker: Counter[int]
    busy: int
    lock_waits: list[tuple[str, str]]  # (application_name, query) of sessions waiting for a lock
    study_state: str | None
    backend_cpu: float  # CPU seconds of the workers' server processes seen so far (/proc)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """utime + stime of a process on this host, in seconds (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ActivitySampler:
    """`pg_stat_activity` of the workers of one run, on a connection of the bench's own."""

    def __init__(self, url: str, db_name: str, prefix: str) -> None:
        self.conn = psycopg.connect(
            conninfo(url), autocommit=True, application_name="scale-sampler"
        )
        self.db_name = db_name
        self.prefix = prefix
        self.samples: list[Sample] = []
        #: server process id -> its CPU seconds when last seen (the server runs on this host)
        self.backend_cpu: dict[int, float] = {}

    def sample(self, study: str | None) -> Sample:
        rows = self.conn.execute(
            "SELECT pid, application_name, state, wait_event_type, left(query, 100) "
            "FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' "
            "AND application_name LIKE %s",
            (self.db_name, self.prefix + "%"),
        ).fetchall()
        by_worker: Counter[int] = Counter()
        busy = 0
        waits: list[tuple[str, str]] = []
        for pid, app_name, state, wait_type, query in rows:
            cpu = process_cpu(pid)
            if cpu is not None:
                self.backend_cpu[pid] = cpu
            by_worker[int(app_name[len(self.prefix) :])] += 1
            busy += state != "idle"
            if wait_type == "Lock":
                waits.append((app_name, query))
        state = None
        if study is not None:
            row = self.conn.execute(
                "SELECT state FROM tuner_studies WHERE name = %s", (study,)
            ).fetchone()
            state = row[0] if row else None
        taken = Sample(time.time(), by_worker, busy, waits, state, sum(self.backend_cpu.values()))
        self.samples.append(taken)
        return taken

    def close(self) -> None:
        self.conn.close()


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


# -- one run of N workers ------------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    log_path: Path
    stats_path: Path

    def ready(self) -> bool:
        """It has built its manager (the CLI logs its id just before the loop starts)."""
        with suppress(OSError):
            return any(line.startswith("worker ") for line in self.log_path.read_text().split("\n"))
        return False


@dataclass(frozen=True)
class RunRow:
    number: int
    worker: int
    state: str
    reserved_at: float
    ended_at: float
    attached_at: float
    began_at: float | None  # the trainer's first instruction
    exited_at: float | None  # its last


@dataclass(frozen=True)
class Claim:
    worker: int
    first: bool  # filled a slot free since the study appeared
    freed_at: float  # the previous trainer's exit (or the submit)
    ended_at: float | None  # the previous run's end as recorded
    reserved_at: float
    attached_at: float
    began_at: float | None

    @property
    def latency(self) -> float:
        return self.attached_at - self.freed_at


@dataclass
class RunResult:
    """What one run of N workers measured."""

    n: int
    index: int
    trials: int
    submitted_at: float
    idle_from: float
    first_claim: float
    last_end: float
    runs: list[RunRow]
    claims: list[Claim]
    samples: list[Sample]
    probes: dict[int, dict[str, Any]]
    cpu_busy: float
    server_cpu: float  # CPU seconds of the workers' PostgreSQL processes while the study ran
    idle_server_cpu: float  # CPU seconds per second of one idle worker's server processes
    load_before: float
    load_after: float
    problems: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return self.last_end - self.first_claim

    @property
    def throughput(self) -> float:
        return self.trials / self.wall if self.wall > 0 else math.nan


def make_spec(name: str, trials: int, parallel: int, args: argparse.Namespace) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "trainer": TRAINER,
            "seed": 1,
            "args": [f"--evals={args.evals}", f"--eval-seconds={args.eval_seconds}"],
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                "maxTrials": trials,
                "maxParallelTrials": parallel,
                "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1}],
            },
        }
    )


def worker_env(bench: Bench, url: str, app_name: str) -> dict[str, str]:
    env = {
        **os.environ,
        "TUNER_DATABASE_URL": with_app_name(url, app_name),
        "TUNER_ARTIFACT_ROOT": str(bench.artifact_root),
        "TUNER_TRAINERS_FILE": str(bench.trainers_file),
        "PYTHONPATH": pythonpath(),
        "PYTHONUNBUFFERED": "1",
    }
    if bench.args.poll_interval is not None:
        env["TUNER_POLL_INTERVAL"] = str(bench.args.poll_interval)
    return env


def start_workers(bench: Bench, url: str, index: int, n: int) -> list[Worker]:
    workers = []
    run_dir = bench.workdir / f"run-{index:02d}-n{n}"
    run_dir.mkdir()
    for i in range(1, n + 1):
        log_path = run_dir / f"worker-{i}.log"
        stats_path = run_dir / f"worker-{i}.json"
        argv = [sys.executable, str(THIS_FILE), WORKER_COMMAND, str(stats_path)]
        argv += ["worker", "--slots", str(bench.args.slots)]
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=worker_env(bench, url, f"scale-{index}-w{i}"),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        workers.append(Worker(i, process, log_path, stats_path))
    return workers


def stop_workers(workers: Sequence[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log(f"!! worker-{worker.index} ignored SIGTERM for 30 s; SIGKILL")
            worker.process.kill()
            worker.process.wait()


def read_runs(
    url: str, study: str, artifact_root: Path, worker_of_pid: dict[int, int]
) -> list[RunRow]:
    """The study's runs with their reservation, attach and end, and their trainer's times."""

    def wall(value: datetime) -> float:
        return value.timestamp()

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        study_id = conn.execute("SELECT id FROM tuner_studies WHERE name = %s", (study,)).fetchone()
        assert study_id is not None
        attached: dict[int, datetime] = dict(
            conn.execute(
                "SELECT number, created_at FROM tuner_study_events "
                "WHERE study_id = %s AND kind = 'created'",
                study_id,
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT number, worker, state, started_at, ended_at, output_dir "
            "FROM tuner_trial_runs WHERE study_id = %s ORDER BY id",
            study_id,
        ).fetchall()
    runs = []
    for number, worker, state, started_at, ended_at, output_dir in rows:
        if number is None or ended_at is None or number not in attached:
            continue
        began = exited = None
        with suppress(OSError, ValueError):
            text = (artifact_root / output_dir / TIMES_FILE).read_text()
            began, exited = (float(v) for v in text.split())
        pid = int(worker.split(":")[1])
        runs.append(
            RunRow(
                number=number,
                worker=worker_of_pid.get(pid, -1),
                state=state,
                reserved_at=wall(started_at),
                ended_at=wall(ended_at),
                attached_at=wall(attached[number]),
                began_at=began,
                exited_at=exited,
            )
        )
    return runs


def match_claims(runs: Sequence[RunRow], slots: int, submitted_at: float) -> list[Claim]:
    """Pair each attach on a worker with the oldest slot freed there that no attach took yet.

    Slots free in the manager's order of recorded ends (a slot is refilled only after its
    trial's end was recorded, in the same tick or a later one); its latency counts from the
    trainer's own exit (the recorded end if the trainer wrote no times).
    """
    claims: list[Claim] = []
    by_worker: dict[int, list[RunRow]] = defaultdict(list)
    for run in runs:
        by_worker[run.worker].append(run)
    for worker, own in by_worker.items():
        events = [(r.ended_at, 0, r) for r in own] + [(r.attached_at, 1, r) for r in own]
        free: list[RunRow | None] = [None] * slots
        for _, kind, run in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == 0:
                free.append(run)
                continue
            if not free:
                continue  # cannot happen with the manager's bookkeeping; not counted
            previous = free.pop(0)
            if previous is None:
                freed, ended = submitted_at, None
            else:
                freed = previous.exited_at or previous.ended_at
                ended = previous.ended_at
            claims.append(
                Claim(
                    worker=worker,
                    first=previous is None,
                    freed_at=freed,
                    ended_at=ended,
                    reserved_at=run.reserved_at,
                    attached_at=run.attached_at,
                    began_at=run.began_at,
                )
            )
    return claims


def log_problems(workers: Sequence[Worker]) -> list[str]:
    """Error lines and tracebacks in the worker logs (a few per log)."""
    found = []
    for worker in workers:
        with suppress(OSError):
            lines = worker.log_path.read_text(errors="replace").splitlines()
            bad = [
                ln for ln in lines if " ERROR " in ln or ln.startswith("Traceback") or "WARN" in ln
            ]
            found += [f"worker-{worker.index}: {ln.strip()[:160]}" for ln in bad[:3]]
    return found


def run_workers(bench: Bench, url: str, db_name: str, index: int, n: int) -> RunResult:
    """One run: N workers, one study, sampled until it ends."""
    args = bench.args
    study = f"scale-{index:02d}-n{n}"
    load_before = os.getloadavg()[0]
    sampler = ActivitySampler(url, db_name, f"scale-{index}-w")
    workers = start_workers(bench, url, index, n)
    problems: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not all(w.ready() for w in workers):
            if any(w.process.poll() is not None for w in workers) or time.monotonic() > deadline:
                raise RuntimeError(
                    f"a worker of run {index} did not start: see {workers[0].log_path}"
                )
            time.sleep(0.1)
        idle_cpu0 = sampler.sample(None).backend_cpu
        idle_from = time.time()
        while time.time() < idle_from + args.idle_seconds:
            time.sleep(SAMPLE_EVERY)
            sampler.sample(None)
        spec = make_spec(study, args.trials, n * args.slots, args)
        study_ops.submit_study(bench.backend, spec, bench.registry)
        submitted_at = time.time()
        server_cpu0 = sum(sampler.backend_cpu.values())
        idle_cpu = (server_cpu0 - idle_cpu0) / (submitted_at - idle_from) / n
        busy0, total0 = cpu_ticks()
        deadline = time.monotonic() + args.timeout
        while True:
            taken = sampler.sample(study)
            if taken.study_state not in ("RUNNING", None):
                break
            if time.monotonic() > deadline:
                problems.append(f"the study did not end within {args.timeout:g} s")
                break
            if any(w.process.poll() is not None for w in workers):
                problems.append("a worker exited by itself")
                break
            time.sleep(SAMPLE_EVERY)
        busy1, total1 = cpu_ticks()
        server_cpu = sum(sampler.backend_cpu.values()) - server_cpu0
        load_after = os.getloadavg()[0]
    finally:
        stop_workers(workers)
        sampler.close()
    if taken.study_state != "COMPLETED":
        problems.append(f"study {study} ended {taken.study_state}")
    worker_of_pid = {w.process.pid: w.index for w in workers}
    runs = read_runs(url, study, bench.artifact_root, worker_of_pid)
    states = Counter(r.state for r in runs)
    if states != {"COMPLETED": args.trials}:
        problems.append(f"runs by state: {dict(states)} (expected {args.trials} COMPLETED)")
    missing = sum(r.exited_at is None for r in runs)
    if missing:
        problems.append(f"{missing} trainers wrote no {TIMES_FILE}")
    probes = {}
    for worker in workers:
        try:
            probes[worker.index] = json.loads(worker.stats_path.read_text())
        except (OSError, ValueError):
            problems.append(f"worker-{worker.index} wrote no probe stats")
    problems += log_problems(workers)
    return RunResult(
        n=n,
        index=index,
        trials=len(runs),
        submitted_at=submitted_at,
        idle_from=idle_from,
        first_claim=min(r.reserved_at for r in runs),
        last_end=max(r.ended_at for r in runs),
        runs=runs,
        claims=match_claims(runs, args.slots, submitted_at),
        samples=sampler.samples,
        probes=probes,
        cpu_busy=(busy1 - busy0) / max(1, total1 - total0),
        server_cpu=server_cpu,
        idle_server_cpu=idle_cpu,
        load_before=load_before,
        load_after=load_after,
        problems=problems,
    )


# -- the report ----------------------------------------------------------------------------------


@dataclass
class Pooled:
    """The runs of one N, pooled over rounds."""

    n: int
    slots: int
    results: list[RunResult]

    @property
    def trials(self) -> int:
        return sum(r.trials for r in self.results)

    @property
    def wall(self) -> float:
        return sum(r.wall for r in self.results)

    @property
    def throughput(self) -> float:
        return self.trials / self.wall if self.wall > 0 else math.nan

    def claims(self, *, first: bool) -> list[Claim]:
        return [c for r in self.results for c in r.claims if c.first == first]

    def samples(self) -> list[Sample]:
        return [s for r in self.results for s in r.samples]

    def sections(self) -> dict[str, list[tuple[float, float]]]:
        """kind -> [(wait, hold)] of the transactions between the submit and the last end."""
        found: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in self.results:
            for probe in r.probes.values():
                for kind, acquired, wait, hold in probe["sections"]:
                    if r.submitted_at <= acquired <= r.last_end + 1:
                        found[kind].append((wait, hold))
        return found

    def held_per_trial(self, p: float, kinds: Callable[[str], bool]) -> float:
        """Seconds per trial that study-wide rows are held by the sections of `kinds`: count
        per trial x the p-th hold."""
        total = 0.0
        for kind, values in self.sections().items():
            if kinds(kind):
                total += len(values) / self.trials * percentile([h for _, h in values], p)
        return total

    def ingests_per_trial(self) -> float:
        return len(self.sections().get("journal: evals", [])) / self.trials

    @property
    def utilization(self) -> float:
        """Share of the slots' time (N x slots x wall) that trainers were running."""
        running = sum(
            r.exited_at - r.began_at
            for result in self.results
            for r in result.runs
            if r.exited_at is not None and r.began_at is not None
        )
        return running / (self.n * self.slots * self.wall) if self.wall > 0 else math.nan

    def rates(self) -> WorkerRates:
        idle, busy, txns, statements, cpu, children = [], [], 0, 0, 0.0, 0.0
        for r in self.results:
            for probe in r.probes.values():
                checkins = probe["checkins"]
                idle_window = r.submitted_at - r.idle_from
                in_idle = [c for c in checkins if r.idle_from <= c[0] <= r.submitted_at]
                idle.append(len(in_idle) / idle_window if idle_window > 0 else math.nan)
                in_busy = [c for c in checkins if r.first_claim <= c[0] <= r.last_end]
                busy.append(len(in_busy) / r.wall)
                txns += len(in_busy)
                statements += sum(c[2] for c in in_busy)
                before = [c for c in checkins if c[0] < r.first_claim]
                after = [c for c in checkins if c[0] <= r.last_end + 1]
                if before and after:
                    cpu += after[-1][3] - before[-1][3]
                    children += after[-1][4] - before[-1][4]
        return WorkerRates(
            idle_per_s=statistics.mean(idle) if idle else math.nan,
            busy_per_s=statistics.mean(busy) if busy else math.nan,
            txns_per_trial=txns / self.trials,
            statements_per_trial=statements / self.trials,
            cpu_per_trial=cpu / self.trials,
            children_cpu_per_trial=children / self.trials,
            server_cpu_per_trial=sum(r.server_cpu for r in self.results) / self.trials,
            peak_out={
                label: max(
                    p["peak_out"].get(label, 0) for r in self.results for p in r.probes.values()
                )
                for label in ("tuner", "optuna")
            },
            peak_open={
                label: max(
                    p["peak_open"].get(label, 0) for r in self.results for p in r.probes.values()
                )
                for label in ("tuner", "optuna")
            },
        )

    @property
    def peak_connections(self) -> int:
        return max((sum(s.by_worker.values()) for s in self.samples()), default=0)

    @property
    def mean_busy_per_worker(self) -> float:
        """Sessions not idle, per worker, averaged over the samples while the study ran."""
        busy = [s.busy for s in self.samples() if s.study_state is not None]
        return statistics.mean(busy) / self.n if busy else math.nan

    @property
    def peak_per_worker(self) -> int:
        return max((max(s.by_worker.values(), default=0) for s in self.samples()), default=0)


@dataclass(frozen=True)
class WorkerRates:
    idle_per_s: float  # transactions (pool checkouts) per second of one idle worker
    busy_per_s: float  # the same while the study runs
    txns_per_trial: float  # all workers
    statements_per_trial: float
    cpu_per_trial: float  # the workers' own CPU s per trial
    children_cpu_per_trial: float  # their children's (trainers, watchdogs)
    server_cpu_per_trial: float  # their PostgreSQL server processes
    peak_out: dict[str, int]  # connections checked out at once, per pool, most of any worker
    peak_open: dict[str, int]  # connections open, per pool, most of any worker


def on_study_row(kind: str) -> bool:
    return not kind.startswith("optuna")


def on_optuna_row(kind: str) -> bool:
    return kind.startswith("optuna")


def per_ingest(kind: str) -> bool:
    return kind == "journal: evals"


SCALING_LEGEND = (
    "trials/s: trials / (last end - first reservation); x N=1: its ratio to 1 worker in this "
    "run; effic.: that / N;",
    "util: trainer time / (N x slots x wall); claim: trainer exit -> the next trial attached "
    "on that worker's slot, p50/p95 ms;",
    "first: submit -> attached, for the slots free at the start; conns: peak sessions of all "
    "workers in pg_stat_activity (every 0.1 s);",
    "/worker: peak of one worker; busy: peak not idle; lock samples: samples with a session "
    "waiting for a lock / samples;",
    "CPU busy: all CPUs, during the study (other work included); load: 1-minute load average "
    "before each run.",
)


def scaling_table(pooled: Sequence[Pooled]) -> list[str]:
    base = pooled[0].throughput if pooled and pooled[0].n == 1 else math.nan
    header = (
        f"{'workers':>7} {'slots':>5} {'trials':>6} {'wall s':>7} {'trials/s':>8} "
        f"{'x N=1':>6} {'effic.':>6} {'util':>4} {'claim p50':>9} {'p95':>6} {'first p50':>9} "
        f"{'conns':>5} {'/worker':>7} {'busy':>4} {'lock samples':>12} {'CPU busy':>8} "
        f"{'load':>9}"
    )
    lines = [header, "-" * len(header)]
    for p in pooled:
        claims = [c.latency for c in p.claims(first=False)]
        firsts = [c.latency for c in p.claims(first=True)]
        samples = p.samples()
        busy = max((s.busy for s in samples), default=0)
        locked = f"{sum(bool(s.lock_waits) for s in samples)}/{len(samples)}"
        ratio = p.throughput / base
        cpu = statistics.mean(r.cpu_busy for r in p.results)
        loads = "/".join(f"{r.load_before:.1f}" for r in p.results)
        lines.append(
            f"{p.n:>7} {p.slots:>5} {p.trials:>6} {p.wall:>7.2f} {p.throughput:>8.2f} "
            f"{ratio:>6.2f} {ratio / p.n:>6.2f} {p.utilization:>4.0%} "
            f"{ms(percentile(claims, 0.5)):>9} "
            f"{ms(percentile(claims, 0.95)):>6} {ms(percentile(firsts, 0.5)):>9} "
            f"{p.peak_connections:>5} {p.peak_per_worker:>7} {busy:>4} {locked:>12} "
            f"{cpu * 100:>7.0f}% {loads:>9}"
        )
    if len(pooled[0].results) > 1:
        medians = {p.n: statistics.median(r.throughput for r in p.results) for p in pooled}
        base_median = medians.get(1, math.nan)
        lines.append("")
        lines.append(
            "trials/s per round: "
            + "; ".join(
                f"N={p.n}: " + ", ".join(f"{r.throughput:.2f}" for r in p.results) for p in pooled
            )
        )
        lines.append(
            "median per round (efficiency): "
            + "; ".join(f"N={n}: {m:.2f} ({m / base_median / n:.2f})" for n, m in medians.items())
        )
    return lines


def _cell(values: Sequence[float], width: int) -> str:
    text = f"{ms(percentile(values, 0.5))}/{ms(percentile(values, 0.95))}"
    return f"{text:>{width}}"


def _spread(values: Sequence[float]) -> str:
    """p50/p95/max in ms."""
    return f"{ms(percentile(values, 0.5))}/{ms(percentile(values, 0.95))}/{ms(max(values))}"


def breakdown_table(pooled: Sequence[Pooled]) -> list[str]:
    header = (
        f"{'workers':>7}  {'claims':>6}  {'exit->end':>11}  {'end->reserve':>12}  "
        f"{'reserve->attach':>15}  {'claim':>11}  {'attach->run':>11}  {'trainer s':>9}"
    )
    lines = [header, "-" * len(header)]
    for p in pooled:
        claims = p.claims(first=False)
        after_end = [c for c in claims if c.ended_at is not None]
        lengths = [
            r.exited_at - r.began_at
            for result in p.results
            for r in result.runs
            if r.exited_at is not None and r.began_at is not None
        ]
        lines.append(
            f"{p.n:>7}  {len(claims):>6}  "
            f"{_cell([c.ended_at - c.freed_at for c in after_end if c.ended_at], 11)}  "
            f"{_cell([c.reserved_at - c.ended_at for c in after_end if c.ended_at], 12)}  "
            f"{_cell([c.attached_at - c.reserved_at for c in claims], 15)}  "
            f"{_cell([c.latency for c in claims], 11)}  "
            f"{_cell([c.began_at - c.attached_at for c in claims if c.began_at], 11)}  "
            f"{statistics.median(lengths) if lengths else math.nan:>9.3f}"
        )
    return lines


def sections_table(pooled: Sequence[Pooled]) -> list[str]:
    header = (
        f"{'workers':>7}  {'section':<18} {'per trial':>9}  {'wait p50/p95/max ms':>21}  "
        f"{'hold p50/p95/max ms':>21}"
    )
    lines = [header, "-" * len(header)]
    for p in pooled:
        for kind, values in sorted(p.sections().items()):
            wait = _spread([w for w, _ in values])
            hold = _spread([h for _, h in values])
            lines.append(
                f"{p.n:>7}  {kind:<18} {len(values) / p.trials:>9.2f}  {wait:>21}  {hold:>21}"
            )
        study = p.held_per_trial(0.5, on_study_row), p.held_per_trial(0.95, on_study_row)
        optuna = p.held_per_trial(0.5, on_optuna_row), p.held_per_trial(0.95, on_optuna_row)
        lines.append(
            f"{p.n:>7}  held per trial: study row {ms(study[0])} ms (p50 holds; "
            f"{ms(study[1])} at p95), Optuna's studies row {ms(optuna[0])} ms ({ms(optuna[1])})"
        )
        failed = sum(len(pr["failed"]) for r in p.results for pr in r.probes.values())
        if failed:
            lines.append(f"{p.n:>7}  lock statements that failed (lock timeout?): {failed}")
    return lines


def workers_table(pooled: Sequence[Pooled]) -> list[str]:
    header = (
        f"{'workers':>7}  {'idle txn/s':>10}  {'busy txn/s':>10}  {'txn/trial':>9}  "
        f"{'SQL/trial':>9}  {'out tuner+optuna':>16}  {'open tuner+optuna':>17}  "
        f"{'CPU ms/trial':>12}  {'children':>8}  {'postgres':>8}"
    )
    lines = [header, "-" * len(header)]
    for p in pooled:
        rates = p.rates()
        out = f"{rates.peak_out['tuner']}+{rates.peak_out['optuna']}"
        opened = f"{rates.peak_open['tuner']}+{rates.peak_open['optuna']}"
        lines.append(
            f"{p.n:>7}  {rates.idle_per_s:>10.1f}  {rates.busy_per_s:>10.1f}  "
            f"{rates.txns_per_trial:>9.1f}  {rates.statements_per_trial:>9.1f}  {out:>16}  "
            f"{opened:>17}  {rates.cpu_per_trial * 1000:>12.1f}  "
            f"{rates.children_cpu_per_trial * 1000:>8.1f}  "
            f"{rates.server_cpu_per_trial * 1000:>8.1f}"
        )
    return lines


def arithmetic(pooled: Sequence[Pooled], facts: ServerFacts, settings: Settings) -> list[str]:
    """What these figures imply for PROJECTED_WORKERS workers: arithmetic, not measurement."""
    w = PROJECTED_WORKERS
    last = pooled[-1]
    slots = last.slots
    per_worker = max(p.peak_per_worker for p in pooled)
    usable = facts.max_connections - facts.reserved
    fit = (usable - facts.client_backends) // per_worker if per_worker else 0
    study_p50, study_p95 = (last.held_per_trial(p, on_study_row) for p in (0.5, 0.95))
    optuna_p50 = last.held_per_trial(0.5, on_optuna_row)
    ingests = last.ingests_per_trial()
    ingest_p50 = last.held_per_trial(0.5, per_ingest) / ingests if ingests else math.nan
    fixed_p50 = study_p50 - last.held_per_trial(0.5, per_ingest)
    reserve = [h for _, h in last.sections().get("reserve", [])]
    reserve_p50 = percentile(reserve, 0.5)
    idle = statistics.mean(p.rates().idle_per_s for p in pooled)
    idle_server = statistics.mean(r.idle_server_cpu for p in pooled for r in p.results)
    rates = last.rates()
    server_ms = rates.server_cpu_per_trial * 1000
    beat = heartbeat_every(settings.heartbeat_timeout)
    reap = min(10.0, settings.heartbeat_timeout / 4)
    ceiling = per_s(max(study_p50, optuna_p50))
    lines = [
        f"connections: {per_worker} per worker (peak in pg_stat_activity) x {w} = "
        f"{per_worker * w}, against max_connections {facts.max_connections} "
        f"({facts.reserved} reserved for superusers; {facts.client_backends} client sessions "
        f"on the server at the start): {fit} such workers fit. Busy sessions (running a "
        f"statement or in a transaction) averaged {last.mean_busy_per_worker:.2f} per worker "
        f"at N={last.n} (measured): behind a transaction-mode pooler, {w} such workers would "
        f"keep about {last.mean_busy_per_worker * w:.0f} server connections busy on average.",
        f"serialized per study (holds of N={last.n}): the study row is held "
        f"{ms(study_p50)} ms per trial at p50 holds ({ms(study_p95)} at p95), Optuna's studies "
        f"row {ms(optuna_p50)} ms: at most {ceiling:.0f} trials/s per study "
        f"({per_s(study_p50):.0f} on our row, {per_s(optuna_p50):.0f} on Optuna's), whatever the "
        f"number of workers; the reservation alone ({ms(reserve_p50)} ms) allows "
        f"{per_s(reserve_p50):.0f} claims/s. Of the study row's {ms(study_p50)} ms, "
        f"{ms(fixed_p50)} are per trial (reserve, attach, end) and {ms(ingest_p50)} per eval "
        f"ingest ({ingests:.1f} ingests per trial here): a trial with k ingests holds it about "
        f"{ms(fixed_p50)} + k x {ms(ingest_p50)} ms.",
        f"{w} workers x {slots} slots = {w * slots} slots need {w * slots} / L trials/s for "
        f"trials of L s: "
        + ", ".join(
            f"L = {length:g} s: {w * slots / length:.1f}/s ({w * slots / length / ceiling:.0%} "
            "of the ceiling)"
            for length in (1, 10, 60, 600)
        )
        + f"; the ceiling is reached at L = {w * slots / ceiling:.1f} s.",
        f"heartbeats: one renewal transaction per worker with trials every {beat:g} s "
        f"(heartbeat_timeout {settings.heartbeat_timeout:g} s), one UPDATE per trial: "
        f"{w / beat:.0f} transactions/s, {w * slots / beat:.0f} row updates/s; the reap, every "
        f"{reap:g} s per worker, reads every RUNNING run: {w / reap:.0f} queries/s of up to "
        f"{w * slots} rows.",
        f"idle polling: {idle:.1f} transactions/s per idle worker (measured, poll interval "
        f"{settings.poll_interval:g} s) x {w} = {idle * w:.0f}/s with nothing to run, at "
        f"{idle_server * 1000:.1f} ms/s of server CPU each (measured): "
        f"{idle_server * w:.2f} server CPUs busy for idle workers.",
        f"server CPU: {server_ms:.1f} ms per trial (the workers' PostgreSQL processes, "
        f"measured at N={last.n}): one server CPU serves at most {per_s(server_ms / 1000):.0f} "
        "trials/s.",
        f"busy: {rates.txns_per_trial:.0f} transactions and {rates.statements_per_trial:.0f} "
        f"statements per trial: at the ceiling, {ceiling * rates.txns_per_trial:.0f} "
        f"transactions/s and {ceiling * rates.statements_per_trial:.0f} statements/s.",
    ]
    return lines


# -- sections ------------------------------------------------------------------------------------


class Bench:
    """What the sections share: the arguments, a temp dir, and a scratch database made on
    first use (dropped at the end, unless --keep)."""

    def __init__(self, args: argparse.Namespace, workdir: Path, stack: ExitStack) -> None:
        self.args = args
        self.workdir = workdir
        self.stack = stack
        self.artifact_root = workdir / "artifacts"
        self.trainers_file = workdir / "trainers.yaml"
        self.trainers_file.write_text(
            f"trainers:\n  {TRAINER}:\n    module: {TRAINER_MODULE}\n    workingDir: {REPO}\n",
            encoding="utf-8",
        )
        self.registry = TrainerRegistry.from_file(self.trainers_file, missing_ok=False)
        self._database: tuple[str, str] | None = None
        self._backend: Backend | None = None

    def database(self) -> tuple[str, str]:
        """(name, SQLAlchemy URL) of the scratch database."""
        if self._database is None:
            self._database = self.stack.enter_context(
                scratch_database(self.args.pg_admin_url, self.args.keep)
            )
        return self._database

    @property
    def backend(self) -> Backend:
        """The bench's own connections to it (to submit studies), not counted as a worker's."""
        if self._backend is None:
            _, url = self.database()
            self._backend = Backend.connect(with_app_name(url, "scale-bench"), auto_init=False)
            self.stack.callback(self._backend.close)
        return self._backend


def scaling(bench: Bench) -> None:
    """Trials/s, claim latency, connections and lock sections for N workers on one database."""
    args = bench.args
    db_name, url = bench.database()
    facts = server_facts(url)
    settings = Settings(database_url=url)
    if args.poll_interval is not None:
        settings = settings.model_copy(update={"poll_interval": args.poll_interval})
    schedule = list(args.workers)
    for round_index in range(1, args.rounds):
        schedule += list(reversed(args.workers)) if round_index % 2 else list(args.workers)
    results: dict[int, list[RunResult]] = defaultdict(list)
    for index, n in enumerate(schedule, start=1):
        log(
            f"run {index}/{len(schedule)}: {n} worker(s) x {args.slots} slots, "
            f"{args.trials} trials (load {os.getloadavg()[0]:.2f})"
        )
        result = run_workers(bench, url, db_name, index, n)
        results[n].append(result)
        log(
            f"  {result.trials} trials in {result.wall:.2f} s: {result.throughput:.2f}/s, "
            f"CPU busy {result.cpu_busy:.0%}" + "".join(f"\n  !! {p}" for p in result.problems)
        )
    pooled = [Pooled(n, args.slots, results[n]) for n in args.workers]
    print(
        f"\nscaling: {args.trials} trials per run of steps_trainer ({args.evals} evals x "
        f"{args.eval_seconds:g} s), maxParallelTrials = workers x slots, poll interval "
        f"{settings.poll_interval:g} s, heartbeat timeout {settings.heartbeat_timeout:g} s; "
        f"PostgreSQL {facts.version}, max_connections {facts.max_connections}"
    )
    print()
    print("\n".join(scaling_table(pooled)))
    print("\n".join(SCALING_LEGEND))
    print("\nclaim latency, split (p50/p95 ms; trainer s: median trainer run, exec to exit)")
    print("\n".join(breakdown_table(pooled)))
    print(
        "\nstudy-wide row locks, from the workers' side (wait: the locking statement; hold: "
        "from it to the connection's return, after the commit)"
    )
    print("\n".join(sections_table(pooled)))
    print(
        "\nper worker: transactions (pool checkouts) per second idle and busy, and per trial "
        "(all workers); peak connections checked out / open per pool of any one worker; "
        "CPU per trial"
    )
    print("\n".join(workers_table(pooled)))
    cores = os.cpu_count() or 1
    for p in pooled:
        rates = p.rates()
        total = rates.cpu_per_trial + rates.children_cpu_per_trial + rates.server_cpu_per_trial
        print(
            f"N={p.n}: {total * 1000:.0f} ms of CPU per trial in all (worker, trainer, PostgreSQL):"
            f" {cores} CPUs allow at most {cores / total:.1f} trials/s; measured "
            f"{p.throughput:.2f}/s"
        )
    print(f"\narithmetic for {PROJECTED_WORKERS} workers (not measured; from the figures above)")
    print("\n".join(f"- {line}" for line in arithmetic(pooled, facts, settings)))
    waits = Counter(
        " ".join(query.split(" WHERE")[0].split())[:70]
        for p in pooled
        for s in p.samples()
        for _, query in s.lock_waits
    )
    if waits:
        common = "; ".join(f"{n} x {q}" for q, n in waits.most_common(5))
        print(f"\nsampled lock waits by statement: {common}")
    problems = [
        f"run {r.index} (N={r.n}): {x}" for p in pooled for r in p.results for x in r.problems
    ]
    if problems:
        print("\nproblems:\n" + "\n".join(f"- {x}" for x in problems))


# -- upload throughput to the object store ----------------------------------------------------


def _upload_rate(megabytes: float, seconds: Sequence[float]) -> float:
    return megabytes / statistics.median(seconds)


def uploads(bench: Bench) -> None:
    """Upload throughput to an S3-compatible server on loopback (moto's standalone server,
    as in the tests): one file through `ObjectStore.upload_file` (sha256 and MD5 of the file,
    PUT, HEAD, ETag check) against a bare `obstore.put` of the same file in the same run, so
    the ratio is what verification costs; then a whole trial's upload (`upload_trial`: its kept
    checkpoint and export, their archives built on the way, events and log)."""
    import obstore

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the tests' loopback S3 server, run as the tests run it
    from tests.object_store_server import start_s3_server
    from tuner.artifacts.object_store import ObjectStore
    from tuner.artifacts.store import ArtifactStore
    from tuner.artifacts.uploads import KeptArtifacts, upload_trial

    args = bench.args
    work = bench.workdir / "uploads"
    work.mkdir()
    server = start_s3_server(work)
    bench.stack.callback(server.stop)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    os.environ.update(server.env())
    store = ObjectStore(f"s3://{bucket}/bench")
    print(
        f"\nuploads: to moto_server on loopback, medians of {args.upload_repeats}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'file':>8} {'bare put':>11} {'verified':>11} {'ratio':>6}")
    for size in args.upload_sizes:
        path = work / f"{size}mb.bin"
        path.write_bytes(os.urandom(size * 1024 * 1024))
        bare, verified = [], []
        for attempt in range(args.upload_repeats):
            started = time.perf_counter()
            obstore.put(store._store, f"bare/{size}-{attempt}", path)
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.upload_file(path, f"verified/{size}-{attempt}")
            verified.append(time.perf_counter() - started)
        megabytes = path.stat().st_size / 1e6
        bare_rate, verified_rate = _upload_rate(megabytes, bare), _upload_rate(megabytes, verified)
        print(
            f"{size:>6}MB {bare_rate:>7.1f} MB/s {verified_rate:>7.1f} MB/s "
            f"{bare_rate / verified_rate:>6.2f}"
        )
        path.unlink()
    local = ArtifactStore(work / "root")
    size = max(args.upload_sizes)
    reports = []
    for attempt in range(args.upload_repeats):
        paths = local.trial_paths("study", attempt)
        (paths.output_dir / "eval").mkdir(parents=True)
        (paths.output_dir / "eval" / "events.out.tfevents.1.host").write_bytes(b"x" * 4096)
        paths.log_path.write_text("training\n" * 1000)
        kept_ckpt = paths.kept_dir / "model.ckpt-100"
        paths.kept_dir.mkdir()
        for suffix, data in ((".index", b"i" * 2048), (".data-00000-of-00001", None)):
            target = Path(f"{kept_ckpt}{suffix}")
            target.write_bytes(data if data is not None else os.urandom(size * 1024 * 1024))
        export = paths.kept_dir / "export" / "best" / "1700000000"
        (export / "variables").mkdir(parents=True)
        (export / "saved_model.pb").write_bytes(os.urandom(256 * 1024))
        (export / "variables" / "variables.data-00000-of-00001").write_bytes(
            os.urandom(size * 1024 * 1024)
        )
        (export / "variables" / "variables.index").write_bytes(b"v" * 2048)
        kept = KeptArtifacts(
            study="study",
            output_dir=paths.output_dir,
            log_path=paths.log_path,
            checkpoint=(100, kept_ckpt),
            exports=[(1, export, "1700000000")],
            eval_patterns=("eval",),
        )
        reports.append(upload_trial(store, local, kept))
    seconds = statistics.median(r.seconds for r in reports)
    megabytes = reports[0].bytes / 1e6
    print(
        f"a trial (kept checkpoint and export of {size} MB each, their archives, events, log): "
        f"{reports[0].objects} objects, {megabytes:.0f} MB in {seconds:.2f} s: "
        f"{megabytes / seconds:.1f} MB/s, archives built included"
    )


#: The measurements `--only` chooses from, run in this order; each is a function of the `Bench`.
SECTIONS: dict[str, Callable[[Bench], None]] = {
    "scaling": scaling,
    "uploads": uploads,
}


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def section_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {unknown or text!r}; known: {', '.join(SECTIONS)}"
        )
    return names


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workers", type=int_list, default=[1, 2, 4], help="N values, e.g. 1,2,4")
    parser.add_argument("--slots", type=int, default=2, help="tuner worker --slots")
    parser.add_argument("--trials", type=int, default=40, help="trials per run (one study each)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="passes over --workers, alternating the order"
    )
    parser.add_argument("--evals", type=int, default=4, help="eval events per trial")
    parser.add_argument("--eval-seconds", type=float, default=0.125, help="sleep before each eval")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="TUNER_POLL_INTERVAL of the workers (unset: the tuner's 0.25)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=2.0, help="idling measured before each submit"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a study may take")
    parser.add_argument(
        "--only",
        type=section_list,
        default=list(SECTIONS),
        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--upload-sizes", type=int_list, default=[1, 16, 64], help="file sizes (MB) uploaded"
    )
    parser.add_argument("--upload-repeats", type=int, default=3, help="uploads of each size")
    parser.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="server on which the scratch database is created (env TUNER_BENCH_PG_URL)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and the database")
    args = parser.parse_args(argv)
    if args.slots < 1 or args.trials < 1 or args.rounds < 1 or args.evals < 1:
        parser.error("--slots, --trials, --rounds and --evals must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_COMMAND]:
        return run_worker(argv[1:])
    args = parse_args(argv)
    import optuna
    import sqlalchemy

    started = time.monotonic()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"python bench/scale.py {' '.join(argv)}\n{os.cpu_count()} CPUs, load average {load} "
        f"at the start; Python {sys.version.split()[0]}, Optuna {optuna.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="tuner-scale-"))
    with ExitStack() as stack:
        if args.keep:
            stack.callback(log, f"kept {workdir}")
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        bench = Bench(args, workdir, stack)
        for name in args.only:
            SECTIONS[name](bench)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nran {time.monotonic() - started:.0f} s; load average {load} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
