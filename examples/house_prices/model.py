"""Input pipeline, feature columns and the `model_fn` of the custom-Estimator example."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
TRAIN_FILE = DATA_DIR / "houses_train.csv"
EVAL_FILE = DATA_DIR / "houses_eval.csv"

LABEL = "price"
CSV_COLUMNS = ["sqft", "bedrooms", "age", "neighborhood", "has_garage", LABEL]
CSV_TYPES = [tf.float32, tf.int64, tf.float32, tf.string, tf.int64, tf.float32]
NUMERIC_FEATURES = ["sqft", "bedrooms", "age"]
NEIGHBORHOODS = ["downtown", "riverside", "suburbs", "hills", "industrial"]
OPTIMIZERS = ("adam", "adagrad", "sgd")


@dataclass(frozen=True)
class HParams:
    """The tuned hyperparameters."""

    learning_rate: float
    hidden_units: int
    num_layers: int
    optimizer: str


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
        values = tf.io.decode_csv(lines, record_defaults=required)
        features = dict(zip(CSV_COLUMNS, values, strict=True))
        return features, features.pop(LABEL)

    return ds.batch(batch_size).map(parse).prefetch(1)


def numeric_stats(path: Path) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each numeric feature in a CSV file."""
    sums = {name: [0.0, 0.0] for name in NUMERIC_FEATURES}
    n = 0
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            n += 1
            for name in NUMERIC_FEATURES:
                value = float(row[name])
                sums[name][0] += value
                sums[name][1] += value * value
    if n == 0:
        raise ValueError(f"{path}: no rows")
    stats = {}
    for name, (total, squares) in sums.items():
        mean = total / n
        std = max((squares / n - mean * mean) ** 0.5, 1e-6)
        stats[name] = (mean, std)
    return stats


def _normalizer(mean: float, std: float) -> Callable[[tf.Tensor], tf.Tensor]:
    def normalize(x: tf.Tensor) -> tf.Tensor:
        return (tf.cast(x, tf.float32) - mean) / std

    return normalize


def feature_columns(stats: dict[str, tuple[float, float]]) -> list[Any]:
    """Normalized numeric columns, a one-hot neighborhood and the 0/1 garage flag."""
    columns: list[Any] = [
        tf.feature_column.numeric_column(name, normalizer_fn=_normalizer(*stats[name]))
        for name in NUMERIC_FEATURES
    ]
    neighborhood = tf.feature_column.categorical_column_with_vocabulary_list(
        "neighborhood", NEIGHBORHOODS, num_oov_buckets=1
    )
    columns.append(tf.feature_column.indicator_column(neighborhood))
    columns.append(
        tf.feature_column.numeric_column("has_garage", normalizer_fn=_normalizer(0.0, 1.0))
    )
    return columns


def serving_input_receiver_fn() -> tf.estimator.export.ServingInputReceiver:
    """Accept the raw features, one value per example (no serialized tf.Example)."""
    receiver = {
        name: tf.compat.v1.placeholder(dtype, shape=[None], name=name)
        for name, dtype in zip(CSV_COLUMNS, CSV_TYPES, strict=True)
        if name != LABEL
    }
    return tf.estimator.export.ServingInputReceiver(dict(receiver), receiver)


def _optimizer(name: str, learning_rate: float) -> tf.compat.v1.train.Optimizer:
    if name == "adam":
        return tf.compat.v1.train.AdamOptimizer(learning_rate)
    if name == "adagrad":
        return tf.compat.v1.train.AdagradOptimizer(learning_rate)
    if name == "sgd":
        return tf.compat.v1.train.GradientDescentOptimizer(learning_rate)
    raise ValueError(f"unknown optimizer {name!r}, expected one of {OPTIMIZERS}")


def model_fn(
    features: dict[str, tf.Tensor],
    labels: tf.Tensor | None,
    mode: str,
    params: dict[str, Any],
) -> tf.estimator.EstimatorSpec:
    """An MLP regressor; `params` holds `hparams` (HParams) and `columns` (feature columns)."""
    hp: HParams = params["hparams"]
    net = tf.compat.v1.feature_column.input_layer(features, params["columns"])
    for i in range(hp.num_layers):
        net = tf.keras.layers.Dense(hp.hidden_units, activation="relu", name=f"hidden_{i}")(net)
    price = tf.squeeze(tf.keras.layers.Dense(1, name="price")(net), axis=1)

    if mode == tf.estimator.ModeKeys.PREDICT:
        predictions = {"price": price}
        return tf.estimator.EstimatorSpec(
            mode,
            predictions=predictions,
            export_outputs={"serving_default": tf.estimator.export.PredictOutput(predictions)},
        )

    assert labels is not None
    loss = tf.compat.v1.losses.mean_squared_error(labels, price)
    if mode == tf.estimator.ModeKeys.EVAL:
        metrics = {
            "rmse": tf.compat.v1.metrics.root_mean_squared_error(labels, price),
            "mae": tf.compat.v1.metrics.mean_absolute_error(labels, price),
        }
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)

    train_op = _optimizer(hp.optimizer, hp.learning_rate).minimize(
        loss, global_step=tf.compat.v1.train.get_global_step()
    )
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)
