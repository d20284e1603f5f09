"""What of a trial outlives its worker, uploaded to the object store at the trial's end.

A worker with an object-store artifact root keeps each trial's output dir on its own disk, reads
its events there, and at the end uploads, under the same relative paths:
    <study>/trial-<n>.kept/...          the kept best checkpoint and the best step's exports
    <study>/.archives/...               their `.tar.gz` downloads (built here, served as is)
    <study>/trial-<n>/<eval dirs>/...   the eval event files
    <study>/trial-<n>/events.out.tfevents.*.tuner-hparams   the trial's HParams session
    <study>/hparams/...                 the study's HParams experiment (once per study)
    <study>/trial-<n>.log               its stdout and stderr
so that TensorBoard (with a filesystem for the store) reads the study from the bucket, and the
API serves downloads from it. The archives are uploaded last, and recorded in the database only
once every object is stored and verified: an upload cut short (a killed worker) leaves objects
nothing points to, never a download the API would serve half of.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from tuner.artifacts.archives import CACHE_DIR, checkpoint_archive, export_archive
from tuner.artifacts.object_store import ObjectStore, ObjectStoreError
from tuner.artifacts.store import ArtifactStore, checkpoint_files
from tuner.domain.entities import StoredArchive
from tuner.domain.errors import ArtifactNotFoundError, LocalDiskFullError
from tuner.domain.telemetry import UPLOAD_BYTES
from tuner.outputs.hparams import HPARAMS_DIR, session_files
from tuner.outputs.layout import EVENT_FILE_PREFIX

logger = logging.getLogger(__name__)

__all__ = [
    "KeptArtifacts",
    "UploadReport",
    "Uploader",
    "clean_local_copy",
    "upload_session_files",
    "upload_trial",
]


@dataclass(frozen=True)
class KeptArtifacts:
    """A trial's kept artifacts on local disk, as its manager recorded them."""

    study: str
    output_dir: Path
    log_path: Path
    #: (step, kept checkpoint prefix), when a checkpoint was kept.
    checkpoint: tuple[int, Path] | None
    #: (export id, kept SavedModel dir, its version), for the best step's exports.
    exports: Sequence[tuple[int, Path, str]]
    #: The trial's eval dirs, relative to its output dir (globs, as the layout gives them).
    eval_patterns: Sequence[str]


@dataclass
class UploadReport:
    """What was uploaded, and the archives to record."""

    checkpoint: tuple[int, StoredArchive] | None = None
    exports: list[tuple[int, StoredArchive]] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def _files_under(directory: Path) -> list[Path]:
    """Regular files under `directory` (symlinks left out: they could lead outside)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _event_files(output_dir: Path, patterns: Iterable[str]) -> list[Path]:
    found: dict[Path, None] = {}
    for pattern in patterns:
        for directory in sorted(output_dir.glob(pattern)):
            for path in _files_under(directory):
                if path.name.startswith(EVENT_FILE_PREFIX):
                    found[path] = None
    for path in session_files(output_dir):
        found[path] = None
    return list(found)


def upload_trial(store: ObjectStore, local: ArtifactStore, kept: KeptArtifacts) -> UploadReport:
    """Upload a trial's kept artifacts, event files and log; raise `ObjectStoreError` if any
    upload fails after its retries (nothing is recorded then)."""
    started = time.monotonic()
    report = UploadReport()

    def put(path: Path) -> str:
        stored = store.upload_file(path, local.relative(path))
        report.objects += 1
        report.bytes += stored.size
        UPLOAD_BYTES.inc(stored.size)
        return stored.sha256

    if kept.checkpoint is not None:
        _, prefix = kept.checkpoint
        for path in checkpoint_files(prefix):
            put(path)
        state = prefix.parent / "checkpoint"
        if state.is_file():
            put(state)
    for _, export_dir, _ in kept.exports:
        for path in _files_under(export_dir):
            put(path)
    for path in _event_files(kept.output_dir, kept.eval_patterns):
        put(path)
    study_hparams = local.study_dir(kept.study) / HPARAMS_DIR
    if study_hparams.is_dir() and not store.keys(local.relative(study_hparams)):
        for path in _files_under(study_hparams):
            put(path)
    if kept.log_path.is_file():
        put(kept.log_path)
    # Last: the archives, the only objects the API serves, recorded after this returns.
    if kept.checkpoint is not None:
        step, prefix = kept.checkpoint
        report.checkpoint = (step, _upload_archive(store, local, put, kept.study, prefix, None))
    for export_id, export_dir, version in kept.exports:
        archive = _upload_archive(store, local, put, kept.study, export_dir, version)
        report.exports.append((export_id, archive))
    report.seconds = time.monotonic() - started
    return report


def _upload_archive(
    store: ObjectStore,
    local: ArtifactStore,
    put: Callable[[Path], str],
    study: str,
    artifact: Path,
    version: str | None,
) -> StoredArchive:
    try:
        if version is None:
            archive = checkpoint_archive(local, study, artifact)
        else:
            archive = export_archive(local, study, artifact, arcname=version)
    except ArtifactNotFoundError as exc:
        raise ObjectStoreError(f"could not archive {local.relative(artifact)}: {exc}") from None
    uploaded = put(archive.path)
    if uploaded != archive.sha256:
        raise ObjectStoreError(
            f"{store.location(local.relative(archive.path))}: the uploaded file's sha256 "
            f"{uploaded} is not the archive's {archive.sha256} (changed while uploading?)"
        )
    return StoredArchive(local.relative(archive.path), archive.sha256, archive.size)


def upload_session_files(store: ObjectStore, local: ArtifactStore, output_dir: Path) -> None:
    """Upload a trial's HParams session files again (its end is written after its outcome)."""
    for path in session_files(output_dir):
        UPLOAD_BYTES.inc(store.upload_file(path, local.relative(path)).size)


def clean_local_copy(local: ArtifactStore, study: str, number: int) -> None:
    """Delete a trial's local dir, log, kept copies and archives once they are in the store."""
    paths = local.trial_paths(study, number)
    shutil.rmtree(paths.output_dir, ignore_errors=True)
    shutil.rmtree(paths.kept_dir, ignore_errors=True)
    paths.log_path.unlink(missing_ok=True)
    archives = local.study_dir(study) / CACHE_DIR / paths.kept_dir.name
    shutil.rmtree(archives, ignore_errors=True)


#: Seconds between reachability probes of the store.
PROBE_EVERY = 5.0


@dataclass
class _Job:
    kept: KeptArtifacts
    future: Future[UploadReport]
    first_started: float
    attempts: int = 1
    retry_at: float | None = None
    last_error: str = ""


#: What a full local disk (or quota) raises.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) is this machine's disk being full."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Uploader:
    """Uploads ended trials' artifacts on a few threads, so that the manager's loop (leases,
    the other trials) goes on meanwhile; a failed upload is tried again until `give_up_after`
    seconds from its first attempt."""

    def __init__(
        self,
        store: ObjectStore,
        local: ArtifactStore,
        *,
        give_up_after: float = 600.0,
        threads: int = 2,
    ) -> None:
        self.store = store
        self.local = local
        self.give_up_after = give_up_after
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="upload")
        self._jobs: dict[int, _Job] = {}
        #: Running trials' logs: (monotonic time of the last upload, its size, the upload).
        self._logs: dict[int, tuple[float, int, Future[object] | None]] = {}
        #: A client that gives up quickly, for the reachability probe.
        self._probe_store = ObjectStore(store.url, request_retry_seconds=2.0, attempts=1)
        self._probe: Future[str | None] | None = None
        self._probed_at = -PROBE_EVERY
        self._problem: str | None = None

    def poll(self, run_id: int, kept: Callable[[], KeptArtifacts]) -> UploadReport | None:
        """The finished upload of `run_id` (started with `kept()` at the first call), None
        while it runs; raises `ObjectStoreError` once it has failed for `give_up_after`."""
        job = self._jobs.get(run_id)
        now = time.monotonic()
        if job is None:
            _, _, log_upload = self._logs.pop(run_id, (0.0, 0, None))
            if log_upload is not None and not log_upload.done():
                self._logs[run_id] = (now, -1, log_upload)  # an older copy must not win
                return None
            artifacts = kept()
            future = self._pool.submit(upload_trial, self.store, self.local, artifacts)
            self._jobs[run_id] = _Job(artifacts, future, now)
            return None
        if job.retry_at is not None:
            if now < job.retry_at:
                return None
            job.retry_at, job.attempts = None, job.attempts + 1
            job.future = self._pool.submit(upload_trial, self.store, self.local, job.kept)
            return None
        if not job.future.done():
            return None
        try:
            report = job.future.result()
        except (ObjectStoreError, OSError) as exc:
            if disk_full(exc):
                # Building the archives on this machine's own disk failed: no retry mends it,
                # and the store is not at fault (trials may start again once space is back).
                del self._jobs[run_id]
                raise LocalDiskFullError(f"{_first(exc)}") from None
            job.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            # No trial starts until a probe finds the store answering again.
            self._problem = f"the object store {self.store.url} failed ({job.last_error})"
            self._probed_at = now
            if now - job.first_started >= self.give_up_after:
                del self._jobs[run_id]
                raise ObjectStoreError(
                    f"{job.attempts} upload attempts over {now - job.first_started:.0f} s "
                    f"failed, the last with: {job.last_error}"
                ) from None
            job.retry_at = now + min(30.0, 2.0 * job.attempts)
            logger.warning("upload of run %d failed, retrying: %s", run_id, job.last_error)
            return None
        del self._jobs[run_id]
        self._problem = None
        return report

    def sync_log(self, run_id: int, log_path: Path, every: float) -> None:
        """Upload a running trial's log every `every` seconds while it grows, so that it can be
        read (`tuner logs`, the API) before the trial ends; failures only delay it."""
        now = time.monotonic()
        synced_at, synced_size, upload = self._logs.get(run_id, (-every, 0, None))
        if (upload is not None and not upload.done()) or now - synced_at < every:
            return
        try:
            size = log_path.stat().st_size
        except OSError:
            return
        if size == synced_size:
            return
        future = self._pool.submit(self._upload_quietly, log_path)
        self._logs[run_id] = (now, size, future)

    def _upload_quietly(self, path: Path) -> object:
        try:
            stored = self._probe_store.upload_file(path, self.local.relative(path))
            UPLOAD_BYTES.inc(stored.size)
            return stored
        except ObjectStoreError as exc:
            logger.info("log %s not uploaded yet: %s", path.name, exc)
            self._problem = f"the object store {self.store.url} failed ({exc})"
            return None
        except OSError as exc:
            logger.info("log %s not uploaded yet: %s", path.name, exc)
            return None

    def problem(self) -> str | None:
        """Why the store cannot be used now (from a probe run every `PROBE_EVERY` seconds on
        the upload threads, so the manager's loop never waits for an unreachable store)."""
        now = time.monotonic()
        if self._probe is not None and self._probe.done():
            self._problem = self._probe.result()
            self._probe = None
        if self._probe is None and now - self._probed_at >= PROBE_EVERY:
            self._probed_at = now
            self._probe = self._pool.submit(self._reachable)
        return self._problem

    def _reachable(self) -> str | None:
        try:
            self._probe_store.check()
            return None
        except ObjectStoreError as exc:
            return f"the object store {self.store.url} is unreachable ({exc})"

    def wait(self, run_id: int, timeout: float) -> None:
        """Wait up to `timeout` seconds for `run_id`'s upload attempt in flight."""
        job = self._jobs.get(run_id)
        if job is not None and job.retry_at is None:
            with contextlib.suppress(FutureTimeout):
                job.future.exception(timeout=max(0.0, timeout))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
