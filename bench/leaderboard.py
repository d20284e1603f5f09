"""Leaderboard and best-trial latency of the REST API on a large study, against plain Optuna.

A study of `--trials` finished trials (10,000 by default), each with `--steps` eval steps of five
metrics (one of them the objective tag), is written straight into a fresh database: the study by
`tuner.study.operations.submit_study`, Optuna's trials by `Study.add_trials`, and the tuner's rows
(`tuner_trial_runs` with `best_step_id`/`objective_step_id`, `tuner_eval_steps`,
`tuner_eval_metrics`, the kept checkpoint, exports with the best one's kept copy, event-file
offsets) by bulk inserts of what the study manager writes for a completed trial. The leaderboard
and the best trial are then computed by the real code paths, through a real server (`tuner serve
--slots 0` in a subprocess, uvicorn on a loopback port, a read token from `tuner token create`)
and a keep-alive httpx client:

- `GET /api/v1/studies/{name}/trials?limit=50`: the leaderboard's first page;
- `GET /api/v1/studies/{name}/best`: the best completed trial, its step, checkpoint and exports;
- the trial list sorted by a param (`sort=param:learning_rate`), by a metric at the best step
  (`sort=metric:mae`), by a param at a page halfway down the study, sorted and filtered on a
  param and a metric, and the metric history of 100 trials (`.../metrics/rmse/history`): each
  timed in one loop with `sort=objective`, through HTTP and in-process, and reported as a ratio
  to it, so the ratio holds whatever else loads the machine.

The baseline is what a user of plain Optuna does in the same process and run:
`optuna.load_study(study_name=..., storage=url).trials`, then the top 50 by value in Python. Two
more Optuna rows say how much of that is cold start: the same study object reused (Optuna's cache
of finished trials, `get_trials(deepcopy=False)`), and `load_study(...).best_trial` (one SQL query).
In-process rows time the repository calls the two endpoints make, without HTTP.

    python bench/leaderboard.py                          # SQLite (a temp file), 10,000 trials
    python bench/leaderboard.py --database postgresql    # a fresh database on the local server
    python bench/leaderboard.py --explain                # + query plans of the endpoints' SQL
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import optuna
import psycopg
from sqlalchemy import Connection, Engine, Table, bindparam, event, insert, select, text, update
from sqlalchemy.engine import make_url

from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries
from tuner.persistence.models import (
    Base,
    CheckpointRow,
    EvalMetricRow,
    EvalStepRow,
    EventFileRow,
    ExportRow,
    TrialRunRow,
)
from tuner.study import operations as study_ops
from tuner.study import sampling
from tuner.study.operations import Backend

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STUDY = "leaderboard-bench"
OBJECTIVE = "rmse"
#: Five metrics per eval step, the objective first (what an Estimator regressor writes, roughly).
METRICS = (OBJECTIVE, "loss", "average_loss", "mae", "label/mean")
EVAL_NAME = "eval"
STEP_EVERY = 1000
PAGE = 50
TARGET_P99_MS = 50.0
WORKER = "bench-host:4242"

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- the study -----------------------------------------------------------------------------------


def make_spec(trials: int) -> StudySpec:
    return parse_spec(
        {
            "name": STUDY,
            "trainer": "dummy",
            "seed": 1,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": OBJECTIVE,
                "maxTrials": trials,
                "maxParallelTrials": 4,
                "params": [
                    {
                        "parameterName": "learning_rate",
                        "type": "DOUBLE",
                        "minValue": 1e-4,
                        "maxValue": 1e-1,
                        "scaleType": "UNIT_LOG_SCALE",
                    },
                    {
                        "parameterName": "hidden_units",
                        "type": "INTEGER",
                        "minValue": 8,
                        "maxValue": 256,
                    },
                    {
                        "parameterName": "optimizer",
                        "type": "CATEGORICAL",
                        "categoricalValues": ["adam", "sgd", "adagrad"],
                    },
                ],
            },
        }
    )


@dataclass
class SyntheticTrial:
    """One finished trial: sampled params and its eval history (steps of five metrics)."""

    number: int
    params: dict[str, Any]
    #: step -> tag -> value
    evals: dict[int, dict[str, float]]
    started_at: datetime
    ended_at: datetime

    @property
    def best_step(self) -> int:
        return min(self.evals, key=lambda step: (self.evals[step][OBJECTIVE], step))

    @property
    def objective(self) -> float:
        return self.evals[self.best_step][OBJECTIVE]


def synthesize(trials: int, steps: int, seed: int) -> list[SyntheticTrial]:
    """Deterministic trials: a noisy decaying loss curve per trial, objective = its best rmse."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out: list[SyntheticTrial] = []
    for number in range(trials):
        params = {
            "learning_rate": 10 ** rng.uniform(-4, -1),
            "hidden_units": rng.randint(8, 256),
            "optimizer": rng.choice(["adam", "sgd", "adagrad"]),
        }
        floor = rng.uniform(0.2, 2.0)
        evals: dict[int, dict[str, float]] = {}
        for index in range(1, steps + 1):
            rmse = floor * (1 + 2 / index) * rng.uniform(0.97, 1.03)
            evals[index * STEP_EVERY] = {
                OBJECTIVE: rmse,
                "loss": rmse * rmse * 32,
                "average_loss": rmse * rmse,
                "mae": rmse * 0.8,
                "label/mean": 2.0 + rng.uniform(-0.01, 0.01),
            }
        began = start + timedelta(minutes=number)
        out.append(
            SyntheticTrial(
                number=number,
                params=params,
                evals=evals,
                started_at=began,
                ended_at=began + timedelta(seconds=60 + steps * 5),
            )
        )
    return out


def add_optuna_trials(
    backend: Backend, spec: StudySpec, trials: Sequence[SyntheticTrial], batch: int
) -> dict[int, int]:
    """Finished Optuna trials as the manager leaves them (params, value, one intermediate value
    per eval step); returns trial number -> Optuna trial id."""
    study = optuna.load_study(study_name=spec.name, storage=backend.storage)
    space = sampling.search_space(spec)
    for begin in range(0, len(trials), batch):
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params=t.params,
                    distributions=space,
                    value=t.objective,
                    intermediate_values={step: m[OBJECTIVE] for step, m in t.evals.items()},
                )
                for t in trials[begin : begin + batch]
            ]
        )
    frozen = backend.storage.get_all_trials(study._study_id, deepcopy=False)
    return {t.number: t._trial_id for t in frozen}


def table(row_class: type[Base]) -> Table:
    """The core table of an ORM class, for bulk inserts."""
    return Base.metadata.tables[row_class.__tablename__]


def insert_tuner_rows(
    conn: Connection,
    study_id: int,
    spec: StudySpec,
    trials: Sequence[SyntheticTrial],
    trial_ids: dict[int, int],
    chunk: int,
) -> None:
    """The tuner's rows of completed trials, as `StudyManager` writes them (bulk inserts)."""
    runs = table(TrialRunRow)
    steps_table = table(EvalStepRow)
    metrics_table = table(EvalMetricRow)

    def insert_chunked(target: Table, rows: list[dict[str, Any]]) -> None:
        for begin in range(0, len(rows), chunk):
            conn.execute(insert(target), rows[begin : begin + chunk])

    def trial_dir(number: int) -> str:
        return f"{spec.name}/trial-{number:04d}"

    insert_chunked(
        runs,
        [
            {
                "study_id": study_id,
                "number": t.number,
                "optuna_trial_id": trial_ids[t.number],
                "state": "COMPLETED",
                "params_json": json.dumps(sampling.trainer_values(spec, t.params)),
                "worker": WORKER,
                "output_dir": trial_dir(t.number),
                "log_path": f"{trial_dir(t.number)}.log",
                "pid": 10_000 + t.number,
                "exit_code": 0,
                "failure_reason": None,
                "problems_json": "[]",
                "started_at": t.started_at,
                "heartbeat_at": t.ended_at,
                "ended_at": t.ended_at,
            }
            for t in trials
        ],
    )
    run_ids = dict(
        conn.execute(select(runs.c.number, runs.c.id).where(runs.c.study_id == study_id)).all()
    )

    def wall_time(t: SyntheticTrial, step: int) -> float:
        return t.started_at.timestamp() + 5 * step / STEP_EVERY

    insert_chunked(
        steps_table,
        [
            {
                "run_id": run_ids[t.number],
                "eval_name": EVAL_NAME,
                "step": step,
                "wall_time": wall_time(t, step),
                "checkpoint_path": f"{trial_dir(t.number)}/model.ckpt-{step}",
            }
            for t in trials
            for step in t.evals
        ],
    )
    step_ids: dict[tuple[int, int], int] = {
        (run_id, step): step_id
        for step_id, run_id, step in conn.execute(
            select(steps_table.c.id, steps_table.c.run_id, steps_table.c.step)
            .join(runs, runs.c.id == steps_table.c.run_id)
            .where(runs.c.study_id == study_id)
        ).all()
    }
    insert_chunked(
        metrics_table,
        [
            {
                "eval_step_id": step_ids[run_ids[t.number], step],
                "tag": tag,
                "value": value,
                "wall_time": wall_time(t, step),
            }
            for t in trials
            for step, values in t.evals.items()
            for tag, value in values.items()
        ],
    )
    # The objective is the best step (spec objective BEST): both pointers name it, and the
    # sort key is its value (MINIMIZE), as the manager writes them.
    conn.execute(
        update(runs)
        .where(runs.c.id == bindparam("run"))
        .values(
            best_step_id=bindparam("best"),
            objective_step_id=bindparam("best"),
            objective_rank=bindparam("rank"),
        ),
        [
            {
                "run": run_ids[t.number],
                "best": step_ids[run_ids[t.number], t.best_step],
                "rank": t.evals[t.best_step][OBJECTIVE],
            }
            for t in trials
        ],
    )
    insert_chunked(
        table(CheckpointRow),
        [
            {
                "run_id": run_ids[t.number],
                "step": t.best_step,
                "source_path": f"{trial_dir(t.number)}/model.ckpt-{t.best_step}",
                "kept_path": f"{trial_dir(t.number)}.kept/model.ckpt-{t.best_step}",
                "created_at": t.ended_at,
            }
            for t in trials
        ],
    )

    def export_row(t: SyntheticTrial, step: int) -> dict[str, Any]:
        """A `latest` export after each eval; the best step's has a kept (linked) copy."""
        version = str(int(wall_time(t, step)) + 1)
        kept = f"{trial_dir(t.number)}.kept/export/latest/{version}"
        return {
            "run_id": run_ids[t.number],
            "exporter": "latest",
            "version": version,
            "path": f"{trial_dir(t.number)}/export/latest/{version}",
            "kept_path": kept if step == t.best_step else None,
            "eval_step_id": step_ids[run_ids[t.number], step],
        }

    insert_chunked(table(ExportRow), [export_row(t, step) for t in trials for step in t.evals])
    insert_chunked(
        table(EventFileRow),
        [
            {
                "run_id": run_ids[t.number],
                "path": f"{EVAL_NAME}/events.out.tfevents.{int(t.started_at.timestamp())}.bench",
                "offset": 512 * len(t.evals),
            }
            for t in trials
        ],
    )


def build_study(
    url: str, trials: Sequence[SyntheticTrial], *, optuna_batch: int, chunk: int
) -> None:
    backend = Backend.connect(url)
    try:
        spec = make_spec(len(trials))
        dummy = Trainer(name="dummy", argv=(sys.executable, "-c", "pass"), working_dir=REPO)
        study = study_ops.submit_study(backend, spec, TrainerRegistry({"dummy": dummy}))
        trial_ids = add_optuna_trials(backend, spec, trials, optuna_batch)
        with backend.db.engine.begin() as conn:
            insert_tuner_rows(conn, study.id, spec, trials, trial_ids, chunk)
        with backend.db.session() as session:
            repo.set_study_state(
                session, study.id, "COMPLETED", f"{len(trials)} of {len(trials)} trials finished"
            )
        if backend.db.engine.dialect.name == "postgresql":
            # Autovacuum would analyze the new tables within a minute; do it now.
            with backend.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.execute(text("ANALYZE"))
    finally:
        backend.close()


# -- databases -----------------------------------------------------------------------------------


@contextmanager
def database(kind: str, workdir: Path, pg_admin_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'tuner.db'}"
        return
    admin = make_url(pg_admin_url).set(drivername="postgresql")
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


# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tuner_env(url: str, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TUNER_DATABASE_URL": url,
        "TUNER_ARTIFACT_ROOT": str(workdir / "artifacts"),
        "TUNER_TRAINERS_FILE": str(workdir / "no-trainers.yaml"),
    }


def tuner_command(*args: str) -> list[str]:
    """The tuner CLI of this checkout (run with `cwd=REPO`, so `-m` imports this checkout)."""
    return [sys.executable, "-m", "tuner.cli", *args]


def create_read_token(env: dict[str, str]) -> str:
    done = subprocess.run(
        tuner_command("token", "create", "--scope", "read", "--name", "bench"),
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def running_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`tuner serve --slots 0` on a free loopback port; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            tuner_command("serve", "--slots", "0", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"tuner serve exited {process.returncode}:\n{tail}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("tuner serve did not become ready within 60 s")
                time.sleep(0.1)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# -- measuring -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timing:
    label: str
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)


def load_average() -> float:
    """The 1-minute load average (other work on the machine skews every figure)."""
    return os.getloadavg()[0]


def timed(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


@dataclass
class HttpResult:
    board: Timing
    best: Timing
    overview: Timing
    board_body: dict[str, Any]
    best_body: dict[str, Any]
    overview_body: dict[str, Any]


def measure_http(base: str, token: str, *, requests: int, warmup: int) -> HttpResult:
    """Leaderboard, best and study requests, interleaved so that drift hits all alike."""
    paths = {
        "board": (f"/api/v1/studies/{STUDY}/trials", {"limit": PAGE}),
        "best": (f"/api/v1/studies/{STUDY}/best", {}),
        "overview": (f"/api/v1/studies/{STUDY}", {}),
    }
    timings = {
        "board": Timing(f"GET .../trials?limit={PAGE}"),
        "best": Timing("GET .../best"),
        "overview": Timing("GET /api/v1/studies/{name} (not a target)"),
    }
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

        def getter(key: str) -> Callable[[], httpx.Response]:
            path, params = paths[key]
            return lambda: client.get(path, params=params).raise_for_status()

        calls = {key: getter(key) for key in paths}
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(requests):
            for key, call in calls.items():
                timings[key].samples_ms.append(timed(call))
        bodies = {key: call().json() for key, call in calls.items()}
    return HttpResult(
        board=timings["board"],
        best=timings["best"],
        overview=timings["overview"],
        board_body=bodies["board"],
        best_body=bodies["best"],
        overview_body=bodies["overview"],
    )


#: A query timed against the plain objective sort: (label, path under the study, query params).
SortedQuery = tuple[str, str, list[tuple[str, Any]]]


def sorted_queries(trials: int) -> dict[str, SortedQuery]:
    """Trial-list and history requests timed in one loop with `sort=objective` (the first), so
    that each is reported as a ratio to it; the deep page starts halfway down the study."""
    deep = trials // 2
    return {
        "objective": ("sort=objective", "trials", [("sort", "objective")]),
        "param": ("sort=param:learning_rate", "trials", [("sort", "param:learning_rate")]),
        "metric": ("sort=metric:mae", "trials", [("sort", "metric:mae")]),
        "param-deep": (
            f"sort=-param:hidden_units&offset={deep}",
            "trials",
            [("sort", "-param:hidden_units"), ("offset", deep)],
        ),
        "filtered": (
            "sort=-metric:mae, 2 filters",
            "trials",
            [
                ("sort", "-metric:mae"),
                ("filter", "param:optimizer=adam"),
                ("filter", "metric:rmse<1"),
            ],
        ),
        "history": ("metrics/rmse/history?limit=100", "metrics/rmse/history", [("limit", 100)]),
    }


@dataclass
class SortedResult:
    http: dict[str, Timing]
    in_process: dict[str, Timing]
    bodies: dict[str, dict[str, Any]]
    statements: dict[str, int]
    plans: list[str]


def sorted_params(query: SortedQuery) -> list[tuple[str, Any]]:
    _, path, params = query
    return [("limit", PAGE), *params] if path == "trials" else params


def measure_sorted_http(
    base: str, token: str, queries: dict[str, SortedQuery], *, requests: int, warmup: int
) -> tuple[dict[str, Timing], dict[str, dict[str, Any]]]:
    """Each sorted, filtered or history request, interleaved with `sort=objective`."""
    headers = {"Authorization": f"Bearer {token}"}
    timings = {key: Timing(f"GET .../{label}") for key, (label, _, _) in queries.items()}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

        def getter(key: str) -> Callable[[], httpx.Response]:
            path = f"/api/v1/studies/{STUDY}/{queries[key][1]}"
            params = sorted_params(queries[key])
            return lambda: client.get(path, params=params).raise_for_status()

        calls = {key: getter(key) for key in queries}
        for _ in range(warmup):
            for call in calls.values():
                call()
        for _ in range(requests):
            for key, call in calls.items():
                timings[key].samples_ms.append(timed(call))
        bodies = {key: call().json() for key, call in calls.items()}
    return timings, bodies


def measure_sorted_in_process(
    url: str, queries: dict[str, SortedQuery], repeats: int, explain: bool
) -> tuple[dict[str, Timing], dict[str, int], list[str]]:
    """The same queries through `trial_queries` without HTTP; statements; optional plans."""
    backend = Backend.connect(url)
    log = SqlLog()
    log.attach(backend.db.engine)
    timings = {key: Timing(f"in-process {label}") for key, (label, _, _) in queries.items()}

    def runner(key: str) -> Callable[[], None]:
        _, path, _ = queries[key]
        params = sorted_params(queries[key])
        single = {k: v for k, v in params if k != "filter"}
        filters = [v for k, v in params if k == "filter"]

        def run() -> None:
            with backend.db.session() as session:
                study = repo.get_study(session, STUDY)
                if path == "trials":
                    query = trial_queries.parse_query(
                        study.spec, sort=single.get("sort"), filters=filters
                    )
                    trial_queries.list_trials(
                        session,
                        study,
                        query,
                        limit=int(single["limit"]),
                        offset=int(single.get("offset", 0)),
                    )
                else:
                    trial_queries.metric_history(
                        session, study, OBJECTIVE, limit=int(single["limit"])
                    )

        return run

    plans: list[str] = []
    counts: dict[str, int] = {}
    try:
        runs = {key: runner(key) for key in queries}
        for _ in range(5):
            for run in runs.values():
                run()
        for _ in range(repeats):
            for key, run in runs.items():
                timings[key].samples_ms.append(timed(run))
        for key, run in runs.items():
            with log.capture() as statements:
                run()
            counts[timings[key].label] = len(statements)
            if explain and key != "objective":
                plans += [query_plan(backend.db.engine, *sql) for sql in statements[1:]]
    finally:
        backend.close()
    return timings, counts, plans


def check_sorted(bodies: dict[str, dict[str, Any]], trials: Sequence[SyntheticTrial]) -> None:
    """Each sorted, filtered and history answer must agree with the synthetic data."""

    def top(key: Callable[[SyntheticTrial], Any], pool: Sequence[SyntheticTrial]) -> list[int]:
        return [t.number for t in sorted(pool, key=lambda t: (key(t), t.number))][:PAGE]

    def numbers(key: str) -> list[int]:
        return [row["number"] for row in bodies[key]["data"]]

    def mae(t: SyntheticTrial) -> float:
        return t.evals[t.best_step]["mae"]

    if numbers("objective") != top(lambda t: t.objective, trials):
        raise RuntimeError("sort=objective disagrees with the data")
    if numbers("param") != top(lambda t: t.params["learning_rate"], trials):
        raise RuntimeError("sort=param:learning_rate disagrees with the data")
    if numbers("metric") != top(mae, trials):
        raise RuntimeError("sort=metric:mae disagrees with the data")
    half = len(trials) // 2
    by_units = sorted(trials, key=lambda t: (-t.params["hidden_units"], t.number))
    if numbers("param-deep") != [t.number for t in by_units[half : half + PAGE]]:
        raise RuntimeError(f"sort=-param:hidden_units at offset {half} disagrees with the data")
    passing = [t for t in trials if t.params["optimizer"] == "adam" and t.objective < 1]
    if bodies["filtered"]["count"] != len(passing) or numbers("filtered") != top(
        lambda t: -mae(t), passing
    ):
        raise RuntimeError("the filtered page disagrees with the data")
    history = bodies["history"]
    first = history["data"][0]
    want = [(step, values[OBJECTIVE]) for step, values in sorted(trials[0].evals.items())]
    if history["count"] != len(trials) or len(history["data"]) != 100:
        raise RuntimeError(f"history: {history['count']} trials, {len(history['data'])} listed")
    if first["number"] != 0 or [(p["step"], p["value"]) for p in first["points"]] != want:
        raise RuntimeError("history: trial 0's points disagree with the data")


def format_sorted(result: SortedResult, queries: dict[str, SortedQuery]) -> str:
    """Time per page of each query, and its ratio to `sort=objective` in the same loop."""
    http_base = result.http["objective"]
    local_base = result.in_process["objective"]
    width = max(len(label) for label, _, _ in queries.values())
    header = (
        f"{'query':<{width}} {'HTTP p50':>9} {'p99':>7} {'x obj':>6}"
        f" {'in-proc p50':>12} {'p99':>7} {'x obj':>6}"
    )
    lines = [header, "-" * len(header)]
    for key, (label, _, _) in queries.items():
        web, local = result.http[key], result.in_process[key]
        lines.append(
            f"{label:<{width}} {web.p50:>9.2f} {web.p99:>7.2f} {web.p50 / http_base.p50:>6.2f}"
            f" {local.p50:>12.2f} {local.p99:>7.2f} {local.p50 / local_base.p50:>6.2f}"
        )
    return "\n".join(lines)


def top_by_value(trials: Sequence[optuna.trial.FrozenTrial], n: int) -> list[int]:
    complete = [t for t in trials if t.state is optuna.trial.TrialState.COMPLETE]
    complete.sort(key=lambda t: (t.value, t.number))
    return [t.number for t in complete[:n]]


def measure_optuna(url: str, repeats: int) -> tuple[list[Timing], list[int]]:
    """The plain-Optuna ways to the same answers, in this process."""
    cold = Timing(f"optuna load_study(url).trials + top {PAGE}")
    warm = Timing(f"optuna same study, get_trials(deepcopy=False) + top {PAGE}")
    best = Timing("optuna load_study(url).best_trial")
    found: list[int] = []

    def cold_top() -> None:
        nonlocal found
        found = top_by_value(optuna.load_study(study_name=STUDY, storage=url).trials, PAGE)

    def cold_best() -> None:
        optuna.load_study(study_name=STUDY, storage=url).best_trial  # noqa: B018

    loaded = optuna.load_study(study_name=STUDY, storage=url)
    loaded.get_trials(deepcopy=False)  # fills Optuna's cache of finished trials

    def warm_top() -> None:
        top_by_value(loaded.get_trials(deepcopy=False), PAGE)

    cold_top()  # one warm-up each (imports, first connection)
    cold_best()
    for _ in range(repeats):
        cold.samples_ms.append(timed(cold_top))
        best.samples_ms.append(timed(cold_best))
        warm.samples_ms.append(timed(warm_top))
    return [cold, warm, best], found


@dataclass
class SqlLog:
    """Statements executed on an engine while capturing."""

    statements: list[tuple[str, Any]] = field(default_factory=list)
    active: bool = False

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._on_statement)

    def _on_statement(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.active:
            self.statements.append((statement, params))

    @contextmanager
    def capture(self) -> Iterator[list[tuple[str, Any]]]:
        self.statements = []
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


def measure_in_process(
    url: str, repeats: int, explain: bool
) -> tuple[list[Timing], dict[str, int], list[str]]:
    """The endpoints' repository work without HTTP; statements per call; optional plans."""
    backend = Backend.connect(url)
    log = SqlLog()
    log.attach(backend.db.engine)
    board = Timing(f"in-process get_study + repo.leaderboard(limit={PAGE})")
    best = Timing("in-process study_ops.best_model")
    plans: list[str] = []
    try:

        def leaderboard() -> None:
            with backend.db.session() as session:
                study = repo.get_study(session, STUDY)
                repo.leaderboard(session, study, limit=PAGE)

        def best_model() -> None:
            study_ops.best_model(backend, STUDY)

        for _ in range(5):
            leaderboard()
            best_model()
        for _ in range(repeats):
            board.samples_ms.append(timed(leaderboard))
            best.samples_ms.append(timed(best_model))
        counts: dict[str, int] = {}
        with log.capture() as board_sql:
            leaderboard()
        counts[board.label] = len(board_sql)
        with log.capture() as best_sql:
            best_model()
        counts[best.label] = len(best_sql)
        if explain:
            # Every leaderboard statement after get_study, and /best's best-run query (its
            # other statements read the one best trial).
            for statement, params in [*board_sql[1:], best_sql[1]]:
                plans.append(query_plan(backend.db.engine, statement, params))
    finally:
        backend.close()
    return [board, best], counts, plans


def query_plan(engine: Engine, statement: str, params: Any) -> str:
    dialect = engine.dialect.name
    prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS) "
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.execute(prefix + statement, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if dialect == "sqlite":
            depth: dict[int, int] = {}
            lines = []
            for node, parent, _, detail in rows:
                depth[node] = depth.get(parent, -1) + 1
                lines.append("  " * depth[node] + detail)
            start = time.perf_counter()
            cursor = raw.cursor()
            cursor.execute(statement, params)
            cursor.fetchall()
            cursor.close()
            lines.append(f"(executed in {(time.perf_counter() - start) * 1000:.1f} ms)")
        else:
            lines = [row[0] for row in rows]
    one_line = " ".join(statement.split())
    return f"{one_line}\n" + "\n".join(f"    {line}" for line in lines)


# -- reporting -----------------------------------------------------------------------------------


def format_table(ours: Sequence[Timing], baseline: Timing, others: Sequence[Timing]) -> str:
    width = max(len(t.label) for t in [*ours, baseline, *others])
    header = f"{'operation':<{width}} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} {'baseline/ours':>15}"
    lines = [header, "-" * len(header)]
    for timing in [*ours, baseline, *others]:
        ratio = ""
        if timing in ours:
            ratio = f"{baseline.p50 / timing.p50:.0f}x/{baseline.p99 / timing.p99:.0f}x"
        lines.append(
            f"{timing.label:<{width}} {len(timing.samples_ms):>4} {timing.p50:>9.2f} "
            f"{timing.p99:>9.2f} {ratio:>15}"
        )
    return "\n".join(lines)


def check_answers(
    http: HttpResult, optuna_top: list[int], trials: Sequence[SyntheticTrial]
) -> None:
    """The endpoints and Optuna must agree with the synthetic data."""
    board, best = http.board_body, http.best_body
    expected = sorted(trials, key=lambda t: (t.objective, t.number))[:PAGE]
    numbers = [row["number"] for row in board["data"]]
    if board["count"] != len(trials) or numbers != [t.number for t in expected]:
        raise RuntimeError(f"leaderboard disagrees with the data: {numbers[:5]}...")
    if optuna_top != numbers:
        raise RuntimeError(f"Optuna's top {PAGE} disagrees with the leaderboard")
    top = expected[0]
    if best["number"] != top.number or best["step"] != top.best_step:
        raise RuntimeError(f"/best says trial {best['number']} step {best['step']}")
    if (
        best["checkpoint"] is None
        or best["export"] is None
        or ".kept/" not in best["export"]["path"]
    ):
        raise RuntimeError(f"/best: checkpoint {best['checkpoint']}, export {best['export']}")
    first = board["data"][0]
    if first["bestStep"] != top.best_step or first["lastStep"] != max(top.evals):
        raise RuntimeError(f"leaderboard steps {first['bestStep']}/{first['lastStep']} are wrong")
    overview_best = http.overview_body.get("best") or {}
    if overview_best.get("number") != top.number:
        raise RuntimeError(f"the study overview's best is {overview_best}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Latency of the leaderboard's first page and of /best through a real server on a "
            "large study, against loading the study with plain Optuna, in one run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="a temp SQLite file, or a fresh database on the PostgreSQL server (dropped after)",
    )
    parser.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="server on which --database postgresql creates its database (env TUNER_BENCH_PG_URL)",
    )
    parser.add_argument("--trials", type=int, default=10_000, help="finished trials in the study")
    parser.add_argument("--steps", type=int, default=10, help="eval steps per trial")
    parser.add_argument(
        "--requests", type=int, default=300, help="timed HTTP requests per endpoint"
    )
    parser.add_argument(
        "--sorted-requests",
        type=int,
        default=100,
        help="timed HTTP requests per sorted, filtered or history query",
    )
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per endpoint")
    parser.add_argument(
        "--baseline-repeats",
        type=int,
        default=20,
        help="timed repetitions of each Optuna baseline (a cold load of a large study is slow)",
    )
    parser.add_argument(
        "--in-process-repeats",
        type=int,
        default=100,
        help="timed repetitions of the endpoints' repository calls without HTTP",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic trials")
    parser.add_argument(
        "--optuna-batch", type=int, default=500, help="trials per Study.add_trials call"
    )
    parser.add_argument("--chunk", type=int, default=20_000, help="rows per bulk insert")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="print the query plans (EXPLAIN QUERY PLAN / EXPLAIN ANALYZE) of the leaderboard "
        "page, its count, and the best-run query",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (SQLite file, log)")
    parser.add_argument(
        "--reuse",
        metavar="URL",
        help="measure the study already in this database (built by an earlier run with the same "
        "--trials, --steps and --seed, e.g. a --keep'd SQLite file) instead of building one: "
        "building takes minutes",
    )
    args = parser.parse_args(argv)
    for name in (
        "trials",
        "steps",
        "requests",
        "sorted_requests",
        "baseline_repeats",
        "in_process_repeats",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.trials < 100:
        parser.error("--trials must be >= 100 (one full page of the metric history)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tuner-leaderboard-"))
    kind = make_url(args.reuse).get_backend_name() if args.reuse else args.database
    info = (
        f"{args.trials} trials x {args.steps} eval steps x {len(METRICS)} metrics, database "
        f"{kind}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"Optuna {optuna.__version__}"
    )
    print(info, file=sys.stderr)
    with ExitStack() as stack:
        if args.keep:
            print(f"keeping {workdir}", file=sys.stderr)
        else:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        trials = synthesize(args.trials, args.steps, args.seed)
        if args.reuse:
            url = args.reuse
            print(f"reusing the study in {url}", file=sys.stderr)
        else:
            url = stack.enter_context(database(args.database, workdir, args.pg_admin_url))
            start = time.perf_counter()
            build_study(url, trials, optuna_batch=args.optuna_batch, chunk=args.chunk)
            print(f"study built in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        env = tuner_env(url, workdir)
        token = create_read_token(env)
        queries = sorted_queries(args.trials)
        loads = [load_average()]
        with running_server(env, workdir / "server.log") as base:
            http = measure_http(base, token, requests=args.requests, warmup=args.warmup)
            sorted_http, sorted_bodies = measure_sorted_http(
                base, token, queries, requests=args.sorted_requests, warmup=args.warmup
            )
        loads.append(load_average())
        print("HTTP done; Optuna baselines...", file=sys.stderr)
        baselines, optuna_top = measure_optuna(url, args.baseline_repeats)
        in_process, statements, plans = measure_in_process(
            url, args.in_process_repeats, args.explain
        )
        sorted_local, sorted_statements, sorted_plans = measure_sorted_in_process(
            url, queries, args.in_process_repeats, args.explain
        )
        loads.append(load_average())
        check_answers(http, optuna_top, trials)
        check_sorted(sorted_bodies, trials)
        sorted_result = SortedResult(
            sorted_http, sorted_local, sorted_bodies, sorted_statements, sorted_plans
        )

    ours = [http.board, http.best, http.overview]
    print(f"\n{info}\n")
    print(format_table(ours, baselines[0], [*baselines[1:], *in_process]))
    print(
        f"\nHTTP: `tuner serve --slots 0` (uvicorn, 1 process) on loopback, one keep-alive httpx "
        f"client, {args.requests} requests per endpoint interleaved, after {args.warmup} warm-ups;"
        f"\na read token is checked on every request. Optuna and in-process rows: this process."
        f"\nbaseline/ours: p50 and p99 of {baselines[0].label!r} over ours."
        f"\n1-minute load average before HTTP, after HTTP, at the end: "
        + ", ".join(f"{load:.2f}" for load in loads)
    )
    print("SQL statements per call: " + ", ".join(f"{k}: {v}" for k, v in statements.items()))
    missed = [t.label for t in (http.board, http.best) if t.p99 >= TARGET_P99_MS]
    verdict = "MISSED by " + ", ".join(missed) if missed else "met"
    print(f"target p99 < {TARGET_P99_MS:.0f} ms for both endpoints: {verdict}")
    print(
        f"\nSorted and filtered pages (limit={PAGE}) and the metric history on {args.trials} "
        f"trials: {args.sorted_requests} HTTP requests and {args.in_process_repeats} in-process "
        "calls each, interleaved with sort=objective;\n'x obj' = p50 over the p50 of "
        "sort=objective in the same loop.\n"
    )
    print(format_sorted(sorted_result, queries))
    print(
        "SQL statements per call: "
        + ", ".join(f"{k}: {v}" for k, v in sorted_result.statements.items())
    )
    for plan in [*plans, *sorted_result.plans]:
        print(f"\n{plan}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
