"""Model and checkpoint downloads as files: length, ETag, ranges, HEAD, resumption, one build.

One real server on loopback (SQLite) and two small studies of the synthetic trainer are shared
by every test here: `dl` exports a SavedModel at each eval, `dl-bare` exports nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.artifacts.archives import CACHE_DIR, Archive, checkpoint_archive, export_archive
from tuner.artifacts.store import ArtifactStore
from tuner.client.downloads import partial_files
from tuner.client.rest import Client
from tuner.domain.errors import DownloadError

SPEC = """
name: {name}
trainer: synthetic
args: [{args}]
seed: 3
trainingInput:
  hyperparameters:
    goal: MINIMIZE
    hyperparameterMetricTag: rmse
    maxTrials: 1
    params:
      - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""
STEPS = '"--train-steps=40", "--eval-every-steps=20", "--step-seconds=0.05"'
MODEL = "/api/v1/studies/dl/best/model"
MODEL_PATH = "/studies/dl/best/model"  # as the client names it, below /api/v1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("downloads")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp)
    try:
        url, auth = f"{running.url}/api/v1/studies", write_auth(running)
        for name, args in (("dl", STEPS + ', "--export"'), ("dl-bare", STEPS)):
            spec = SPEC.format(name=name, args=args)
            headers = {**auth, "Content-Type": "application/yaml"}
            assert httpx.post(url, headers=headers, content=spec).status_code == 201
        deadline = time.monotonic() + 60
        for name in ("dl", "dl-bare"):
            while httpx.get(f"{url}/{name}", headers=auth).json()["state"] != "COMPLETED":
                assert time.monotonic() < deadline, running.log()
                time.sleep(0.1)
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with Client(server.url, token=server.write_token) as connected:
        yield connected


def write_auth(server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.write_token}"}


def get(server: RunningServer, path: str = MODEL, **headers: str) -> httpx.Response:
    return httpx.get(server.url + path, headers=_headers(server, headers))


def head(server: RunningServer, path: str = MODEL, **headers: str) -> httpx.Response:
    return httpx.head(server.url + path, headers=_headers(server, headers))


def _headers(server: RunningServer, extra: dict[str, str]) -> dict[str, str]:
    named = {k.replace("_", "-"): v for k, v in extra.items()}
    return {"Authorization": f"Bearer {server.read_token}", **named}


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def cached(server: RunningServer, study: str, pattern: str) -> list[Path]:
    return sorted((server.artifact_root / study / CACHE_DIR).rglob(pattern))


def test_length_etag_and_the_same_bytes_every_time(server):
    first = get(server)
    assert first.status_code == 200
    assert int(first.headers["content-length"]) == len(first.content)
    assert first.headers["etag"] == f'"{hashlib.sha256(first.content).hexdigest()}"'
    assert first.headers["accept-ranges"] == "bytes"
    assert first.headers["content-type"] == "application/gzip"
    assert first.headers["content-disposition"] == (
        'attachment; filename="dl-trial0-step40-savedmodel.tar.gz"'
    )
    second = get(server)
    assert second.headers["etag"] == first.headers["etag"]
    assert second.content == first.content
    # the trial's own route serves the same kept export, so the same archive
    assert get(server, "/api/v1/studies/dl/trials/0/model").content == first.content
    with tarfile.open(fileobj=io.BytesIO(first.content), mode="r:gz") as tar:
        names = tar.getnames()
        assert all(m.mtime == tar.getmembers()[0].mtime and m.uid == 0 for m in tar)
    version = names[0]
    assert names == [
        version,
        f"{version}/saved_model.pb",
        f"{version}/variables",
        f"{version}/variables/variables.index",
    ]


def test_head_has_the_same_headers_and_no_body(server):
    full = get(server)
    for path in (MODEL, "/api/v1/studies/dl/trials/0/checkpoint"):
        answer = head(server, path)
        body = get(server, path)
        assert answer.status_code == 200 and answer.content == b""
        for name in ("content-length", "etag", "accept-ranges", "content-type"):
            assert answer.headers[name] == body.headers[name], name
        assert answer.headers["content-disposition"] == body.headers["content-disposition"]
    assert head(server).headers["etag"] == full.headers["etag"]


def test_a_range_gets_206_and_exactly_that_slice(server):
    full = get(server)
    size = len(full.content)
    part = get(server, range="bytes=10-49")
    assert part.status_code == 206
    assert part.content == full.content[10:50]
    assert part.headers["content-range"] == f"bytes 10-49/{size}"
    assert part.headers["content-length"] == "40"
    assert part.headers["etag"] == full.headers["etag"]

    tail = get(server, range=f"bytes={size // 2}-", if_range=full.headers["etag"])
    assert tail.status_code == 206 and tail.content == full.content[size // 2 :]
    suffix = get(server, range="bytes=-7")
    assert suffix.status_code == 206 and suffix.content == full.content[-7:]


def test_if_range_with_a_stale_etag_gets_the_whole_file(server):
    full = get(server)
    stale = get(server, range="bytes=10-", if_range=f'"{"0" * 64}"')
    assert stale.status_code == 200 and stale.content == full.content
    # a Range that cannot be parsed is ignored, as RFC 9110 allows
    junk = get(server, range="bytes=oops")
    assert junk.status_code == 200 and junk.content == full.content


def test_a_range_outside_the_file_gets_416_with_the_error_shape(server):
    size = len(get(server).content)
    refused = get(server, range=f"bytes={size}-")
    assert refused.status_code == 416
    error = refused.json()["error"]
    assert error["code"] == "RANGE_NOT_SATISFIABLE"
    assert "'dl'" in error["message"] and "trial 0" in error["message"]
    assert head(server, range=f"bytes={size + 100}-").status_code == 416
    # a stale If-Range wins over the range: the whole (new) archive, not a refusal
    assert get(server, range=f"bytes={size}-", if_range='"other"').status_code == 200


def test_the_checkpoint_archive_holds_only_that_checkpoint(server, client, tmp_path):
    answer = get(server, "/api/v1/studies/dl/best/checkpoint")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == (
        'attachment; filename="dl-trial0-step40-checkpoint.tar.gz"'
    )
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == [
            "checkpoint",
            "checkpoint/checkpoint",
            "checkpoint/model.ckpt-40.data-00000-of-00001",
            "checkpoint/model.ckpt-40.index",
            "checkpoint/model.ckpt-40.meta",
        ]
    unpacked = client.download_checkpoint("dl", tmp_path)
    assert unpacked == tmp_path / "checkpoint"
    assert (unpacked / "model.ckpt-40.index").read_text() == "step 40\n"
    assert '"model.ckpt-40"' in (unpacked / "checkpoint").read_text()


def test_the_client_resumes_a_download_cut_in_the_middle(server, client, tmp_path):
    full = get(server)
    etag, size = full.headers["etag"], len(full.content)
    fresh = client.download_model("dl", tmp_path / "fresh")

    destination = tmp_path / "resumed"
    destination.mkdir()
    files = partial_files(destination, MODEL_PATH)
    files.data.write_bytes(full.content[: size // 2])
    files.etag.write_text(etag + "\n")
    progress: list[tuple[int, int | None]] = []
    resumed: list[int] = []
    unpacked = client.download_model(
        "dl", destination, progress=lambda d, t: progress.append((d, t)), resumed=resumed.append
    )
    assert resumed == [size // 2]
    assert progress[0] == (size // 2, size) and progress[-1] == (size, size)
    assert unpacked.name == fresh.name and tree(unpacked) == tree(fresh)
    assert not files.data.exists() and not files.etag.exists()


def test_the_client_restarts_what_it_cannot_resume(server, client, tmp_path):
    full = get(server)
    etag, size = full.headers["etag"], len(full.content)
    files = partial_files(tmp_path, MODEL_PATH)

    # a part of another archive (another ETag): the server sends the whole current one
    files.data.write_bytes(b"x" * (size // 2))
    files.etag.write_text(f'"{"1" * 64}"\n')
    resumed: list[int] = []
    assert (
        client.download_model("dl", tmp_path, resumed=resumed.append) / "saved_model.pb"
    ).exists()
    assert resumed == [] and not files.data.exists()

    # the whole archive already: the server refuses the range, the file checks out
    files.data.write_bytes(full.content)
    files.etag.write_text(etag)
    assert (client.download_model("dl", tmp_path) / "saved_model.pb").read_text() == "step 40\n"

    # a damaged first half does not match the sha256 once completed: discarded, not unpacked
    files.data.write_bytes(b"\0" * (size // 2))
    files.etag.write_text(etag)
    with pytest.raises(DownloadError, match="sha256"):
        client.download_model("dl", tmp_path)
    assert not files.data.exists() and not files.etag.exists()
    assert (client.download_model("dl", tmp_path) / "saved_model.pb").exists()


def test_an_archive_is_built_once_and_rebuilt_when_missing(server):
    first = get(server)
    (archive,) = cached(server, "dl", "savedmodel-*.tar.gz")
    sidecar = archive.with_name(archive.name + ".sha256")
    assert sidecar.read_text().split() == [first.headers["etag"].strip('"'), archive.name]
    built = archive.stat()
    get(server)
    head(server)
    again = archive.stat()
    assert (again.st_ino, again.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)

    archive.unlink()
    rebuilt = get(server)
    assert rebuilt.content == first.content and rebuilt.headers["etag"] == first.headers["etag"]
    assert archive.is_file()  # built again, where it was
    leftovers = [p for p in archive.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_missing_export_is_404_and_deleting_the_artifacts_deletes_the_archives(server, client):
    missing = get(server, "/api/v1/studies/dl-bare/best/model")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "ARTIFACT_NOT_FOUND"
    assert "trial 0" in error["message"] and "'dl-bare'" in error["message"]
    assert head(server, "/api/v1/studies/dl-bare/best/model").status_code == 404
    nobody = get(server, "/api/v1/studies/dl-bare/trials/7/checkpoint")
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "TRIAL_NOT_FOUND"

    assert get(server, "/api/v1/studies/dl-bare/best/checkpoint").status_code == 200
    assert cached(server, "dl-bare", "checkpoint-*.tar.gz")
    deleted = httpx.delete(
        f"{server.url}/api/v1/studies/dl-bare?deleteArtifacts=true", headers=write_auth(server)
    )
    assert deleted.status_code == 204
    assert not (server.artifact_root / "dl-bare").exists()


def test_pull_says_where_it_resumed(server, tmp_path):
    full = get(server)
    size = len(full.content)
    files = partial_files(tmp_path / "dl", MODEL_PATH)
    files.data.parent.mkdir()
    files.data.write_bytes(full.content[:100])
    files.etag.write_text(full.headers["etag"])
    done = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "pull", "dl", "--to", str(tmp_path), "--no-check"],
        env={**os.environ, "TUNER_SERVER": server.url, "TUNER_TOKEN": server.read_token},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "resumed at 100 bytes" in done.stderr
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal
    (version,) = [p for p in (tmp_path / "dl").iterdir()]
    assert re.fullmatch(r"\d+", version.name) and size > 100
    assert (version / "saved_model.pb").read_text() == "step 40\n"


class _CutOnce(BaseHTTPRequestHandler):
    """Serves one archive; the first whole-file answer breaks off halfway through its body."""

    archive: bytes = b""
    etag = ""
    cut = True

    def do_GET(self) -> None:
        data, first = type(self).archive, 0
        wanted = self.headers.get("Range")
        if wanted and self.headers.get("If-Range") == self.etag:
            first = int(wanted.removeprefix("bytes=").removesuffix("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - first))
        self.send_header("ETag", self.etag)
        self.end_headers()
        if type(self).cut:
            type(self).cut = False
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data[first:])

    def log_message(self, *_args: object) -> None:
        pass


def test_a_connection_cut_mid_body_is_resumed_on_the_next_call(tmp_path):
    store = ArtifactStore(tmp_path / "root")
    export = _saved_model(tmp_path / "root" / "s" / "t.kept" / "1", os.urandom(600_000))
    archive = export_archive(store, "s", export, arcname="1")
    _CutOnce.archive, _CutOnce.etag = archive.path.read_bytes(), archive.etag
    fake = ThreadingHTTPServer(("127.0.0.1", 0), _CutOnce)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{fake.server_address[1]}") as client:
            with pytest.raises(DownloadError, match="resume"):
                client.download_model("s", tmp_path / "out")
            files = partial_files(tmp_path / "out", "/studies/s/best/model")
            have = files.data.stat().st_size
            assert 0 < have < archive.size and files.etag.read_text().strip() == archive.etag
            resumed: list[int] = []
            unpacked = client.download_model("s", tmp_path / "out", resumed=resumed.append)
    finally:
        fake.shutdown()
        fake.server_close()
    assert resumed == [have]
    assert tree(unpacked) == tree(export)


# -- the archive builder on its own -----------------------------------------------------------


def _saved_model(directory: Path, payload: bytes) -> Path:
    (directory / "variables").mkdir(parents=True)
    (directory / "saved_model.pb").write_bytes(payload)
    (directory / "variables" / "variables.data-00000-of-00001").write_bytes(payload[::-1])
    return directory


def test_the_same_directory_gives_the_same_bytes(tmp_path):
    store = ArtifactStore(tmp_path)
    payload = os.urandom(300_000)
    one = _saved_model(tmp_path / "a" / "trial-0000.kept" / "export" / "e" / "1", payload)
    time.sleep(0.01)
    two = _saved_model(tmp_path / "b" / "trial-0000.kept" / "export" / "e" / "1", payload)
    os.utime(two / "saved_model.pb", (1, 1))
    first = export_archive(store, "a", one, arcname="1")
    second = export_archive(store, "b", two, arcname="1")
    assert first.path != second.path
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.path.read_bytes()[4:8] == b"\0\0\0\0"  # the gzip header's mtime


def test_symlinks_are_left_out(tmp_path):
    store = ArtifactStore(tmp_path / "root")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("do not ship")
    export = _saved_model(tmp_path / "root" / "s" / "trial-0000" / "export" / "e" / "1", b"m")
    (export / "link").symlink_to(secret / "key")
    (export / "variables" / "dir-link").symlink_to(secret)
    kept = tmp_path / "root" / "s" / "trial-0000.kept"
    kept.mkdir()
    (kept / "model.ckpt-5.index").write_text("i")
    (kept / "model.ckpt-5.data-00000-of-00001").symlink_to(secret / "key")
    for archive in (
        export_archive(store, "s", export, arcname="1"),
        checkpoint_archive(store, "s", kept / "model.ckpt-5"),
    ):
        with tarfile.open(archive.path) as tar:
            names = tar.getnames()
            assert not any("link" in n or "ckpt-5.data" in n for n in names), names
            assert all(m.isfile() or m.isdir() for m in tar)
            contents = [tar.extractfile(m) for m in tar if m.isfile()]
            assert all(b"do not ship" not in f.read() for f in contents if f is not None)


def test_concurrent_requests_build_one_archive(tmp_path):
    store = ArtifactStore(tmp_path)
    export = _saved_model(tmp_path / "s" / "trial-0000.kept" / "export" / "e" / "1", b"x" * 10**6)
    results: list[Archive] = []

    def build() -> None:
        results.append(export_archive(store, "s", export, arcname="1"))

    threads = [threading.Thread(target=build) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert len({(a.path, a.sha256, a.stat.st_ino) for a in results}) == 1
    cache = results[0].path.parent
    assert sorted(p.name.rsplit(".", 1)[-1] for p in cache.iterdir()) == ["gz", "sha256"]
