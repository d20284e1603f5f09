"""A cheap two-objective trainer (no TensorFlow), for `bench/search.py --task pareto`.

`bench/curves_trainer.py` with a second objective in conflict with the first: at every eval it
writes `rmse` (the curves trainer's crossing learning curves, to the same numbers for the same
hyperparameters and `--seed`), `loss` (rmse squared), `checkpoint_path`, and `latency_ms`, the
mean serving latency of the model at that checkpoint. Same conventions and files as the curves
trainer (`--job-dir=DIR`, one `--name=value` flag per hyperparameter, `--train-steps`,
`--eval-every-steps`, `--eval-seconds`, `--seed`; fake checkpoints `model.ckpt-N.*`, the last
two kept, the `checkpoint` state file, TFRecord-framed events in `DIR/eval/`); its formulas,
flags and event writer are imported from there.

The latency after `step` training steps is

    latency_ms(step) = full(width) * (1 - EXIT_SAVING * (1 - exp(-step / tau))) * (1 + noise)

- `full(width) = 0.8 + 19 * (width / 512) ** 1.6` ms: a fixed overhead plus compute that grows
  a little slower than width squared (0.8 ms at width 8, 1.5 ms at 64, 20 ms at 512). A wider net
  is more accurate (the rmse floor has `0.06 * (64 / width) ** 0.6`) but slower: the objectives
  conflict, and the Pareto front runs from narrow-and-fast to wide-and-accurate.
- It evolves over training (it is not constant per trial): the net has early exits, auxiliary
  heads after its blocks that answer when their predicted uncertainty is low, as in BranchyNet-
  style early-exit networks. An untrained net is unsure everywhere and runs every block; as the
  heads learn, more inputs leave early, and the mean latency falls towards `1 - EXIT_SAVING` (0.6)
  of the full cost. The exits learn at the pace of the net itself, with the trial's rmse time
  constant `tau`: a fast learner (high learning rate) also gets fast early, a slow learner (low
  learning rate, SGD) looks worse on both objectives early on, though it may end on the front
  (low rmse), and one that has not converged by the last step stays slower. So the
  dominance rule of early stopping faces curves that cross in both objectives, not only in rmse.
- `noise ~ N(0, 0.02)` per eval (timing noise of a latency measurement), from a generator of
  its own seeded like the rmse's, so the rmse values are the curves trainer's exactly.

    python bench/pareto_trainer.py --job-dir=/tmp/p1 --learning_rate=0.002 --width=128 \
        --dropout=0.2 --optimizer=adam --train-steps=1000 --eval-every-steps=100
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import sys
import time
from pathlib import Path

# Run as a script (bench/ is sys.path[0]), or imported by bench/pareto_task.py (likewise).
import curves_trainer as curves
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

#: Share of the full cost the early exits save once the net has converged.
EXIT_SAVING = 0.4
LATENCY_NOISE = 0.02


def full_latency(width: int) -> float:
    """Milliseconds of a forward pass through every block."""
    return 0.8 + 19.0 * (width / 512) ** 1.6


def expected_latency(
    step: int, learning_rate: float, width: int, dropout: float, optimizer: str
) -> float:
    """The noiseless latency after `step` training steps."""
    tau = curves.time_constant(learning_rate, width, dropout, optimizer)
    return full_latency(width) * (1 - EXIT_SAVING * (1 - math.exp(-step / tau)))


def _rng(key: bytes) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _write_checkpoint(job_dir: Path, step: int, kept: list[int]) -> Path:
    """Fake checkpoint files for `step`, the last two kept, and the `checkpoint` state file."""
    prefix = job_dir / f"model.ckpt-{step}"
    for suffix in curves.CHECKPOINT_SUFFIXES:
        Path(f"{prefix}{suffix}").write_text(f"step {step}\n")
    kept.append(step)
    while len(kept) > 2:
        old = kept.pop(0)
        for suffix in curves.CHECKPOINT_SUFFIXES:
            Path(f"{job_dir}/model.ckpt-{old}{suffix}").unlink(missing_ok=True)
    (job_dir / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n')
    return prefix


def main(argv: list[str] | None = None) -> int:
    args = curves.parse_args(argv)
    job_dir = Path(args.job_dir)
    eval_dir = job_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    params = (args.learning_rate, args.width, args.dropout, args.optimizer)
    key = repr((*params, args.seed)).encode()
    rng = _rng(key)  # drawn exactly as the curves trainer draws: the same rmse values
    timing = _rng(key + b"/latency_ms")
    jitter = rng.gauss(0.0, 0.02)
    base = curves.floor(*params) * (1 + jitter)
    tau = curves.time_constant(*params)
    writer = curves.EventWriter(eval_dir)
    print(
        f"trial {os.environ.get('TF_CONFIG')} floor={base:.4f} tau={tau:.0f} "
        f"full latency={full_latency(args.width):.2f}ms",
        flush=True,
    )
    kept: list[int] = []
    step = 0
    while step < args.train_steps:
        step = min(step + args.eval_every_steps, args.train_steps)
        if args.eval_seconds:
            time.sleep(args.eval_seconds)
        rmse = base + curves.START * math.exp(-step / tau) + rng.gauss(0.0, 0.01)
        latency = expected_latency(step, *params) * (1 + timing.gauss(0.0, LATENCY_NOISE))
        prefix = _write_checkpoint(job_dir, step, kept)
        now = time.time()
        metrics = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag="rmse", simple_value=rmse),
                summary_pb2.Summary.Value(tag="loss", simple_value=rmse * rmse),
                summary_pb2.Summary.Value(tag="latency_ms", simple_value=latency),
            ]
        )
        writer.add(event_pb2.Event(wall_time=now, step=step, summary=metrics))
        path = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[str(prefix).encode()])
        ckpt = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="checkpoint_path", tensor=path)]
        )
        writer.add(event_pb2.Event(wall_time=now, step=step, summary=ckpt))
        writer.flush()
        print(f"step {step}: rmse={rmse:.5f} latency_ms={latency:.3f}", flush=True)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
