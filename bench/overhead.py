"""Per-trial orchestration overhead of the tuner's study manager against a plain Optuna loop.

Every contender runs the same trivial trainer (`bench/trivial_trainer.py`: one eval event, no
TensorFlow) the same number of times, one trial at a time, in the same process:

- `subprocess only`: the trainer launched N times, no Optuna, no database: the floor.
- `plain optuna`: `study.ask()`, `subprocess.run(trainer)`, read `rmse` back from the event file
  it wrote, `study.tell()`, on an Optuna `RDBStorage` of its own.
- `tuner @ <poll>s`: a study submitted with `tuner.studies.submit_study` and run by
  `StudyManager(slots=1).run()` with `Settings.poll_interval=<poll>`: claiming, launching,
  tailing event files, storing metrics, checkpoint checks, the export scan, telling Optuna, and
  the sleep between ticks all count.

Each Optuna contender gets a fresh database of the same kind (a temp SQLite file each, or a fresh
PostgreSQL database each with `--database postgresql`) and the same sampler (the tuner's default,
TPE, built from the same spec). The trials are split into `--rounds` chunks run in alternating
order (S A B | B A S ...) so that warm-up and drift do not favour anyone; a tuner study is
resumed with a larger budget for each chunk (that untimed step is the only difference from one
long run).

    python bench/overhead.py                          # SQLite, 200 trials, poll 0.01 s and 0.25 s
    python bench/overhead.py --database postgresql    # the same on the local PostgreSQL server
    python bench/overhead.py --profile /tmp/prof      # + a cProfile of each Optuna contender
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import psycopg
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

import tuner.manager
from tuner import sampling
from tuner import studies as study_ops
from tuner.config import Settings
from tuner.execution import TrialProcess
from tuner.manager import StudyManager
from tuner.metrics import EVENT_FILE_GLOB, EvalDirWatcher, EventFileReader, ScalarValue, parse_event
from tuner.persistence import Database
from tuner.persistence import repository as repo
from tuner.spec import StudySpec, parse_spec
from tuner.studies import Backend
from tuner.trainers import Trainer, TrainerRegistry

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

    def check(self, expected: int) -> None:
        """Raise unless exactly `expected` trials completed so far."""

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
        path = _sqlite_path(url)
        if path is not None and sqlite_wal:
            # The tuner's database runs in WAL mode (persistent in the file, so Optuna's
            # connections there use it too); the same here, so the journal is not what differs.
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
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

    def __init__(self, url: str, workdir: Path, poll_interval: float) -> None:
        super().__init__()
        self.label = f"tuner @ {poll_interval:g}s poll"
        self.name = "bench"
        self.settings = Settings(
            database_url=url,
            artifact_root=workdir / "artifacts",
            trainers_file=workdir / "no-trainers.yaml",
            poll_interval=poll_interval,
        )
        trainer = Trainer(name="trivial", argv=(sys.executable, str(TRAINER)), working_dir=REPO)
        self.registry = TrainerRegistry({"trivial": trainer})
        self.backend = Backend.connect(url)
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
        manager = tuner.manager.StudyManager
        for method in (
            "run",
            "tick",
            "_running_studies_and_counts",
            "_launch",
            "_study_is_over",
            "_claim_and_start",
            "_service",
            "_ingest",
            "_observe",
            "_report_and_maybe_prune",
            "_keep_checkpoint",
            "_keep_best_export",
            "_record_exports",
            "_finish",
            "shutdown",
        ):
            self.wrap(manager, method, f"manager.{method}")
        for function in (
            "running_studies",
            "trial_counts",
            "reserve_run",
            "attach_trial",
            "set_pid",
            "record_eval_values",
            "set_objective_steps",
            "add_problems",
            "add_checkpoint",
            "remove_checkpoints_except",
            "known_exports",
            "finish_run",
            "heartbeat",
        ):
            self.wrap(repo, function, f"repo.{function}")
        self.wrap(Database, "run", "Database.run (one transaction)")
        self.wrap(TrialProcess, "start", "TrialProcess.start (Popen)")
        self.wrap(EvalDirWatcher, "poll", "EvalDirWatcher.poll")
        self.wrap(tuner.manager, "find_exports", "artifacts.find_exports")
        self.wrap(tuner.manager, "wait_for_exit", "execution.wait_for_exit (idle)")
        self.wrap(tuner.manager, "tell", "studies.tell")
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


def format_table(totals: dict[str, Totals], plain: str, floor: str) -> str:
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
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (trial dirs, dbs)")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.rounds < 1:
        parser.error("--trials and --rounds must be >= 1")
    if any(p <= 0 for p in args.poll_interval):
        parser.error("--poll-interval must be > 0")
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
        print()
        if args.profile is not None:
            print("(profiled run: cProfile inflates every figure below)\n")
        print(format_table(totals, PlainLoop.label, LaunchOnly.label))
        if breakdown is not None:
            breakdown.print(totals)
        if args.profile is not None:
            print_profiles(args.profile, totals, args.profile_top)
        if args.keep:
            print(f"\nkept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
