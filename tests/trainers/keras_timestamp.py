"""A Keras trainer laid out like Google's Vertex wide-and-deep sample: epochs, not global steps.

    python -m tests.trainers.keras_timestamp --job-dir=DIR --learning_rate=0.01 \\
        [--epochs=3] [--steps-per-epoch=10] [--checkpoint-name=ckpt-{epoch}]

What it writes, under `<job-dir>/<trial>/` (the trial number from `TF_CONFIG`, as Google's
samples do):

* `checkpoints/<--checkpoint-name>` after every epoch: `tf.keras.callbacks.ModelCheckpoint`
  with `save_weights_only=True` (TF format: `.index`, `.data-*`, and the `checkpoints/checkpoint`
  state file that names the latest). The default name carries the epoch (`ckpt-1`, `ckpt-2`,
  ...); `--checkpoint-name=weights` overwrites one checkpoint, as samples that save "the best"
  do.
* `<YYYYmmddHHMMSS>/`: `model.save` (a SavedModel) once, after training, in a dir named by the
  time (the sample's `os.path.join(job_dir, trial, time.strftime(...))`).

The objective is reported once per epoch through `cloudml-hypertune` with the **epoch** as its
step (1, 2, 3), while the SavedModel's variables hold the optimizer's iteration count (10, 20,
30): its steps are not global steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import hypertune
import tensorflow as tf

from tests.trainers import _houses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", required=True)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--checkpoint-name", default="ckpt-{epoch}")
    p.add_argument("--metric-tag", default="rmse")
    return p.parse_args(argv)


class ReportEpochs(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """After each epoch, report the validation RMSE with the epoch (1-based) as its step."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.hpt = hypertune.HyperTune()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.hpt.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=self.tag,
            metric_value=float((logs or {})["val_rmse"]),
            global_step=epoch + 1,
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    trial = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("trial", "")
    out = Path(args.job_dir) / trial
    tf.keras.utils.set_random_seed(1)
    x, y = _houses.load(_houses.TRAIN_FILE)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048, seed=1).repeat()
    inputs = tf.keras.Input(shape=(x.shape[1],), name="features")
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(1, name="price")(hidden))
    model.compile(
        optimizer=tf.keras.optimizers.Adam(args.learning_rate),
        loss="mse",
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    model.fit(
        train.batch(64),
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_data=_houses.load(_houses.EVAL_FILE),
        callbacks=[
            ReportEpochs(args.metric_tag),
            tf.keras.callbacks.ModelCheckpoint(
                str(out / "checkpoints" / args.checkpoint_name), save_weights_only=True
            ),
        ],
        verbose=2,
    )
    model.save(str(out / time.strftime("%Y%m%d%H%M%S")))


if __name__ == "__main__":
    main()
