"""An Estimator trainer with two objectives (`rmse`, `model_size`) and a conditional flag.

    python -m tests.trainers.two_objectives --job-dir=DIR [--units=8] [--optimizer=adam|sgd] \
        [--momentum=M (sgd only)] [--learning_rate=0.05] [--train-steps=40] \
        [--eval-every-steps=10]

A custom `model_fn` (one hidden `Dense(--units, relu)` layer, then `Dense(1)`) fits a tiny
synthetic regression (4 features, `y = x . [1.5, -2, 0.5, 1] + 0.3 + noise`, 256 train and 64
eval rows, numpy-seeded) with `tf.estimator.train_and_evaluate`: a checkpoint, and so an
evaluation, every `--eval-every-steps` (throttle_secs=0), and an export by a `LatestExporter`
after each one. Both objectives are eval metrics, written together at every evaluated step:

* `rmse`: `tf.compat.v1.metrics.root_mean_squared_error` over the eval rows;
* `model_size`: the number of trainable weights, `6 * units + 1` (a mean of that constant).

`--momentum` only means something with `--optimizer=sgd` (tf.compat.v1's MomentumOptimizer;
plain gradient descent when it is left out). Given with `--optimizer=adam` it is REFUSED: the
trainer exits with status 2 and says so on stderr, as an argparse usage error does. Flags are
checked before TensorFlow is imported, so a bad flag fails in well under a second. A tuner that
passes a conditional parameter whose parent does not activate it makes this trainer fail.

Written to `<job-dir>/` (the model dir is the job dir; no trial subdir): `checkpoint`,
`model.ckpt-<step>.*` (2 kept), `graph.pbtxt`, train `events.out.tfevents.*` (`loss`),
`eval/events.out.tfevents.*` (`rmse`, `model_size`, `loss` as simple_value at every evaluated
step, plus the `checkpoint_path` string tensor), and `export/latest/<timestamp>/saved_model.pb`
(signature `serving_default`: input `x` float32 [None, 4], output `prediction` [None]).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

FEATURES = 4
TRUE_WEIGHTS = np.array([1.5, -2.0, 0.5, 1.0], np.float32)
TRUE_BIAS = 0.3
TRAIN_ROWS = 256
EVAL_ROWS = 64
BATCH_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job-dir", required=True)
    p.add_argument("--units", type=int, default=8)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--eval-every-steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.momentum is not None and args.optimizer != "sgd":
        p.error(
            f"--momentum={args.momentum} is only for --optimizer=sgd, "
            f"got --optimizer={args.optimizer}"
        )
    if args.momentum is not None and not 0 <= args.momentum < 1:
        p.error(f"--momentum must be in [0, 1), got {args.momentum}")
    if args.units < 1:
        p.error(f"--units must be >= 1, got {args.units}")
    if not args.learning_rate > 0:
        p.error(f"--learning_rate must be > 0, got {args.learning_rate}")
    if args.train_steps < 1 or args.eval_every_steps < 1:
        p.error("--train-steps and --eval-every-steps must be >= 1")
    return args


def model_size(units: int) -> int:
    """Trainable weights of the model: hidden kernel and bias, output kernel and bias."""
    return FEATURES * units + units + units + 1


def make_data(rows: int, seed: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    y = x @ TRUE_WEIGHTS + TRUE_BIAS + rng.normal(scale=0.1, size=rows).astype(np.float32)
    return x, y.astype(np.float32)


def run(args: argparse.Namespace) -> None:
    import tensorflow as tf  # after the flags are checked: a bad flag fails fast

    train_x, train_y = make_data(TRAIN_ROWS, seed=1)
    eval_x, eval_y = make_data(EVAL_ROWS, seed=2)

    def train_input_fn() -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices(({"x": train_x}, train_y))
        return ds.shuffle(TRAIN_ROWS, seed=1).repeat().batch(BATCH_SIZE)

    def eval_input_fn() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(({"x": eval_x}, eval_y)).batch(BATCH_SIZE)

    def model_fn(features: Any, labels: Any, mode: str) -> tf.estimator.EstimatorSpec:
        hidden = tf.keras.layers.Dense(args.units, activation="relu", name="hidden")
        output = tf.keras.layers.Dense(1, name="output")
        prediction = tf.squeeze(output(hidden(features["x"])), axis=1)
        if mode == tf.estimator.ModeKeys.PREDICT:
            return tf.estimator.EstimatorSpec(
                mode,
                predictions={"prediction": prediction},
                export_outputs={
                    "serving_default": tf.estimator.export.PredictOutput({"prediction": prediction})
                },
            )
        weights = sum(int(np.prod(v.shape)) for v in tf.compat.v1.trainable_variables())
        assert weights == model_size(args.units), (weights, model_size(args.units))
        loss = tf.compat.v1.losses.mean_squared_error(labels, prediction)
        if mode == tf.estimator.ModeKeys.EVAL:
            size = tf.constant(float(weights))
            return tf.estimator.EstimatorSpec(
                mode,
                loss=loss,
                eval_metric_ops={
                    "rmse": tf.compat.v1.metrics.root_mean_squared_error(labels, prediction),
                    "model_size": tf.compat.v1.metrics.mean(size),
                },
            )
        if args.optimizer == "adam":
            optimizer = tf.compat.v1.train.AdamOptimizer(args.learning_rate)
        elif args.momentum is None:
            optimizer = tf.compat.v1.train.GradientDescentOptimizer(args.learning_rate)
        else:
            optimizer = tf.compat.v1.train.MomentumOptimizer(args.learning_rate, args.momentum)
        train_op = optimizer.minimize(loss, global_step=tf.compat.v1.train.get_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    def serving_input_receiver_fn() -> tf.estimator.export.ServingInputReceiver:
        x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
        return tf.estimator.export.ServingInputReceiver({"x": x}, {"x": x})

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    config = tf.estimator.RunConfig(
        model_dir=args.job_dir,
        save_checkpoints_steps=args.eval_every_steps,
        keep_checkpoint_max=2,
        tf_random_seed=1,
        log_step_count_steps=args.eval_every_steps,
    )
    estimator = tf.estimator.Estimator(model_fn, config=config)
    train_spec = tf.estimator.TrainSpec(train_input_fn, max_steps=args.train_steps)
    eval_spec = tf.estimator.EvalSpec(
        eval_input_fn,
        steps=None,
        exporters=[tf.estimator.LatestExporter("latest", serving_input_receiver_fn)],
        start_delay_secs=0,
        throttle_secs=0,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
