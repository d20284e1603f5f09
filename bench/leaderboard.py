"""Leaderboard, best-trial and Pareto-front latency of the REST API on a large study, against
plain Optuna.

A study of `--trials` finished trials (10,000 by default; 100,000 builds in minutes), each with
`--steps` eval steps of five metrics (one of them the objective tag), is written straight into a
fresh database. The study is submitted by `tuner.study.operations.submit_study`; its trials are
bulk inserts, a transaction per `--batch` trials, of the rows the real code paths leave for a
COMPLETED trial (`BulkWriter`): Optuna's, through its own table models (`trials`,
`trial_params` in Optuna's internal representation, `trial_values`, one
`trial_intermediate_values` row per eval step, the `trial_user_attributes` that
`tuner.study.optuna_attrs` writes), and the tuner's (`tuner_trial_runs` with
`best_step_id`/`objective_step_id`/`objective_rank`, `tuner_eval_steps`, `tuner_eval_metrics`,
`tuner_trial_sort_values` (params and best-step metrics),
the kept checkpoint, exports with the best one's kept copy, event-file offsets, and the study
journal's `created`/`eval`/`state` events). Ids are taken as inserts would take them (from the
sequences on PostgreSQL), rows go in by the driver's executemany on SQLite and `COPY` on
PostgreSQL; `optuna.load_study` and the API see an ordinary study. The leaderboard, the best
trial and the front are then computed by the real code paths, through a real server (`tuner
serve --slots 0` in a subprocess, uvicorn on a loopback port, a read token from `tuner token
create`) and a keep-alive httpx client:

- `GET /api/v1/studies/{name}/trials?limit=50`: the leaderboard's first page;
- `GET /api/v1/studies/{name}/best`: the best completed trial, its step, checkpoint and exports;
- the trial list sorted by a param (`sort=param:learning_rate`), by a metric at the best step
  (`sort=metric:mae`), by a param at a page halfway down the study, sorted and filtered on a
  param and a metric, the metric history of 100 trials (`.../metrics/rmse/history`) and the
  Pareto front (`.../pareto`: one objective, so the best trial): each timed in one loop with
  `sort=objective`, through HTTP and in-process, and reported as a ratio to it, so the ratio
  holds whatever else loads the machine. A call slower than `SLOW_MS` while warming up is timed
  `SLOW_REPEATS` times only; a call that fails is counted, with its error, not timed.

The baseline is what a user of plain Optuna does in the same process and run:
`optuna.load_study(study_name=..., storage=url).trials`, then the top 50 by value in Python. Two
more Optuna rows say how much of that is cold start: the same study object reused (Optuna's cache
of finished trials, `get_trials(deepcopy=False)`), and `load_study(...).best_trial` (one SQL query).
In-process rows time the repository calls the endpoints make, without HTTP. The build time, the
rows written and the 1-minute load average around each phase are printed with the results.

    python bench/leaderboard.py                          # SQLite (a temp file), 10,000 trials
    python bench/leaderboard.py --database postgresql    # a fresh database on the local server
    python bench/leaderboard.py --explain                # + query plans of the endpoints' SQL
    python bench/leaderboard.py --trials 100000 --baseline-repeats 3   # a cold load: ~1 min each
"""

from __future__ import annotations

import argparse
import enum
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
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import optuna
import psycopg
from optuna.storages._rdb import models as optuna_models
from sqlalchemy import Connection, Engine, Table, event, func, insert, select, text, update
from sqlalchemy.engine import make_url

from tuner.artifacts.store import ArtifactStore
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.persistence import evals, trial_queries
from tuner.persistence import repository as repo
from tuner.persistence.models import (
    CheckpointRow,
    EvalMetricRow,
    EvalStepRow,
    EventFileRow,
    ExportRow,
    StudyEventRow,
    StudyRow,
    TrialRunRow,
    TrialSortValueRow,
)
from tuner.persistence.sort_values import metric_key, param_sort_values
from tuner.study import operations as study_ops
from tuner.study import optuna_attrs, sampling
from tuner.study.front import pareto_front
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
    """One finished trial: sampled params and its eval history, one `rmse` and one `label/mean`
    per eval step (the other three metrics follow from `rmse`)."""

    number: int
    params: dict[str, Any]
    rmse: tuple[float, ...]
    label_mean: tuple[float, ...]
    started_at: datetime
    ended_at: datetime

    @property
    def steps(self) -> list[int]:
        return [STEP_EVERY * (index + 1) for index in range(len(self.rmse))]

    def metrics(self, index: int) -> dict[str, float]:
        """The five metrics of eval step `index` (0-based), the objective first."""
        rmse = self.rmse[index]
        return {
            OBJECTIVE: rmse,
            "loss": rmse * rmse * 32,
            "average_loss": rmse * rmse,
            "mae": rmse * 0.8,
            "label/mean": self.label_mean[index],
        }

    def wall_time(self, index: int) -> float:
        return self.started_at.timestamp() + 5 * (index + 1)

    @cached_property
    def best_index(self) -> int:
        """The best eval step (smallest rmse, the earliest on a tie), 0-based."""
        return min(range(len(self.rmse)), key=lambda index: (self.rmse[index], index))

    @property
    def best_step(self) -> int:
        return STEP_EVERY * (self.best_index + 1)

    @property
    def last_step(self) -> int:
        return STEP_EVERY * len(self.rmse)

    @property
    def objective(self) -> float:
        return self.rmse[self.best_index]

    def at_best(self, tag: str) -> float:
        return self.metrics(self.best_index)[tag]


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
        rmse: list[float] = []
        label_mean: list[float] = []
        for index in range(1, steps + 1):
            rmse.append(floor * (1 + 2 / index) * rng.uniform(0.97, 1.03))
            label_mean.append(2.0 + rng.uniform(-0.01, 0.01))
        began = start + timedelta(minutes=number)
        out.append(
            SyntheticTrial(
                number=number,
                params=params,
                rmse=tuple(rmse),
                label_mean=tuple(label_mean),
                started_at=began,
                ended_at=began + timedelta(seconds=60 + steps * 5),
            )
        )
    return out


@dataclass(frozen=True)
class TrialFiles:
    """Where a trial's files are: relative to the artifact root, and absolute."""

    output_dir: str
    log_path: str
    kept_dir: str
    output_dir_abs: str
    log_path_abs: str


def table(row_class: type[Any]) -> Table:
    """The core table of an ORM class (ours or Optuna's), for bulk inserts."""
    found: Table = row_class.__table__
    return found


def naive_utc(moment: datetime) -> datetime:
    """How Optuna's RDB storage keeps a trial's times: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None)


class BulkWriter:
    """The rows the real code paths leave for a COMPLETED trial, written in bulk.

    Optuna's (through its own table models): the trial, its params in Optuna's internal
    representation with their distributions, its value, one intermediate value per eval step
    (what `OptunaLink.report` stores) and the user attrs `tuner.study.optuna_attrs` writes at
    launch and at the end. The tuner's: the run with `best_step_id`/`objective_step_id`/
    `objective_rank` (BEST objective, MINIMIZE), its eval steps and metrics, the kept
    checkpoint, a `latest` export after each eval with a kept copy of the best step's, the event
    file's offset, and the study journal's `created`, `eval` and `state` events with their
    `seq`. Multi-row inserts of `chunk` rows; ids come back through `RETURNING` in row order.
    Not written: the sampler's own system attrs (e.g. TPE's relative params), which depend on
    the sampler's history, not on the trial.
    """

    def __init__(
        self,
        spec: StudySpec,
        study_id: int,
        optuna_study_id: int,
        store: ArtifactStore,
        chunk: int,
    ) -> None:
        self.spec = spec
        self.study_id = study_id
        self.optuna_study_id = optuna_study_id
        self.store = store
        self.chunk = chunk
        self.space = sampling.search_space(spec)
        self.distribution_json = {
            name: optuna.distributions.distribution_to_json(dist)
            for name, dist in self.space.items()
        }
        self.seq: int | None = None
        self.rows: dict[str, int] = {}

    def allocate(self, conn: Connection, target: Table, count: int) -> list[int]:
        """`count` new primary keys of `target`, as its inserts would take them: from its
        sequence on PostgreSQL (which stays in step), after the largest one on SQLite. With
        ids known beforehand, a run row is written with its step pointers, and nothing needs
        RETURNING (row by row on SQLite) or an UPDATE."""
        key = target.primary_key.columns.values()[0]
        if conn.dialect.name == "postgresql":
            ids = (
                conn.execute(
                    text(
                        "SELECT nextval(pg_get_serial_sequence(:table, :column)) "
                        "FROM generate_series(1, :n)"
                    ),
                    {"table": target.name, "column": key.name, "n": count},
                )
                .scalars()
                .all()
            )
            return sorted(int(i) for i in ids)
        last = int(conn.execute(select(func.max(key))).scalar() or 0)
        return list(range(last + 1, last + count + 1))

    def insert(self, conn: Connection, target: Table, rows: list[dict[str, Any]]) -> None:
        """Bulk inserts: `COPY ... FROM STDIN` on PostgreSQL (psycopg's executemany sends a
        statement per row, and multi-row INSERTs are 10x slower than COPY), the driver's
        executemany of one prepared statement on SQLite, in chunks of `chunk` rows."""
        self.rows[target.name] = self.rows.get(target.name, 0) + len(rows)
        if not rows:
            return
        if conn.dialect.name != "postgresql":
            for begin in range(0, len(rows), self.chunk):
                conn.execute(insert(target), rows[begin : begin + self.chunk])
            return
        columns = list(rows[0])
        unknown = set(columns) - set(target.c.keys())
        if unknown:
            raise KeyError(f"{target.name} has no columns {sorted(unknown)}")
        raw = conn.connection.dbapi_connection
        assert raw is not None
        quoted = ", ".join(f'"{name}"' for name in columns)
        with (
            raw.cursor() as cursor,
            cursor.copy(f'COPY "{target.name}" ({quoted}) FROM STDIN') as copy,
        ):
            for row in rows:
                # Enums as SQLAlchemy's Enum type stores them: by name.
                copy.write_row(
                    [
                        value.name if isinstance(value, enum.Enum) else value
                        for value in row.values()
                    ]
                )

    def where(self, number: int) -> TrialFiles:
        """A trial's paths as the artifact store names them (by string: resolving paths
        through the file system for each of 100,000 trials costs minutes)."""
        relative = f"{self.spec.name}/trial-{number:04d}"
        return TrialFiles(
            output_dir=relative,
            log_path=f"{relative}.log",
            kept_dir=f"{relative}.kept",
            output_dir_abs=f"{self.store.root}/{relative}",
            log_path_abs=f"{self.store.root}/{relative}.log",
        )

    def check_where(self, number: int, values: dict[str, Any]) -> None:
        """The string paths and attrs of one trial against the store's and `launch_attrs`."""
        paths = self.store.trial_paths(self.spec.name, number)
        files = self.where(number)
        want = (
            self.store.relative(paths.output_dir),
            self.store.relative(paths.log_path),
            self.store.relative(paths.kept_dir),
            optuna_attrs.launch_attrs(self.store, paths, values),
        )
        if (
            files.output_dir,
            files.log_path,
            files.kept_dir,
            self.launch_attrs(files, values),
        ) != want:
            raise RuntimeError(f"trial {number}: the bulk rows' paths differ from the store's")

    @staticmethod
    def launch_attrs(files: TrialFiles, values: dict[str, Any]) -> dict[str, Any]:
        """`optuna_attrs.launch_attrs` from known paths."""
        return {
            optuna_attrs.TRIAL_DIR: files.output_dir,
            optuna_attrs.TRIAL_DIR_ABS: files.output_dir_abs,
            optuna_attrs.LOG_PATH: files.log_path,
            optuna_attrs.LOG_PATH_ABS: files.log_path_abs,
            optuna_attrs.STATE: "RUNNING",
            **{optuna_attrs.arg_key(name): value for name, value in values.items()},
        }

    def write(self, conn: Connection, trials: Sequence[SyntheticTrial]) -> None:
        """One batch of trials, in the caller's transaction."""
        values = {t.number: sampling.trainer_values(self.spec, t.params) for t in trials}
        paths = {t.number: self.where(t.number) for t in trials}
        self.check_where(trials[0].number, values[trials[0].number])
        trial_ids = self.write_optuna(conn, trials, values, paths)
        self.write_tuner(conn, trials, trial_ids, values, paths)

    # -- Optuna's tables

    def write_optuna(
        self,
        conn: Connection,
        trials: Sequence[SyntheticTrial],
        values: dict[int, dict[str, Any]],
        paths: dict[int, TrialFiles],
    ) -> dict[int, int]:
        trials_table = table(optuna_models.TrialModel)
        ids = self.allocate(conn, trials_table, len(trials))
        self.insert(
            conn,
            trials_table,
            [
                {
                    "trial_id": trial_id,
                    "number": t.number,
                    "study_id": self.optuna_study_id,
                    "state": optuna.trial.TrialState.COMPLETE,
                    "datetime_start": naive_utc(t.started_at),
                    "datetime_complete": naive_utc(t.ended_at),
                }
                for t, trial_id in zip(trials, ids, strict=True)
            ],
        )
        trial_ids = {t.number: trial_id for t, trial_id in zip(trials, ids, strict=True)}
        finite = optuna_models.TrialValueModel.TrialValueType.FINITE
        intermediate_finite = (
            optuna_models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
        )
        self.insert(
            conn,
            table(optuna_models.TrialParamModel),
            [
                {
                    "trial_id": trial_ids[t.number],
                    "param_name": name,
                    "param_value": dist.to_internal_repr(t.params[name]),
                    "distribution_json": self.distribution_json[name],
                }
                for t in trials
                for name, dist in self.space.items()
            ],
        )
        self.insert(
            conn,
            table(optuna_models.TrialValueModel),
            [
                {
                    "trial_id": trial_ids[t.number],
                    "objective": 0,
                    "value": t.objective,
                    "value_type": finite,
                }
                for t in trials
            ],
        )
        self.insert(
            conn,
            table(optuna_models.TrialIntermediateValueModel),
            [
                {
                    "trial_id": trial_ids[t.number],
                    "step": step,
                    "intermediate_value": t.rmse[index],
                    "intermediate_value_type": intermediate_finite,
                }
                for t in trials
                for index, step in enumerate(t.steps)
            ],
        )

        def attrs(t: SyntheticTrial) -> dict[str, Any]:
            # The launch attrs, then the outcome's (`tuner_state` overwritten in place, as the
            # upsert of `optuna_attrs.set_attrs` leaves it).
            return {
                **self.launch_attrs(paths[t.number], values[t.number]),
                **optuna_attrs.outcome_attrs("COMPLETED", None, exit_code=0, best_step=t.best_step),
            }

        self.insert(
            conn,
            table(optuna_models.TrialUserAttributeModel),
            [
                {"trial_id": trial_ids[t.number], "key": key, "value_json": json.dumps(value)}
                for t in trials
                for key, value in attrs(t).items()
            ],
        )
        return trial_ids

    # -- ours

    def write_tuner(
        self,
        conn: Connection,
        trials: Sequence[SyntheticTrial],
        trial_ids: dict[int, int],
        values: dict[int, dict[str, Any]],
        paths: dict[int, TrialFiles],
    ) -> None:
        runs, steps = table(TrialRunRow), table(EvalStepRow)
        run_list = self.allocate(conn, runs, len(trials))
        run_ids = {t.number: run_id for t, run_id in zip(trials, run_list, strict=True)}
        step_list = iter(self.allocate(conn, steps, sum(len(t.rmse) for t in trials)))
        step_ids = {
            (t.number, index): next(step_list) for t in trials for index in range(len(t.rmse))
        }
        # The objective is the best step (spec objective BEST): both pointers name it, and the
        # sort key is its value (MINIMIZE), as `set_objective_steps` writes them.
        self.insert(
            conn,
            runs,
            [
                {
                    "id": run_ids[t.number],
                    "study_id": self.study_id,
                    "number": t.number,
                    "optuna_trial_id": trial_ids[t.number],
                    "state": "COMPLETED",
                    "params_json": json.dumps(values[t.number]),
                    "worker": WORKER,
                    "lease_epoch": 0,
                    "output_dir": paths[t.number].output_dir,
                    "log_path": paths[t.number].log_path,
                    "pid": 10_000 + t.number,
                    "exit_code": 0,
                    "failure_reason": None,
                    "problems_json": "[]",
                    "started_at": t.started_at,
                    "heartbeat_at": t.ended_at,
                    "ended_at": t.ended_at,
                    "best_step_id": step_ids[t.number, t.best_index],
                    "objective_step_id": step_ids[t.number, t.best_index],
                    "objective_rank": evals.objective_rank(t.objective, self.spec.goal),
                    "executor": "local",
                }
                for t in trials
            ],
        )
        self.insert(
            conn,
            steps,
            [
                {
                    "id": step_ids[t.number, index],
                    "run_id": run_ids[t.number],
                    "eval_name": EVAL_NAME,
                    "step": step,
                    "wall_time": t.wall_time(index),
                    "checkpoint_path": f"{paths[t.number].output_dir_abs}/model.ckpt-{step}",
                }
                for t in trials
                for index, step in enumerate(t.steps)
            ],
        )
        self.insert(
            conn,
            table(EvalMetricRow),
            [
                {
                    "eval_step_id": step_ids[t.number, index],
                    "tag": tag,
                    "value": value,
                    "wall_time": t.wall_time(index),
                }
                for t in trials
                for index in range(len(t.rmse))
                for tag, value in t.metrics(index).items()
            ],
        )
        # Each trial's sort values: its params (`attach_trial`) and its metrics at its best
        # step (`set_objective_steps`), as `tuner.persistence.sort_values` derives them.
        self.insert(
            conn,
            table(TrialSortValueRow),
            [
                {
                    "run_id": run_ids[t.number],
                    "key": key,
                    "study_id": self.study_id,
                    "value": value,
                    "number": t.number,
                }
                for t in trials
                for key, value in [
                    *param_sort_values(self.spec, values[t.number]).items(),
                    *(
                        (metric_key(tag), value)
                        for tag, value in t.metrics(t.best_index).items()
                        if value is not None and not math.isnan(value)
                    ),
                ]
            ],
        )
        self.insert(
            conn,
            table(CheckpointRow),
            [
                {
                    "run_id": run_ids[t.number],
                    "step": t.best_step,
                    "source_path": f"{paths[t.number].output_dir_abs}/model.ckpt-{t.best_step}",
                    "kept_path": f"{paths[t.number].kept_dir}/model.ckpt-{t.best_step}",
                    "created_at": t.ended_at,
                }
                for t in trials
            ],
        )

        def export_row(t: SyntheticTrial, index: int) -> dict[str, Any]:
            """A `latest` export after each eval; the best step's has a kept (linked) copy."""
            version = str(int(t.wall_time(index)) + 1)
            output = paths[t.number].output_dir
            kept = f"{paths[t.number].kept_dir}/export/latest/{version}"
            return {
                "run_id": run_ids[t.number],
                "exporter": "latest",
                "version": version,
                "path": f"{output}/export/latest/{version}",
                "kept_path": kept if index == t.best_index else None,
                "eval_step_id": step_ids[t.number, index],
                "global_step": t.steps[index],
                "matched_by": "global_step",
            }

        self.insert(
            conn,
            table(ExportRow),
            [export_row(t, index) for t in trials for index in range(len(t.rmse))],
        )
        self.insert(
            conn,
            table(EventFileRow),
            [
                {
                    "run_id": run_ids[t.number],
                    "path": f"{EVAL_NAME}/events.out.tfevents.{t.started_at.timestamp():.0f}.bench",
                    "offset": 512 * len(t.rmse),
                }
                for t in trials
            ],
        )
        self.write_journal(conn, trials, values)

    def write_journal(
        self, conn: Connection, trials: Sequence[SyntheticTrial], values: dict[int, dict[str, Any]]
    ) -> None:
        """Each trial's `created`, one `eval` per step and `state` events, as `attach_trial`,
        `record_eval_values` and `finish_run` journal them; the study's `event_seq` after."""
        studies = table(StudyRow)
        if self.seq is None:
            self.seq = int(
                conn.execute(
                    select(studies.c.event_seq).where(studies.c.id == self.study_id)
                ).scalar_one()
            )
        events: list[tuple[str, int, datetime, dict[str, Any]]] = []
        for t in trials:
            events.append(
                (
                    "created",
                    t.number,
                    t.started_at,
                    {
                        "number": t.number,
                        "state": "RUNNING",
                        "params": values[t.number],
                        "startedAt": t.started_at.isoformat(),
                    },
                )
            )
            for index, step in enumerate(t.steps):
                metrics = t.metrics(index)
                wall_time = t.wall_time(index)
                events.append(
                    (
                        "eval",
                        t.number,
                        datetime.fromtimestamp(wall_time, UTC),
                        {
                            "number": t.number,
                            "step": step,
                            "evalName": EVAL_NAME,
                            "wallTime": wall_time,
                            "objective": metrics[OBJECTIVE],
                            "metrics": metrics,
                        },
                    )
                )
            events.append(
                (
                    "state",
                    t.number,
                    t.ended_at,
                    {
                        "number": t.number,
                        "state": "COMPLETED",
                        "reason": None,
                        "exitCode": 0,
                        "endedAt": t.ended_at.isoformat(),
                    },
                )
            )
        first = self.seq + 1
        self.insert(
            conn,
            table(StudyEventRow),
            [
                {
                    "study_id": self.study_id,
                    "seq": first + offset,
                    "kind": kind,
                    "number": number,
                    "data_json": json.dumps(data, allow_nan=False),
                    "created_at": created,
                }
                for offset, (kind, number, created, data) in enumerate(events)
            ],
        )
        self.seq += len(events)
        conn.execute(
            update(studies).where(studies.c.id == self.study_id).values(event_seq=self.seq)
        )


def build_study(
    url: str, trials: Sequence[SyntheticTrial], *, artifact_root: Path, batch: int, chunk: int
) -> dict[str, int]:
    """The study, submitted as a user would, then its trials in bulk (a transaction per
    `batch` trials); rows written per table."""
    backend = Backend.connect(url)
    try:
        spec = make_spec(len(trials))
        dummy = Trainer(name="dummy", argv=(sys.executable, "-c", "pass"), working_dir=REPO)
        study = study_ops.submit_study(backend, spec, TrainerRegistry({"dummy": dummy}))
        writer = BulkWriter(
            spec,
            study.id,
            backend.storage.get_study_id_from_name(spec.name),
            ArtifactStore(artifact_root),
            chunk,
        )
        for begin in range(0, len(trials), batch):
            with backend.db.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # The tuner's sessions end a transaction idle for a few seconds; this one
                    # builds its rows between statements.
                    conn.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
                writer.write(conn, trials[begin : begin + batch])
        with backend.db.session() as session:
            repo.set_study_state(
                session, study.id, "COMPLETED", f"{len(trials)} of {len(trials)} trials finished"
            )
        if backend.db.engine.dialect.name == "postgresql":
            # Autovacuum would vacuum and analyze the new tables within minutes (inserts count
            # toward both): do it now, so that plans and index-only scans are the steady ones.
            with backend.db.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as conn:
                conn.execute(text("VACUUM ANALYZE"))
    finally:
        backend.close()
    return writer.rows


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
    #: Calls that raised or answered an error (not in the samples), by what went wrong.
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1

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
        "pareto": ("pareto", "pareto", []),
    }


#: A query whose warm-up calls take longer than this (at median) is timed `SLOW_REPEATS` times
#: instead of every round, so that a slow one (e.g. a front read from every trial) cannot
#: stretch the run to hours; its rounds stay interleaved with the others'.
SLOW_MS = 1000.0
SLOW_REPEATS = 5


def interleaved(
    calls: dict[str, Callable[[], object]],
    timings: dict[str, Timing],
    *,
    rounds: int,
    warmup: int,
) -> None:
    """Each call once per round, in order, so that drift and other load hit all alike; a call
    that raises is counted as a failure of its kind, not timed."""

    def attempt(key: str) -> float | None:
        start = time.perf_counter()
        try:
            calls[key]()
        except Exception as exc:
            timings[key].fail(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return None
        return (time.perf_counter() - start) * 1000

    def warmed(done: list[float]) -> float:
        """The median warm-up time after the first call (which fills the caches)."""
        return percentile(done[1:] or done, 50)

    warm: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(warmup):
        for key in calls:
            if len(warm[key]) >= SLOW_REPEATS and warmed(warm[key]) > SLOW_MS:
                continue  # known to be slow: no more warming up
            elapsed = attempt(key)
            if elapsed is not None:
                warm[key].append(elapsed)
    slow = {key for key, done in warm.items() if done and warmed(done) > SLOW_MS}
    for index in range(rounds):
        for key in calls:
            if key in slow and index >= SLOW_REPEATS:
                continue
            elapsed = attempt(key)
            if elapsed is not None:
                timings[key].samples_ms.append(elapsed)


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
    """Each sorted, filtered, history and front request, interleaved with `sort=objective`."""
    headers = {"Authorization": f"Bearer {token}"}
    timings = {key: Timing(f"GET .../{label}") for key, (label, _, _) in queries.items()}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:

        def getter(key: str) -> Callable[[], httpx.Response]:
            path = f"/api/v1/studies/{STUDY}/{queries[key][1]}"
            params = sorted_params(queries[key])
            return lambda: client.get(path, params=params).raise_for_status()

        calls = {key: getter(key) for key in queries}
        interleaved(calls, timings, rounds=requests, warmup=warmup)  # type: ignore[arg-type]
        bodies: dict[str, dict[str, Any]] = {}
        for key, call in calls.items():
            try:
                bodies[key] = call().json()
            except httpx.HTTPError as exc:
                timings[key].fail(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
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
            if path == "pareto":  # opens its own session, as the route does
                pareto_front(backend, STUDY)
                return
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
        interleaved(runs, timings, rounds=repeats, warmup=5)  # type: ignore[arg-type]
        for key, run in runs.items():
            with log.capture() as statements:
                try:
                    run()
                except Exception as exc:
                    timings[key].fail(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            counts[timings[key].label] = len(statements)
            if explain and key != "objective":
                plans += [query_plan(backend.db.engine, *sql) for sql in statements[1:]]
    finally:
        backend.close()
    return timings, counts, plans


def check_sorted(bodies: dict[str, dict[str, Any]], trials: Sequence[SyntheticTrial]) -> None:
    """Each sorted, filtered, history and front answer must agree with the synthetic data (a
    query that failed every time has no answer to check: its failures are reported)."""
    if "pareto" in bodies:
        check_pareto(bodies["pareto"], trials)
    missing = [key for key in sorted_queries(len(trials)) if key not in bodies]
    if missing:
        print(f"no answer to check for: {', '.join(missing)}", file=sys.stderr)
        bodies = {**{key: {"data": [], "count": -1} for key in missing}, **bodies}

    def top(key: Callable[[SyntheticTrial], Any], pool: Sequence[SyntheticTrial]) -> list[int]:
        return [t.number for t in sorted(pool, key=lambda t: (key(t), t.number))][:PAGE]

    def numbers(key: str) -> list[int]:
        return [row["number"] for row in bodies[key]["data"]]

    def mae(t: SyntheticTrial) -> float:
        return t.at_best("mae")

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
    want = list(zip(trials[0].steps, trials[0].rmse, strict=True))
    if history["count"] != len(trials) or len(history["data"]) != 100:
        raise RuntimeError(f"history: {history['count']} trials, {len(history['data'])} listed")
    if first["number"] != 0 or [(p["step"], p["value"]) for p in first["points"]] != want:
        raise RuntimeError("history: trial 0's points disagree with the data")


def check_pareto(front: dict[str, Any], trials: Sequence[SyntheticTrial]) -> None:
    """One objective: the front is the best trial (the data has no ties), at its best step,
    with its kept checkpoint and export; every trial is ranked, none infeasible."""
    best = min(trials, key=lambda t: (t.objective, t.number))
    members = [(m["number"], m["step"]) for m in front["data"]]
    if members != [(best.number, best.best_step)]:
        raise RuntimeError(f"/pareto: members {members[:5]}, expected trial {best.number}")
    if (front["rankedCount"], front["infeasibleCount"]) != (len(trials), 0):
        raise RuntimeError(f"/pareto: {front['rankedCount']} ranked, {front['infeasibleCount']}")
    member = front["data"][0]
    if member.get("checkpoint") is None or not member.get("exports"):
        raise RuntimeError(f"/pareto: the best trial's artifacts are missing: {member}")


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
    notes: list[str] = []
    for key, (label, _, _) in queries.items():
        web, local = result.http[key], result.in_process[key]
        lines.append(
            f"{label:<{width}} {web.p50:>9.2f} {web.p99:>7.2f} {web.p50 / http_base.p50:>6.2f}"
            f" {local.p50:>12.2f} {local.p99:>7.2f} {local.p50 / local_base.p50:>6.2f}"
        )
        for timing in (web, local):
            if len(timing.samples_ms) != len(
                http_base.samples_ms if timing is web else local_base.samples_ms
            ):
                notes.append(f"{timing.label}: timed {len(timing.samples_ms)} times (slow)")
            for what, count in timing.failures.items():
                notes.append(f"{timing.label}: {count} failed: {what}")
    return "\n".join(lines + notes)


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
    if first["bestStep"] != top.best_step or first["lastStep"] != top.last_step:
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
        "--batch", type=int, default=5_000, help="trials per transaction while building"
    )
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per bulk insert")
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
        build_line = "study reused (not built)"
        if args.reuse:
            url = args.reuse
            print(f"reusing the study in {url}", file=sys.stderr)
        else:
            url = stack.enter_context(database(args.database, workdir, args.pg_admin_url))
            start, load_before = time.perf_counter(), load_average()
            rows = build_study(
                url, trials, artifact_root=workdir / "artifacts", batch=args.batch, chunk=args.chunk
            )
            built = time.perf_counter() - start
            build_line = (
                f"study built in {built:.1f} s ({sum(rows.values()):,} rows: "
                + ", ".join(f"{name} {count:,}" for name, count in rows.items())
                + f"); 1-minute load average {load_before:.2f} before, {load_average():.2f} after"
            )
            print(build_line, file=sys.stderr)

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
        print("HTTP done; in-process calls...", file=sys.stderr)
        # Before the Optuna baselines: a cold load of a large study leaves gigabytes of objects
        # to this process, and the garbage collector's passes over them would be timed too.
        in_process, statements, plans = measure_in_process(
            url, args.in_process_repeats, args.explain
        )
        sorted_local, sorted_statements, sorted_plans = measure_sorted_in_process(
            url, queries, args.in_process_repeats, args.explain
        )
        loads.append(load_average())
        print("Optuna baselines...", file=sys.stderr)
        baselines, optuna_top = measure_optuna(url, args.baseline_repeats)
        loads.append(load_average())
        check_answers(http, optuna_top, trials)
        check_sorted(sorted_bodies, trials)
        sorted_result = SortedResult(
            sorted_http, sorted_local, sorted_bodies, sorted_statements, sorted_plans
        )

    ours = [http.board, http.best, http.overview]
    print(f"\n{info}\n{build_line}\n")
    print(format_table(ours, baselines[0], [*baselines[1:], *in_process]))
    print(
        f"\nHTTP: `tuner serve --slots 0` (uvicorn, 1 process) on loopback, one keep-alive httpx "
        f"client, {args.requests} requests per endpoint interleaved, after {args.warmup} warm-ups;"
        f"\na read token is checked on every request. Optuna and in-process rows: this process."
        f"\nbaseline/ours: p50 and p99 of {baselines[0].label!r} over ours."
        f"\n1-minute load average before HTTP, after HTTP, after in-process, at the end: "
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
