"""A trial's log for readers (the API, `tuner logs`): on local disk, or in the object store
once its worker uploaded it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuner.artifacts.store import ArtifactStore

CHUNK = 64 * 1024
TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class TrialLog:
    """A log of `size` bytes, read from disk or from the store."""

    relative: str
    size: int
    store: ArtifactStore
    local: Path | None

    def chunks(self, offset: int = 0, limit: int | None = None) -> Iterator[bytes]:
        """Its bytes from `offset` on (at most `limit`), up to the size it had when opened."""
        start = min(offset, self.size)
        end = self.size if limit is None else min(self.size, start + limit)
        if end <= start:
            return
        if self.local is None:
            assert self.store.remote is not None
            yield from self.store.remote.read(self.relative, start, end)
            return
        with open(self.local, "rb") as handle:
            handle.seek(start)
            left = end - start
            while left and (chunk := handle.read(min(left, CHUNK))):
                left -= len(chunk)
                yield chunk

    def read(self, offset: int = 0, limit: int | None = None) -> bytes:
        return b"".join(self.chunks(offset, limit))

    def tail(self, count: int) -> list[str]:
        """Its last `count` lines (from at most its last `TAIL_BYTES`)."""
        data = self.read(max(0, self.size - TAIL_BYTES))
        return data.decode("utf-8", errors="replace").splitlines()[-count:]


def open_log(store: ArtifactStore, relative: str) -> TrialLog | None:
    """The log at `relative` (a local file first, else the stored object); None if neither."""
    path = store.resolve(relative)
    if path.is_file():
        return TrialLog(relative, path.stat().st_size, store, path)
    if store.remote is not None:
        size = store.remote.size(relative)
        if size is not None:
            return TrialLog(relative, size, store, None)
    return None
