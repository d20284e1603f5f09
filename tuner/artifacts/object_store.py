"""An artifact root in object storage (`s3://bucket/prefix`, `gs://...`, `az://...`), through
obstore.

obstore (Python bindings of the Rust `object_store` crate, the one behind crates.io, Arrow and
DataFusion) was chosen over fsspec/s3fs: one wheel with no Python dependencies (s3fs pins
aiobotocore, which pins botocore), a synchronous API with streamed ranged reads, multipart
uploads of files without loading them, its own retries with backoff for 5xx, dropped
connections and timeouts, and the same calls for S3, GCS and Azure. Credentials and endpoints
come from the standard variables each cloud uses (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
`AWS_ALLOW_HTTP`, `GOOGLE_APPLICATION_CREDENTIALS`, ...).

Keys are the paths relative to the artifact root that the database stores, checked the same way
as local paths (no absolute paths, no `..`), so a client's path cannot reach outside the prefix.
An upload is verified: the stored object's size, and its ETag against the MD5 (single part) or
the multipart MD5 of the local file where the store's ETags are MD5s (S3 and compatible stores
without KMS encryption).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from tuner.domain.config import OBJECT_STORE_SCHEMES, is_object_store_url
from tuner.domain.errors import ArtifactNotFoundError, ObjectStoreError, UnsafePathError, first_line

if TYPE_CHECKING:
    from obstore.store import RetryConfig

logger = logging.getLogger(__name__)

__all__ = [
    "OBJECT_STORE_SCHEMES",
    "ObjectStore",
    "ObjectStoreError",
    "StoredObject",
    "is_object_store_url",
    "safe_key",
]

#: obstore's own default part size: the multipart ETag is computed with the same one.
PART_SIZE: Final = 5 * 1024 * 1024
#: Whole-file attempts on top of obstore's per-request retries (a verification failure, or an
#: error that outlasted them).
UPLOAD_ATTEMPTS: Final = 4
#: How long obstore retries one request (5xx, dropped connections, timeouts) before it fails.
REQUEST_RETRY_SECONDS: Final = 60.0
READ_CHUNK: Final = 1024 * 1024
#: The key a reachability check asks for.
PROBE_KEY: Final = ".tuner-probe"
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')


def safe_key(relative: str | PurePosixPath) -> str:
    """A stored relative path as an object key; refuses absolute paths and `..`."""
    text = str(relative).replace("\\", "/")
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or text.startswith("~"):
        raise UnsafePathError(f"{relative}: must be a path inside the artifact store")
    key = "/".join(p for p in path.parts if p not in ("", "."))
    if not key:
        raise UnsafePathError(f"{relative}: must be a path inside the artifact store")
    return key


@dataclass(frozen=True)
class StoredObject:
    """An object as uploaded: its key, size, and the sha256 of its bytes."""

    key: str
    size: int
    sha256: str


def _digests(path: Path) -> tuple[int, str, str]:
    """(size, sha256, the S3 ETag a put of `path` by obstore gets) in one read of the file."""
    sha = hashlib.sha256()
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[bytes] = []
    size = 0
    with open(path, "rb") as source:
        while block := source.read(PART_SIZE):
            size += len(block)
            sha.update(block)
            whole.update(block)
            parts.append(hashlib.md5(block, usedforsecurity=False).digest())
    if size > PART_SIZE:
        combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
        etag = f"{combined}-{len(parts)}"
    else:
        etag = whole.hexdigest()
    return size, sha.hexdigest(), etag


class ObjectStore:
    """One artifact root in an object store: upload, verify, ranged reads, listing, deletes."""

    def __init__(
        self,
        url: str,
        *,
        request_retry_seconds: float = REQUEST_RETRY_SECONDS,
        attempts: int = UPLOAD_ATTEMPTS,
    ) -> None:
        import obstore.store

        self.url = url.rstrip("/")
        self.attempts = attempts
        retry: RetryConfig = {
            "max_retries": 10,
            "retry_timeout": timedelta(seconds=request_retry_seconds),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=min(15.0, max(0.2, request_retry_seconds / 4))),
                "base": 2,
            },
        }
        try:
            self._store = obstore.store.from_url(self.url, retry_config=retry)
        except Exception as exc:  # obstore raises its own config errors
            raise ObjectStoreError(f"TUNER_ARTIFACT_ROOT={url}: {first_line(exc)}") from None
        self._etags_are_md5 = self.url.split("://", 1)[0].lower() in ("s3", "s3a") and not (
            os.environ.get("AWS_SERVER_SIDE_ENCRYPTION", "").startswith("aws:kms")
        )

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def location(self, relative: str) -> str:
        """The object's full URL, for messages and for tools that read the store directly."""
        return f"{self.url}/{safe_key(relative)}"

    # -- writes ---------------------------------------------------------------------------------

    def upload_file(self, local: Path, relative: str) -> StoredObject:
        """Upload `local` to `relative`, verify it, and retry the whole file if it fails."""
        key = safe_key(relative)
        size, sha256, expected_etag = _digests(local)
        last: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._put_and_verify(local, key, size, expected_etag)
                return StoredObject(key, size, sha256)
            except (ObjectStoreError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) and not local.exists():
                    raise  # the local file went away: nothing to retry
                last = exc
                logger.warning(
                    "upload of %s to %s failed (attempt %d of %d): %s",
                    local,
                    self.location(key),
                    attempt,
                    self.attempts,
                    first_line(exc),
                )
                if attempt < self.attempts:
                    time.sleep(min(8.0, 0.5 * 2**attempt))
        raise ObjectStoreError(
            f"could not upload {local.name} to {self.location(key)} after {self.attempts} "
            f"attempts: {first_line(last) if last else 'unknown error'}"
        )

    def _put_and_verify(self, local: Path, key: str, size: int, expected_etag: str) -> None:
        import obstore

        with _store_errors(self.location(key)):
            obstore.put(self._store, key, local, chunk_size=PART_SIZE)
            meta = obstore.head(self._store, key)
        if meta["size"] != size:
            raise ObjectStoreError(
                f"{self.location(key)}: {meta['size']} bytes stored, {size} uploaded"
            )
        match = _MD5_ETAG.match(meta.get("e_tag") or "")
        if self._etags_are_md5 and match is not None:
            stored = match.group(1) + (f"-{match.group(2)}" if match.group(2) else "")
            if stored != expected_etag:
                raise ObjectStoreError(
                    f"{self.location(key)}: stored checksum {stored} is not the file's "
                    f"{expected_etag}"
                )

    def delete_prefix(self, relative: str) -> int:
        """Delete every object under `relative/`; return how many."""
        import obstore

        prefix = safe_key(relative) + "/"
        deleted = 0
        with _store_errors(self.location(relative)):
            for batch in obstore.list(self._store, prefix, chunk_size=1000):
                keys = [meta["path"] for meta in batch]
                if keys:
                    obstore.delete(self._store, keys)
                    deleted += len(keys)
        return deleted

    def delete_keys(self, relatives: list[str]) -> None:
        """Delete these objects (a missing one is no error: deleting is idempotent)."""
        import obstore

        keys = [safe_key(r) for r in relatives]
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with _store_errors(self.location(batch[0])):
                try:
                    obstore.delete(self._store, batch)
                except FileNotFoundError:  # GCS and Azure: one of them is gone already
                    for key in batch:
                        with contextlib.suppress(FileNotFoundError):
                            obstore.delete(self._store, key)

    # -- reads ----------------------------------------------------------------------------------

    def objects(self, relative: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `relative/`, sorted by key."""
        import obstore

        prefix = safe_key(relative) + "/"
        with _store_errors(self.location(relative)):
            found = [
                (str(m["path"]), int(m["size"]))
                for batch in obstore.list(self._store, prefix)
                for m in batch
            ]
        return sorted(found)

    def check(self) -> None:
        """Raise `ObjectStoreError` unless the store answers (a HEAD of a key that need not
        exist: "not found" is an answer)."""
        self.size(PROBE_KEY)

    def size(self, relative: str) -> int | None:
        """The object's size, or None when there is no such object."""
        import obstore

        try:
            with _store_errors(self.location(relative)):
                return int(obstore.head(self._store, safe_key(relative))["size"])
        except FileNotFoundError:
            return None

    def keys(self, relative: str) -> list[str]:
        """The keys under `relative/`, sorted."""
        import obstore

        prefix = safe_key(relative) + "/"
        with _store_errors(self.location(relative)):
            found = [m["path"] for batch in obstore.list(self._store, prefix) for m in batch]
        return sorted(found)

    def read(self, relative: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes `[start, end)` (to its end when `end` is None), streamed."""
        import obstore

        key = safe_key(relative)
        options: dict[str, Any] = {}
        if end is not None:
            if end <= start:
                return iter(())
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}
        try:
            with _store_errors(self.location(key)):
                result = obstore.get(self._store, key, options=options)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"{self.location(key)} is not in the store") from None
        return self._stream(key, result.stream(min_chunk_size=READ_CHUNK))

    def _stream(self, key: str, chunks: Iterator[Any]) -> Iterator[bytes]:
        with _store_errors(self.location(key)):
            for chunk in chunks:
                yield bytes(chunk)

    def read_bytes(self, relative: str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.read(relative, start, end))

    def download(self, relative: str, target: Path) -> Path:
        """Stream the object into `target` (written beside it, then renamed)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        with open(partial, "wb") as out:
            for chunk in self.read(relative):
                out.write(chunk)
        os.replace(partial, target)
        return target


@contextmanager
def _store_errors(where: str) -> Iterator[None]:
    """obstore's errors (after its own retries) as `ObjectStoreError`s that name the object;
    a missing object stays a `FileNotFoundError`."""
    import obstore.exceptions

    try:
        yield
    except FileNotFoundError:
        raise
    except (obstore.exceptions.BaseError, OSError) as exc:
        raise ObjectStoreError(f"{where}: {first_line(exc)}") from None
