"""A canned-Estimator trainer that leaves a damaged eval event file behind, then exits 0.

    python -m tests.trainers.truncated_events --job-dir=DIR --learning_rate=0.01 \
        --damage=truncate|junk [--train-steps=30] [--eval-every-steps=10]

Reproduces an event file cut short (a trainer killed in mid-write, a partial copy from a
bucket) or corrupted in place. It trains `trial_subdir`'s DNNRegressor (metrics `average_loss`,
`loss`, `label/mean`, `prediction/mean`, `rmse`) with `tf.estimator.train_and_evaluate`
directly in `<job-dir>` (no trial subdir, no export), evaluating at steps 10, 20, 30: each
evaluation appends a metrics event and then a `checkpoint_path` event to the one
`<job-dir>/eval/events.out.tfevents.*`, so the file's LAST record is step 30's
`checkpoint_path` event, and step 30's metrics are the record before it. Then:

a damaged copy of that last record is appended (deterministic whenever a reader polls):

* `--damage=truncate`: the copy lacks its last 7 bytes (its data CRC and 3 data bytes), as a
  writer killed mid-record leaves it;
* `--damage=junk`: 16 bytes in the middle of the copy's data are `0xDEADBEEF` x 4, so its data
  CRC fails (length unchanged).

Also written, as usual: `<job-dir>/checkpoint`, `model.ckpt-{10,20,30}.*`, `graph.pbtxt`,
train `events.out.tfevents.*`. The exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import glob
import os
import struct

import tensorflow as tf

from tests.trainers import trial_subdir
from tests.trainers._houses import EVAL_FILE, TRAIN_FILE

JUNK = b"\xde\xad\xbe\xef" * 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", required=True)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--damage", choices=["truncate", "junk"], required=True)
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--eval-every-steps", type=int, default=10)
    return p.parse_args(argv)


def last_record(data: bytes) -> tuple[int, int]:
    """(offset, length) of the last TFRecord's data: each record is a uint64 length, its
    masked crc32c (4 bytes), the data and the data's masked crc32c (4 bytes)."""
    offset, last = 0, (0, 0)
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        last = (offset + 12, length)
        offset += 12 + length + 4
    return last


def damage(path: str, how: str) -> None:
    """Append a damaged copy of the last record, as a writer that crashed (or wrote through a
    bad disk) would: appended after the file was complete, so a reader tailing the file sees
    the damage whenever it reads, never a record it had read intact before."""
    with open(path, "r+b") as f:
        data = f.read()
        start, length = last_record(data)
        record = bytearray(data[start - 12 : start + length + 4])
        if how == "truncate":
            record = record[:-7]
        else:
            middle = 12 + (length - len(JUNK)) // 2
            record[middle : middle + len(JUNK)] = JUNK
        f.seek(0, 2)
        f.write(bytes(record))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    estimator = trial_subdir.make_estimator(args.job_dir, args.learning_rate, args.eval_every_steps)
    train_spec = tf.estimator.TrainSpec(
        lambda: trial_subdir.input_fn(str(TRAIN_FILE), "gfile", 64, train=True),
        max_steps=args.train_steps,
    )
    eval_spec = tf.estimator.EvalSpec(
        lambda: trial_subdir.input_fn(str(EVAL_FILE), "gfile", 64, train=False),
        steps=None,
        start_delay_secs=0,
        throttle_secs=0,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    # The writers are cached and still open: close them before touching their files.
    tf.compat.v1.summary.FileWriterCache.clear()
    path = sorted(glob.glob(os.path.join(args.job_dir, "eval", "events.out.tfevents.*")))[-1]
    damage(path, args.damage)
    print(f"damaged ({args.damage}) {path}", flush=True)


if __name__ == "__main__":
    main()
