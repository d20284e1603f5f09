"""Directories as streamed `.tar.gz` archives, in bounded memory.

`tarfile` writes synchronously into a file object; a producer thread feeds it into a bounded
queue, so a multi-gigabyte SavedModel is never held in memory (a few chunks at most).
"""

from __future__ import annotations

import queue
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

CHUNK = 256 * 1024
_DONE = object()


class _QueueWriter:
    def __init__(self, out: queue.Queue[object], cancelled: threading.Event) -> None:
        self._out = out
        self._cancelled = cancelled
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        if self._cancelled.is_set():
            raise BrokenPipeError("client went away")
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def _put(self, chunk: bytes) -> None:
        while not self._cancelled.is_set():
            try:
                self._out.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("client went away")


def tar_gz_stream(directory: Path, *, arcname: str) -> Iterator[bytes]:
    """Yield a gzip'd tar of `directory` (its contents under `arcname/`), chunk by chunk."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=8)
    cancelled = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        writer = _QueueWriter(chunks, cancelled)
        try:
            with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
                for path in sorted(directory.rglob("*")):
                    if path.is_symlink():
                        continue  # never follow links out of the artifact store
                    tar.add(
                        path, arcname=f"{arcname}/{path.relative_to(directory)}", recursive=False
                    )
            writer.flush()
        except BaseException as exc:  # reported to the consumer
            errors.append(exc)
        finally:
            while True:
                try:
                    chunks.put(_DONE, timeout=0.5)
                    break
                except queue.Full:
                    if cancelled.is_set():
                        break

    thread = threading.Thread(target=produce, name="tar-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                break
            assert isinstance(item, bytes)
            yield item
        if errors and not isinstance(errors[0], BrokenPipeError):
            raise errors[0]
    finally:
        cancelled.set()
        thread.join(timeout=5)
