"""An artifact root in object storage, against a real S3-compatible server on loopback:
verified uploads, ranged reads, two workers with their own disks behind one API server, a worker
killed in the middle of an upload, and deleting a study's objects."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.object_store_server import S3Server, ThrottlingProxy, start_s3_server
from tests.server import REPO, RunningServer, start_server
from tests.test_workers import start_worker
from tuner.artifacts.object_store import ObjectStore, ObjectStoreError, safe_key
from tuner.domain.errors import UnsafePathError
from tuner.persistence import Database

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket, and this process's AWS variables pointing at the server."""
    name = f"tuner-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(name)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return name


def test_uploads_are_verified_and_read_back_by_range(bucket, tmp_path):
    store = ObjectStore(f"s3://{bucket}/root")
    small = tmp_path / "small.bin"
    small.write_bytes(b"0123456789" * 100)
    large = tmp_path / "large.bin"  # over the part size: a multipart upload, its ETag checked
    large.write_bytes(os.urandom(12 * 1024 * 1024 + 17))
    stored_small = store.upload_file(small, "study/trial-0000.log")
    stored_large = store.upload_file(large, "study/trial-0000.kept/model.ckpt-5.data")
    assert stored_small.sha256 == hashlib.sha256(small.read_bytes()).hexdigest()
    assert stored_large.size == large.stat().st_size
    assert store.size("study/trial-0000.kept/model.ckpt-5.data") == large.stat().st_size
    assert store.size("study/nothing") is None
    data = large.read_bytes()
    assert (
        store.read_bytes("study/trial-0000.kept/model.ckpt-5.data", 5_000_000, 5_000_100)
        == (data[5_000_000:5_000_100])
    )
    assert store.read_bytes("study/trial-0000.log", 990) == small.read_bytes()[990:]
    assert store.keys("study") == [
        "study/trial-0000.kept/model.ckpt-5.data",
        "study/trial-0000.log",
    ]
    assert store.delete_prefix("study") == 2
    assert store.size("study/trial-0000.log") is None
    for unsafe in ("../other/x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(UnsafePathError):
            safe_key(unsafe)


def test_an_object_damaged_on_the_way_is_detected_and_uploaded_again(s3, bucket, tmp_path):
    """A byte flipped between the worker and the store: the stored ETag does not match the
    file's MD5, so the file is uploaded again, and what is stored is the file."""
    proxy = _proxy_to(s3)
    try:
        os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint
        store = ObjectStore(f"s3://{bucket}/root")
        local = tmp_path / "model.ckpt-7.data-00000-of-00001"
        local.write_bytes(os.urandom(200_000))
        proxy.corrupt_at = 150_000  # well inside the body of the first PUT
        stored = store.upload_file(local, "s/trial-0000.kept/model.ckpt-7.data-00000-of-00001")
        assert proxy.corrupted == 1
        assert proxy.uploaded > 2 * local.stat().st_size  # it went up twice
        assert stored.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
        os.environ["AWS_ENDPOINT_URL"] = s3.endpoint
        direct = ObjectStore(f"s3://{bucket}/root")
        assert direct.read_bytes(stored.key) == local.read_bytes()
    finally:
        proxy.stop()


def test_an_unreachable_store_is_named_in_the_error(bucket, tmp_path, monkeypatch):
    from tests.server import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing there
    store = ObjectStore(f"s3://{bucket}/root", request_retry_seconds=0.5, attempts=1)
    local = tmp_path / "f.bin"
    local.write_bytes(b"x" * 10)
    with pytest.raises(ObjectStoreError, match=rf"s3://{bucket}/root/s/f\.bin"):
        store.upload_file(local, "s/f.bin")


# -- many machines --------------------------------------------------------------------------------


def _env(s3_env: dict[str, str], db_url: str, work_dir: Path, root: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(s3_env)
    env.update(
        TUNER_DATABASE_URL=db_url,
        TUNER_ARTIFACT_ROOT=root,
        TUNER_WORK_DIR=str(work_dir),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_STOP_GRACE_SECONDS="3",
    )
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _server(
    db_url: str, tmp_path: Path, s3_env: dict[str, str], root: str, **extra: str
) -> RunningServer:
    overrides = {
        **s3_env,
        "TUNER_ARTIFACT_ROOT": root,
        "TUNER_WORK_DIR": str(tmp_path / "api-work"),
        **extra,
    }
    return start_server(db_url, tmp_path, slots=0, env_overrides=overrides)


def _api(server: RunningServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.write_token}"}
    return httpx.Client(base_url=server.url + "/api/v1", headers=headers, timeout=60)


def _submit(http: httpx.Client, spec: str) -> None:
    created = http.post("/studies", content=spec, headers={"Content-Type": "application/yaml"})
    assert created.status_code == 201, created.text


def _proxy_to(s3: S3Server, **options: float) -> ThrottlingProxy:
    host, port = s3.endpoint.removeprefix("http://").split(":")
    return ThrottlingProxy((host, int(port)), **options).start()


def _wait(what: str, check, timeout: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def _query(db_url: str, sql: str) -> list[dict]:
    db = Database(db_url)
    try:
        with db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.exec_driver_sql(sql).all()]
    finally:
        db.dispose()


def _runs(db_url: str) -> list[dict]:
    """Each run's state and worker, and its kept checkpoint's stored archive."""
    return _query(
        db_url,
        "SELECT r.number, r.state, r.worker, c.archive_path, c.archive_sha256 "
        "FROM tuner_trial_runs r LEFT JOIN tuner_checkpoints c ON c.run_id = r.id ORDER BY r.id",
    )


def _stored_export_hashes(db_url: str) -> list[str]:
    sql = "SELECT archive_sha256 FROM tuner_exports WHERE archive_path IS NOT NULL"
    return [row["archive_sha256"] for row in _query(db_url, sql)]


def _trial_files(work_dir: Path) -> list[Path]:
    return [p for p in work_dir.rglob("trial-*") if ".warm" not in p.parts]


@pytest.mark.tf
def test_two_workers_upload_and_the_api_serves_the_best_model_from_the_store(
    s3, bucket, pg_url, tmp_path
):
    """Two workers with separate disks and one API server share only PostgreSQL and the bucket;
    `tuner pull` gets the best SavedModel from a worker's upload through the API."""
    root = f"s3://{bucket}/studies"
    server = _server(pg_url, tmp_path, s3.env(), root)
    work = [tmp_path / "host-a", tmp_path / "host-b"]
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [
        start_worker(_env(s3.env(), pg_url, w, root), 1, log)
        for w, log in zip(work, logs, strict=True)
    ]
    spec = (REPO / "examples/house_prices/spec.yaml").read_text()
    spec = spec.replace('"--train-steps=300", "--eval-every-steps=50"', '"--train-steps=60"')
    spec = spec.replace("maxTrials: 6", "maxTrials: 2")
    assert '"--train-steps=60"' in spec and "maxTrials: 2" in spec
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(spec)
    cli = [sys.executable, "-m", "tuner.cli"]
    auth = ["--server", server.url, "--token", server.write_token]
    try:
        done = subprocess.run([*cli, "submit", str(spec_path), *auth], capture_output=True)
        assert done.returncode == 0, done.stderr
        _wait(
            "both trials to complete",
            lambda: [r["state"] for r in _runs(pg_url)] == ["COMPLETED", "COMPLETED"],
            240,
            [*logs, server.log_path],
        )
        runs = _runs(pg_url)
        assert len({r["worker"] for r in runs}) == 2, runs  # one trial on each host
        assert all(r["archive_path"] and r["archive_sha256"] for r in runs), runs
        # Each worker cleans its local copy once the store has it (just after the end is recorded).
        _wait(
            "the local copies to be cleaned",
            lambda: all(_trial_files(directory) == [] for directory in work),
            15,
            logs,
        )

        pulled = subprocess.run(
            [*cli, "pull", "house-prices-demo", "--to", str(tmp_path / "serving"), *auth],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        assert pulled.returncode == 0, pulled.stdout + pulled.stderr
        versions = list((tmp_path / "serving" / "house-prices-demo").iterdir())
        assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
        assert "serving_default" in pulled.stdout

        with _api(server) as http:
            whole = http.get("/studies/house-prices-demo/best/model")
            assert whole.status_code == 200, whole.text
            etag = whole.headers["etag"]
            assert etag == f'"{hashlib.sha256(whole.content).hexdigest()}"'
            assert int(whole.headers["content-length"]) == len(whole.content)
            part = http.get(
                "/studies/house-prices-demo/best/model",
                headers={"Range": "bytes=100-1099", "If-Range": etag},
            )
            assert part.status_code == 206
            assert part.content == whole.content[100:1100]
            assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
            head = http.head("/studies/house-prices-demo/best/model")
            assert head.status_code == 200 and head.headers["etag"] == etag
            outside = http.get(
                "/studies/house-prices-demo/best/model",
                headers={"Range": f"bytes={len(whole.content) + 10}-"},
            )
            assert outside.status_code == 416
            checkpoint = http.get("/studies/house-prices-demo/best/checkpoint")
            assert checkpoint.status_code == 200
            names = _members(checkpoint.content, tmp_path / "ckpt.tar.gz")
            assert "checkpoint/checkpoint" in names
            assert any(n.endswith(".index") for n in names)
            log = http.get("/studies/house-prices-demo/trials/0/log")
            assert log.status_code == 200 and int(log.headers["x-log-size"]) > 0
            detail = http.get("/studies/house-prices-demo/trials/1").json()
            assert detail["state"] == "COMPLETED"

            store = ObjectStore(root)
            keys = store.keys("house-prices-demo")
            assert any("/eval/events.out.tfevents." in k for k in keys), keys
            assert any(k.endswith("trial-0000.log") for k in keys)
            assert any("/hparams/" in k for k in keys)  # the study's experiment
            sessions = [k for k in keys if k.endswith(".tuner-hparams") and "/trial-" in k]
            assert {k.split("/")[-2] for k in sessions} == {
                f"trial-{r['number']:04d}" for r in runs
            }

            for worker in workers:
                _stop(worker)
            deleted = http.delete("/studies/house-prices-demo", params={"deleteArtifacts": "true"})
            assert deleted.status_code == 204, deleted.text
            assert store.keys("house-prices-demo") == []
    finally:
        for worker in workers:
            _stop(worker)
        server.stop()


def _members(data: bytes, path: Path) -> list[str]:
    path.write_bytes(data)
    with tarfile.open(path, "r:gz") as tar:
        return tar.getnames()


SYNTHETIC_SPEC = """
name: big
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=20", "--export", "--checkpoint-bytes=6000000"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 1
  maxParallelTrials: 1
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""


def test_a_worker_killed_mid_upload_leaves_nothing_the_api_would_serve(
    s3, bucket, pg_url, tmp_path
):
    """SIGKILL while the trial's artifacts go up a slow link: the trial is not COMPLETED, the
    API serves no archive of it; a worker that takes the run over runs it again and stores it."""
    root = f"s3://{bucket}/studies"
    server = _server(pg_url, tmp_path, s3.env(), root)
    proxy = _proxy_to(s3, bytes_per_second=3e6)
    slow_log, fast_log = tmp_path / "slow.log", tmp_path / "fast.log"
    timeouts = {"TUNER_HEARTBEAT_TIMEOUT": "4"}
    slow_env = _env(s3.env(proxy.endpoint), pg_url, tmp_path / "slow", root) | timeouts
    slow = start_worker(slow_env, 1, slow_log)
    fast: subprocess.Popen[bytes] | None = None
    try:
        with _api(server) as http:
            _submit(http, SYNTHETIC_SPEC)
            _wait("the upload to start", lambda: proxy.uploaded > 2_000_000, 120, [slow_log])
            slow.send_signal(signal.SIGKILL)
            slow.wait()
            uploaded_before_kill = proxy.uploaded
            assert uploaded_before_kill < 20_000_000  # killed before the upload could finish
            (run,) = _runs(pg_url)
            assert run["state"] == "RUNNING" and run["archive_path"] is None, run
            model = http.get("/studies/big/trials/0/model")
            assert model.status_code == 404, model.text
            assert "not in the object store yet" in model.json()["error"]["message"]
            assert http.get("/studies/big/best/checkpoint").status_code == 404
            time.sleep(1.5)
            alive = subprocess.run(
                [sys.executable, "-m", "tuner.cli", "worker-alive", "--max-age", "1"],
                env=slow_env,
                capture_output=True,
                text=True,
            )
            assert alive.returncode == 1 and "last turned" in alive.stderr + alive.stdout

            fast_env = _env(s3.env(), pg_url, tmp_path / "fast", root) | timeouts
            fast = start_worker(fast_env, 1, fast_log)
            _wait(
                "the run to be taken over and run again",
                lambda: [r["state"] for r in _runs(pg_url)] == ["STOPPED", "COMPLETED"],
                120,
                [fast_log, server.log_path],
            )
            healthy = subprocess.run(
                [sys.executable, "-m", "tuner.cli", "worker-alive"],
                env=fast_env,
                capture_output=True,
                text=True,
            )
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr
            stopped, completed = _runs(pg_url)
            assert stopped["archive_path"] is None and completed["archive_path"] is not None
            best = http.get("/studies/big/best/model")
            assert best.status_code == 200, best.text
            (export_sha256,) = _stored_export_hashes(pg_url)
            assert best.headers["etag"] == f'"{export_sha256}"'
            assert hashlib.sha256(best.content).hexdigest() == export_sha256
            names = _members(best.content, tmp_path / "model.tar.gz")
            assert any(n.endswith("variables/variables.data-00000-of-00001") for n in names)
    finally:
        proxy.stop()
        for process in (slow, fast):
            if process is not None:
                _stop(process)
        server.stop()


OUTAGE_SPEC = """
name: outage
trainer: synthetic
args: ["--train-steps=60", "--eval-every-steps=20", "--step-seconds=1.5"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 3
  maxParallelTrials: 1
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""


def test_a_store_outage_stops_uploads_and_starts_without_overrunning_the_budget(
    s3, bucket, pg_url, tmp_path
):
    """The store goes away while a trial runs: its log is read from the store while it ran,
    its upload is retried and then given up (STOPPED, not counted, local copy kept), no trial
    starts while the store is unreachable, and after it is back the study completes its
    budget exactly."""
    root = f"s3://{bucket}/studies"
    server = _server(pg_url, tmp_path, s3.env(), root)
    proxy = _proxy_to(s3)
    log = tmp_path / "worker.log"
    env = _env(s3.env(proxy.endpoint), pg_url, tmp_path / "work", root) | {
        "TUNER_LOG_UPLOAD_SECONDS": "0.3",
        "TUNER_UPLOAD_GIVE_UP_SECONDS": "3",
    }
    worker = start_worker(env, 1, log)
    try:
        with _api(server) as http:
            _submit(http, OUTAGE_SPEC)

            def running_log_read() -> bool:
                answer = http.get("/studies/outage/trials/0/log")
                return answer.status_code == 200 and b"step 20" in answer.content

            _wait("the running trial's log in the store", running_log_read, 60, [log])
            assert [r["state"] for r in _runs(pg_url)] == ["RUNNING"]
            proxy.cut()
            _wait(
                "the first trial to be stopped for its upload",
                lambda: [r["state"] for r in _runs(pg_url)][:1] == ["STOPPED"],
                60,
                [log],
            )
            detail = http.get("/studies/outage/trials/0").json()
            assert "could not be stored" in detail["failureReason"], detail
            assert (tmp_path / "work" / "outage" / "trial-0000" / "eval").is_dir()  # kept
            time.sleep(3)  # the store is still down: no trial may start meanwhile
            assert len(_runs(pg_url)) == 1, _runs(pg_url)
            proxy.restore()
            _wait(
                "the study to complete",
                lambda: http.get("/studies/outage").json()["state"] == "COMPLETED",
                120,
                [log],
            )
            states = [r["state"] for r in _runs(pg_url)]
            assert states == ["STOPPED", "COMPLETED", "COMPLETED", "COMPLETED"], states
            assert http.get("/studies/outage/best/model").status_code == 404  # no --export
            assert http.get("/studies/outage/best/checkpoint").status_code == 200
    finally:
        proxy.stop()
        _stop(worker)
        server.stop()


SMALL_EXPORT_SPEC = """
name: hang
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10", "--export"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 1
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""


def test_a_download_while_the_store_hangs_is_a_503_before_any_byte(s3, bucket, pg_url, tmp_path):
    """The store stops answering (connections open, nothing passes): a model download answers
    503 with `Retry-After` within the server's wait for the first bytes, never a 200 with a
    `Content-Length` and then nothing; once the store answers again, the download works."""
    root = f"s3://{bucket}/studies"
    hanging = _proxy_to(s3)
    server = _server(pg_url, tmp_path, s3.env(hanging.endpoint), root)
    log = tmp_path / "worker.log"
    worker = start_worker(_env(s3.env(), pg_url, tmp_path / "work", root), 1, log)
    try:
        with _api(server) as http:
            _submit(http, SMALL_EXPORT_SPEC)
            _wait(
                "the trial to be stored",
                lambda: [r["state"] for r in _runs(pg_url)] == ["COMPLETED"],
                120,
                [log, server.log_path],
            )
            hanging.hang()
            asked = time.monotonic()
            answer = http.get("/studies/hang/best/model", timeout=60)
            took = time.monotonic() - asked
            assert answer.status_code == 503, (answer.status_code, answer.headers)
            assert answer.headers["Retry-After"]
            assert answer.json()["error"]["code"] == "UNAVAILABLE"
            assert "the artifact store does not answer" in answer.json()["error"]["message"]
            assert took < 20, took
            hanging.restore()
            whole = http.get("/studies/hang/best/model", timeout=60)
            assert whole.status_code == 200, whole.text
            (export_sha256,) = _stored_export_hashes(pg_url)
            assert hashlib.sha256(whole.content).hexdigest() == export_sha256
    finally:
        hanging.stop()
        _stop(worker)
        server.stop()


FULL_DISK_SPEC = """
name: full
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10", "--export", "--checkpoint-bytes=20000000"]
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: 3
  maxParallelTrials: 1
  params:
    - {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 100 MiB tmpfs: the worker's own disk, which a trial's archives fill up."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on this machine: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_local_disk_is_the_workers_problem_not_the_stores(
    s3, bucket, pg_url, tmp_path, small_disk
):
    """The trial fits the worker's disk, its archives do not (ENOSPC while they are built):
    the trial is STOPPED at once with the disk named (not after minutes of upload retries as
    if the store had failed), its local copy is removed, and the worker, its disk free again,
    starts the next trial."""
    root = f"s3://{bucket}/studies"
    server = _server(pg_url, tmp_path, s3.env(), root)
    log = tmp_path / "worker.log"
    env = _env(s3.env(), pg_url, small_disk / "work", root)
    worker = start_worker(env, 1, log)
    try:
        with _api(server) as http:
            _submit(http, FULL_DISK_SPEC)
            _wait(
                "the first trial to be given up",
                lambda: any(r["state"] == "STOPPED" for r in _runs(pg_url)),
                120,
                [log, server.log_path],
            )
            first = next(r for r in _runs(pg_url) if r["state"] == "STOPPED")
            reason = _query(
                pg_url,
                f"SELECT failure_reason FROM tuner_trial_runs WHERE number = {first['number']}",
            )[0]["failure_reason"]
            assert "disk of worker" in reason and "is full" in reason, reason
            assert "could not be stored in" not in reason  # not taken for the store's fault
            # Its local copy went: the disk is free again, and the worker goes on.
            _wait(
                "the disk to be freed",
                lambda: shutil.disk_usage(small_disk).used < 8 * 1024 * 1024,
                30,
                [log],
            )
            _wait("the next trial to start", lambda: len(_runs(pg_url)) >= 2, 90, [log])
            assert "upload of run" not in log.read_text()  # no retries of the store
    finally:
        _stop(worker)
        server.stop()
