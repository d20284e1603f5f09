"""Resumable downloads of the server's `.tar.gz` archives, unpacked safely.

A download goes to `<destination>/.<name>.partial`, with the archive's ETag in
`<destination>/.<name>.etag` beside it, so an interrupted download (a dropped connection, a
killed `tuner pull`) continues where it stopped: `Range: bytes=<have>-` with `If-Range: <etag>`.
If the archive changed meanwhile (the study has a new best trial), the server sends the whole
new one instead, and the download starts over. A finished download is checked against
`Content-Length` and, when the ETag is a sha256 (the tuner's is), against that hash, before it
is unpacked with `tarfile`'s `data` filter (no absolute paths, no links out, no devices).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tarfile
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tuner.domain.errors import DownloadError

#: `progress(done_bytes, total_bytes)`; the total is None when the server does not say it.
ProgressCallback = Callable[[int, int | None], None]
#: `resumed(offset)`: the download continues from byte `offset` of the archive.
ResumeCallback = Callable[[int], None]
ErrorFactory = Callable[[httpx.Response], Exception]

CHUNK = 256 * 1024
#: The first download of a large model waits while the server builds its archive.
TIMEOUT = httpx.Timeout(30.0, read=600.0)
_SHA256_ETAG = re.compile(r'^"([0-9a-f]{64})"$')
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class PartialFiles:
    """Where a download of one API path into one destination keeps its state."""

    data: Path
    etag: Path


def partial_files(destination: Path, path: str) -> PartialFiles:
    """The partial download of API `path` (e.g. `/studies/s/best/model`) in `destination`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.strip("/").removeprefix("studies/"))
    name = name.replace("/", "-") + ".tar.gz"
    return PartialFiles(destination / f".{name}.partial", destination / f".{name}.etag")


def download_archive(
    http: httpx.Client,
    path: str,
    destination: str | os.PathLike[str],
    *,
    error: ErrorFactory,
    progress: ProgressCallback | None = None,
    resumed: ResumeCallback | None = None,
) -> Path:
    """Download the archive at `path`, resuming a partial download, and unpack it into
    `destination`; return the one top-level dir it unpacked (e.g. `<version>/`).

    An error answer raises `error(response)`. A short download raises `DownloadError` and
    keeps its partial file, to resume on the next call; a corrupt one is discarded.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    files = partial_files(destination, path)
    etag = _fetch(http, path, files, error, progress, resumed)
    _verify(files, etag)
    top = _unpack(files, destination)
    _discard(files)
    return top


def _fetch(
    http: httpx.Client,
    path: str,
    files: PartialFiles,
    error: ErrorFactory,
    progress: ProgressCallback | None,
    resumed: ResumeCallback | None,
) -> str | None:
    """Bring the partial file to the whole archive; return the archive's ETag, if any."""
    for _attempt in range(2):
        have, etag = _resumable(files)
        headers = {"Range": f"bytes={have}-", "If-Range": etag} if have and etag else {}
        with http.stream("GET", path, headers=headers, timeout=TIMEOUT) as response:
            if response.status_code == 416 and headers:
                response.read()
                if _sha256_matches(files.data, etag):
                    return etag  # the partial file was whole already
                _discard(files)  # longer than the archive: not a part of it
                continue
            if response.status_code >= 400:
                response.read()
                raise error(response)
            if response.status_code == 206:
                start, total = _content_range(response)
                if start != have:
                    raise DownloadError(
                        f"{path}: asked for bytes from {have}, the server sent from {start}"
                    )
                if resumed is not None:
                    resumed(have)
            else:
                have, total, etag = 0, _content_length(response), _strong(response)
                _discard(files)
                if etag is not None:
                    # Written before any data, so that every partial file can be resumed.
                    files.etag.write_text(etag + "\n", encoding="ascii")
            try:
                _receive(response, files.data, have, total, progress, append=have > 0)
            except httpx.TransportError as exc:
                size = files.data.stat().st_size
                raise DownloadError(
                    f"{path}: the connection broke at {size} of {total or '?'} bytes ({exc}); "
                    "run the same download again to resume it"
                ) from exc
        size = files.data.stat().st_size
        if total is not None and size != total:
            raise DownloadError(
                f"{path}: the download stopped at {size} of {total} bytes; "
                "run the same download again to resume it"
            )
        return etag
    raise DownloadError(f"{path}: the server refuses to resume the partial download")


def _receive(
    response: httpx.Response,
    target: Path,
    done: int,
    total: int | None,
    progress: ProgressCallback | None,
    *,
    append: bool,
) -> None:
    with open(target, "ab" if append else "wb") as out:
        if progress is not None:
            progress(done, total)
        try:
            for chunk in response.iter_bytes(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        finally:
            out.flush()
            os.fsync(out.fileno())


def _resumable(files: PartialFiles) -> tuple[int, str | None]:
    """(bytes already here, their archive's ETag); a partial file without an ETag is dropped,
    since nothing would tell whether the server's archive is still the one it is a part of."""
    try:
        etag = files.etag.read_text(encoding="ascii").strip()
        have = files.data.stat().st_size
    except (OSError, UnicodeDecodeError):
        _discard(files)
        return 0, None
    if not etag or etag.startswith("W/"):
        _discard(files)
        return 0, None
    return have, etag


def _verify(files: PartialFiles, etag: str | None) -> None:
    if etag is not None and _SHA256_ETAG.match(etag) and not _sha256_matches(files.data, etag):
        _discard(files)
        raise DownloadError(
            f"the download does not match its sha256 {etag}, so it was discarded; "
            "run the same download again"
        )


def _sha256_matches(target: Path, etag: str | None) -> bool:
    match = _SHA256_ETAG.match(etag or "")
    if match is None:
        return False
    digest = hashlib.sha256()
    with open(target, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == match.group(1)


def _unpack(files: PartialFiles, destination: Path) -> Path:
    """Unpack the one top-level dir of the archive; an archive that is not one is discarded
    (an error writing the files, e.g. a full disk, keeps it for another try)."""
    try:
        return unpack_archive(files.data, destination)
    except DownloadError:
        _discard(files)
        raise


def unpack_archive(archive: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Unpack a `.tar.gz` of one top-level dir into `destination` (tarfile's `data` filter:
    no absolute paths, no links out, no devices); return that dir."""
    destination = Path(destination)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
            if len(top) == 1:
                tar.extractall(destination, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DownloadError(
            f"the archive could not be unpacked, so it was discarded: {exc}"
        ) from exc
    if len(top) != 1:
        raise DownloadError(
            f"the archive has {len(top)} top-level entries, not one: {sorted(top)[:5]}"
        )
    (name,) = top
    return destination / name


def _content_range(response: httpx.Response) -> tuple[int, int | None]:
    header = response.headers.get("content-range", "")
    match = _CONTENT_RANGE.match(header)
    if match is None:
        raise DownloadError(f"a 206 answer without a usable Content-Range: {header!r}")
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _strong(response: httpx.Response) -> str | None:
    etag = response.headers.get("etag")
    return etag if etag and not etag.startswith("W/") else None


def _discard(files: PartialFiles) -> None:
    for leftover in (files.data, files.etag):
        with suppress(FileNotFoundError):
            leftover.unlink()
