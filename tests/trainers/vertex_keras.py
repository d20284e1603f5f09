"""A Keras trainer that follows Vertex AI custom-training conventions.

    AIP_MODEL_DIR=... AIP_TENSORBOARD_LOG_DIR=... CLOUD_ML_HP_METRIC_FILE=... \
    python -m tests.trainers.vertex_keras --learning_rate=0.01 \
        [--epochs=3] [--steps-per-epoch=10] [--metric-tag=rmse] [--job-dir=IGNORED]

Conventions reproduced: a plain `tf.keras` model (no Estimator) fitted with `model.fit`;
outputs go only where the `AIP_*` environment variables say (`--job-dir` is accepted and
ignored); the objective is reported with the `cloudml-hypertune` package.

Written:
* `$CLOUD_ML_HP_METRIC_FILE` (HyperTune's default `/tmp/hypertune/output.metrics` when
  unset): after every epoch, `HyperTune().report_hyperparameter_tuning_metric(tag, value,
  global_step)` with tag `--metric-tag` (default `rmse`), value the validation RMSE on
  houses_eval.csv and global_step `optimizer.iterations` (10, 20, 30 by default). HyperTune
  rewrites the whole file each time, one JSON object a line (all values strings except
  timestamp; trial is $CLOUD_ML_TRIAL_ID), e.g.
  `{"checkpoint_path": "", "global_step": "10", "rmse": "3.41044545173645",
  "timestamp": 1796107092.0, "trial": "7"}`.
* `$AIP_TENSORBOARD_LOG_DIR/train/` and `/validation/` event files (`*.v2`) from the Keras
  TensorBoard callback: `epoch_loss`, `epoch_rmse` at steps 0, 1, 2 (the step is the epoch)
  in both, and `evaluation_loss_vs_iterations`, `evaluation_rmse_vs_iterations` at steps
  10, 20, 30 (optimizer iterations) in validation/.
* `$AIP_MODEL_DIR/`: a SavedModel from `model.save` (`saved_model.pb`, `variables/`,
  `fingerprint.pb`, `keras_metadata.pb`, an empty `assets/`) with one signature, `serving_default`:
  input `features` float32 [None, 9] (4 standardized numbers + 5 one-hot neighborhoods),
  output `price` float32 [None, 1].
AIP_CHECKPOINT_DIR is not used (no checkpoints). A missing AIP_MODEL_DIR or
AIP_TENSORBOARD_LOG_DIR is a KeyError (exit 1) before training.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import hypertune
import tensorflow as tf

from tests.trainers import _houses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", help="accepted and ignored: Vertex trainers use AIP_* instead")
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps-per-epoch", type=int, default=10)
    p.add_argument("--metric-tag", default="rmse")
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


class ReportToHyperTune(tf.keras.callbacks.Callback):  # type: ignore[misc]
    """After each epoch, report the validation RMSE at the optimizer's step count."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.hpt = hypertune.HyperTune()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.hpt.report_hyperparameter_tuning_metric(
            hyperparameter_metric_tag=self.tag,
            metric_value=float((logs or {})["val_rmse"]),
            global_step=int(self.model.optimizer.iterations.numpy()),
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model_dir = os.environ["AIP_MODEL_DIR"]
    log_dir = os.environ["AIP_TENSORBOARD_LOG_DIR"]
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
        train.batch(args.batch_size),
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        validation_data=_houses.load(_houses.EVAL_FILE),
        callbacks=[
            ReportToHyperTune(args.metric_tag),
            tf.keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
        ],
        verbose=2,
    )
    model.save(model_dir)


if __name__ == "__main__":
    main()
