"""Reading a scalar integer variable, above all `global_step`, out of a TensorFlow checkpoint.

The processes that call this (the manager, the CLI, the API) must never import TensorFlow, and no
library reads a checkpoint bundle without it, so this is a small hand-written reader of the format
TensorFlow's `tensor_bundle.cc` writes:

- `<prefix>.index` is a LevelDB-format SSTable. Its 48-byte footer holds the handles (offset and
  size as varints) of the metaindex and index blocks, then a magic number; the index block maps
  keys to the handles of the data blocks. A block is prefix-compressed entries and a restart
  array, followed by a 1-byte compression type and a masked crc32c. TensorFlow writes the bundle
  index uncompressed; a compressed (snappy) block is refused, not guessed at.
- Each key is a variable's name and each value a serialized `BundleEntryProto` (dtype=1, shape=2,
  shard_id=3, offset=4, size=5, crc32c=6); the key "" holds the `BundleHeaderProto`
  (num_shards=1, endianness=2). tensorboard's proto copies have neither message, so these few
  fields are decoded by hand.
- The tensor's bytes are at `offset` in `<prefix>.data-<shard_id:05d>-of-<num_shards:05d>`.

A missing, truncated or corrupt file gives None: a step we cannot trust is a step we do not know.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import google_crc32c

#: Estimator (graph) checkpoints name it `global_step`; object-based (TF2) checkpoints name it
#: by its path in the object graph. Keras 2.15's optimizers keep their step count as `_iterations`
#: (the legacy optimizers as `iter`).
GLOBAL_STEP_NAMES = (
    "global_step",
    "global_step/.ATTRIBUTES/VARIABLE_VALUE",
    "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE",
    "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE",
)

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5  # compression type, masked crc32c
_INT_SIZES = {3: 4, 9: 8}  # DT_INT32, DT_INT64
_BIG_ENDIAN = 1


class _Unreadable(ValueError):
    """The bytes are not what the format says, or use a part of it that we do not decode."""


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _unmask(masked: int) -> int:
    """LevelDB and TensorFlow store crc32c values masked, so that a crc of crcs is not trivial."""
    rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos
    raise _Unreadable("bad varint")


def _block(table: bytes, handle: bytes) -> bytes:
    """The checked contents of the block that `handle` (offset and size as varints) points to."""
    offset, pos = _varint(handle, 0)
    end = offset + _varint(handle, pos)[0]
    if end + _TRAILER_SIZE > len(table):
        raise _Unreadable("block past the end of the file")
    (masked,) = struct.unpack_from("<I", table, end + 1)
    if _unmask(masked) != _crc32c(table[offset : end + 1]):
        raise _Unreadable("block checksum mismatch")
    if table[end] != 0:  # 1 is snappy, which TensorFlow does not use for bundles
        raise _Unreadable("compressed block")
    return table[offset:end]


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Each (key, value) of a block; a key shares its first `shared` bytes with the one before."""
    if len(block) < 4:
        raise _Unreadable("block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    key, pos = b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        size, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + size > end:
            raise _Unreadable("bad block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size


def _read_index(path: Path) -> dict[bytes, bytes]:
    table = path.read_bytes()
    footer = table[-_FOOTER_SIZE:]
    if len(footer) != _FOOTER_SIZE or struct.unpack_from("<Q", footer, 40)[0] != _MAGIC:
        raise _Unreadable("not an SSTable")
    _, pos = _varint(footer, _varint(footer, 0)[1])  # skip the metaindex handle
    index = _block(table, footer[pos:])
    return {key: value for _, at in _entries(index) for key, value in _entries(_block(table, at))}


def _fields(message: bytes) -> dict[int, int | bytes]:
    """A protobuf message's fields by number (the last one wins, as for protobuf scalars)."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        wire = tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(message[pos : pos + width], "little"), pos + width
        elif wire == 2:
            size, pos = _varint(message, pos)
            value, pos = message[pos : pos + size], pos + size
        else:
            raise _Unreadable(f"wire type {wire}")
        if pos > len(message):
            raise _Unreadable("truncated message")
        fields[tag >> 3] = value
    return fields


def _int(fields: dict[int, int | bytes], number: int, default: int = 0) -> int:
    value = fields.get(number, default)
    if not isinstance(value, int):
        raise _Unreadable(f"field {number} is not an integer")
    return value


def _read(prefix: Path, names: Sequence[str]) -> int | None:
    table = _read_index(Path(f"{prefix}.index"))
    found = next((table[key] for key in (n.encode() for n in names) if key in table), None)
    if found is None:
        return None
    entry, header = _fields(found), _fields(table.get(b"", b""))
    shape = entry.get(2, b"")  # TensorShapeProto: dim=2 (repeated), unknown_rank=3
    if not isinstance(shape, bytes):
        raise _Unreadable("shape is not a message")
    dims = _fields(shape)
    size = _INT_SIZES.get(_int(entry, 1))
    if size is None or 2 in dims or _int(dims, 3) or _int(entry, 5) != size:
        return None  # not an integer, or not a scalar
    shard, shards = _int(entry, 3), _int(header, 1, 1)
    with Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}").open("rb") as data:
        data.seek(_int(entry, 4))
        raw = data.read(size)
    if len(raw) != size or (6 in entry and _unmask(_int(entry, 6)) != _crc32c(raw)):
        raise _Unreadable("truncated or corrupt tensor data")
    big_endian = _int(header, 2) == _BIG_ENDIAN
    return int.from_bytes(raw, "big" if big_endian else "little", signed=True)


def read_int_variable(prefix: Path, names: Sequence[str]) -> int | None:
    """The value of the first of `names` that the bundle at `prefix` holds as a scalar integer.

    None when none is there, when it is not a scalar DT_INT32/DT_INT64, or when the bundle's files
    are missing or do not decode: callers use this to label artifacts, never to fail on them.
    """
    try:
        return _read(prefix, names)
    except (OSError, ValueError, struct.error):
        return None


def checkpoint_global_step(prefix: Path) -> int | None:
    """The step of a checkpoint such as `model_dir/model.ckpt-200`, read from the bundle itself.

    The file name's suffix is only a convention, and a copied or renamed checkpoint loses it.
    """
    return read_int_variable(prefix, GLOBAL_STEP_NAMES)


def savedmodel_global_step(export_dir: Path) -> int | None:
    """The step of the variables a SavedModel was exported with (`variables/variables`)."""
    return checkpoint_global_step(export_dir / "variables" / "variables")
