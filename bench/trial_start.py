"""Cold vs warm trial starts of the bundled custom Estimator, side by side in one run.

    python bench/trial_start.py                   # 4 single trials each way, then 12-trial studies
    python bench/trial_start.py --trials 6 --study-trials 12 --parallel 2 --json /tmp/start.json

Part 1, single trials (one at a time, alternating cold, warm, cold, warm, ... with the same
params): the time from the launch (just before `Popen`, or before the fork request) to the
trainer's first training step (the wall time of the `loss` summary at step 1 in the model
dir's event file), to its first eval (the first eval summary in `eval/`), and to its exit.
The preloading parent is started and ready before the first warm trial; its one-time import
is reported apart. "Start overhead" is launch to the trainer's first output line (polled every
5 ms): the interpreter and the imports, before the trainer's own code prints anything (the
bundled trainer prints its first deprecation warning as it builds its `RunConfig`). "To first
step" adds the Estimator's graph, session and step-0 checkpoint, which no fork can skip.

Part 2, whole studies: the example spec (`examples/house_prices/spec.yaml`) with
`--study-trials` trials, `--parallel` at a time and its default early stopping, run by a
`StudyManager` on a fresh SQLite database, once with warm starts off and once on (the warm
study's time includes starting its parent).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from tensorboard.compat.proto import event_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuner.domain.config import Settings  # noqa: E402
from tuner.domain.spec import parse_spec  # noqa: E402
from tuner.domain.trainers import Trainer, TrainerRegistry  # noqa: E402
from tuner.engine.manager import StudyManager  # noqa: E402
from tuner.study.operations import Backend, submit_study  # noqa: E402
from tuner.trial.execution import TrialProcess, build_command, wait_for_exit  # noqa: E402
from tuner.trial.warm_starts import WarmStarts  # noqa: E402

PARAMS = {"learning_rate": 0.01, "hidden_units": 32, "num_layers": 2, "optimizer": "adam"}


@dataclass
class TrialTiming:
    mode: str
    to_first_output: float
    to_first_step: float
    to_first_eval: float
    to_exit: float
    exit_code: int


def _records(path: Path) -> list[event_pb2.Event]:
    data = path.read_bytes()
    events, offset = [], 0
    while offset + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[offset + 12 : offset + 12 + length])
        events.append(event)
        offset += 12 + length + 4
    return events


def _first_summary(directory: Path, *, min_step: int) -> float:
    """Wall time of the first summary event at `min_step` or later in a dir's event files."""
    times = [
        e.wall_time
        for path in directory.glob("events.out.tfevents.*")
        for e in _records(path)
        if e.WhichOneof("what") == "summary" and e.step >= min_step
    ]
    if not times:
        raise SystemExit(f"{directory}: no summary at step >= {min_step}; see the trial log")
    return float(min(times))


def house_trainer() -> Trainer:
    trainer = TrainerRegistry.from_file(ROOT / "trainers.yaml", missing_ok=False).get(
        "house_prices"
    )
    if not trainer.preload:
        raise SystemExit("trainers.yaml: house_prices has no 'preload' (warm starts are off)")
    return trainer


def single_trial(
    trainer: Trainer, warm: WarmStarts | None, workdir: Path, index: int, args: list[str]
) -> TrialTiming:
    out = workdir / f"single-{index:02d}"
    command = build_command(
        trainer,
        args=args,
        params=PARAMS,
        output_dir_flag="--job-dir",
        output_dir=out,
        trial_number=index,
    )
    out.mkdir(parents=True)
    log = workdir / f"single-{index:02d}.log"
    launched = time.time()
    if warm is None:
        process = TrialProcess.start(command, log)
    else:
        key = warm.key(trainer)
        assert key is not None
        process = warm.start(key, trainer, command, log)
    first_output: float | None = None
    while (code := process.poll()) is None:
        wait_for_exit([process], 0.005 if first_output is None else 1.0)
        if first_output is None and log.stat().st_size > 0:
            first_output = time.time()
    ended = time.time()
    if code != 0:
        raise SystemExit(f"trial {index} exited with {code}; see {log}")
    return TrialTiming(
        mode="warm" if warm is not None else "cold",
        to_first_output=(first_output or ended) - launched,
        to_first_step=_first_summary(out, min_step=1) - launched,
        to_first_eval=_first_summary(out / "eval", min_step=1) - launched,
        to_exit=ended - launched,
        exit_code=code,
    )


def ready_parent(trainer: Trainer, log_dir: Path) -> tuple[WarmStarts, float]:
    warm = WarmStarts(log_dir)
    key = warm.key(trainer)
    assert key is not None
    started = time.monotonic()
    while (state := warm.status(key)) == "warming":
        wait_for_exit([], 0.5, also=warm.wake_fds())
    if state != "ready":
        raise SystemExit(f"the preloading parent did not get ready: {warm.note(key)}")
    return warm, time.monotonic() - started


def study_wall(workdir: Path, *, warm: bool, trials: int, parallel: int, steps: int) -> float:
    document = yaml.safe_load((ROOT / "examples/house_prices/spec.yaml").read_text())
    document["name"] = f"start-{'warm' if warm else 'cold'}"
    document["args"] = [f"--train-steps={steps}", "--eval-every-steps=50"]
    hp = document["trainingInput"]["hyperparameters"]
    hp.update(maxTrials=trials, maxParallelTrials=parallel, maxFailedTrials=trials)
    base = workdir / document["name"]
    settings = Settings(
        database_url=f"sqlite:///{base}/tuner.db",
        artifact_root=base / "artifacts",
        trainers_file=ROOT / "trainers.yaml",
        warm_starts=warm,
    )
    base.mkdir(parents=True)
    backend = Backend.connect(settings.database_url)
    try:
        registry = TrainerRegistry.from_file(ROOT / "trainers.yaml", missing_ok=False)
        spec = parse_spec(document, trainers=registry.names())
        submit_study(backend, spec, registry)
        manager = StudyManager(backend, registry, settings, slots=parallel, studies=[spec.name])
        started = time.monotonic()
        manager.run()
        return time.monotonic() - started
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4, help="single trials per mode")
    p.add_argument("--steps", type=int, default=300, help="training steps per trial")
    p.add_argument("--study-trials", type=int, default=12, help="0 skips the studies")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    trainer = house_trainer()
    trial_args = [f"--train-steps={args.steps}", "--eval-every-steps=50"]
    load = os.getloadavg()[0]
    results: dict[str, Any] = {"load_before": load, "steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="trial-start-") as tmp:
        workdir = Path(tmp)
        warm, preload_seconds = ready_parent(trainer, workdir / ".warm")
        results["preload_seconds"] = preload_seconds
        timings: list[TrialTiming] = []
        try:
            for index in range(2 * args.trials):
                use_warm = warm if index % 2 == 1 else None
                timings.append(single_trial(trainer, use_warm, workdir, index, trial_args))
        finally:
            warm.close()
        results["single"] = [asdict(t) for t in timings]
        print(f"load average before: {load:.2f}; parent's preload: {preload_seconds:.2f} s (once)")
        print(f"\nsingle trials ({args.trials} each, {args.steps} steps, medians, seconds):")
        print(f"{'':16}{'cold':>10}{'warm':>10}{'cold/warm':>11}")
        for field, label in (
            ("to_first_output", "start overhead"),
            ("to_first_step", "to first step"),
            ("to_first_eval", "to first eval"),
            ("to_exit", "whole trial"),
        ):
            cold = statistics.median([getattr(t, field) for t in timings if t.mode == "cold"])
            hot = statistics.median([getattr(t, field) for t in timings if t.mode == "warm"])
            results[f"{field}_cold"], results[f"{field}_warm"] = cold, hot
            print(f"{label:16}{cold:10.2f}{hot:10.2f}{cold / hot:10.2f}x")
        if args.study_trials:
            walls = {
                mode: study_wall(
                    workdir,
                    warm=mode == "warm",
                    trials=args.study_trials,
                    parallel=args.parallel,
                    steps=args.steps,
                )
                for mode in ("cold", "warm")
            }
            results.update(study_cold=walls["cold"], study_warm=walls["warm"])
            print(
                f"\n{args.study_trials}-trial study, {args.parallel} in parallel: cold "
                f"{walls['cold']:.1f} s, warm {walls['warm']:.1f} s "
                f"({100 * (1 - walls['warm'] / walls['cold']):.0f} % less; "
                f"ratio {walls['cold'] / walls['warm']:.2f})"
            )
    results["load_after"] = os.getloadavg()[0]
    print(f"load average after: {results['load_after']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
