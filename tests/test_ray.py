"""The Ray executor on a real Ray cluster: two `ray start` nodes on this machine.

Each node declares 2 CPUs and 2 GPUs (Ray hands out GPU ids whether or not a device exists:
placement and `CUDA_VISIBLE_DEVICES` are Ray's, which is what is checked), has its own work dir
and the object store's credentials, as a real deployment's nodes would. The manager is a real
`tuner run` or `tuner worker --executor ray` process, the database a real PostgreSQL (through
its socket: the tests run in a network namespace with only loopback, see tests/ray_cluster.py),
the object store a real S3-compatible server on loopback. No part of Ray is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import ProgrammingError

from tests.conftest import new_pg_database
from tests.object_store_server import S3Server, start_s3_server
from tests.ray_cluster import RayCluster, loopback_only, start_cluster, start_node
from tests.server import start_server
from tests.test_trial_environment import assert_no_service_secret
from tests.test_warm_starts import processes_under
from tuner.domain.entities import TrialRun
from tuner.domain.errors import StudyNotFoundError
from tuner.persistence import Database
from tuner.persistence import repository as repo
from tuner.persistence.leases import take_over
from tuner.trial.execution import process_exists

pytest.importorskip("ray", reason="the Ray tests need the ray extra (scripts/setup.sh installs it)")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]

if not loopback_only():
    pytest.skip(
        "Ray binds to the machine's address: these tests run in a network namespace with "
        "only loopback (scripts/test.sh runs them under `unshare -n`)",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[1]
TUNER = [sys.executable, "-m", "tuner.cli"]

REGISTRY = f"""
trainers:
  probe:
    module: tests.trainers.device_probe
    workingDir: {REPO}
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def nodes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nodes")


def node_env(s3: S3Server, nodes_dir: Path, name: str) -> dict[str, str]:
    """A node's environment: its own work dir, and the object store's credentials."""
    return {**os.environ, **s3.env(), "TUNER_WORK_DIR": str(nodes_dir / f"work-{name}")}


@pytest.fixture(scope="module")
def cluster(s3: S3Server, nodes_dir: Path) -> Iterator[RayCluster]:
    envs = {name: node_env(s3, nodes_dir, name) for name in ("a", "b")}
    running = start_cluster(envs, cpus=2, gpus=2, log_dir=nodes_dir)
    yield running
    running.stop()


@pytest.fixture
def db_url() -> Iterator[str]:
    with new_pg_database() as url:
        yield url


def manager_env(
    cluster: RayCluster,
    db_url: str,
    tmp_path: Path,
    s3: S3Server,
    *,
    bucket: str | None = None,
    **extra: str,
) -> dict[str, str]:
    registry = tmp_path / "trainers.yaml"
    registry.write_text(REGISTRY)
    env = {**os.environ, **cluster.env, **s3.env()}
    if bucket is not None:
        s3.create_bucket(bucket)
        env["TUNER_ARTIFACT_ROOT"] = f"s3://{bucket}/studies"
        env["TUNER_WORK_DIR"] = str(tmp_path / "manager-work")
    else:
        env["TUNER_ARTIFACT_ROOT"] = str(tmp_path / "artifacts")
    env.update(
        TUNER_DATABASE_URL=db_url,
        TUNER_TRAINERS_FILE=str(registry),
        TUNER_POLL_INTERVAL="0.1",
        TUNER_STOP_GRACE_SECONDS="3",
        **extra,
    )
    return env


def write_spec(tmp_path: Path, name: str, *, args: list[str], **fields: Any) -> Path:
    hyper = fields.pop("hyperparameters", {})
    document = {
        "name": name,
        "trainer": "probe",
        "seed": 3,
        "args": args,
        **fields,
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": 2,
            "maxParallelTrials": 2,
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
            **hyper,
        },
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


def runs_of(db_url: str, study: str) -> list[TrialRun]:
    """The study's runs, oldest first ([] while the manager has not created it yet)."""
    db = Database(db_url)
    try:
        with db.session() as s:
            return sorted(repo.runs(s, repo.get_study(s, study).id), key=lambda r: r.id)
    except (StudyNotFoundError, ProgrammingError):
        return []
    finally:
        db.dispose()


def study_of(db_url: str, study: str) -> Any:
    """The study (None while the manager has not created it yet)."""
    db = Database(db_url)
    try:
        with db.session() as s:
            return repo.get_study(s, study)
    except (StudyNotFoundError, ProgrammingError):
        return None
    finally:
        db.dispose()


def trial_json(env: dict[str, str], study: str, number: int) -> dict[str, Any]:
    done = subprocess.run(
        [*TUNER, "trial", study, str(number), "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def wait_for(what: str, check: Any, timeout: float = 90, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*TUNER, "-v", *command], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def on_ray(cluster: RayCluster) -> list[str]:
    return ["--executor", "ray", "--ray-address", cluster.address]


def overlapping(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["started"] < b["ended"] and b["started"] < a["ended"])


# ----------------------------------------------------------------------------------------------


def test_trials_run_on_both_nodes_on_their_own_gpus_and_the_best_model_comes_from_the_store(
    cluster, s3, nodes_dir, db_url, tmp_path
):
    env = manager_env(
        cluster,
        db_url,
        tmp_path,
        s3,
        bucket=f"ray-{uuid.uuid4().hex[:8]}",
        TUNER_KEEP_LOCAL_COPIES="1",
    )
    args = ["--train-steps=30", "--eval-every-steps=10", "--step-seconds=0.3", "--export"]
    spec = write_spec(
        tmp_path,
        "ray-gpus",
        args=args,
        gpusPerTrial=1,
        cpusPerTrial=1,
        hyperparameters={"maxTrials": 4, "maxParallelTrials": 4},
    )
    # `tuner serve` with its embedded manager on Ray; the study comes over the API.
    overrides = {k: v for k, v in env.items() if k.startswith(("TUNER_", "AWS_", "RAY_"))}
    server = start_server(
        db_url, tmp_path, slots=4, extra_args=tuple(on_ray(cluster)), env_overrides=overrides
    )
    try:
        http = httpx.Client(
            base_url=server.url + "/api/v1",
            headers={"Authorization": f"Bearer {server.write_token}"},
            timeout=60,
        )
        created = http.post("/studies", json=json.loads(spec.read_text()))
        assert created.status_code == 201, created.text
        wait_for(
            "the study to complete",
            lambda: (s := study_of(db_url, "ray-gpus")) is not None and s.state != "RUNNING",
            timeout=240,
            log=server.log_path,
        )
        assert study_of(db_url, "ray-gpus").state == "COMPLETED", server.log()[-5000:]
        assert server.log().count("sent to Ray (1 CPU(s), 1 GPU(s))") == 4
        detail = http.get("/studies/ray-gpus/trials/0").json()
        assert detail["executor"]["name"] == "ray"

        # The best model, pulled over the API by a machine that ran none of the trials.
        served = tmp_path / "served"
        api = ["--server", server.url, "--token", server.read_token]
        pulled = subprocess.run(
            [*TUNER, "pull", "ray-gpus", "--to", str(served), "--no-check", *api],
            cwd=tmp_path,
            env={**os.environ, "TUNER_WORK_DIR": str(tmp_path / "puller-work")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert len(list(served.glob("ray-gpus/*/saved_model.pb"))) == 1, pulled.stdout
    finally:
        server.stop()
    runs = runs_of(db_url, "ray-gpus")
    assert [r.state for r in runs] == ["COMPLETED"] * 4

    ids = cluster.node_ids()
    node_of = {node_id: name for name, node_id in ids.items()}
    trials: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for run in runs:
        assert run.number is not None
        detail = trial_json(env, "ray-gpus", run.number)
        executor = detail["executor"]
        assert executor["name"] == "ray"
        assert executor["taskId"]
        name = node_of[executor["nodeId"]]  # a node of this cluster
        # The trial's files are on that node's disk, where its supervisor ran it.
        record = nodes_dir / f"work-{name}" / "ray-gpus" / f"trial-{run.number:04d}"
        facts = json.loads((record / "devices.json").read_text())
        trials[name].append(facts)
        # Ray chose its GPU; the trial sees that one only.
        assert facts["env"]["CUDA_VISIBLE_DEVICES"] in {"0", "1"}, facts["env"]
        assert facts["env"]["OMP_NUM_THREADS"] == "1"
        # Nothing of the service's: not the database URL, not the store's credentials.
        assert_no_service_secret(facts["environ"])
        assert not [k for k in facts["environ"] if k.startswith(("AWS_", "RAY_"))]
        assert db_url.split("/")[-1] not in json.dumps(facts["environ"])
    assert trials["a"] and trials["b"], "every trial ran on the same node"
    for on_one_node in trials.values():
        for i, first in enumerate(on_one_node):
            for second in on_one_node[i + 1 :]:
                if overlapping(first, second):
                    assert (
                        first["env"]["CUDA_VISIBLE_DEVICES"]
                        != (second["env"]["CUDA_VISIBLE_DEVICES"])
                    )

    # The API's machine ran none of them: what it served came from the store.
    assert not (tmp_path / "manager-work" / "ray-gpus").exists()


def test_a_pruned_trial_and_a_stopped_study_reach_the_trainers_on_their_nodes(
    cluster, s3, nodes_dir, db_url, tmp_path
):
    env = manager_env(cluster, db_url, tmp_path, s3, bucket=f"ray-{uuid.uuid4().hex[:8]}")
    # The first trial is good; the others are worse at every step and the median prunes them.
    args = ["--train-steps=60", "--eval-every-steps=10", "--step-seconds=0.3"]
    pruning = write_spec(
        tmp_path,
        "ray-prune",
        args=args,
        earlyStopping={"type": "median", "startupTrials": 1},
        hyperparameters={
            "maxTrials": 4,
            "maxParallelTrials": 1,
            "algorithm": "GRID_SEARCH",
            "params": [
                {"parameterName": "x", "type": "DISCRETE", "discreteValues": [0.3, 5, 6, 7]}
            ],
        },
    )
    done = subprocess.run(
        [*TUNER, "-v", "run", str(pruning), "--no-view", *on_ray(cluster)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    states = {r.params["x"]: r.state for r in runs_of(db_url, "ray-prune")}
    assert states[0.3] == "COMPLETED", states
    assert "PRUNED" in states.values(), states
    pruned = [r for r in runs_of(db_url, "ray-prune") if r.state == "PRUNED"]
    assert all(trial_json(env, "ray-prune", r.number)["lastStep"] < 60 for r in pruned)  # type: ignore[arg-type]

    # A study stopped while its trials run: each node stops its trainer and records it.
    long_args = ["--train-steps=400", "--eval-every-steps=10", "--step-seconds=0.5"]
    stopping = write_spec(tmp_path, "ray-stop", args=long_args)
    log = tmp_path / "run.log"
    manager = start(
        ["run", str(stopping), "--no-view", "--executor", "ray", "--ray-address", cluster.address],
        env,
        log,
    )
    try:
        running = wait_for(
            "two trials running with an eval each",
            lambda: (
                [
                    r
                    for r in runs_of(db_url, "ray-stop")
                    if r.state == "RUNNING" and r.pid and r.executor.node
                ]
                if len(list(nodes_dir.glob("work-*/ray-stop/trial-*/eval"))) >= 2
                else []
            ),
            log=log,
        )
        pids = [r.pid for r in runs_of(db_url, "ray-stop") if r.pid]
        assert len(running) == 2 and len(pids) == 2
        asked = time.monotonic()
        subprocess.run([*TUNER, "stop", "ray-stop"], cwd=REPO, env=env, check=True, timeout=60)
        wait_for(
            "the trainers to stop",
            lambda: not any(process_exists(p) for p in pids if p),
            timeout=10,
            log=log,
        )
        stopped_in = time.monotonic() - asked
        assert stopped_in < 4.0, stopped_in  # a 0.5 s poll, SIGTERM, the trainer's exit
        wait_for(
            "the stops recorded",
            lambda: all(r.state == "STOPPED" for r in runs_of(db_url, "ray-stop")),
            timeout=30,
            log=log,
        )
        assert {r.failure_reason for r in runs_of(db_url, "ray-stop")} == {"study stopped"}
        assert manager.wait(timeout=60) == 130
    finally:
        stop(manager)
    assert processes_under(nodes_dir) == []


def test_a_run_taken_from_its_task_cancels_the_task_and_its_trainer(
    cluster, s3, nodes_dir, db_url, tmp_path
):
    env = manager_env(cluster, db_url, tmp_path, s3, bucket=f"ray-{uuid.uuid4().hex[:8]}")
    args = ["--train-steps=400", "--eval-every-steps=10", "--step-seconds=0.5"]
    spec = write_spec(tmp_path, "ray-lost", args=args, hyperparameters={"maxParallelTrials": 1})
    log = tmp_path / "worker.log"
    worker = start(
        ["run", str(spec), "--no-view"],
        {**env, "TUNER_EXECUTOR": "ray", "TUNER_RAY_ADDRESS": cluster.address},
        log,
    )
    try:
        run = wait_for(
            "a trial running on a node",
            lambda: next(
                (
                    r
                    for r in runs_of(db_url, "ray-lost")
                    if r.state == "RUNNING" and r.pid and r.executor.node
                ),
                None,
            ),
            log=log,
        )
        # Another manager takes the run over (as it would once the lease looked stale).
        db = Database(db_url)
        try:
            with db.session() as s:
                assert take_over(s, run, reason="taken over by a test")
        finally:
            db.dispose()
        wait_for(
            "the trainer to be killed", lambda: not process_exists(run.pid), timeout=15, log=log
        )
        wait_for(
            "the task's cancellation",
            lambda: (
                "its Ray task is cancelled" in log.read_text()
                or "its lease was taken over" in log.read_text()
            ),
            timeout=15,
            log=log,
        )
        taken = next(r for r in runs_of(db_url, "ray-lost") if r.id == run.id)
        assert (taken.state, taken.failure_reason) == ("STOPPED", "taken over by a test")
        wait_for(
            "the next trial on a node",
            lambda: any(
                r.state == "RUNNING" and r.executor.node for r in runs_of(db_url, "ray-lost")
            ),
            log=log,
        )
    finally:
        stop(worker)
    # The manager asked its node to stop the trial it still ran, and the node recorded it.
    others = [r for r in runs_of(db_url, "ray-lost") if r.id != run.id]
    assert others and all(r.state == "STOPPED" for r in others), others
    assert all("interrupted: its manager stopped" in (r.failure_reason or "") for r in others)
    assert processes_under(nodes_dir / "work-a" / "ray-lost") == []
    assert processes_under(nodes_dir / "work-b" / "ray-lost") == []


def test_a_study_bigger_than_any_node_waits_with_its_reason(cluster, s3, db_url, tmp_path):
    env = manager_env(cluster, db_url, tmp_path, s3, bucket=f"ray-{uuid.uuid4().hex[:8]}")
    spec = write_spec(tmp_path, "ray-big", args=["--train-steps=10"], gpusPerTrial=3)
    log = tmp_path / "run.log"
    manager = start(
        ["run", str(spec), "--no-view", "--executor", "ray", "--ray-address", cluster.address],
        env,
        log,
    )
    try:
        study = wait_for(
            "the study's reason",
            lambda: (s := study_of(db_url, "ray-big")) is not None and s.state_reason and s,
            log=log,
        )
        assert study.state == "RUNNING"
        assert study.state_reason.startswith("waiting: needs 1 CPU(s) and 3 GPU(s) per trial")
        assert "(the largest: 2 CPU(s), 2 GPU(s))" in study.state_reason
        time.sleep(2)
        assert runs_of(db_url, "ray-big") == []  # nothing claimed, nothing queued in Ray
    finally:
        stop(manager)


def test_a_cluster_of_several_nodes_needs_an_object_store(cluster, s3, db_url, tmp_path):
    env = manager_env(cluster, db_url, tmp_path, s3)  # a local artifact root
    done = subprocess.run(
        [*TUNER, "worker", "--executor", "ray", "--ray-address", cluster.address],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "the cluster has 2 nodes" in done.stderr
    assert "set TUNER_ARTIFACT_ROOT to an object store" in done.stderr


def test_a_node_that_dies_mid_trial_has_its_trial_run_again_once(s3, db_url, tmp_path):
    """Its own cluster: the node killed here is gone for good."""
    envs = {name: node_env(s3, tmp_path, name) for name in ("head", "victim")}
    own = start_cluster(envs, cpus=2, gpus=0, log_dir=tmp_path)
    env = manager_env(
        own,
        db_url,
        tmp_path,
        s3,
        bucket=f"ray-{uuid.uuid4().hex[:8]}",
        TUNER_HEARTBEAT_TIMEOUT="8",
    )
    # Long enough (8 s) that the kill lands mid-trial even on a loaded machine.
    args = ["--train-steps=80", "--eval-every-steps=10", "--step-seconds=1.0"]
    spec = write_spec(tmp_path, "ray-kill", args=args, cpusPerTrial=2)
    log = tmp_path / "run.log"
    manager = start(
        ["run", str(spec), "--no-view", "--executor", "ray", "--ray-address", own.address],
        env,
        log,
    )
    try:
        victim_id = own.node_ids()["victim"]
        on_victim = wait_for(
            "a trial with an eval on the victim node",
            lambda: (
                next(
                    (
                        r
                        for r in runs_of(db_url, "ray-kill")
                        if r.state == "RUNNING" and r.pid and r.executor.node == victim_id
                    ),
                    None,
                )
                if list(tmp_path.glob("work-victim/ray-kill/trial-*/eval"))
                else None
            ),
            log=log,
        )
        own.nodes[1].kill()
        wait_for("the trainer to die with its node", lambda: not process_exists(on_victim.pid))
        assert manager.wait(timeout=180) == 0, log.read_text()[-5000:]
    finally:
        stop(manager)
        own.stop()
    runs = runs_of(db_url, "ray-kill")
    states = sorted(r.state for r in runs)
    assert states == ["COMPLETED", "COMPLETED", "STOPPED"], [
        (r.state, r.failure_reason) for r in runs
    ]
    lost = next(r for r in runs if r.state == "STOPPED")
    assert lost.id == on_victim.id
    assert "stopped renewing its lease; the trial runs again" in (lost.failure_reason or "")
    again = [r for r in runs if r.state == "COMPLETED" and r.params == lost.params]
    assert len(again) == 1  # its params ran again, once, on the node that is left
    assert again[0].executor.node != victim_id
    assert study_of(db_url, "ray-kill").state == "COMPLETED"


def test_a_node_joining_a_cluster_without_an_object_store_stops_the_claims(s3, db_url, tmp_path):
    """One node and a local artifact root work; once a second node joins, trials could land
    where the artifact root is not: no trial is claimed, and the study says why."""
    own = start_cluster({"solo": node_env(s3, tmp_path, "solo")}, cpus=2, gpus=0, log_dir=tmp_path)
    env = manager_env(own, db_url, tmp_path, s3)  # a local artifact root
    args = ["--train-steps=400", "--eval-every-steps=10", "--step-seconds=0.3"]
    spec = write_spec(
        tmp_path, "ray-joined", args=args, hyperparameters={"maxTrials": 4, "maxParallelTrials": 1}
    )
    log = tmp_path / "run.log"
    manager = start(["run", str(spec), "--no-view", *on_ray(own)], env, log)
    try:
        wait_for("a first trial", lambda: runs_of(db_url, "ray-joined"), log=log)
        late_env = {**node_env(s3, tmp_path, "late"), **own.env}
        own.nodes.append(
            start_node(
                "late", head_address=own.address, cpus=2, gpus=0, env=late_env, log_dir=tmp_path
            )
        )
        study = wait_for(
            "the study's reason",
            lambda: (
                (s := study_of(db_url, "ray-joined")) is not None
                and (s.state_reason or "").startswith("waiting: the Ray cluster now has 2 nodes")
                and s
            ),
            timeout=60,
            log=log,
        )
        assert "set TUNER_ARTIFACT_ROOT to an object store" in study.state_reason
        claimed = len(runs_of(db_url, "ray-joined"))
        time.sleep(4)
        assert len(runs_of(db_url, "ray-joined")) == claimed  # nothing more was sent
    finally:
        stop(manager)
        own.stop()
