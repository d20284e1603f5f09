"""Incremental reading of the TensorFlow event files that Estimators write into eval dirs.

The trial manager tails these files while a trainer runs, so this module must stay importable
without TensorFlow: it decodes the `Event` protos with TensorBoard's copies of the protos and
checks the TFRecord framing itself.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Final

import google_crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

from tuner.domain.errors import EventFileError

__all__ = [
    "CHECKPOINT_PATH_TAG",
    "EVENT_FILE_GLOB",
    "TUNER_EVENT_SUFFIX",
    "CheckpointPathValue",
    "EvalDirWatcher",
    "EventFileReader",
    "FileProblem",
    "PollResult",
    "ScalarValue",
    "parse_event",
]

EVENT_FILE_GLOB: Final = "events.out.tfevents.*"
#: How the event files the tuner writes itself end (`tuner.outputs.hparams`): TensorBoard reads
#: them, the tuner's readers of a trainer's outputs leave them out.
TUNER_EVENT_SUFFIX: Final = ".tuner-hparams"
CHECKPOINT_PATH_TAG: Final = "checkpoint_path"

# We frame TFRecords ourselves because no library exposes resumable byte offsets.
# TFRecord framing: uint64 length, uint32 masked CRC of the length, data, uint32 masked CRC of data.
_HEADER: Final = 12
_FOOTER: Final = 4
_MASK_DELTA: Final = 0xA282EAD8

# How each numeric dtype stores a value: (repeated field of the TensorProto, numpy dtype of its
# little-endian `tensor_content` bytes).
_NUMERIC_DTYPES: Final[dict[int, tuple[str, str]]] = {
    types_pb2.DT_FLOAT: ("float_val", "<f4"),
    types_pb2.DT_DOUBLE: ("double_val", "<f8"),
    types_pb2.DT_HALF: ("half_val", "<f2"),
    types_pb2.DT_BFLOAT16: ("half_val", "<u2"),
    types_pb2.DT_INT8: ("int_val", "<i1"),
    types_pb2.DT_INT16: ("int_val", "<i2"),
    types_pb2.DT_INT32: ("int_val", "<i4"),
    types_pb2.DT_UINT8: ("int_val", "<u1"),
    types_pb2.DT_UINT16: ("int_val", "<u2"),
    types_pb2.DT_INT64: ("int64_val", "<i8"),
    types_pb2.DT_UINT32: ("uint32_val", "<u4"),
    types_pb2.DT_UINT64: ("uint64_val", "<u8"),
}
# Tensor summaries of these plugins are scalars; any other plugin (hparams, text, pr_curves...)
# encodes something else even when its tensor happens to be a numeric scalar.
_SCALAR_PLUGINS: Final = frozenset({"", "scalars"})


@dataclass(frozen=True, slots=True)
class ScalarValue:
    """One scalar summary value, as an objective or for a learning curve."""

    eval_name: str
    step: int
    wall_time: float
    tag: str
    value: float


@dataclass(frozen=True, slots=True)
class CheckpointPathValue:
    """The checkpoint an Estimator evaluated, tying the eval's metrics to what they scored."""

    eval_name: str
    step: int
    wall_time: float
    path: str


@dataclass(frozen=True, slots=True)
class FileProblem:
    """An event file that could not be (fully) read, for the trial's log rather than a crash."""

    path: str
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one `EvalDirWatcher.poll` found; `changed_offsets` is what needs persisting."""

    values: list[ScalarValue | CheckpointPathValue]
    problems: list[FileProblem]
    changed_offsets: dict[str, int]


def _masked_crc(data: bytes) -> int:
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class EventFileReader:
    """Reads one tfevents file incrementally, so a file still being written can be tailed."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._path = path
        self._offset = offset
        self._error: EventFileError | None = None

    @property
    def path(self) -> Path:
        """The event file."""
        return self._path

    @property
    def offset(self) -> int:
        """Byte offset after the last complete record consumed."""
        return self._offset

    @property
    def pending_bytes(self) -> int:
        """Bytes after `offset` that do not (yet) form a complete record: a writer may be mid-write.

        Complete records not read yet are skipped over, not counted. Scanning stops at a record
        whose length fails its CRC check; the bytes from there on count as pending.
        """
        with self._path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            end = self._offset
            while size - end >= _HEADER:
                f.seek(end)
                header = f.read(_HEADER)
                length = self._frame_length(header)
                if length is None or size - end < _HEADER + length + _FOOTER:
                    break
                end += _HEADER + length + _FOOTER
        return max(0, size - end)

    def read_records(self) -> list[bytes]:
        """Returns every complete record after `offset` and moves `offset` past them.

        An incomplete trailing record is left for the next call. A CRC mismatch raises
        `EventFileError` with `offset` left at the bad record; if good records came before it in
        this call they are returned first and the next call raises.
        """
        if self._error is not None:
            raise self._error
        records, error = self._read()
        if error is not None:
            self._error = error
            if not records:
                raise error
        return [data for _, data in records]

    def _read(self) -> tuple[list[tuple[int, bytes]], EventFileError | None]:
        """Reads (start offset, data) of the new complete records, and the error that stopped it."""
        records: list[tuple[int, bytes]] = []
        with self._path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self._offset:
                reason = (
                    f"truncated: the file shrank to {size} bytes, "
                    f"below the {self._offset} already read"
                )
                return records, EventFileError(str(self._path), self._offset, reason)
            f.seek(self._offset)
            while True:
                start = self._offset
                record = self._read_one(f, size - start)
                if record is None:
                    return records, None
                if isinstance(record, str):
                    return records, EventFileError(str(self._path), start, record)
                records.append((start, record))
                self._offset = start + _HEADER + len(record) + _FOOTER

    @staticmethod
    def _frame_length(header: bytes) -> int | None:
        """The record length a 12-byte header announces, or None if it is short or corrupt."""
        if len(header) < _HEADER:
            return None
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        return length if _masked_crc(header[:8]) == length_crc else None

    @staticmethod
    def _read_one(f: BinaryIO, available: int) -> bytes | str | None:
        """The next record's data, None if it is not complete yet, or why it is corrupt."""
        if available < _HEADER:
            return None
        header = f.read(_HEADER)
        if len(header) < _HEADER:
            return None
        length = EventFileReader._frame_length(header)
        if length is None:
            return "record length fails its CRC check"
        if available < _HEADER + length + _FOOTER:
            return None
        data = f.read(length)
        footer = f.read(_FOOTER)
        if len(data) < length or len(footer) < _FOOTER:
            return None
        (data_crc,) = struct.unpack("<I", footer)
        if _masked_crc(data) != data_crc:
            return "record data fails its CRC check"
        return data


def _tensor_scalar(tensor: tensor_pb2.TensorProto) -> float | None:
    """The value of a single-element numeric tensor, else None (strings, images, histograms...)."""
    kind = _NUMERIC_DTYPES.get(tensor.dtype)
    if kind is None or tensor.tensor_shape.unknown_rank:
        return None
    sizes = [dim.size for dim in tensor.tensor_shape.dim]
    if any(size < 0 for size in sizes) or math.prod(sizes) != 1:
        return None
    field, np_dtype = kind
    if tensor.tensor_content:
        array = np.frombuffer(tensor.tensor_content, dtype=np_dtype)
    else:
        vals = getattr(tensor, field)
        if not vals:
            return 0.0  # like tf.make_ndarray: no values means zero-filled
        # half_val holds float16/bfloat16 bit patterns; the rest hold the values themselves.
        storage = "<u2" if field == "half_val" else None
        array = np.array(vals[:1], dtype=storage)
        if storage is not None:
            array = array.view(np_dtype)
    if array.size < 1:
        return None
    if tensor.dtype == types_pb2.DT_BFLOAT16:
        # bfloat16 is the upper half of a float32.
        array = (array.astype("<u4") << 16).view("<f4")
    return float(array.reshape(-1)[0])


def parse_event(
    record: bytes, eval_name: str, *, path: str = "<record>", offset: int = 0
) -> list[ScalarValue | CheckpointPathValue]:
    """Decodes one event record into the scalar and checkpoint-path values it carries.

    TF1 `simple_value`s and TF2 single-element numeric tensor summaries count; other events
    (file_version, graphs, ...) and other summaries (images, histograms, text...) yield nothing.
    `path` and `offset` only label the `EventFileError` raised for a record that is not an Event.
    """
    event = event_pb2.Event()
    try:
        event.ParseFromString(record)
    except DecodeError as exc:
        raise EventFileError(path, offset, f"record is not an Event proto: {exc}") from exc
    if event.WhichOneof("what") != "summary":
        return []
    out: list[ScalarValue | CheckpointPathValue] = []
    for value in event.summary.value:
        parsed = _parse_value(value, eval_name, event.step, event.wall_time)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_value(
    value: summary_pb2.Summary.Value, eval_name: str, step: int, wall_time: float
) -> ScalarValue | CheckpointPathValue | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return ScalarValue(eval_name, step, wall_time, value.tag, float(value.simple_value))
    if kind != "tensor":
        return None
    tensor = value.tensor
    if (
        value.tag == CHECKPOINT_PATH_TAG
        and tensor.dtype == types_pb2.DT_STRING
        and tensor.string_val
    ):
        # surrogateescape keeps a non-UTF-8 path usable as a filesystem path.
        path = tensor.string_val[0].decode("utf-8", errors="surrogateescape")
        return CheckpointPathValue(eval_name, step, wall_time, path)
    if value.metadata.plugin_data.plugin_name not in _SCALAR_PLUGINS:
        return None
    scalar = _tensor_scalar(tensor)
    if scalar is None:
        return None
    return ScalarValue(eval_name, step, wall_time, value.tag, scalar)


class EvalDirWatcher:
    """Tails every events file (`events.out.tfevents.*`) in a trial's eval dirs.

    Offsets are keyed by the file's path relative to `output_dir` so that a restarted manager can
    resume from persisted offsets without reporting a value twice.
    """

    def __init__(
        self,
        output_dir: Path,
        patterns: Sequence[str],
        offsets: Mapping[str, int] | None = None,
    ) -> None:
        self._output_dir = output_dir
        self._patterns: list[str] = []
        self.patterns = patterns
        self._offsets: dict[str, int] = dict(offsets or {})
        self._readers: dict[str, EventFileReader] = {}
        self._broken: set[str] = set()

    @property
    def patterns(self) -> list[str]:
        """The eval dir globs, relative to the output dir (a copy)."""
        return list(self._patterns)

    @patterns.setter
    def patterns(self, patterns: Sequence[str]) -> None:
        """Read other dirs from now on (what was read of a file stays read)."""
        for pattern in patterns:
            parts = PurePosixPath(pattern).parts
            if not pattern or pattern.startswith(("/", "\\")) or ".." in parts:
                raise ValueError(f"eval dir pattern must stay inside the output dir: {pattern!r}")
        self._patterns = list(patterns)

    @property
    def offsets(self) -> dict[str, int]:
        """Relative path -> byte offset consumed, for persisting (a copy)."""
        return dict(self._offsets)

    def _discover(self) -> list[str]:
        """Relative paths of every event file in the dirs the patterns match, sorted."""
        found: set[str] = set()
        for pattern in self._patterns:
            for directory in self._output_dir.glob(pattern):
                if not directory.is_dir():
                    continue
                for file in directory.glob(EVENT_FILE_GLOB):
                    if file.is_file() and not file.name.endswith(TUNER_EVENT_SUFFIX):
                        found.add(file.relative_to(self._output_dir).as_posix())
        return sorted(found)

    def poll(self) -> PollResult:
        """Reads what was appended to every event file since the last poll (finding new files).

        A corrupt file is reported once in `problems` and then left alone.
        """
        values: list[ScalarValue | CheckpointPathValue] = []
        problems: list[FileProblem] = []
        changed: dict[str, int] = {}
        for rel in self._discover():
            if rel in self._broken:
                continue
            reader = self._readers.get(rel)
            if reader is None:
                reader = EventFileReader(self._output_dir / rel, self._offsets.get(rel, 0))
                self._readers[rel] = reader
            try:
                records, error = reader._read()
            except FileNotFoundError:
                continue  # deleted since discovery; nothing to read
            eval_name = PurePosixPath(rel).parent.as_posix()
            before = self._offsets.get(rel, 0)
            offset = before
            for start, data in records:
                try:
                    values.extend(parse_event(data, eval_name, path=str(reader.path), offset=start))
                except EventFileError as exc:
                    error = exc
                    break
                offset = start + _HEADER + len(data) + _FOOTER
            if error is not None:
                self._broken.add(rel)
                problems.append(FileProblem(error.path, error.offset, error.reason))
            if offset != before:
                self._offsets[rel] = offset
                changed[rel] = offset
        return PollResult(values, problems, changed)

    def finish(self) -> list[FileProblem]:
        """Reports each file that ends in an incomplete record, once the trainer has exited.

        Call `poll` first: this does not read, it only checks what is left after `offset`.
        """
        problems: list[FileProblem] = []
        for rel in sorted(self._readers):
            if rel in self._broken:
                continue
            reader = self._readers[rel]
            try:
                pending = reader.pending_bytes
            except FileNotFoundError:
                continue
            if pending > 0:
                reason = f"truncated: {pending} bytes after the last complete record"
                problems.append(FileProblem(str(reader.path), reader.offset, reason))
        return problems
