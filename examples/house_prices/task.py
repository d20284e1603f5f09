"""Train and evaluate the custom-Estimator house-price model (one tuning trial).

    python -m examples.house_prices.task --job-dir=/tmp/hp1 \
        --learning_rate=0.01 --hidden_units=32 --num_layers=2 --optimizer=adam

Follows AI Platform trainer conventions: one `--name=value` flag per hyperparameter,
`--job-dir` is the model dir, and eval summaries (`rmse`, `mae`, `loss`) are written to
`<job-dir>/eval/` at every checkpoint; each evaluated checkpoint is also exported to
`<job-dir>/export/latest/<timestamp>/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow as tf

from examples.house_prices import model


def whole_number(text: str) -> int:
    """An int flag that also accepts an integral float such as `32.0`."""
    value = float(text)
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The trainer's flags; unknown flags are an error."""
    p = argparse.ArgumentParser(description="Custom-Estimator house-price trainer.")
    p.add_argument("--job-dir", required=True, help="model dir: checkpoints, eval/, export/")
    p.add_argument("--train-file", type=Path, default=model.TRAIN_FILE)
    p.add_argument("--eval-file", type=Path, default=model.EVAL_FILE)
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
    p.add_argument("--hidden_units", type=whole_number, default=32)
    p.add_argument("--num_layers", type=whole_number, default=2)
    p.add_argument("--optimizer", choices=model.OPTIMIZERS, default="adam")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one trial: train with an evaluation and an export at every checkpoint."""
    args = parse_args(argv)
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)
    # Seeds Python's and NumPy's RNGs too: Keras draws unseeded initializer seeds from them.
    tf.keras.utils.set_random_seed(args.seed)
    hparams = model.HParams(
        learning_rate=args.learning_rate,
        hidden_units=args.hidden_units,
        num_layers=args.num_layers,
        optimizer=args.optimizer,
    )
    config = tf.estimator.RunConfig(
        model_dir=args.job_dir,
        save_checkpoints_steps=args.eval_every_steps,
        keep_checkpoint_max=2,
        tf_random_seed=args.seed,
        log_step_count_steps=args.eval_every_steps,
    )
    estimator = tf.estimator.Estimator(
        model_fn=model.model_fn,
        config=config,
        params={
            "hparams": hparams,
            "columns": model.feature_columns(model.numeric_stats(args.train_file)),
        },
    )
    train_spec = tf.estimator.TrainSpec(
        input_fn=lambda: model.input_fn(
            args.train_file, args.batch_size, shuffle=True, repeat=True, seed=args.seed
        ),
        max_steps=args.train_steps,
    )
    exporter = tf.estimator.LatestExporter(
        "latest", model.serving_input_receiver_fn, exports_to_keep=None
    )
    eval_spec = tf.estimator.EvalSpec(
        input_fn=lambda: model.input_fn(
            args.eval_file, args.batch_size, shuffle=False, repeat=False
        ),
        steps=args.eval_steps,
        exporters=[exporter],
        start_delay_secs=0,
        throttle_secs=0,
    )
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)


if __name__ == "__main__":
    main()
