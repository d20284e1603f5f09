"""A fake Estimator (no TensorFlow) with two conflicting metrics, for retention with several
objectives.

    python -m tests.trainers.two_metrics --job-dir=DIR --x=0.1 [--train-steps=20]
        [--eval-every-steps=10]

At every eval step it writes `model.ckpt-<step>.{index,data-00000-of-00001}` and the
`checkpoint` state file into `<job-dir>`, an eval event into `<job-dir>/eval/` with
`a = (x - 0.3)^2 + d`, `b = (x + 0.3)^2 + d` (d shrinks with the step) and `checkpoint_path`,
and a SavedModel-shaped export `<job-dir>/export/latest/<step>/`. The trials with x in
[-0.3, 0.3] are the Pareto front (minimizing both); x = 0.3 is the best by `a`, x = -0.3 by `b`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

from examples.synthetic.task import EventWriter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--x", type=float, required=True)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--eval-every-steps", type=int, default=10)
    args = parser.parse_args()
    job = Path(args.job_dir)
    (job / "eval").mkdir(parents=True, exist_ok=True)
    writer = EventWriter(job / "eval")
    for step in range(args.eval_every_steps, args.train_steps + 1, args.eval_every_steps):
        prefix = job / f"model.ckpt-{step}"
        for suffix in (".index", ".data-00000-of-00001"):
            Path(f"{prefix}{suffix}").write_text(f"step {step} x {args.x}\n")
        (job / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        decay = 1.0 / step
        values = {"a": (args.x - 0.3) ** 2 + decay, "b": (args.x + 0.3) ** 2 + decay}
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=t, simple_value=v) for t, v in values.items()]
        )
        now = time.time()
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        path = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[str(prefix).encode()])
        ckpt = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="checkpoint_path", tensor=path)]
        )
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=ckpt))
        writer.flush()
        export = job / "export" / "latest" / str(step)
        (export / "variables").mkdir(parents=True)
        (export / "variables" / "variables.index").write_text(f"step {step}\n")
        (export / "saved_model.pb").write_text(f"step {step}\n")
        print(f"step {step}: a={values['a']:.4f} b={values['b']:.4f}", flush=True)
    writer.close()


if __name__ == "__main__":
    main()
