"""A trainer whose eval metrics and `checkpoint_path` events are written far apart.

    python -m tests.trainers.slow_checkpoint_path --job-dir=DIR --learning_rate=0.1 \
        [--train-steps=30] [--eval-every-steps=10] [--turn-step=20] \
        [--checkpoint-path-delay=1.5] [--no-state-file]

Reproduces the race of an Estimator's evaluation, which writes the metrics and only later the
`checkpoint_path` summary for the same step (`_write_checkpoint_path_to_summary`), and of its
checkpoint rotation, which deletes the checkpoint a tuner may still want. A linear regressor
over the house CSV is trained by full-batch gradient descent (eager TF2) until `--turn-step`
and by gradient ASCENT after it, so the eval rmse falls, then rises: by default the best step
is 20, not the last (30). At every `--eval-every-steps`, in this order:

1. `tf.train.Checkpoint.write` to `<job-dir>/ckpt/weights-<step>.index` and
   `.data-00000-of-00001` (NOT the Estimator's default `<job-dir>/model.ckpt-<step>`), and a
   `<job-dir>/checkpoint` state file (absolute paths, so `tf.train.latest_checkpoint(job_dir)`
   finds it) listing the previous checkpoint and this one;
2. `rmse` and `loss` (eval MSE) as TF2 scalar summaries (float tensors, plugin `scalars`, not
   `simple_value`) to `<job-dir>/eval/events.out.tfevents.*`, then a flush;
3. a sleep of `--checkpoint-path-delay` seconds;
4. the `checkpoint_path` summary for the same step (a string tensor, no plugin, value the
   absolute prefix `<job-dir>/ckpt/weights-<step>`), to the same event file, and a flush;
5. the previous checkpoint's files are deleted (keep_checkpoint_max=1) and the state file
   rewritten to list only this one.
At the end only `ckpt/weights-30.*` remains. Nothing else is written.
"""

from __future__ import annotations

import argparse
import os
import time

import tensorflow as tf

from tests.trainers import _houses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", required=True)
    p.add_argument("--learning_rate", type=float, default=0.1)
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--eval-every-steps", type=int, default=10)
    p.add_argument("--turn-step", type=int, default=20, help="gradient ascent after this step")
    p.add_argument("--checkpoint-path-delay", type=float, default=1.5)
    p.add_argument(
        "--state-file",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the `checkpoint` state file (without it only `checkpoint_path` tells)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    job_dir = os.path.abspath(args.job_dir)
    x, y = _houses.load(_houses.TRAIN_FILE)
    eval_x, eval_y = _houses.load(_houses.EVAL_FILE)
    w = tf.Variable(tf.zeros([x.shape[1]]), name="weights")
    b = tf.Variable(0.0, name="bias")
    checkpoint = tf.train.Checkpoint(weights=w, bias=b)
    writer = tf.summary.create_file_writer(os.path.join(job_dir, "eval"))
    previous = None
    for step in range(1, args.train_steps + 1):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((tf.linalg.matvec(x, w) + b - y) ** 2)
        sign = 1.0 if step <= args.turn_step else -1.0
        for var, grad in zip((w, b), tape.gradient(loss, (w, b)), strict=True):
            var.assign_sub(sign * args.learning_rate * grad)
        if step % args.eval_every_steps:
            continue
        prefix = checkpoint.write(os.path.join(job_dir, "ckpt", f"weights-{step}"))
        kept = [p for p in (previous, prefix) if p]
        if args.state_file:
            tf.compat.v1.train.update_checkpoint_state(job_dir, prefix, kept)
        mse = float(tf.reduce_mean((tf.linalg.matvec(eval_x, w) + b - eval_y) ** 2))
        with writer.as_default(step=step):
            tf.summary.scalar("rmse", mse**0.5)
            tf.summary.scalar("loss", mse)
        writer.flush()
        print(f"step {step}: rmse={mse**0.5:.4f} loss={mse:.4f}", flush=True)
        time.sleep(args.checkpoint_path_delay)
        with writer.as_default(step=step):
            tf.summary.write("checkpoint_path", tf.constant(prefix))
        writer.flush()
        print(f"step {step}: checkpoint_path={prefix}", flush=True)
        if previous:
            for path in tf.io.gfile.glob(previous + ".*"):
                tf.io.gfile.remove(path)
            if args.state_file:
                tf.compat.v1.train.update_checkpoint_state(job_dir, prefix, [prefix])
        previous = prefix
    writer.close()


if __name__ == "__main__":
    main()
