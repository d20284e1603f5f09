"""Built archives as file answers: `Content-Length`, a strong `ETag`, byte ranges, `HEAD`.

Starlette's `FileResponse` does the ranges (`Range`, `If-Range`, 206, multipart ranges) and
`HEAD`. Two of its answers are not ours: an unsatisfiable range is refused here first, as a
`RangeNotSatisfiableError` (so its body has the API's error shape), and a malformed `Range` is
ignored (the whole file, as RFC 9110 allows) instead of a plain-text 400. The check uses
`FileResponse`'s own parser, so it decides as the response will.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from tuner.archives import Archive
from tuner.errors import RangeNotSatisfiableError


class ArchiveResponse(FileResponse):
    """A `FileResponse` that can be told to ignore the request's `Range`."""

    ignore_range = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ignore_range:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]
            scope = {**scope, "headers": headers}
        await super().__call__(scope, receive, send)


@dataclass(frozen=True)
class Download:
    """An archive as one route offers it."""

    archive: Archive
    #: The name a browser or `curl -J` saves it under.
    filename: str
    #: What it is, for messages: "the SavedModel of study 's' trial 3 step 40".
    what: str


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
