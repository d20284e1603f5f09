"""The cheapest possible "trainer": one eval event with `rmse = f(x)`, then exit 0.

Used by `bench/overhead.py`, so that a trial costs little more than a Python start and the
orchestration around it is what gets measured. It follows the trainer conventions the tuner
uses (`--job-dir=DIR`, one `--name=value` flag per hyperparameter; other flags are ignored) and
writes `DIR/eval/events.out.tfevents.<time>.<host>.<pid>` holding a `file_version` event and one
Event at step 1 whose Summary has `tag="rmse", simple_value=f(x)`.

To start fast it imports neither TensorFlow, nor TensorBoard, nor protobuf, nor argparse: the
two tiny Event protos are encoded by hand (checked against TensorBoard's own `event_pb2` by
`python bench/trivial_trainer.py --self-check`) and framed as TFRecords (uint64 LE length,
masked CRC32C of the length, data, masked CRC32C of the data).
"""

from __future__ import annotations

import os
import struct
import sys
import time

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def objective(x: float) -> float:
    """What the trial "converges" to: a bowl with its minimum at x = 0.3."""
    return (x - 0.3) ** 2 + 0.1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def encode_file_version_event(wall_time: float) -> bytes:
    """`Event(wall_time=..., file_version="brain.Event:2")`."""
    return b"\x09" + struct.pack("<d", wall_time) + _length_delimited(3, b"brain.Event:2")


def encode_scalar_event(wall_time: float, step: int, tag: str, value: float) -> bytes:
    """`Event(wall_time, step, summary=Summary(value=[Value(tag=tag, simple_value=value)]))`."""
    summary_value = _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", value)
    summary = _length_delimited(1, summary_value)
    return (
        b"\x09"
        + struct.pack("<d", wall_time)
        + b"\x10"
        + _varint(step)
        + _length_delimited(5, summary)
    )


def _masked_crc(data: bytes) -> bytes:
    crc: int = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF).to_bytes(4, "little")


def frame(record: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    header = len(record).to_bytes(8, "little")
    return header + _masked_crc(header) + record + _masked_crc(record)


def parse_flags(argv: list[str]) -> dict[str, str]:
    """`--name=value` flags by name; anything else is ignored."""
    flags: dict[str, str] = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            name, _, value = arg[2:].partition("=")
            flags[name] = value
    return flags


def main(argv: list[str]) -> int:
    flags = parse_flags(argv)
    job_dir = flags.get("job-dir")
    if not job_dir:
        print("usage: trivial_trainer.py --job-dir=DIR [--x=FLOAT] [--name=value ...]")
        return 2
    x = float(flags.get("x", "0"))
    eval_dir = os.path.join(job_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{now:.0f}.{os.uname().nodename}.{os.getpid()}"
    data = frame(encode_file_version_event(now)) + frame(
        encode_scalar_event(now, 1, "rmse", objective(x))
    )
    with open(os.path.join(eval_dir, name), "wb") as handle:
        handle.write(data)
    return 0


def self_check() -> int:
    """Compare the hand-encoded protos with TensorBoard's (imports protobuf; not for trials)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2

    wall_time, value = 1700000000.25, objective(-0.5)
    expected_version = event_pb2.Event(wall_time=wall_time, file_version="brain.Event:2")
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="rmse", simple_value=value)])
    expected_scalar = event_pb2.Event(wall_time=wall_time, step=1, summary=summary)
    ok = (
        encode_file_version_event(wall_time) == expected_version.SerializeToString()
        and encode_scalar_event(wall_time, 1, "rmse", value) == expected_scalar.SerializeToString()
    )
    print("hand-encoded events match event_pb2" if ok else "MISMATCH with event_pb2")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-check"]:
        sys.exit(self_check())
    sys.exit(main(sys.argv[1:]))
