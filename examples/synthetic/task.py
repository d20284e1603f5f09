"""A cheap synthetic trainer (no TensorFlow) that behaves like an Estimator on disk.

It "trains" for `--train-steps`, and every `--eval-every-steps` it saves a checkpoint
(`model.ckpt-N.*`, rotating to the last `--keep-checkpoint-max`), writes an eval event with
`loss`, `rmse` and `checkpoint_path` into `<job-dir>/eval/`, and optionally exports a
"SavedModel" dir. Its loss curve converges towards a function of its hyperparameters, so
samplers and pruners have something real to work with. Used by benchmarks and tests.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import google_crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8 & 0xFFFFFFFF).to_bytes(4, "little")


class EventWriter:
    """Writes TFRecord-framed Event protos, as TensorFlow's summary writer does.

    (tensorboard's own writer imports TensorFlow when it is installed, which costs seconds.)
    """

    def __init__(self, directory: Path) -> None:
        name = f"events.out.tfevents.{time.time():.0f}.{os.uname().nodename}.{os.getpid()}"
        self._file = open(directory / name, "ab")  # noqa: SIM115
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event: event_pb2.Event) -> None:
        data = event.SerializeToString()
        header = len(data).to_bytes(8, "little")
        self._file.write(header + _masked_crc(header) + data + _masked_crc(data))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def target(x: float, y: float, layers: int, optimizer: str) -> float:
    """The loss a trial converges to: a shifted bowl with a categorical offset."""
    offset = {"adam": 0.0, "adagrad": 0.15, "sgd": 0.3}.get(optimizer, 0.5)
    return (x - 0.3) ** 2 + (math.log10(y) + 2.0) ** 2 * 0.5 + 0.05 * abs(layers - 2) + offset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job-dir", required=True)
    parser.add_argument("--x", type=float, default=0.0)
    parser.add_argument("--y", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--eval-every-steps", type=int, default=20)
    parser.add_argument("--keep-checkpoint-max", type=int, default=2)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="sleep per eval step")
    parser.add_argument("--export", action="store_true", help="export after every eval")
    parser.add_argument(
        "--exports-to-keep", type=int, default=0, help="delete older exports (0: keep all)"
    )
    parser.add_argument("--tag", default="rmse", help="tag of the main metric")
    parser.add_argument("--crash-at-step", type=int, default=-1)
    parser.add_argument("--nan-at-step", type=int, default=-1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint-bytes", type=int, default=0, help="size of each checkpoint's data file"
    )
    args = parser.parse_args(argv)

    job_dir = Path(args.job_dir)
    eval_dir = job_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    writer = EventWriter(eval_dir)
    rng = random.Random(args.seed)
    final = target(args.x, args.y, args.layers, args.optimizer)
    kept: list[int] = []
    print(f"trial {os.environ.get('TF_CONFIG')} target={final:.4f}", flush=True)
    step = 0
    while step < args.train_steps:
        step = min(step + args.eval_every_steps, args.train_steps)
        if args.step_seconds:
            time.sleep(args.step_seconds)
        if step == args.crash_at_step:
            print(f"Traceback: simulated crash at step {step}", file=sys.stderr, flush=True)
            return 3
        progress = step / args.train_steps
        loss = final + 2.0 * math.exp(-4.0 * progress) + rng.gauss(0, 0.005)
        if step == args.nan_at_step:
            loss = float("nan")
        prefix = job_dir / f"model.ckpt-{step}"
        for suffix in (".index", ".data-00000-of-00001", ".meta"):
            Path(f"{prefix}{suffix}").write_text(f"step {step}\n")
        if args.checkpoint_bytes:
            Path(f"{prefix}.data-00000-of-00001").write_bytes(rng.randbytes(args.checkpoint_bytes))
        kept.append(step)
        while len(kept) > args.keep_checkpoint_max:
            old = kept.pop(0)
            for suffix in (".index", ".data-00000-of-00001", ".meta"):
                Path(f"{job_dir}/model.ckpt-{old}{suffix}").unlink(missing_ok=True)
        (job_dir / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{step}"\n')
        now = time.time()
        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=args.tag, simple_value=loss),
                summary_pb2.Summary.Value(tag="loss", simple_value=loss * loss),
            ]
        )
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        path_tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[str(prefix).encode()]
        )
        ckpt = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="checkpoint_path", tensor=path_tensor)]
        )
        writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=ckpt))
        writer.flush()
        if args.export:
            version = int(time.time())
            export_dir = job_dir / "export" / "latest" / str(version)
            while export_dir.exists():
                time.sleep(0.05)
                version = int(time.time())
                export_dir = job_dir / "export" / "latest" / str(version)
            export_dir.mkdir(parents=True)
            (export_dir / "variables").mkdir()
            (export_dir / "variables" / "variables.index").write_text(f"step {step}\n")
            if args.checkpoint_bytes:
                data = export_dir / "variables" / "variables.data-00000-of-00001"
                data.write_bytes(rng.randbytes(args.checkpoint_bytes))
            (export_dir / "saved_model.pb").write_text(f"step {step}\n")
            if args.exports_to_keep:
                versions = sorted(export_dir.parent.iterdir(), key=lambda p: int(p.name))
                for old in versions[: -args.exports_to_keep]:
                    shutil.rmtree(old)
        print(f"step {step}: {args.tag}={loss:.5f}", flush=True)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
