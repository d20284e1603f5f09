"""Retention across a study (`retention: {keepBestTrials: K}`, `tuner gc`, `POST .../gc`), against
a local artifact root and against a real S3-compatible server: what falls out of the best K goes
(kept checkpoint, exports, archives), what it needs stays, a killed deletion is finished by the
next one, a dry run frees exactly what a real one does, and a download in flight is left alone.

Studies run the cheap synthetic trainer (no TensorFlow) through real study managers; `tuner gc`
and `tuner trial` run as real processes, downloads go through a real server on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.object_store_server import S3Server, start_s3_server
from tests.server import REPO, RunningServer, start_server
from tuner.artifacts.object_store import ObjectStore
from tuner.cli.local_source import LocalSource
from tuner.domain.config import Settings
from tuner.domain.entities import FinishedTrial, RankedTrial
from tuner.domain.spec import StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.manager import StudyManager
from tuner.persistence import Database
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend
from tuner.study.retention_policy import judge

# -- the policy alone ------------------------------------------------------------------------------


def _spec(**extra: Any) -> StudySpec:
    hyper: dict[str, Any] = {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": 10,
        "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1}],
    }
    hyper.update(extra)
    if "metrics" in extra:
        del hyper["goal"], hyper["hyperparameterMetricTag"]
    return parse_spec({"name": "p", "trainer": "synthetic", "hyperparameters": hyper})


def _finished(number: int, state: str = "COMPLETED", rank: float | None = None) -> FinishedTrial:
    return FinishedTrial(number + 100, number, state, rank, has_artifacts=True)


def test_one_objective_keeps_the_best_k_completed_and_nothing_that_does_not_rank():
    trials = [
        _finished(0, rank=0.5),
        _finished(1, rank=0.2),
        _finished(2, "FAILED"),
        _finished(3, rank=0.2),  # a tie with trial 1: the lower number ranks first
        _finished(4, "PRUNED", rank=0.1),  # a rank key left from its evals: still no rank
        _finished(5, rank=None),
        _finished(6, "STOPPED"),
        _finished(7, rank=0.9),
    ]
    verdicts = {v.trial.number: v for v in judge(_spec(), 2, trials)}
    assert {n for n, v in verdicts.items() if v.keep} == {1, 3}
    assert verdicts[0].reason == "rank 3 of 4 COMPLETED by rmse (MINIMIZE), outside the best 2"
    assert verdicts[1].reason.startswith("rank 1 of 4 ")
    assert verdicts[2].reason == "FAILED: only COMPLETED trials rank"
    assert verdicts[4].reason == "PRUNED: only COMPLETED trials rank"
    assert "without a finite objective" in verdicts[5].reason
    # K = 1 still keeps the best trial
    assert [v.trial.number for v in judge(_spec(), 1, trials) if v.keep] == [1]


def _ranked(number: int, a: float, b: float, feasible: bool = True) -> RankedTrial:
    return RankedTrial(number + 100, number, {}, 10, {"a": a, "b": b}, {}, feasible)


def test_several_objectives_keep_the_best_k_of_each_and_the_whole_front():
    spec = _spec(
        metrics=[{"metricId": "a", "goal": "MINIMIZE"}, {"metricId": "b", "goal": "MAXIMIZE"}]
    )
    ranked = [
        _ranked(0, a=1.0, b=9.0),  # best by b
        _ranked(1, a=0.1, b=1.0),  # best by a
        _ranked(2, a=0.5, b=5.0),  # on the front, best by neither
        _ranked(3, a=2.0, b=0.5),  # dominated by all of the above
        _ranked(4, a=0.05, b=20.0, feasible=False),  # would dominate all: infeasible, last
    ]
    trials = [_finished(r.number) for r in ranked] + [_finished(5), _finished(6, "FAILED")]
    front = {100, 101, 102}
    verdicts = {v.trial.number: v for v in judge(spec, 1, trials, ranked, front)}
    assert {n for n, v in verdicts.items() if v.keep} == {0, 1, 2}
    assert verdicts[3].reason == (
        "rank 4 by a, 4 by b of 5 COMPLETED, outside the best 1 by each objective, not on the "
        "Pareto front"
    )
    assert "on the Pareto front" in verdicts[2].reason
    assert "without every objective" in verdicts[5].reason
    assert verdicts[6].reason == "FAILED: only COMPLETED trials rank"
    # K = 2: the second by each objective too (feasible ones first: trial 2 by a and by b)
    keep_two = {v.trial.number for v in judge(spec, 2, trials, ranked, front) if v.keep}
    assert keep_two == {0, 1, 2}
    keep_four = {v.trial.number for v in judge(spec, 4, trials, ranked, front) if v.keep}
    assert keep_four == {0, 1, 2, 3}


# -- artifact roots: a local dir, or a bucket ----------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@dataclass
class Root:
    """Where a test's artifacts go: `local` (the artifact root) or `s3` (a new bucket, with
    this machine's work dir as the local root)."""

    kind: str
    db_url: str
    local: Path
    url: str | None = None
    aws: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> ObjectStore | None:
        return ObjectStore(self.url) if self.url else None

    def settings(self, **extra: Any) -> Settings:
        return Settings(
            database_url=self.db_url,
            artifact_root=self.url or self.local,
            work_dir=self.local,
            trainers_file=REPO / "trainers.yaml",
            poll_interval=0.05,
            stop_grace_seconds=3.0,
            **extra,
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("TUNER_SERVER", None)
        env.update(self.aws)
        env.update(
            TUNER_DATABASE_URL=self.db_url,
            TUNER_ARTIFACT_ROOT=self.url or str(self.local),
            TUNER_WORK_DIR=str(self.local),
            TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
            COLUMNS="250",
            **extra,
        )
        return env

    def contents(self, study: str) -> dict[str, str]:
        """Every file of the study on this machine and every object of it in the store, with
        its sha256: what a deletion must (or must not) change."""
        found = {}
        base = self.local / study
        if base.is_dir():
            for path in sorted(base.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    found[f"local:{path.relative_to(self.local)}"] = digest
        store = self.store
        if store is not None:
            for key, _ in store.objects(study):
                found[f"store:{key}"] = hashlib.sha256(store.read_bytes(key)).hexdigest()
        return found

    def used_bytes(self, study: str) -> int:
        """The study's bytes here (each file's data once, however many names it has) and in
        the store."""
        seen: set[tuple[int, int]] = set()
        total = 0
        base = self.local / study
        if base.is_dir():
            for path in base.rglob("*"):
                info = path.lstat()
                if path.is_file() and (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_size
        store = self.store
        if store is not None:
            total += sum(size for _, size in store.objects(study))
        return total


@pytest.fixture
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Root:
    """`local-sqlite`, `local-postgresql` or `s3-postgresql` (tests choose with `indirect`)."""
    kind, database = request.param.split("-")
    if database == "sqlite":
        db_url = f"sqlite:///{tmp_path / 'tuner.db'}"
    else:
        db_url = str(request.getfixturevalue("pg_url"))
    if kind == "local":
        return Root("local", db_url, tmp_path / "artifacts")
    s3: S3Server = request.getfixturevalue("s3")
    bucket = f"tuner-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return Root("s3", db_url, tmp_path / "work", f"s3://{bucket}/studies", s3.env())


def study_spec(
    name: str,
    xs: list[float],
    *,
    keep: int | None = None,
    failing: bool = False,
    checkpoint_bytes: int = 0,
) -> StudySpec:
    """A grid over `x` (the synthetic trainer's loss converges to about (x - 0.3)^2 + 0.05);
    with `failing`, each `x` also once with a NaN at its last eval (FAILED)."""
    args = ["--train-steps=40", "--eval-every-steps=20", "--export"]
    if checkpoint_bytes:
        args.append(f"--checkpoint-bytes={checkpoint_bytes}")
    params: list[dict[str, Any]] = [
        {"parameterName": "x", "type": "DISCRETE", "discreteValues": xs}
    ]
    if failing:
        params.append(
            {
                "parameterName": "nan-at-step",
                "type": "CATEGORICAL",
                "categoricalValues": ["-1", "40"],
            }
        )
    trials = len(xs) * (2 if failing else 1)
    document: dict[str, Any] = {
        "name": name,
        "trainer": "synthetic",
        "seed": 1,
        "args": args,
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "algorithm": "GRID_SEARCH",
            "maxTrials": trials,
            "maxParallelTrials": 2,
            "maxFailedTrials": trials,
            "params": params,
        },
    }
    if keep is not None:
        document["retention"] = {"keepBestTrials": keep}
    return parse_spec(document)


def run_study(root: Root, spec: StudySpec, **settings: Any) -> Backend:
    """Submit and run the study to its end with a real manager; its backend (closed by the
    caller's test teardown)."""
    backend = Backend.connect(root.db_url)
    registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    study_ops.submit_study(backend, spec, registry)
    manager = StudyManager(
        backend, registry, root.settings(**settings), slots=2, studies=[spec.name]
    )
    manager.run()
    return backend


@dataclass(frozen=True)
class Trial:
    number: int
    state: str
    x: float
    nan: bool
    deleted: Any
    checkpoints: int
    exports: int


def trials_of(backend: Backend, study: str) -> dict[int, Trial]:
    with backend.db.session() as session:
        found = repo.get_study(session, study)
        details = [
            repo.trial_detail(session, found, r.number) for r in repo.runs(session, found.id)
        ]
    return {
        d.run.number: Trial(
            d.run.number,
            d.run.state,
            d.run.params["x"],
            d.run.params.get("nan-at-step") == "40",
            d.deleted,
            len(d.checkpoints),
            len(d.exports),
        )
        for d in details
        if d.run.number is not None
    }


def tuner(root: Root, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        env=root.env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )


@contextmanager
def local_source(root: Root) -> Iterator[LocalSource]:
    """What `tuner ...` without `--server` reads, in this process (the same answers)."""
    backend = Backend.connect(root.db_url)
    try:
        yield LocalSource(backend, root.settings())
    finally:
        backend.close()


def dumped(model: Any) -> dict[str, Any]:
    document: dict[str, Any] = model.model_dump(mode="json", by_alias=True)
    return document


def gc_json(root: Root, *args: str) -> dict[str, Any]:
    done = tuner(root, "gc", *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def trial_files(root: Root, study: str, number: int) -> dict[str, str]:
    """What a trial keeps: its kept dir, its exports and their archives (here and stored)."""
    name = f"trial-{number:04d}"
    marks = (f"{study}/{name}.kept/", f"{study}/{name}/export/", f"/.archives/{name}")
    return {k: v for k, v in root.contents(study).items() if any(m in k for m in marks)}


# -- the manager's background pass ------------------------------------------------------------


@pytest.mark.parametrize(
    "root", ["local-sqlite", "local-postgresql", "s3-postgresql"], indirect=True
)
def test_trials_outside_the_best_k_lose_their_artifacts_and_keep_their_metrics(root):
    """keepBestTrials=2 over 3 COMPLETED and 3 FAILED trials: once each trial ends, the manager
    deletes (in the background) the kept checkpoint and exports of the third best and of every
    FAILED one, here and in the store; their eval events and logs stay, each has a record of
    what went, shown by `tuner trial`; the best two keep everything."""
    backend = run_study(root, study_spec("ret", [-0.6, 0.3, 0.9], keep=2, failing=True))
    try:
        trials = trials_of(backend, "ret")
    finally:
        backend.close()
    assert sorted((t.state, t.x) for t in trials.values()) == [
        ("COMPLETED", -0.6),
        ("COMPLETED", 0.3),
        ("COMPLETED", 0.9),
        ("FAILED", -0.6),
        ("FAILED", 0.3),
        ("FAILED", 0.9),
    ]
    kept = {n for n, t in trials.items() if t.state == "COMPLETED" and t.x in (0.3, 0.9)}
    contents = root.contents("ret")
    for number, trial in trials.items():
        files = trial_files(root, "ret", number)
        log = f"ret/trial-{number:04d}.log"
        assert any(k.endswith(log) for k in contents), f"trial {number} lost its log"
        events = [k for k in contents if f"ret/trial-{number:04d}/eval/events.out" in k]
        assert events, f"trial {number} lost its eval events"
        if number in kept:
            assert trial.deleted is None
            assert trial.checkpoints == 1 and trial.exports == 2
            assert any(".kept/model.ckpt-40.index" in k for k in files), files
            if root.kind == "s3":
                assert any(k.startswith("store:") and "/.archives/" in k for k in files), files
            continue
        assert files == {}, f"trial {number} kept {sorted(files)}"
        assert trial.checkpoints == 0 and trial.exports == 0
        deleted = trial.deleted
        assert deleted is not None and deleted.state == "DONE" and deleted.trigger == "policy"
        assert deleted.policy == "keepBestTrials=2"
        assert deleted.bytes == sum(p.bytes for p in deleted.paths) > 0
        locations = {p.location for p in deleted.paths}
        # with a store: its objects, and this worker's local copy if it was not cleaned yet
        assert ("store" in locations) if root.kind == "s3" else locations == {"local"}
        if trial.state == "FAILED":
            assert deleted.reason == "FAILED: only COMPLETED trials rank"
        else:
            assert deleted.reason == (
                "rank 3 of 3 COMPLETED by rmse (MINIMIZE), outside the best 2"
            )
    # What a user sees of a trial retention emptied
    third = next(n for n, t in trials.items() if t.state == "COMPLETED" and t.x == -0.6)
    shown = tuner(root, "trial", "ret", str(third))
    assert shown.returncode == 0, shown.stderr
    assert "deleted by the study's retention policy on " in shown.stdout
    assert "(keepBestTrials=2: rank 3 of 3 COMPLETED by rmse (MINIMIZE)" in shown.stdout
    assert f"ret/trial-{third:04d}.kept" in shown.stdout
    assert "step 40" in shown.stdout  # its metrics are all there


def _two_metrics_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "trainers.yaml"
    registry.write_text(
        f"trainers:\n  two_metrics:\n    module: tests.trainers.two_metrics\n"
        f"    workingDir: {REPO}\n"
    )
    return registry


def test_several_objectives_keep_each_objectives_best_and_the_front(tmp_path):
    """a and b pull x towards 0.3 and -0.3: with keepBestTrials=1 the best by a (x=0.3), the
    best by b (x=-0.3) and the front between them (x=0) keep their artifacts; the two
    dominated trials (x=-0.9, x=0.9) lose theirs."""
    trainers = _two_metrics_registry(tmp_path)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'tuner.db'}",
        artifact_root=tmp_path / "artifacts",
        trainers_file=trainers,
        poll_interval=0.05,
    )
    spec = parse_spec(
        {
            "name": "two",
            "trainer": "two_metrics",
            "retention": {"keepBestTrials": 1},
            "hyperparameters": {
                "metrics": [
                    {"metricId": "a", "goal": "MINIMIZE"},
                    {"metricId": "b", "goal": "MINIMIZE"},
                ],
                "algorithm": "GRID_SEARCH",
                "maxTrials": 5,
                "maxParallelTrials": 2,
                "params": [
                    {
                        "parameterName": "x",
                        "type": "DISCRETE",
                        "discreteValues": [-0.9, -0.3, 0.0, 0.3, 0.9],
                    }
                ],
            },
        }
    )
    backend = Backend.connect(settings.database_url)
    registry = TrainerRegistry.from_file(trainers, missing_ok=False)
    try:
        study_ops.submit_study(backend, spec, registry)
        StudyManager(backend, registry, settings, slots=2, studies=["two"]).run()
        trials = trials_of(backend, "two")
    finally:
        backend.close()
    assert all(t.state == "COMPLETED" for t in trials.values()), trials
    gone = {t.x for t in trials.values() if t.deleted is not None}
    assert gone == {-0.9, 0.9}
    for trial in trials.values():
        kept_dir = settings.artifact_root / "two" / f"trial-{trial.number:04d}.kept"
        assert kept_dir.is_dir() == (trial.x not in gone)
        if trial.deleted is not None:
            # as it stood when the trial fell out (trials still ran): dominated, never first
            assert re.fullmatch(
                r"rank [2-5] by a, [2-5] by b of [2-5] COMPLETED, outside the best 1 by each "
                r"objective, not on the Pareto front",
                trial.deleted.reason,
            ), trial.deleted.reason


# -- tuner gc: dry runs, kills ------------------------------------------------------------------


@pytest.mark.parametrize("root", ["local-sqlite", "s3-postgresql"], indirect=True)
def test_a_dry_run_deletes_nothing_and_reports_what_a_real_run_frees(root):
    """`tuner gc --dry-run --keep-best 1` changes no file, object, row or policy, and reports
    per trial the paths and bytes that `tuner gc --keep-best 1` then deletes and frees: the
    bytes the study's files and objects really shrink by."""
    backend = run_study(root, study_spec("dry", [-0.6, 0.0, 0.3, 0.9], checkpoint_bytes=200_000))
    backend.close()
    before = root.contents("dry")
    used_before = root.used_bytes("dry")

    planned = gc_json(root, "dry", "--keep-best", "1", "--dry-run")
    assert planned["dryRun"] is True and planned["policySaved"] is False
    assert [t["outcome"] for t in planned["trials"]] == ["would_delete"] * 3
    assert planned["bytesFreed"] == sum(t["bytes"] for t in planned["trials"]) > 600_000
    assert root.contents("dry") == before
    assert _deletions(root.db_url) == []
    with local_source(root) as source:
        assert source.study("dry").spec.get("retention") is None  # the policy was not saved

    done = gc_json(root, "dry", "--keep-best", "1")
    assert done["policySaved"] is True and done["keptTrials"] == planned["keptTrials"]
    assert [t["outcome"] for t in done["trials"]] == ["deleted"] * 3
    assert [(t["number"], t["paths"], t["bytes"]) for t in done["trials"]] == [
        (t["number"], t["paths"], t["bytes"]) for t in planned["trials"]
    ]
    assert done["bytesFreed"] == planned["bytesFreed"]
    assert used_before - root.used_bytes("dry") == planned["bytesFreed"]
    (best,) = planned["keptTrials"]
    survivor = {k: v for k, v in before.items() if f"trial-{best:04d}" in k}
    assert {k: v for k, v in root.contents("dry").items() if f"trial-{best:04d}" in k} == survivor
    with local_source(root) as source:
        assert source.study("dry").spec["retention"] == {"keepBestTrials": 1}
        again = source.gc("dry")  # the saved policy: nothing more to do
    assert again.trials == [] and again.bytes_freed == 0


def _deletions(db_url: str) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT r.number, d.state, d.paths_json, d.bytes FROM tuner_deletions d "
                "JOIN tuner_trial_runs r ON r.id = d.run_id ORDER BY r.number"
            ).all()
    finally:
        db.dispose()
    return [{"number": n, "state": s, "paths": json.loads(p), "bytes": b} for n, s, p, b in rows]


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log()}")


@pytest.mark.parametrize("root", ["local-postgresql", "s3-postgresql"], indirect=True)
def test_a_gc_killed_mid_deletion_is_finished_by_the_next_one(root, tmp_path):
    """SIGKILL while `tuner gc` deletes (slowed to 0.3 s a file): the trial it was deleting is
    recorded DELETING with its whole plan, its rows no longer point at its files, the trials it
    had not reached are untouched; a second `tuner gc` finishes it (and the others), and the
    best trial's files are as they were."""
    backend = run_study(root, study_spec("kill", [-0.6, 0.0, 0.3, 0.9]))
    backend.close()
    before = root.contents("kill")
    used_before = root.used_bytes("kill")
    with local_source(root) as source:
        plan = dumped(source.gc("kill", keep_best_trials=1, dry_run=True))
    (best,) = plan["keptTrials"]
    planned = {t["number"]: t for t in plan["trials"]}
    assert len(planned) == 3

    log = tmp_path / "gc.log"
    with open(log, "w") as out:
        gc = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "gc", "kill", "--keep-best", "1"],
            env=root.env(TUNER_RETENTION_PAUSE_SECONDS="0.3"),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def half_deleted() -> bool:
            started = _deletions(root.db_url)
            if not started:
                return False
            number = started[0]["number"]
            now = root.contents("kill")
            return any(k not in now for k in trial_files_before(before, "kill", number))

        _wait("a deletion half done", half_deleted, 60, log.read_text)
        gc.send_signal(signal.SIGKILL)
        gc.wait()
    finally:
        if gc.poll() is None:
            gc.kill()
            gc.wait()

    (cut,) = _deletions(root.db_url)
    number = cut["number"]
    assert cut["state"] == "DELETING"
    assert cut["paths"] == planned[number]["paths"]  # the whole plan, recorded before deleting
    assert cut["bytes"] == planned[number]["bytes"]
    now = root.contents("kill")
    left = [k for k in trial_files_before(before, "kill", number) if k in now]
    assert left, "the kill came too late: nothing of the trial was left"
    for other in planned:
        if other != number:  # not reached: everything there, rows and files
            assert trial_files_before(before, "kill", other).items() <= now.items()
    with local_source(root) as source:
        detail = dumped(source.trial("kill", number))
    assert detail["checkpoints"] == [] and detail["exports"] == []
    assert detail["deleted"]["state"] == "DELETING"
    assert "being deleted (started) by `tuner gc`" in detail["deleted"]["message"]
    shown = tuner(root, "trial", "kill", str(number))
    assert "being deleted (started) by `tuner gc`" in shown.stdout

    rerun = gc_json(root, "kill")  # the policy the killed run saved
    outcomes = {t["number"]: t["outcome"] for t in rerun["trials"]}
    assert outcomes == {n: ("resumed" if n == number else "deleted") for n in planned}
    assert [d["state"] for d in _deletions(root.db_url)] == ["DONE"] * 3
    now = root.contents("kill")
    for other in planned:
        assert not any(k in now for k in trial_files_before(before, "kill", other))
    survivor = trial_files_before(before, "kill", best)
    assert survivor and survivor.items() <= now.items()
    assert used_before - root.used_bytes("kill") == plan["bytesFreed"]


def trial_files_before(contents: dict[str, str], study: str, number: int) -> dict[str, str]:
    name = f"trial-{number:04d}"
    marks = (f"{study}/{name}.kept/", f"{study}/{name}/export/", f"/.archives/{name}")
    return {k: v for k, v in contents.items() if any(m in k for m in marks)}


# -- downloads in flight ----------------------------------------------------------------------


@dataclass
class SlowDownload:
    """A GET read through a tiny receive window: the server stays in the middle of sending
    for as long as this client does not read."""

    status: int
    headers: dict[str, str]
    sock: socket.socket
    body: bytearray

    @classmethod
    def start(cls, server: RunningServer, path: str) -> SlowDownload:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(60)
        sock.connect((host, int(port)))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
            f"Authorization: Bearer {server.read_token}\r\n\r\n".encode()
        )
        data = bytearray()
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return cls(int(lines[0].split()[1]), headers, sock, bytearray(rest))

    def finish(self) -> bytes:
        while chunk := self.sock.recv(1 << 20):
            self.body += chunk
        self.sock.close()
        return bytes(self.body)


@pytest.fixture
def served(root: Root, tmp_path: Path) -> Iterator[RunningServer]:
    """A real server (2 slots) on the root, with downloads pinned for 1.5 s at a time."""
    overrides = {
        **root.aws,
        "TUNER_ARTIFACT_ROOT": root.url or str(root.local),
        "TUNER_WORK_DIR": str(root.local),
        "TUNER_DOWNLOAD_PIN_SECONDS": "1.5",
    }
    server = start_server(root.db_url, tmp_path, slots=2, env_overrides=overrides)
    yield server
    server.stop()


@pytest.mark.parametrize("root", ["local-sqlite", "s3-postgresql"], indirect=True)
def test_a_download_in_flight_is_not_deleted_and_a_deleted_one_says_why(root, served):
    """A 12 MB model is being downloaded from trial X (the worse of two) while `POST .../gc`
    keeps the best 1: X is skipped (its pin is renewed while the download stalls, past the pin's
    own lifetime), the download completes with the bytes its ETag names; once the pin lapses, gc
    deletes X, and X's model and checkpoint answer 404 ARTIFACT_NOT_FOUND saying that `tuner
    gc` deleted them, when, and by which policy; the best trial still downloads."""
    spec = study_spec("dl", [0.3, 0.9], checkpoint_bytes=12_000_000)
    headers = {"Authorization": f"Bearer {served.write_token}"}
    with httpx.Client(base_url=served.url + "/api/v1", headers=headers, timeout=120) as http:
        submitted = http.post("/studies", json=spec.to_document())
        assert submitted.status_code == 201, submitted.text
        _wait(
            "the study to complete",
            lambda: http.get("/studies/dl").json()["state"] == "COMPLETED",
            180,
            served.log,
        )
        rows = http.get("/studies/dl/trials").json()["data"]
        best, worse = rows[0]["number"], rows[1]["number"]
        assert rows[1]["params"]["x"] == 0.9
        unset = http.post("/studies/dl/gc", json={})  # no policy in the spec, none given
        assert unset.status_code == 422, unset.text
        assert unset.json()["error"]["details"][0]["field"] == "keepBestTrials"
        assert "tuner gc dl --keep-best" in unset.json()["error"]["message"]
        reader = {"Authorization": f"Bearer {served.read_token}"}
        refused = http.post("/studies/dl/gc", json={"keepBestTrials": 1}, headers=reader)
        assert refused.status_code == 403, refused.text

        download = SlowDownload.start(served, f"/api/v1/studies/dl/trials/{worse}/model")
        assert download.status == 200
        size = int(download.headers["content-length"])
        assert size > 10_000_000
        gc = http.post("/studies/dl/gc", json={"keepBestTrials": 1})
        assert gc.status_code == 200, gc.text
        (skipped,) = gc.json()["trials"]
        assert skipped["number"] == worse and skipped["outcome"] == "skipped"
        assert "a download of it is in flight" in skipped["note"]
        assert gc.json()["bytesFreed"] == 0
        time.sleep(2.5)  # longer than a pin lives: renewed while the download stalls
        dry = http.post("/studies/dl/gc", json={"dryRun": True}).json()
        assert [t["outcome"] for t in dry["trials"]] == ["skipped"]
        body = download.finish()
        assert len(body) == size
        assert f'"{hashlib.sha256(body).hexdigest()}"' == download.headers["etag"]

        time.sleep(2.0)  # the pin lapses
        gc = http.post("/studies/dl/gc", json={}).json()
        (deleted,) = gc["trials"]
        assert deleted["number"] == worse and deleted["outcome"] == "deleted"
        assert gc["bytesFreed"] == deleted["bytes"] > 12_000_000
        for what in ("model", "checkpoint"):
            gone = http.get(f"/studies/dl/trials/{worse}/{what}")
            assert gone.status_code == 404, gone.text
            error = gone.json()["error"]
            assert error["code"] == "ARTIFACT_NOT_FOUND"
            assert f"trial {worse} of study 'dl'" in error["message"]
            assert "were deleted by `tuner gc` on " in error["message"]
            assert "(keepBestTrials=1: rank 2 of 2 COMPLETED by rmse" in error["message"]
        detail = http.get(f"/studies/dl/trials/{worse}").json()
        assert detail["checkpoints"] == [] and detail["exports"] == []
        record = detail["deleted"]
        assert record["state"] == "DONE" and record["trigger"] == "gc"
        assert record["bytes"] == deleted["bytes"] and record["paths"] == deleted["paths"]
        assert http.get(f"/studies/dl/trials/{best}").json()["deleted"] is None
        assert http.get("/studies/dl/best/model").status_code == 200
    shown = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "trial", "dl", str(worse)],
        env={**os.environ, "TUNER_SERVER": served.url, "TUNER_TOKEN": served.read_token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "deleted by `tuner gc` on " in shown.stdout
