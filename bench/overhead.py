"""Per-trial orchestration overhead of the tuner's study manager against a plain Optuna loop.

Every contender runs the same trivial trainer (`bench/trivial_trainer.py`: one eval event, no
TensorFlow) the same number of times, one trial at a time, in the same process:

- `subprocess only`: the trainer launched N times, no Optuna, no database: the floor.
- `plain optuna`: `study.ask()`, `subprocess.run(trainer)`, read `rmse` back from the event file
  it wrote, `study.tell()`, on an Optuna `RDBStorage` of its own.
- `tuner @ <poll>s`: a study submitted with `tuner.study.operations.submit_study` and run by
  `StudyManager(slots=1).run()` with `Settings.poll_interval=<poll>`: claiming, launching,
  tailing event files, storing metrics, checkpoint checks, the export scan, telling Optuna, and
  the sleep between ticks all count.
- `ray tune` (when `ray[tune]` is installed: the `bench` extra): a Ray Tune function trainable
  that launches the same trainer (its own job dir per trial), reads `rmse` back as the plain
  loop does and `tune.report`s it; `Tuner.fit()` with `OptunaSearch` on an `RDBStorage` of its
  own, `max_concurrent_trials=1` and `reuse_actors` (`--no-ray-reuse-actors`: Ray's default, a
  new actor and so a new worker process per trial). `ray.init` and building the `Tuner` come
  before each of its chunks and `ray.shutdown` after it, untimed, so that Ray's daemons do not
  run during the others' chunks; two more rows: `ray tune steady` (from the first trial's end
  to the last one's in each fit: no per-fit start-up or tear-down) and `ray tune + start-up`
  (with `ray.init` and `Tuner()`). Without Ray the contender is skipped with a note.
- `tuner on ray @ <poll>s` (with Ray installed, beside Ray Tune): the tuner's manager with the
  Ray executor (`--executor ray`) on a local Ray cluster of the same CPUs: each trial a Ray
  task that supervises its trainer on the node, talking to the manager only through the
  database. `ray.init` and `ray.shutdown` around each chunk, untimed, as for Ray Tune.

Each Optuna contender gets a fresh database of the same kind (a temp SQLite file each, or a fresh
PostgreSQL database each with `--database postgresql`) and the same sampler (the tuner's default,
TPE, built from the same spec). The trials are split into `--rounds` chunks run in alternating
order (S A B | B A S ...) so that warm-up and drift do not favour anyone; a tuner study is
resumed with a larger budget for each chunk (that untimed step is the only difference from one
long run; Ray Tune runs one `Tuner.fit()` per chunk on the same Optuna study instead).

    python bench/overhead.py                          # SQLite, 200 trials, poll 0.01 s and 0.25 s
    python bench/overhead.py --database postgresql    # the same on the local PostgreSQL server
    python bench/overhead.py --profile /tmp/prof      # + a cProfile of each Optuna contender
    pip install -e '.[bench]'                         # Ray Tune as one more contender
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import inspect
import logging
import os
import pstats
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import optuna
import psycopg
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

import tuner.engine.keeper
import tuner.engine.manager
import tuner.engine.optuna_link
from tuner.domain.config import Settings
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.engine.fencing import Fencing
from tuner.engine.finisher import Finisher
from tuner.engine.ingest import Ingestor
from tuner.engine.keeper import Keeper
from tuner.engine.launcher import Launcher
from tuner.engine.manager import StudyManager
from tuner.engine.scheduler import Scheduler
from tuner.engine.supervisor import TrialSupervisor
from tuner.outputs.events import (
    EVENT_FILE_GLOB,
    EvalDirWatcher,
    EventFileReader,
    ScalarValue,
    parse_event,
)
from tuner.persistence import Database
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study import sampling
from tuner.study.operations import Backend
from tuner.trial.execution import TrialProcess

if TYPE_CHECKING:
    from ray.tune import Tuner

REPO = Path(__file__).resolve().parents[1]
TRAINER = REPO / "bench" / "trivial_trainer.py"
METRIC = "rmse"
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGET_RATIO = 1.10

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- what is counted -----------------------------------------------------------------------------


@dataclass
class SqlCounter:
    """SQL statements, commits and connection checkouts on the engines of one contender."""

    statements: int = 0
    commits: int = 0
    checkouts: int = 0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "checkout", self._on_checkout)

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.checkouts

    def _on_statement(self, *_: Any) -> None:
        self.statements += 1

    def _on_commit(self, *_: Any) -> None:
        self.commits += 1

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1


@dataclass
class Totals:
    """What one contender used over all its chunks."""

    trials: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    statements: int = 0
    commits: int = 0
    checkouts: int = 0
    chunk_ms: list[float] = field(default_factory=list)

    def per_trial(self, value: float) -> float:
        return value / self.trials if self.trials else float("nan")

    @property
    def ms_per_trial(self) -> float:
        return self.per_trial(self.seconds * 1000)


# -- the trainer and the objective ---------------------------------------------------------------


def trainer_argv(x: float, job_dir: Path) -> list[str]:
    return [sys.executable, str(TRAINER), f"--x={x!r}", f"--job-dir={job_dir}"]


def run_trainer(x: float, job_dir: Path) -> None:
    subprocess.run(trainer_argv(x, job_dir), check=True, stdout=subprocess.DEVNULL)


def read_objective(eval_dir: Path, tag: str) -> float:
    """The last `tag` value in the eval dir's event files (how any loop gets its metric)."""
    value: float | None = None
    for path in sorted(eval_dir.glob(EVENT_FILE_GLOB)):
        for record in EventFileReader(path).read_records():
            for parsed in parse_event(record, eval_dir.name, path=str(path)):
                if isinstance(parsed, ScalarValue) and parsed.tag == tag:
                    value = parsed.value
    if value is None:
        raise RuntimeError(f"{eval_dir}: no {tag!r} value written")
    return value


def make_study_spec(name: str, max_trials: int) -> StudySpec:
    return parse_spec(
        {
            "name": name,
            "trainer": "trivial",
            "seed": 1,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": METRIC,
                "maxTrials": max_trials,
                "maxParallelTrials": 1,
                "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1}],
            },
        }
    )


# -- databases -----------------------------------------------------------------------------------


@dataclass
class Databases:
    """Hands out a fresh database of one kind per contender; drops them at the end."""

    kind: str
    workdir: Path
    pg_admin_url: str
    stack: ExitStack

    def fresh(self, label: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / f'{label}.db'}"
        return self.stack.enter_context(_postgres_database(self.pg_admin_url))


@contextmanager
def _postgres_database(admin_url: str) -> Iterator[str]:
    admin = make_url(admin_url).set(drivername="postgresql")
    name = f"tuner_bench_{uuid.uuid4().hex[:12]}"
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_path(url: str) -> str | None:
    parsed = make_url(url)
    return parsed.database if parsed.get_backend_name() == "sqlite" else None


def _use_wal(url: str) -> None:
    """Put a SQLite database in WAL mode (persistent in the file), as the tuner's is."""
    path = _sqlite_path(url)
    if path is not None:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")


# -- the contenders ------------------------------------------------------------------------------


class Contender:
    """Runs `trials` more trials per `run`; `prepare` is untimed set-up for the next chunk."""

    label = ""

    def __init__(self) -> None:
        self.counter = SqlCounter()

    def prepare(self, trials: int) -> None:
        """Untimed set-up before a chunk of `trials`."""

    def run(self, trials: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Untimed tear-down after a chunk."""

    def check(self, expected: int) -> None:
        """Raise unless exactly `expected` trials completed so far."""

    def extra_rows(self, total: Totals) -> dict[str, Totals]:
        """More rows for the table, derived from this contender's chunks."""
        return {}

    def notes(self) -> list[str]:
        """Lines printed under the table."""
        return []

    def close(self) -> None:
        """Release connections."""


class LaunchOnly(Contender):
    """The trainer launched N times: no Optuna, no database."""

    label = "subprocess only"

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        self.done = 0

    def run(self, trials: int) -> None:
        for _ in range(trials):
            x = (self.done % 21) / 10 - 1
            run_trainer(x, self.workdir / f"trial-{self.done:04d}")
            self.done += 1

    def check(self, expected: int) -> None:
        if self.done != expected:
            raise RuntimeError(f"{self.label}: {self.done} trials run, expected {expected}")


class PlainLoop(Contender):
    """ask, run the trainer, read the metric from its event file, tell."""

    label = "plain optuna"

    def __init__(self, url: str, workdir: Path, spec: StudySpec, *, sqlite_wal: bool) -> None:
        super().__init__()
        self.workdir = workdir
        if sqlite_wal:
            # The tuner's database runs in WAL mode (persistent in the file, so Optuna's
            # connections there use it too); the same here, so the journal is not what differs.
            _use_wal(url)
        self.storage = RDBStorage(url)
        self.counter.attach(self.storage.engine)
        self.space: dict[str, BaseDistribution] = sampling.search_space(spec)
        self.study = optuna.create_study(
            study_name="plain",
            storage=self.storage,
            direction="minimize",
            sampler=sampling.make_sampler(spec),
        )

    def run(self, trials: int) -> None:
        for _ in range(trials):
            trial = self.study.ask(self.space)
            job_dir = self.workdir / f"trial-{trial.number:04d}"
            run_trainer(trial.params["x"], job_dir)
            self.study.tell(trial, read_objective(job_dir / "eval", METRIC))

    def check(self, expected: int) -> None:
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        if complete != expected or len(states) != expected:
            raise RuntimeError(f"{self.label}: {complete} of {len(states)} trials complete")

    def close(self) -> None:
        self.storage.remove_session()
        self.storage.engine.dispose()


class TunerManager(Contender):
    """`submit_study` (or `resume_study` with a larger budget) untimed, then a timed
    `StudyManager(slots=1).run()` until the study's budget is spent."""

    def __init__(
        self, url: str, workdir: Path, poll_interval: float, *, warm: bool = False
    ) -> None:
        super().__init__()
        self.label = f"tuner{', warm' if warm else ''} @ {poll_interval:g}s poll"
        self.name = "bench"
        self.settings = Settings(
            database_url=url,
            artifact_root=workdir / "artifacts",
            trainers_file=workdir / "no-trainers.yaml",
            poll_interval=poll_interval,
        )
        if warm:
            # The same trainer as a module with `preload`: each trial forks from a parent
            # that has imported it (and its imports) once; see tuner/trial/warm_starts.py.
            trainer = Trainer(
                name="trivial",
                argv=(sys.executable, "-m", "bench.trivial_trainer"),
                working_dir=REPO,
                module="bench.trivial_trainer",
                preload=("bench.trivial_trainer",),
            )
        else:
            trainer = Trainer(name="trivial", argv=(sys.executable, str(TRAINER)), working_dir=REPO)
        self.registry = TrainerRegistry({"trivial": trainer})
        # What `tuner worker` and `tuner run` connect with (no pool pre-ping).
        self.backend = Backend.connect(url, pre_ping=False)
        self.counter.attach(self.backend.db.engine)
        self.counter.attach(self.backend.storage.engine)
        self.budget = 0

    def prepare(self, trials: int) -> None:
        self.budget += trials
        if self.budget == trials:
            spec = make_study_spec(self.name, trials)
            study_ops.submit_study(self.backend, spec, self.registry)
        else:
            study_ops.resume_study(self.backend, self.name, max_trials=self.budget)

    def run(self, trials: int) -> None:
        manager = StudyManager(
            self.backend, self.registry, self.settings, slots=1, studies=[self.name]
        )
        manager.run()

    def check(self, expected: int) -> None:
        with self.backend.db.session() as session:
            study = repo.get_study(session, self.name)
            counts = repo.trial_counts(session, study.id)
        if counts != {"COMPLETED": expected} or study.state != "COMPLETED":
            raise RuntimeError(f"{self.label}: study {study.state}, trials {counts}")

    def close(self) -> None:
        self.backend.close()


class TunerOnRay(TunerManager):
    """The tuner's manager with the Ray executor (`--executor ray`): each trial is a Ray task
    that supervises its trainer on the node (`tuner/engine/ray_executor.py`). `ray.init` on
    a local cluster of `cpus` CPUs before each chunk and `ray.shutdown` after it, untimed, as
    for Ray Tune; the manager joins that connection."""

    def __init__(self, url: str, workdir: Path, poll_interval: float, *, cpus: int) -> None:
        super().__init__(url, workdir, poll_interval)
        self.label = f"tuner on ray @ {poll_interval:g}s poll"
        self.settings = self.settings.model_copy(update={"executor": "ray"})
        self.workdir = workdir
        self.cpus = cpus

    def prepare(self, trials: int) -> None:
        import ray

        super().prepare(trials)
        ray.init(
            address="local",
            num_cpus=self.cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=str(self.workdir / "s"),
        )

    def finish(self) -> None:
        import ray

        ray.shutdown()

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        super().close()


# -- Ray Tune (optional: the `bench` extra) ------------------------------------------------------


def ray_unavailable() -> str | None:
    """None if Ray Tune imports, else why not (one line)."""
    try:
        import ray.tune.search.optuna  # noqa: F401 (imports ray.tune too)
    except ImportError as exc:
        # ray.tune re-raises a missing or broken dependency as a generic ImportError.
        reason = f"{exc} ({exc.__cause__})" if exc.__cause__ else str(exc)
        return " ".join(reason.split())
    # At verbose=0 Ray's new console output still prints a table per experiment; the legacy
    # output prints nothing. No usage statistics either (read by ray.init and its daemons).
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return None


def ray_trial(
    config: dict[str, Any],
    *,
    job_root: str,
    launch: Callable[[float, Path], None],
    read: Callable[[Path, str], float],
) -> None:
    """The function trainable (runs in Ray's trial actor): the trainer in a job dir of its own,
    the metric read back from its event file, reported to Tune."""
    from ray import tune

    context = tune.get_context()
    job_dir = Path(job_root) / f"{context.get_experiment_name()}-{context.get_trial_id()}"
    launch(config["x"], job_dir)
    tune.report({METRIC: read(job_dir / "eval", METRIC)})


@dataclass
class Mark:
    """When a trial's completion reached Tune's callbacks (after the searcher's tell)."""

    seconds: float
    cpu_seconds: float
    sql: tuple[int, int, int]


def completion_clock(counter: SqlCounter) -> Any:
    """A Tune callback that records a `Mark` per completed trial in its `marks`."""
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    class CompletionClock(Callback):
        def __init__(self) -> None:
            self.marks: list[Mark] = []

        def on_trial_complete(
            self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
        ) -> None:
            self.marks.append(Mark(time.perf_counter(), time.process_time(), counter.snapshot()))

    return CompletionClock()


def _descendants() -> dict[int, str]:
    """pid -> start time of this process's live descendants (from /proc; empty elsewhere)."""
    children: dict[int, list[tuple[int, str]]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found: dict[int, str] = {}
    todo = [os.getpid()]
    while todo:
        for pid, start in children.get(todo.pop(), []):
            found[pid] = start
            todo.append(pid)
    return found


def _still_running(processes: dict[int, str]) -> dict[int, str]:
    now = _descendants()
    return {pid: start for pid, start in processes.items() if now.get(pid) == start}


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() or "?"
    except OSError:
        return "?"


class RayTune(Contender):
    """Ray Tune: `ray.init` and a `Tuner` per chunk (untimed), a timed `Tuner.fit()`, then
    `ray.shutdown()` (untimed), on one Optuna study in a database of its own."""

    label = "ray tune"
    steady_label = "ray tune steady"
    startup_label = "ray tune + start-up"

    def __init__(
        self,
        url: str,
        workdir: Path,
        spec: StudySpec,
        *,
        cpus: int,
        reuse_actors: bool,
        sqlite_wal: bool,
    ) -> None:
        super().__init__()
        self.workdir = workdir
        self.cpus = cpus
        self.reuse_actors = reuse_actors
        if sqlite_wal:
            _use_wal(url)
        self.storage = RDBStorage(url)
        self.counter.attach(self.storage.engine)
        self.space: dict[str, BaseDistribution] = sampling.search_space(spec)
        # One sampler across the chunks, as the other contenders have one study each.
        self.sampler = sampling.make_sampler(spec)
        self.study = optuna.create_study(
            study_name="ray", storage=self.storage, direction="minimize", sampler=self.sampler
        )
        self.tuner: Tuner | None = None
        self.clock: Any = None
        # Per chunk:
        self.init_s: list[float] = []
        self.setup_s: list[float] = []  # ray.init + OptunaSearch + Tuner()
        self.setup_cpu_s: list[float] = []
        self.setup_sql: list[tuple[int, int, int]] = []
        self.fit_start: list[float] = []
        self.fit_end: list[float] = []
        self.marks: list[list[Mark]] = []
        self.shutdown_s: list[float] = []
        self.leftovers: list[str] = []

    def prepare(self, trials: int) -> None:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        start, cpu, sql = time.perf_counter(), time.process_time(), self.counter.snapshot()
        ray.init(
            address="local",  # a cluster of its own, never one that is already running
            num_cpus=self.cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            # Ray's session files go with the temp dir (short: it holds unix sockets).
            _temp_dir=str(self.workdir / "s"),
        )
        self.init_s.append(time.perf_counter() - start)
        searcher = OptunaSearch(
            space=self.space,
            metric=METRIC,
            mode="min",
            sampler=self.sampler,
            storage=self.storage,
            study_name=self.study.study_name,
        )
        trainable = tune.with_parameters(
            ray_trial,
            job_root=str(self.workdir / "trials"),
            # The functions themselves, not --breakdown's timers (which stay in this process).
            launch=inspect.unwrap(run_trainer),
            read=inspect.unwrap(read_objective),
        )
        self.clock = completion_clock(self.counter)
        self.tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=trials,
                max_concurrent_trials=1,
                reuse_actors=self.reuse_actors,
            ),
            run_config=tune.RunConfig(
                name=f"round-{len(self.init_s)}",
                storage_path=str(self.workdir / "results"),
                verbose=0,
                callbacks=[self.clock],
            ),
        )
        self.setup_s.append(time.perf_counter() - start)
        self.setup_cpu_s.append(time.process_time() - cpu)
        after = self.counter.snapshot()
        self.setup_sql.append((after[0] - sql[0], after[1] - sql[1], after[2] - sql[2]))

    def run(self, trials: int) -> None:
        assert self.tuner is not None
        self.fit_start.append(time.perf_counter())
        results = self.tuner.fit()
        self.fit_end.append(time.perf_counter())
        self.marks.append(self.clock.marks)
        if results.errors:
            raise RuntimeError(
                f"{self.label}: {len(results.errors)} trials failed: {results.errors[0]}"
            )

    def finish(self) -> None:
        import ray

        self.tuner = None
        processes = _descendants()
        start = time.perf_counter()
        ray.shutdown()
        self.shutdown_s.append(time.perf_counter() - start)
        self._reap(processes)

    def _reap(self, processes: dict[int, str]) -> None:
        """Wait for what Ray started to exit; end (by pid) whatever is still there after 10 s."""
        deadline = time.monotonic() + 10
        while (left := _still_running(processes)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not left:
                return
            if sig == signal.SIGTERM:
                self.leftovers += [f"{pid} {_process_name(pid)}" for pid in left]
            for pid in left:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
            left = _still_running(left)

    def check(self, expected: int) -> None:
        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        complete = states.count(optuna.trial.TrialState.COMPLETE)
        if complete != expected or len(states) != expected:
            raise RuntimeError(f"{self.label}: {complete} of {len(states)} trials complete")

    def extra_rows(self, total: Totals) -> dict[str, Totals]:
        rows: dict[str, Totals] = {}
        if all(len(marks) >= 2 for marks in self.marks):
            steady = Totals()
            for marks in self.marks:
                first, last = marks[0], marks[-1]
                steady.trials += len(marks) - 1
                steady.seconds += last.seconds - first.seconds
                steady.cpu_seconds += last.cpu_seconds - first.cpu_seconds
                steady.statements += last.sql[0] - first.sql[0]
                steady.commits += last.sql[1] - first.sql[1]
                steady.checkouts += last.sql[2] - first.sql[2]
                steady.chunk_ms.append((last.seconds - first.seconds) * 1000 / (len(marks) - 1))
            rows[self.steady_label] = steady
        whole = Totals(
            trials=total.trials,
            seconds=total.seconds + sum(self.setup_s),
            cpu_seconds=total.cpu_seconds + sum(self.setup_cpu_s),
            statements=total.statements + sum(sql[0] for sql in self.setup_sql),
            commits=total.commits + sum(sql[1] for sql in self.setup_sql),
            checkouts=total.checkouts + sum(sql[2] for sql in self.setup_sql),
        )
        for setup, ms, marks in zip(self.setup_s, total.chunk_ms, self.marks, strict=True):
            whole.chunk_ms.append(ms + setup * 1000 / len(marks))
        rows[self.startup_label] = whole
        return rows

    def notes(self) -> list[str]:
        def mean(values: Sequence[float]) -> float:
            return statistics.fmean(values) if values else float("nan")

        first = [m[0].seconds - s for m, s in zip(self.marks, self.fit_start, strict=True)]
        tail = [e - m[-1].seconds for m, e in zip(self.marks, self.fit_end, strict=True)]
        lines = [
            f"{self.label}: one Tuner.fit() per chunk, OptunaSearch (the same sampler) on an "
            "RDBStorage of its own,",
            f"  max_concurrent_trials=1, reuse_actors={self.reuse_actors}, "
            f"ray.init(num_cpus={self.cpus});",
            f"  {self.steady_label}: from the first trial's end to the last one's in each fit;",
            f"  {self.startup_label}: with ray.init and Tuner() before each fit;",
            "  cpu ms of the ray rows: this (driver) process, not the trial actor or Ray's "
            "daemons;",
            f"  mean per chunk: ray.init {mean(self.init_s):.2f} s, Tuner() "
            f"{mean(self.setup_s) - mean(self.init_s):.2f} s, ray.shutdown "
            f"{mean(self.shutdown_s):.2f} s (untimed); in the fit:",
            f"  {mean(first):.2f} s to the first trial's end, {mean(tail):.2f} s after the "
            "last one's.",
        ]
        if self.leftovers:
            lines.append(f"ray left processes after ray.shutdown(), ended: {self.leftovers}")
        return lines

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            self.finish()
        self.storage.remove_session()
        self.storage.engine.dispose()


# -- where the time goes, without a profiler's distortion ----------------------------------------


@dataclass
class CallStat:
    calls: int = 0
    seconds: float = 0.0
    statements: int = 0
    commits: int = 0


class Breakdown:
    """Wall time, calls and SQL of chosen functions, per contender (children included).

    Each function is wrapped with a timer (about a microsecond per call), so unlike cProfile
    the figures stay close to an unmeasured run.
    """

    def __init__(self) -> None:
        self.current: Contender | None = None
        self.stats: dict[str, dict[str, CallStat]] = {}

    def wrap(self, owner: type | ModuleType, attr: str, name: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            return  # renamed since this benchmark was written: nothing to time
        breakdown = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            contender = breakdown.current
            if contender is None:
                return original(*args, **kwargs)
            statements, commits, _ = contender.counter.snapshot()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                stat = breakdown.stats.setdefault(contender.label, {}).setdefault(name, CallStat())
                stat.calls += 1
                stat.seconds += elapsed
                stat.statements += contender.counter.statements - statements
                stat.commits += contender.counter.commits - commits

        setattr(owner, attr, timed)

    def install(self) -> None:
        parts = (
            (StudyManager, ("run", "tick", "_running_studies_and_counts", "_claim", "shutdown")),
            (Scheduler, ("claimable",)),
            (Launcher, ("claim_and_start",)),
            (TrialSupervisor, ("step",)),
            (Ingestor, ("ingest", "_observe", "_report_and_maybe_prune")),
            (Keeper, ("keep_best_checkpoint", "keep_best_export", "record_exports")),
            (Finisher, ("finish",)),
            (Fencing, ("renew",)),
        )
        for part, methods in parts:
            for method in methods:
                self.wrap(part, method, f"{part.__name__}.{method}")
        for function in (
            "running_studies",
            "trial_counts",
            "reserve_run_with_ordinal",
            "attach_trial",
            "set_pid",
            "record_eval_values",
            "set_objective_steps",
            "add_problems",
            "add_checkpoint",
            "remove_checkpoints_except",
            "known_exports",
            "finish_run",
            "renew_leases",
        ):
            # Each engine part imports the functions of the aggregates it touches: time them
            # where they are called.
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("tuner.engine."):
                    self.wrap(module, function, f"repo.{function}")
        self.wrap(Database, "run", "Database.run (one transaction)")
        self.wrap(TrialProcess, "start", "TrialProcess.start (Popen)")
        self.wrap(EvalDirWatcher, "poll", "EvalDirWatcher.poll")
        self.wrap(tuner.engine.keeper, "find_exports", "outputs.find_exports")
        self.wrap(tuner.engine.manager, "wait_for_exit", "execution.wait_for_exit (idle)")
        self.wrap(tuner.engine.optuna_link, "tell", "studies.tell")
        self.wrap(optuna.Study, "ask", "optuna Study.ask")
        self.wrap(optuna.Study, "tell", "optuna Study.tell")
        self.wrap(optuna.trial.Trial, "__init__", "optuna Trial.__init__")
        self.wrap(optuna.trial.Trial, "report", "optuna Trial.report")
        self.wrap(RDBStorage, "set_trial_intermediate_value", "optuna set_trial_intermediate_value")
        module = sys.modules[__name__]
        self.wrap(module, "run_trainer", "subprocess.run(trainer)")
        self.wrap(module, "read_objective", "read_objective (event file)")

    def print(self, totals: dict[str, Totals]) -> None:
        for label, stats in self.stats.items():
            trials = totals[label].trials
            print(f"\n{label}: per trial, children included ({trials} trials)")
            print(f"{'ms/trial':>9} {'calls':>6} {'SQL':>6} {'commits':>7}  function")
            for name, stat in sorted(stats.items(), key=lambda item: -item[1].seconds):
                print(
                    f"{stat.seconds * 1000 / trials:>9.2f} {stat.calls / trials:>6.2f} "
                    f"{stat.statements / trials:>6.2f} {stat.commits / trials:>7.2f}  {name}"
                )


# -- running and reporting -----------------------------------------------------------------------


def chunk_sizes(trials: int, rounds: int) -> list[int]:
    base, extra = divmod(trials, rounds)
    return [base + (1 if i < extra else 0) for i in range(rounds) if base or i < extra]


#: One profiler per contender, enabled around each of its chunks.
PROFILERS: dict[str, cProfile.Profile] = {}


@contextmanager
def maybe_profiled(profile_dir: Path | None, contender: Contender) -> Iterator[None]:
    if profile_dir is None or isinstance(contender, LaunchOnly):
        yield
        return
    profiler = PROFILERS.setdefault(contender.label, cProfile.Profile())
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()


def run_benchmark(
    contenders: Sequence[Contender],
    chunks: Sequence[int],
    *,
    profile_dir: Path | None,
    breakdown: Breakdown | None,
    progress: Callable[[str], None],
) -> dict[str, Totals]:
    totals = {c.label: Totals() for c in contenders}
    for index, trials in enumerate(chunks):
        order = list(contenders) if index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            contender.prepare(trials)
            before = contender.counter.snapshot()
            cpu_start, start = time.process_time(), time.perf_counter()
            if breakdown is not None:
                breakdown.current = contender
            try:
                with maybe_profiled(profile_dir, contender):
                    contender.run(trials)
            finally:
                if breakdown is not None:
                    breakdown.current = None
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
            after = contender.counter.snapshot()
            contender.finish()
            total = totals[contender.label]
            total.trials += trials
            total.seconds += elapsed
            total.cpu_seconds += cpu
            total.statements += after[0] - before[0]
            total.commits += after[1] - before[1]
            total.checkouts += after[2] - before[2]
            total.chunk_ms.append(elapsed * 1000 / trials)
            contender.check(total.trials)
            progress(
                f"round {index + 1}/{len(chunks)}  {contender.label:<20} {trials:4d} trials  "
                f"{elapsed:7.2f} s  {elapsed * 1000 / trials:7.1f} ms/trial"
            )
    return totals


def format_table(
    totals: dict[str, Totals], plain: str, floor: str, notes: Sequence[str] = ()
) -> str:
    header = (
        f"{'contender':<20} {'trials':>6} {'total s':>8} {'ms/trial':>9} {'over floor':>10} "
        f"{'cpu ms':>7} {'SQL':>6} {'commits':>7} {'checkouts':>9} {'ratio':>6}"
    )
    lines = [header, "-" * len(header)]
    base = totals[plain].ms_per_trial
    floor_ms = totals[floor].ms_per_trial
    for label, t in totals.items():
        ratio = "" if label == floor else f"{t.ms_per_trial / base:.3f}"
        lines.append(
            f"{label:<20} {t.trials:>6} {t.seconds:>8.2f} {t.ms_per_trial:>9.1f} "
            f"{t.ms_per_trial - floor_ms:>10.1f} {t.per_trial(t.cpu_seconds * 1000):>7.1f} "
            f"{t.per_trial(t.statements):>6.1f} {t.per_trial(t.commits):>7.1f} "
            f"{t.per_trial(t.checkouts):>9.1f} {ratio:>6}"
        )
    lines += [
        "",
        "ms/trial: the contender's wall time / trials; over floor: ms/trial minus `subprocess "
        "only`;",
        "cpu ms: this process's CPU per trial (trainers and the database server not included);",
        "SQL, commits, checkouts: statements, commits and pool checkouts per trial on the "
        "contender's",
        f"engines; ratio: ms/trial / {plain!r} (target <= {TARGET_RATIO:.2f}).",
        *notes,
        "",
        "per round: ms/trial (ratio to the plain loop in the same round)",
    ]
    rounds = len(totals[plain].chunk_ms)
    for label, t in totals.items():
        cells = []
        ratios = []
        for index, ms in enumerate(t.chunk_ms):
            if label in (plain, floor):
                cells.append(f"{ms:6.1f}       ")
            else:
                ratios.append(ms / totals[plain].chunk_ms[index])
                cells.append(f"{ms:6.1f} ({ratios[-1]:.2f})")
        median = f"  median ratio {statistics.median(ratios):.3f}" if ratios else ""
        lines.append(f"{label:<20} " + " ".join(cells) + median)
    if rounds > 1:
        lines.append("(rounds alternate the order: S A B | B A S ...)")
    return "\n".join(lines)


def print_profiles(profile_dir: Path, totals: dict[str, Totals], top: int) -> None:
    profile_dir.mkdir(parents=True, exist_ok=True)
    for label, profiler in PROFILERS.items():
        slug = "".join(c if c.isalnum() else "-" for c in label).strip("-")
        path = profile_dir / f"{slug}.prof"
        profiler.dump_stats(path)
        trials = totals[label].trials
        stats: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        rows = sorted(stats.items(), key=lambda item: item[1][3], reverse=True)[:top]
        print(f"\n{label}: cProfile, top {top} by cumulative time ({path})")
        print(f"{'cum ms/trial':>12} {'own ms/trial':>12} {'calls/trial':>11}  function")
        for (filename, line, func), (_, ncalls, own, cum, _) in rows:
            where = _short_path(filename)
            print(
                f"{cum * 1000 / trials:>12.2f} {own * 1000 / trials:>12.2f} "
                f"{ncalls / trials:>11.1f}  {func} ({where}:{line})"
            )


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Per-trial orchestration overhead: the tuner's StudyManager vs a plain Optuna "
            "ask/subprocess/tell loop, on the same kind of storage, in one run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--trials", type=int, default=200, help="trials per contender (split into --rounds)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="chunks per contender, run in alternating order (S A B | B A S ...)",
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="storage kind; each contender gets a fresh database of it",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="server on which --database postgresql creates (and drops) its databases "
        "(env TUNER_BENCH_PG_URL)",
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        nargs="+",
        default=[0.01, 0.25],
        metavar="SECONDS",
        help="the tuner's Settings.poll_interval; one tuner contender per value "
        "(0.25 is the tuner's default)",
    )
    parser.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        help="leave out the tuner with warm starts (the trainer forked from a preloading "
        "parent; at the last --poll-interval)",
    )
    parser.add_argument(
        "--plain-journal",
        choices=("wal", "default"),
        default="wal",
        help="SQLite journal of the plain loop's file: WAL as the tuner's, or SQLite's default",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="cProfile each Optuna contender, write DIR/<contender>.prof and print the top "
        "functions per trial (profiling slows everything: compare timings without it)",
    )
    parser.add_argument("--profile-top", type=int, default=40, help="functions printed per profile")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="time the manager's steps, repository calls and Optuna calls per trial (with "
        "their SQL statements and commits), at about a microsecond per call",
    )
    parser.add_argument(
        "--no-ray",
        dest="ray",
        action="store_false",
        help="leave Ray Tune out even when it is installed",
    )
    parser.add_argument(
        "--ray-cpus", type=int, default=os.cpu_count() or 1, help="num_cpus for ray.init"
    )
    parser.add_argument(
        "--ray-reuse-actors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Tune's reuse_actors: one trial actor for a whole fit (without it, Ray's default, "
        "every trial starts a new actor in a new worker process)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (trial dirs, dbs)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.rounds < 1:
        parser.error("--trials and --rounds must be >= 1")
    if any(p <= 0 for p in args.poll_interval):
        parser.error("--poll-interval must be > 0")
    if args.ray_cpus < 1:
        parser.error("--ray-cpus must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    chunks = chunk_sizes(args.trials, min(args.rounds, args.trials))
    workdir = Path(tempfile.mkdtemp(prefix="tuner-overhead-"))
    print(
        f"{args.trials} trials per contender in chunks {chunks}, database {args.database}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, Optuna {optuna.__version__}",
        file=sys.stderr,
    )
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        databases = Databases(args.database, workdir, args.pg_admin_url, stack)
        spec = make_study_spec("plain", args.trials)
        contenders: list[Contender] = [
            LaunchOnly(workdir / "launch-only"),
            PlainLoop(
                databases.fresh("plain"),
                workdir / "plain",
                spec,
                sqlite_wal=args.plain_journal == "wal",
            ),
        ]
        for poll in args.poll_interval:
            slug = f"tuner-{poll:g}".replace(".", "_")
            contenders.append(TunerManager(databases.fresh(slug), workdir / slug, poll))
        if args.warm:
            poll = args.poll_interval[-1]
            slug = f"tuner-warm-{poll:g}".replace(".", "_")
            contenders.append(TunerManager(databases.fresh(slug), workdir / slug, poll, warm=True))
        skipped = "ray tune: left out (--no-ray)" if not args.ray else None
        if args.ray and (reason := ray_unavailable()) is not None:
            skipped = f"ray tune: skipped ({reason}; pip install -e '.[bench]')"
        if skipped is None:
            poll = args.poll_interval[0]
            slug = f"tuner-ray-{poll:g}".replace(".", "_")
            contenders.append(
                TunerOnRay(databases.fresh(slug), workdir / slug, poll, cpus=args.ray_cpus)
            )
            contenders.append(
                RayTune(
                    databases.fresh("ray"),
                    workdir / "ray",
                    spec,
                    cpus=args.ray_cpus,
                    reuse_actors=args.ray_reuse_actors,
                    sqlite_wal=args.plain_journal == "wal",
                )
            )
        for contender in contenders:
            stack.callback(contender.close)
        breakdown = Breakdown() if args.breakdown else None
        if breakdown is not None:
            breakdown.install()
        totals = run_benchmark(
            contenders,
            chunks,
            profile_dir=args.profile,
            breakdown=breakdown,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        rows: dict[str, Totals] = {}
        notes: list[str] = []
        for contender in contenders:
            rows[contender.label] = totals[contender.label]
            rows.update(contender.extra_rows(totals[contender.label]))
            notes += contender.notes()
        print()
        if args.profile is not None:
            print("(profiled run: cProfile inflates every figure below)\n")
        print(format_table(rows, PlainLoop.label, LaunchOnly.label, notes))
        if skipped is not None:
            print(skipped)
        if breakdown is not None:
            breakdown.print(totals)
        if args.profile is not None:
            print_profiles(args.profile, totals, args.profile_top)
        if args.keep:
            print(f"\nkept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
