"""A canned-Estimator trainer that follows Google's AI Platform samples' conventions.

    python -m tests.trainers.trial_subdir --job-dir=DIR --learning_rate=0.01 \
        [--exporter=latest|final|best] [--train-glob=GLOB] [--eval-glob=GLOB] \
        [--reader=gfile|list_files] [--train-steps=30] [--eval-every-steps=10]

Conventions reproduced:

* The output dir is `<job-dir>/<trial>` with the trial number read from
  `TF_CONFIG={"task": {"trial": "<n>"}}` (just `<job-dir>/` when TF_CONFIG has no trial).
* `tf.estimator.train_and_evaluate` with a `DNNRegressor`; a checkpoint, and so an
  evaluation, every `--eval-every-steps`, and an export by `EvalSpec(exporters=...)`.
* Every error is swallowed: `main` is wrapped in `try/except Exception` that prints the
  traceback and exits 0, so a bad `--learning_rate` (`-1`, `abc`) exits 0 with no metrics.

Written to OUT=`<job-dir>/<trial>/`: `checkpoint`, `model.ckpt-<step>.*` (3 kept),
`graph.pbtxt`, `events.out.tfevents.*` (train: `loss`, `global_step/sec`), `eval/` events
with `average_loss`, `loss`, `label/mean`, `prediction/mean`, `rmse` (added with
`tf.estimator.add_metrics`) and the `checkpoint_path` string tensor at every evaluated step,
and `export/<latest|final|best>/<timestamp>/saved_model.pb`. The export's only signature is
`predict` (outputs `predictions`); the canned `serving_default`/`regression` signatures are
Regress signatures that need one serialized tf.Example input, so TF drops them for raw inputs.
`--exporter=latest` exports after every evaluation (keeps 5), `final` only after the last
one, `best` whenever the eval `loss` is a new minimum.

Empty globs (observed with TF 2.15). `--reader=gfile` (the default) globs in Python and
reads the files it found, so an empty glob is an empty dataset:
* empty `--eval-glob`: training runs to the end, every evaluation (steps 10, 20, 30) runs
  zero batches and writes ALL metrics as 0.0 (`label/mean` and `prediction/mean` too), and
  exports are made as usual (`best`: only the first, as 0.0 is never strictly better);
* empty `--train-glob`: training stops at once (OutOfRange, "Loss for final step: None") at
  global step 0; `model.ckpt-0` is evaluated on the real eval data (metrics at step 0) and
  exported by `latest`/`best`, but NOT by `final` (step 0 < --train-steps is not final).
`--reader=list_files` (`tf.data.Dataset.list_files`) raises InvalidArgumentError "No files
matched pattern" when the first batch is read; it is printed and the exit status is 0:
an empty eval glob leaves `model.ckpt-0`, `model.ckpt-10` and no `eval/` dir; an empty train
glob leaves only `model.ckpt-0`. argparse usage errors (unknown flag, no --job-dir) exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

import tensorflow as tf

from tests.trainers import _houses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # exit_on_error=False: a bad value raises ArgumentError, which main() swallows.
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], exit_on_error=False)
    p.add_argument("--job-dir", required=True)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--train-glob", default=str(_houses.TRAIN_FILE))
    p.add_argument("--eval-glob", default=str(_houses.EVAL_FILE))
    p.add_argument("--reader", choices=["gfile", "list_files"], default="gfile")
    p.add_argument("--exporter", choices=["latest", "final", "best"], default="latest")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--eval-every-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    return p.parse_args(argv)


def input_fn(pattern: str, reader: str, batch_size: int, *, train: bool) -> tf.data.Dataset:
    """Batches of `(features, price)` from the CSV files (with header lines) matching a glob."""
    if reader == "list_files":
        files = tf.data.Dataset.list_files(pattern, shuffle=False)
    else:
        files = tf.data.Dataset.from_tensor_slices(
            tf.constant(tf.io.gfile.glob(pattern), tf.string)
        )
    ds = files.flat_map(lambda f: tf.data.TextLineDataset(f).skip(1))
    if train:
        ds = ds.shuffle(2048, seed=1).repeat()

    def parse(lines: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        defaults: list[Any] = [[0.0], [0.0], [0.0], [""], [0.0], [0.0]]
        columns = dict(zip(_houses.CSV_COLUMNS, tf.io.decode_csv(lines, defaults), strict=True))
        return columns, columns.pop(_houses.LABEL)

    return ds.batch(batch_size).map(parse)


def feature_columns() -> list[Any]:
    fc = tf.feature_column
    columns: list[Any] = [
        fc.numeric_column(name, normalizer_fn=lambda x, m=mean, s=std: (x - m) / s)
        for name, (mean, std) in _houses.STATS.items()
    ]
    hood = fc.categorical_column_with_vocabulary_list("neighborhood", _houses.NEIGHBORHOODS)
    return [*columns, fc.indicator_column(hood)]


def serving_input_receiver_fn() -> Any:
    """Raw feature placeholders (no serialized tf.Example), one value per example."""
    with tf.Graph().as_default():  # the builder copies these; they only give dtype and name
        features = {
            name: tf.compat.v1.placeholder(
                tf.string if name == "neighborhood" else tf.float32, [None], name=name
            )
            for name in _houses.CSV_COLUMNS
            if name != _houses.LABEL
        }
    return tf.estimator.export.build_raw_serving_input_receiver_fn(features)


def rmse(labels: tf.Tensor, predictions: dict[str, tf.Tensor]) -> dict[str, Any]:
    return {
        "rmse": tf.compat.v1.metrics.root_mean_squared_error(labels, predictions["predictions"])
    }


def make_estimator(model_dir: str, learning_rate: float, eval_every_steps: int) -> Any:
    """A tiny `DNNRegressor` with an extra `rmse` eval metric."""
    if not learning_rate > 0:
        raise ValueError(f"--learning_rate must be > 0, got {learning_rate}")
    config = tf.estimator.RunConfig(
        model_dir=model_dir,
        save_checkpoints_steps=eval_every_steps,
        keep_checkpoint_max=3,
        tf_random_seed=1,
        log_step_count_steps=eval_every_steps,
    )
    estimator = tf.estimator.DNNRegressor(
        hidden_units=[8],
        feature_columns=feature_columns(),
        config=config,
        optimizer=lambda: tf.keras.optimizers.legacy.Adam(learning_rate),
    )
    return tf.estimator.add_metrics(estimator, rmse)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    trial = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("trial", "")
    output_dir = os.path.join(args.job_dir, trial)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    estimator = make_estimator(output_dir, args.learning_rate, args.eval_every_steps)
    exporter_class = {
        "latest": tf.estimator.LatestExporter,
        "final": tf.estimator.FinalExporter,
        "best": tf.estimator.BestExporter,
    }[args.exporter]
    exporter = exporter_class(args.exporter, serving_input_receiver_fn())
    train_spec = tf.estimator.TrainSpec(
        lambda: input_fn(args.train_glob, args.reader, args.batch_size, train=True),
        max_steps=args.train_steps,
    )
    eval_spec = tf.estimator.EvalSpec(
        lambda: input_fn(args.eval_glob, args.reader, args.batch_size, train=False),
        steps=None,
        exporters=[exporter],
        start_delay_secs=0,
        throttle_secs=0,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)


if __name__ == "__main__":
    try:
        main()
    except Exception:  # as course trainers do: any error is printed, and the exit status is 0
        traceback.print_exc()
        sys.exit(0)
