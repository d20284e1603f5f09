"""A cheap trainer with realistic learning curves (no TensorFlow), for `bench/search.py`.

It follows the AI Platform trainer conventions the tuner uses (`--job-dir=DIR`, one
`--name=value` flag per hyperparameter, `--train-steps`, `--eval-every-steps`) and behaves like
an Estimator on disk: every `--eval-every-steps` it writes fake checkpoint files
(`model.ckpt-N.*`, the last two kept, plus the `checkpoint` state file) and an eval event with
`rmse`, `loss` and `checkpoint_path` into `DIR/eval/events.out.tfevents.*`, framed as TFRecords
with masked CRC32Cs (as `examples/synthetic/task.py` does: TensorBoard's protos, no TensorFlow).

The eval rmse after `step` training steps is

    rmse(step) = floor * (1 + jitter) + 1.0 * exp(-step / tau) + noise

with, for an effective learning rate `eff = learning_rate * speed[optimizer]`:

- `tau = 0.5 / eff * (width / 64) ** 0.3 * (1 + dropout)` steps: a high learning rate (or a
  fast optimizer, a narrow net, little dropout) converges quickly...
- `floor = 0.2 + offset[optimizer] + 0.18 * (eff / 0.01) ** 0.8 + 0.06 * (64 / width) ** 0.6
  + 0.4 * (dropout - 0.25) ** 2 + 0.05 * (width / 512) * (1 - dropout) ** 2`: ...to a worse
  floor. A low learning rate (or SGD) gets lower in the end but looks bad early, so learning
  curves cross and an early ranking is not the final one: pruning on early evals can kill the
  eventual winner.
- `jitter ~ N(0, 0.02)` per trial (its "initialisation") and `noise ~ N(0, 0.01)` per eval, both
  drawn from a seed derived from the hyperparameters and `--seed`: the same trial run twice gives
  the same curve (like the seeded Estimator examples), so configurations compare fairly.

`--eval-seconds` sleeps before each eval so that a study manager polling every 0.25 s can stop a
pruned trial before its next eval, as it can a real Estimator (one eval every ~1.3 s in
`examples/house_prices`).

    python bench/curves_trainer.py --job-dir=/tmp/c1 --learning_rate=0.002 --width=128 \
        --dropout=0.2 --optimizer=adam --train-steps=1000 --eval-every-steps=100
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
import time
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

OPTIMIZERS = ("adam", "rmsprop", "momentum", "sgd")
#: How fast each optimizer moves for a given learning rate, and what it adds to the floor.
SPEED = {"adam": 1.0, "rmsprop": 0.7, "momentum": 0.4, "sgd": 0.12}
OFFSET = {"adam": 0.04, "rmsprop": 0.05, "momentum": 0.01, "sgd": 0.0}
START = 1.0  # how far above its floor a trial starts
CHECKPOINT_SUFFIXES = (".index", ".data-00000-of-00001", ".meta")


def time_constant(learning_rate: float, width: int, dropout: float, optimizer: str) -> float:
    """Steps for the distance to the floor to shrink by a factor e."""
    eff = learning_rate * SPEED[optimizer]
    return 0.5 / eff * (width / 64) ** 0.3 * (1 + dropout)


def floor(learning_rate: float, width: int, dropout: float, optimizer: str) -> float:
    """The rmse a trial converges to (before its jitter)."""
    eff = learning_rate * SPEED[optimizer]
    return (
        0.2
        + OFFSET[optimizer]
        + 0.18 * (eff / 0.01) ** 0.8
        + 0.06 * (64 / width) ** 0.6
        + 0.4 * (dropout - 0.25) ** 2
        + 0.05 * (width / 512) * (1 - dropout) ** 2
    )


def expected_rmse(
    step: int, learning_rate: float, width: int, dropout: float, optimizer: str
) -> float:
    """The noiseless curve."""
    tau = time_constant(learning_rate, width, dropout, optimizer)
    return floor(learning_rate, width, dropout, optimizer) + START * math.exp(-step / tau)


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8 & 0xFFFFFFFF).to_bytes(4, "little")


class EventWriter:
    """TFRecord-framed Event protos, as TensorFlow's summary writer writes them."""

    def __init__(self, directory: Path) -> None:
        name = f"events.out.tfevents.{time.time():.0f}.{os.uname().nodename}.{os.getpid()}"
        self._file = open(directory / name, "ab")  # noqa: SIM115
        self.add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add(self, event: event_pb2.Event) -> None:
        data = event.SerializeToString()
        header = len(data).to_bytes(8, "little")
        self._file.write(header + _masked_crc(header) + data + _masked_crc(data))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _whole(text: str) -> int:
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Synthetic trainer with crossing learning curves.")
    p.add_argument("--job-dir", required=True, help="model dir: checkpoints and eval/")
    p.add_argument("--train-steps", type=_whole, default=1000)
    p.add_argument("--eval-every-steps", type=_whole, default=100)
    p.add_argument("--eval-seconds", type=float, default=0.0, help="sleep before each eval")
    p.add_argument("--seed", type=_whole, default=0, help="noise seed (mixed with the params)")
    p.add_argument("--learning_rate", type=float, default=0.002)
    p.add_argument("--width", type=_whole, default=128)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    job_dir = Path(args.job_dir)
    eval_dir = job_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    params = (args.learning_rate, args.width, args.dropout, args.optimizer)
    key = repr((*params, args.seed)).encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    jitter = rng.gauss(0.0, 0.02)
    base = floor(*params) * (1 + jitter)
    tau = time_constant(*params)
    writer = EventWriter(eval_dir)
    print(f"trial {os.environ.get('TF_CONFIG')} floor={base:.4f} tau={tau:.0f}", flush=True)
    kept: list[int] = []
    step = 0
    while step < args.train_steps:
        step = min(step + args.eval_every_steps, args.train_steps)
        if args.eval_seconds:
            time.sleep(args.eval_seconds)
        rmse = base + START * math.exp(-step / tau) + rng.gauss(0.0, 0.01)
        prefix = job_dir / f"model.ckpt-{step}"
        for suffix in CHECKPOINT_SUFFIXES:
            Path(f"{prefix}{suffix}").write_text(f"step {step}\n")
        kept.append(step)
        while len(kept) > 2:
            old = kept.pop(0)
            for suffix in CHECKPOINT_SUFFIXES:
                Path(f"{job_dir}/model.ckpt-{old}{suffix}").unlink(missing_ok=True)
        (job_dir / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        now = time.time()
        metrics = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag="rmse", simple_value=rmse),
                summary_pb2.Summary.Value(tag="loss", simple_value=rmse * rmse),
            ]
        )
        writer.add(event_pb2.Event(wall_time=now, step=step, summary=metrics))
        path = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[str(prefix).encode()])
        ckpt = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="checkpoint_path", tensor=path)]
        )
        writer.add(event_pb2.Event(wall_time=now, step=step, summary=ckpt))
        writer.flush()
        print(f"step {step}: rmse={rmse:.5f}", flush=True)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
