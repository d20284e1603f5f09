"""Train and evaluate a premade wide-and-deep house-price regressor (one tuning trial).

    python -m examples.premade_houses.task --job-dir=/tmp/ph1 \
        --learning_rate=0.01 --linear_learning_rate=0.05 --hidden_units=32

`tf.estimator.DNNLinearCombinedRegressor` writes `average_loss`, `loss`, `label/mean` and
`prediction/mean` to `<job-dir>/eval/` at every checkpoint; `rmse` is added with
`tf.estimator.add_metrics`. Each evaluated checkpoint is exported to
`<job-dir>/export/latest/<timestamp>/` with a `serving_default` signature over the raw features.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import tensorflow as tf

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LABEL = "price"
CSV_COLUMNS = ["sqft", "bedrooms", "age", "neighborhood", "has_garage", LABEL]
CSV_TYPES = [tf.float32, tf.int64, tf.float32, tf.string, tf.int64, tf.float32]
FEATURE_TYPES = dict(zip(CSV_COLUMNS[:-1], CSV_TYPES[:-1], strict=True))
NUMERIC_FEATURES = ["sqft", "bedrooms", "age"]
NEIGHBORHOODS = ["downtown", "riverside", "suburbs", "hills", "industrial"]
SQFT_BOUNDARIES = [800.0, 1100.0, 1400.0, 1700.0, 2000.0, 2400.0, 2900.0, 3500.0]
AGE_BOUNDARIES = [5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 80.0]


def whole_number(text: str) -> int:
    """An int flag that also accepts an integral float such as `32.0`."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The trainer's flags; unknown flags are an error."""
    p = argparse.ArgumentParser(description="Premade wide-and-deep house-price trainer.")
    p.add_argument("--job-dir", required=True, help="model dir: checkpoints, eval/, export/")
    p.add_argument("--train-file", type=Path, default=DATA_DIR / "houses_train.csv")
    p.add_argument("--eval-file", type=Path, default=DATA_DIR / "houses_eval.csv")
    p.add_argument("--train-steps", type=whole_number, default=300)
    p.add_argument(
        "--eval-every-steps",
        type=whole_number,
        default=50,
        help="checkpoint (and so evaluation) interval in steps",
    )
    p.add_argument(
        "--eval-steps",
        type=whole_number,
        default=None,
        help="batches per evaluation (default: the whole eval file)",
    )
    p.add_argument("--batch-size", type=whole_number, default=64)
    p.add_argument("--seed", type=whole_number, default=42)
    # Hyperparameters.
    p.add_argument("--learning_rate", type=float, default=0.01, help="DNN (Adam) learning rate")
    p.add_argument(
        "--linear_learning_rate", type=float, default=0.05, help="linear part (FTRL) learning rate"
    )
    p.add_argument("--hidden_units", type=whole_number, default=32)
    p.add_argument("--num_layers", type=whole_number, default=2)
    return p.parse_args(argv)


def input_fn(
    path: Path, batch_size: int, *, shuffle: bool, repeat: bool, seed: int | None = None
) -> tf.data.Dataset:
    """Batches of `(features, price)` read from a CSV file with a header line."""
    ds = tf.data.TextLineDataset(str(path)).skip(1).cache()
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def parse(lines: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        required = [tf.constant([], dtype=dtype) for dtype in CSV_TYPES]
        features = dict(zip(CSV_COLUMNS, tf.io.decode_csv(lines, required), strict=True))
        return features, features.pop(LABEL)

    return ds.batch(batch_size).map(parse).prefetch(1)


def numeric_stats(path: Path) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each numeric feature in a CSV file."""
    columns: dict[str, list[float]] = {name: [] for name in NUMERIC_FEATURES}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for name in NUMERIC_FEATURES:
                columns[name].append(float(row[name]))
    stats = {}
    for name, values in columns.items():
        if not values:
            raise ValueError(f"{path}: no rows")
        mean = sum(values) / len(values)
        variance = sum((v - mean) ** 2 for v in values) / len(values)
        stats[name] = (mean, max(variance**0.5, 1e-6))
    return stats


def feature_columns(stats: dict[str, tuple[float, float]]) -> tuple[list[Any], list[Any]]:
    """(linear, dnn) columns: buckets and crosses for the wide part, dense inputs for the deep."""
    fc = tf.feature_column

    def normalized(name: str) -> Any:
        mean, std = stats[name]
        return fc.numeric_column(
            name, normalizer_fn=lambda x: (tf.cast(x, tf.float32) - mean) / std
        )

    neighborhood = fc.categorical_column_with_vocabulary_list(
        "neighborhood", NEIGHBORHOODS, num_oov_buckets=1
    )
    garage = fc.categorical_column_with_identity("has_garage", num_buckets=2, default_value=0)
    sqft_buckets = fc.bucketized_column(fc.numeric_column("sqft"), SQFT_BOUNDARIES)
    age_buckets = fc.bucketized_column(fc.numeric_column("age"), AGE_BOUNDARIES)
    linear = [
        neighborhood,
        garage,
        sqft_buckets,
        age_buckets,
        fc.crossed_column([neighborhood, sqft_buckets], hash_bucket_size=64),
    ]
    dnn = [
        *(normalized(name) for name in NUMERIC_FEATURES),
        fc.indicator_column(neighborhood),
        fc.indicator_column(garage),
    ]
    return linear, dnn


def rmse_metric(labels: tf.Tensor, predictions: dict[str, tf.Tensor]) -> dict[str, Any]:
    """The `rmse` eval metric, added to the premade estimator's own metrics."""
    return {
        "rmse": tf.compat.v1.metrics.root_mean_squared_error(labels, predictions["predictions"])
    }


def with_predict_serving_default(estimator: tf.estimator.Estimator) -> tf.estimator.Estimator:
    """Make `serving_default` a Predict signature.

    A premade regressor's `serving_default` (and `regression`) is a Regress signature, which
    TensorFlow only exports for a single serialized-tf.Example input; with raw feature inputs
    it would be dropped, leaving only `predict`. The model itself is unchanged.
    """
    base_model_fn = estimator.model_fn

    def model_fn(
        features: dict[str, tf.Tensor], labels: tf.Tensor | None, mode: str, config: Any
    ) -> tf.estimator.EstimatorSpec:
        spec = base_model_fn(features, labels, mode, config)
        if mode == tf.estimator.ModeKeys.PREDICT:
            outputs = {
                key: output
                for key, output in (spec.export_outputs or {}).items()
                if not isinstance(output, tf.estimator.export.RegressionOutput)
            }
            outputs["serving_default"] = tf.estimator.export.PredictOutput(spec.predictions)
            spec = spec._replace(export_outputs=outputs)
        return spec

    return tf.estimator.Estimator(model_fn=model_fn, config=estimator.config)


def serving_input_receiver_fn() -> tf.estimator.export.ServingInputReceiver:
    """Accept the raw features, one value per example (no serialized tf.Example)."""
    receiver = {
        name: tf.compat.v1.placeholder(dtype, shape=[None], name=name)
        for name, dtype in FEATURE_TYPES.items()
    }
    return tf.estimator.export.ServingInputReceiver(dict(receiver), receiver)


def main(argv: list[str] | None = None) -> None:
    """Run one trial: train with an evaluation and an export at every checkpoint."""
    args = parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    # Seeds Python's and NumPy's RNGs too: Keras draws unseeded initializer seeds from them.
    tf.keras.utils.set_random_seed(args.seed)
    config = tf.estimator.RunConfig(
        model_dir=args.job_dir,
        save_checkpoints_steps=args.eval_every_steps,
        keep_checkpoint_max=2,
        tf_random_seed=args.seed,
        log_step_count_steps=args.eval_every_steps,
    )
    linear_columns, dnn_columns = feature_columns(numeric_stats(args.train_file))
    estimator = tf.estimator.DNNLinearCombinedRegressor(
        linear_feature_columns=linear_columns,
        linear_optimizer=lambda: tf.keras.optimizers.legacy.Ftrl(args.linear_learning_rate),
        dnn_feature_columns=dnn_columns,
        dnn_hidden_units=[args.hidden_units] * args.num_layers,
        dnn_optimizer=lambda: tf.keras.optimizers.legacy.Adam(args.learning_rate),
        config=config,
    )
    estimator = tf.estimator.add_metrics(estimator, rmse_metric)
    estimator = with_predict_serving_default(estimator)

    train_spec = tf.estimator.TrainSpec(
        input_fn=lambda: input_fn(
            args.train_file, args.batch_size, shuffle=True, repeat=True, seed=args.seed
        ),
        max_steps=args.train_steps,
    )
    eval_spec = tf.estimator.EvalSpec(
        input_fn=lambda: input_fn(args.eval_file, args.batch_size, shuffle=False, repeat=False),
        steps=args.eval_steps,
        exporters=[
            tf.estimator.LatestExporter("latest", serving_input_receiver_fn, exports_to_keep=None)
        ],
        start_delay_secs=0,
        throttle_secs=0,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)


if __name__ == "__main__":
    main()
