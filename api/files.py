"""Built archives as file answers: `Content-Length`, a strong `ETag`, byte ranges, `HEAD`.

Starlette's `FileResponse` does the ranges (`Range`, `If-Range`, 206, multipart ranges) and
`HEAD`. Two of its answers are not ours: an unsatisfiable range is refused here first, as a
`RangeNotSatisfiableError` (so its body has the API's error shape), and a malformed `Range` is
ignored (the whole file, as RFC 9110 allows) instead of a plain-text 400. The check uses
`FileResponse`'s own parser, so it decides as the response will.

With an object store, the archives a worker uploaded are streamed from it with the same
headers and the same range rules (`StoredArchiveResponse`).

Both hold the download's pin on its trial while they send (`api/download_pins.py`), so that
retention does not delete what is being read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from api.download_pins import PinRenewal, renewing
from api.errors import error_response
from tuner.artifacts.archives import Archive
from tuner.artifacts.object_store import ObjectStore
from tuner.domain.entities import StoredArchive
from tuner.domain.errors import RangeNotSatisfiableError, TunerError, first_line


class ArchiveResponse(FileResponse):
    """A `FileResponse` that can be told to ignore the request's `Range`."""

    ignore_range = False
    pin: PinRenewal | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ignore_range:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": headers}
        async with renewing(self.pin):
            await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class Download:
    """An archive as one route offers it."""

    archive: Archive
    #: The name a browser or `curl -J` saves it under.
    filename: str
    #: What it is, for messages: "the SavedModel of study 's' trial 3 step 40".
    what: str
    #: The pin on its trial, renewed while it is sent.
    pin: PinRenewal | None = None


def archive_response(
    download: Download, *, range_header: str | None, if_range: str | None
) -> ArchiveResponse:
    """The download's archive as an attachment; the request's `Range` checked first."""
    archive = download.archive
    response = ArchiveResponse(
        archive.path,
        media_type="application/gzip",
        filename=download.filename,
        stat_result=archive.stat,
        headers={"ETag": archive.etag},
    )
    response.pin = download.pin
    if range_header is None or (if_range is not None and not response._should_use_range(if_range)):
        return response  # no range, or a range of another version: the whole archive
    try:
        FileResponse._parse_range_header(range_header, archive.size)
    except MalformedRangeHeader:
        response.ignore_range = True
    except RangeNotSatisfiable:
        raise RangeNotSatisfiableError(
            f"{download.what}: the range {range_header!r} lies outside its {archive.size} bytes"
        ) from None
    return response


@dataclass(frozen=True)
class StoredDownload:
    """An archive in the object store, as one route offers it."""

    store: ObjectStore
    archive: StoredArchive
    filename: str
    what: str
    pin: PinRenewal | None = None

    @property
    def etag(self) -> str:
        return f'"{self.archive.sha256}"'


#: Seconds a download waits for the store's first bytes before it answers 503 (nothing sent).
FIRST_BYTES_SECONDS = 10.0
RETRY_AFTER_SECONDS = 10


class StoredArchiveResponse(Response):
    """An archive streamed from the object store: the whole of it (200) or one byte range
    (206), read with a ranged GET and passed on chunk by chunk (no copy in memory or on
    disk); `HEAD` sends the headers alone."""

    def __init__(self, download: StoredDownload, byte_range: tuple[int, int] | None) -> None:
        size = download.archive.size
        start, end = byte_range or (0, size)
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": download.etag,
            "Content-Length": str(end - start),
            "Content-Disposition": f'attachment; filename="{download.filename}"',
        }
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        super().__init__(
            status_code=206 if byte_range else 200,
            headers=headers,
            media_type="application/gzip",
        )
        self.download = download
        self.start, self.end = start, end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with renewing(self.download.pin):
            await self._send(scope, receive, send)

    async def _send(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            await self._start(send)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            chunks, first = await asyncio.wait_for(
                run_in_threadpool(self._first_chunk), FIRST_BYTES_SECONDS
            )
        except (TimeoutError, TunerError, OSError) as exc:
            # Nothing sent yet: the client gets a 503 it can retry, not a 200 without bytes.
            why = (
                f"no answer within {FIRST_BYTES_SECONDS:g} s"
                if isinstance(exc, TimeoutError)
                else first_line(exc)
            )
            unavailable = error_response(
                503,
                "UNAVAILABLE",
                f"{self.download.what}: the artifact store does not answer ({why}); retry later",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await unavailable(scope, receive, send)
            return
        await self._start(send)
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in iterate_in_threadpool(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _start(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )

    def _first_chunk(self) -> tuple[Iterator[bytes], bytes]:
        """Ask the store for the bytes and wait for the first of them (in a thread)."""
        chunks = iter(self.download.store.read(self.download.archive.path, self.start, self.end))
        return chunks, next(chunks, b"")


def stored_archive_response(
    download: StoredDownload, *, range_header: str | None, if_range: str | None
) -> StoredArchiveResponse:
    """The stored archive as an attachment, with the same range rules as `archive_response`
    (a second range and after of a multi-range request is not sent: the whole archive is)."""
    size = download.archive.size
    if range_header is None or (if_range is not None and if_range != download.etag):
        return StoredArchiveResponse(download, None)
    try:
        ranges = FileResponse._parse_range_header(range_header, size)
    except MalformedRangeHeader:
        return StoredArchiveResponse(download, None)
    except RangeNotSatisfiable:
        raise RangeNotSatisfiableError(
            f"{download.what}: the range {range_header!r} lies outside its {size} bytes"
        ) from None
    if len(ranges) != 1:
        return StoredArchiveResponse(download, None)
    return StoredArchiveResponse(download, ranges[0])
