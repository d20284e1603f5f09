"""Train and evaluate a Keras house-price model as an Estimator (one tuning trial).

    python -m examples.keras_houses.task --job-dir=/tmp/kh1 \
        --learning_rate=0.01 --units=32 --dropout=0.1

The Keras model is converted with `tf.keras.estimator.model_to_estimator`; its compiled
metric `RootMeanSquaredError(name="rmse")` is written to `<job-dir>/eval/` as `rmse` (with
`loss`) at every checkpoint, and each evaluated checkpoint is exported to
`<job-dir>/export/latest/<timestamp>/` (signature `serving_default`, raw feature inputs).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import tensorflow as tf

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LABEL = "price"
CSV_COLUMNS = ["sqft", "bedrooms", "age", "neighborhood", "has_garage", LABEL]
CSV_TYPES = [tf.float32, tf.int64, tf.float32, tf.string, tf.int64, tf.float32]
FEATURE_TYPES = dict(zip(CSV_COLUMNS[:-1], CSV_TYPES[:-1], strict=True))
NUMERIC_FEATURES = ["sqft", "bedrooms", "age"]
NEIGHBORHOODS = ["downtown", "riverside", "suburbs", "hills", "industrial"]


def whole_number(text: str) -> int:
    """An int flag that also accepts an integral float such as `32.0`."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The trainer's flags; unknown flags are an error."""
    p = argparse.ArgumentParser(description="Keras (model_to_estimator) house-price trainer.")
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
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--units", type=whole_number, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
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
    """Mean and variance of each numeric feature in a CSV file."""
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
        stats[name] = (mean, max(sum((v - mean) ** 2 for v in values) / len(values), 1e-12))
    return stats


def build_model(
    stats: dict[str, tuple[float, float]], units: int, dropout: float, learning_rate: float
) -> tf.keras.Model:
    """A two-layer MLP over normalized numbers, a one-hot neighborhood and the garage flag."""
    inputs = {
        name: tf.keras.Input(shape=(), dtype=dtype, name=name)
        for name, dtype in FEATURE_TYPES.items()
    }
    parts = []
    for name in NUMERIC_FEATURES:
        mean, variance = stats[name]
        x = tf.keras.layers.Reshape((1,), name=f"{name}_column")(inputs[name])
        x = tf.keras.layers.Normalization(
            mean=mean, variance=variance, dtype="float32", name=f"{name}_norm"
        )(tf.cast(x, tf.float32))
        parts.append(x)
    # Index 0 is the out-of-vocabulary bucket. (A one_hot StringLookup cannot be cloned by
    # model_to_estimator, hence the separate CategoryEncoding.)
    index = tf.keras.layers.StringLookup(vocabulary=NEIGHBORHOODS, name="neighborhood_index")(
        inputs["neighborhood"]
    )
    parts.append(
        tf.keras.layers.CategoryEncoding(
            num_tokens=len(NEIGHBORHOODS) + 1, output_mode="one_hot", name="neighborhood_onehot"
        )(index)
    )
    garage = tf.keras.layers.Reshape((1,), name="has_garage_column")(inputs["has_garage"])
    parts.append(tf.cast(garage, tf.float32))

    x = tf.keras.layers.Concatenate(name="features")(parts)
    for i in range(2):
        x = tf.keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        x = tf.keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    price = tf.keras.layers.Dense(1, name="price")(x)

    model = tf.keras.Model(inputs=inputs, outputs=price, name="keras_houses")
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(learning_rate=learning_rate),
        loss="mse",
        metrics=[tf.keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    return model


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
    model = build_model(
        numeric_stats(args.train_file), args.units, args.dropout, args.learning_rate
    )
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=model, model_dir=args.job_dir, config=config
    )
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
