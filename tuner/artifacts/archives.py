"""Kept exports and checkpoints as `.tar.gz` files, built once and cached in the artifact store.

A kept artifact never changes, so its archive is built on its first download and served as a
plain file afterwards: with a length, a strong ETag and byte ranges, so that clients can show
progress and resume. The bytes are deterministic (sorted members, fixed times, owners and modes,
no gzip timestamp): a rebuild gives the same bytes and the same ETag, so a download resumed
across a rebuild still fits together.

The cache lives inside the study's dir, so deleting a study's artifacts deletes its archives:
    <study>/.archives/<artifact path inside the study>/<kind>-<fingerprint>.tar.gz
    <study>/.archives/<artifact path inside the study>/<kind>-<fingerprint>.tar.gz.sha256
The fingerprint (names, sizes, mtimes and inodes of the source files) changes when a path is
reused by another artifact, e.g. by a study deleted without its artifacts and submitted again.
The `.sha256` sidecar is in `sha256sum` format; its hash is the archive's ETag.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import re
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tuner.artifacts.store import ArtifactStore, checkpoint_files, checkpoint_state
from tuner.domain.errors import ArtifactNotFoundError

CACHE_DIR = ".archives"
#: 1980-01-01: one fixed time for every member (not 0, which some archivers refuse).
MEMBER_MTIME = 315_532_800
#: A middle level: a multi-gigabyte SavedModel is built in seconds, not minutes.
COMPRESS_LEVEL = 6
CHUNK = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Archive:
    """A built archive: its file, the sha256 of its bytes and its `stat` (for the headers)."""

    path: Path
    sha256: str
    stat: os.stat_result

    @property
    def size(self) -> int:
        return self.stat.st_size

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


@dataclass(frozen=True)
class _Member:
    """One tar member: a directory (no source, no data), a file copied from `source`, or a
    file of generated `data`."""

    name: str
    source: Path | None = None
    data: bytes | None = None


def export_archive(store: ArtifactStore, study: str, export_dir: Path, *, arcname: str) -> Archive:
    """The archive of a SavedModel dir, its contents under `arcname/` (TF Serving's version)."""
    if not export_dir.is_dir():
        raise ArtifactNotFoundError(f"the export {store.relative(export_dir)} is not on disk")
    return _archive(
        store,
        study,
        export_dir,
        "savedmodel",
        lambda: [_Member(arcname), *_tree(export_dir, arcname)],
    )


def checkpoint_archive(store: ArtifactStore, study: str, prefix: Path) -> Archive:
    """The archive of one checkpoint under `checkpoint/`: the prefix's files and a `checkpoint`
    state file naming it, so that `tf.train.latest_checkpoint` finds it once unpacked.

    Only this checkpoint's files: the kept dir beside it changes when a trial's best step does.
    """
    files = [f for f in checkpoint_files(prefix) if not f.is_symlink()]
    if not files:
        raise ArtifactNotFoundError(f"the checkpoint {store.relative(prefix)} is not on disk")
    members = [
        _Member("checkpoint"),
        *(_Member(f"checkpoint/{f.name}", source=f) for f in files),
        _Member("checkpoint/checkpoint", data=checkpoint_state(prefix.name).encode()),
    ]
    return _archive(store, study, prefix, "checkpoint", lambda: members)


def _tree(directory: Path, arcname: str) -> Iterator[_Member]:
    """Dirs and regular files under `directory`, depth first in name order; symlinks (which
    could lead out of the artifact store) and special files are left out."""
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        name = f"{arcname}/{entry.name}"
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            yield _Member(name)
            yield from _tree(Path(entry.path), name)
        elif entry.is_file(follow_symlinks=False):
            yield _Member(name, source=Path(entry.path))


def _archive(
    store: ArtifactStore,
    study: str,
    artifact: Path,
    kind: str,
    list_members: Callable[[], list[_Member]],
) -> Archive:
    """The cached archive of `artifact`, built first if it is not there."""
    relative = Path(store.relative(artifact))  # refuses a path outside the store
    if relative.parts[:1] != (study,):
        raise ArtifactNotFoundError(f"{relative} is not an artifact of study {study!r}")
    cache_dir = store.resolve(Path(study, CACHE_DIR, *relative.parts[1:]))
    try:
        members = list_members()
        target = cache_dir / f"{kind}-{_fingerprint(members)}.tar.gz"
        cached = _cached(target)
        if cached is not None:
            return cached
        with _building.hold(str(target)):
            cached = _cached(target)  # built by another request while this one waited
            if cached is not None:
                return cached
            cache_dir.mkdir(parents=True, exist_ok=True)
            store.relative(cache_dir)  # still inside the store once created
            return _build(target, members)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP):
            raise
        # A file went away (a former best step's copy dropped) or became a symlink.
        name = Path(exc.filename).name if exc.filename else "a file"
        raise ArtifactNotFoundError(
            f"{relative} changed while being archived ({name}: {exc.strerror}); try again"
        ) from None


def _fingerprint(members: list[_Member]) -> str:
    digest = hashlib.sha256()
    for member in members:
        digest.update(member.name.encode("utf-8", "surrogateescape") + b"\0")
        if member.source is not None:
            info = member.source.lstat()
            digest.update(f"{info.st_size} {info.st_mtime_ns} {info.st_ino}\0".encode())
        elif member.data is not None:
            digest.update(hashlib.sha256(member.data).digest())
    return digest.hexdigest()[:16]


def _cached(target: Path) -> Archive | None:
    """The archive at `target` if both it and its hash are there (else it is to be built)."""
    try:
        recorded = _sidecar(target).read_text(encoding="ascii").split()
        info = target.stat()
    except (OSError, UnicodeDecodeError):
        return None
    if not recorded or not _HEX64.match(recorded[0]) or not stat.S_ISREG(info.st_mode):
        return None
    return Archive(target, recorded[0], info)


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _build(target: Path, members: list[_Member]) -> Archive:
    """Write the archive to a temp file beside `target`, hashing as it goes; fsync; rename.

    The hash is renamed into place before the archive, so an archive on disk always has one;
    two builders of the same archive write the same bytes, so whichever rename wins is right.
    """
    temps: list[str] = []
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        temps.append(temp)
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingWriter(raw)
            with (
                gzip.GzipFile(
                    filename="", mode="wb", fileobj=hashing, mtime=0, compresslevel=COMPRESS_LEVEL
                ) as gz,
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
            ):
                for member in members:
                    _add(tar, member)
            raw.flush()
            os.fsync(raw.fileno())
        sha256 = hashing.digest.hexdigest()
        fd, sidecar_temp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".sha256.tmp"
        )
        temps.append(sidecar_temp)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"{sha256}  {target.name}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(sidecar_temp, _sidecar(target))
        os.replace(temp, target)
        temps.clear()
        _fsync_dir(target.parent)
    finally:
        for leftover in temps:
            with suppress(FileNotFoundError):
                os.unlink(leftover)
    return Archive(target, sha256, target.stat())


def _add(tar: tarfile.TarFile, member: _Member) -> None:
    info = tarfile.TarInfo(member.name)
    info.mtime = MEMBER_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member.source is None and member.data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.mode = 0o644
    if member.data is not None:
        info.size = len(member.data)
        tar.addfile(info, io.BytesIO(member.data))
        return
    assert member.source is not None
    # O_NOFOLLOW: a file swapped for a symlink after the directory scan is refused, not read.
    fd = os.open(member.source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as source:
        opened = os.fstat(source.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", str(member.source))
        info.size = opened.st_size
        tar.addfile(info, source)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A write-only file object that hashes what passes through it into `raw`."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


class _KeyedLocks:
    """One lock per key while anyone holds or waits for it, so that two requests of the same
    archive build it once, and requests of different archives do not wait for each other."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


_building = _KeyedLocks()
