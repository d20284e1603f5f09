"""How fast a prune decision and a study stop reach a trainer on a Ray node, against the
local executor, in one run.

For each executor (`local`: the manager's own subprocesses; `ray`: tasks on a local Ray
cluster that supervise their trainer on the node, `tuner/engine/ray_executor.py`):

- **prune**: a study of the synthetic trainer (no TensorFlow) whose first grid point is good and
  the others worse at every step, with the median pruner after one trial: the prune-decision
  latencies (`StudyManager.prune_latencies`: from the eval event's wall time to the decision to
  stop the trainer, made on the node for Ray) over every pruned trial;
- **stop**: `--stops` times, a study of two long trials is stopped (`request_stop`, what
  `tuner stop` and the API do) once both trainers run; the latency is from the stop to both
  trainer processes being gone (as `/proc` sees them, polled every 10 ms).

Goal (the prune-decision goal): p95 < 1 s for both on Ray. The local figures are the baseline;
the last column is the ratio ray / local.

Ray binds to the machine's interface address: on a machine whose network must stay untouched,
run it in a namespace with only loopback:

    unshare -n bash -c 'ip link set lo up && exec .venv/bin/python bench/remote_latency.py'
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tuner.domain.config import Settings  # noqa: E402
from tuner.domain.spec import parse_spec  # noqa: E402
from tuner.domain.trainers import TrainerRegistry  # noqa: E402
from tuner.engine.manager import StudyManager  # noqa: E402
from tuner.persistence import repository as repo  # noqa: E402
from tuner.study import operations as study_ops  # noqa: E402
from tuner.study.operations import Backend  # noqa: E402
from tuner.trial.execution import process_exists  # noqa: E402


def spec(name: str, *, args: list[str], params: dict[str, Any], **extra: Any) -> Any:
    return parse_spec(
        {
            "name": name,
            "trainer": "synthetic",
            "seed": 1,
            "args": args,
            **extra,
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "rmse",
                **params,
            },
        }
    )


class Run:
    """One manager, in a thread, on its own database and artifact root."""

    def __init__(self, workdir: Path, executor: str, name: str) -> None:
        self.settings = Settings(
            database_url=f"sqlite:///{workdir / f'{name}.db'}",
            artifact_root=workdir / name,
            trainers_file=workdir / "none.yaml",
            poll_interval=0.05,
            stop_grace_seconds=3,
            executor=executor,  # type: ignore[arg-type]
        )
        self.backend = Backend.connect(self.settings.database_url, pre_ping=False)
        self.registry = TrainerRegistry()
        self.registry.register_module("synthetic", "examples.synthetic.task", working_dir=REPO)

    def start(self, study: Any, slots: int) -> tuple[StudyManager, threading.Thread]:
        study_ops.submit_study(self.backend, study, self.registry)
        manager = StudyManager(
            self.backend, self.registry, self.settings, slots=slots, studies=[study.name]
        )
        thread = threading.Thread(target=manager.run, daemon=True)
        thread.start()
        return manager, thread

    def runs(self, name: str) -> list[Any]:
        with self.backend.db.session() as s:
            return list(repo.runs(s, repo.get_study(s, name).id))

    def close(self) -> None:
        self.backend.close()


def prune_latencies(workdir: Path, executor: str) -> tuple[list[float], int]:
    run = Run(workdir, executor, f"prune-{executor}")
    study = spec(
        "prune",
        args=["--train-steps=60", "--eval-every-steps=10", "--step-seconds=0.2"],
        params={
            "maxTrials": 8,
            "maxParallelTrials": 2,
            "algorithm": "GRID_SEARCH",
            "params": [
                {
                    "parameterName": "x",
                    "type": "DISCRETE",
                    "discreteValues": [0.1, 2, 3, 4, 5, 6, 7, 8],
                }
            ],
        },
        earlyStopping={"type": "median", "startupTrials": 1},
    )
    try:
        manager, thread = run.start(study, slots=2)
        thread.join(timeout=300)
        pruned = sum(1 for r in run.runs("prune") if r.state == "PRUNED")
        return list(manager.prune_latencies), pruned
    finally:
        run.close()


def stop_latencies(workdir: Path, executor: str, stops: int) -> list[float]:
    run = Run(workdir, executor, f"stop-{executor}")
    found: list[float] = []
    try:
        for index in range(stops):
            name = f"stop-{index}"
            study = spec(
                name,
                args=["--train-steps=1000", "--eval-every-steps=10", "--step-seconds=0.2"],
                params={
                    "maxTrials": 2,
                    "maxParallelTrials": 2,
                    "params": [
                        {"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}
                    ],
                },
            )
            _, thread = run.start(study, slots=2)
            deadline = time.monotonic() + 60
            while True:
                pids = [r.pid for r in run.runs(name) if r.state == "RUNNING" and r.pid]
                if len(pids) == 2 and all(process_exists(p) for p in pids):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{executor}: the trials of {name} did not start")
                time.sleep(0.05)
            time.sleep(0.5)  # both trainers past their start-up
            asked = time.monotonic()
            study_ops.request_stop(run.backend, name)
            while any(process_exists(p) for p in pids):
                time.sleep(0.01)
            found.append(time.monotonic() - asked)
            thread.join(timeout=60)
        return found
    finally:
        run.close()


def quantile(values: Sequence[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stops", type=int, default=5, help="study stops per executor")
    parser.add_argument("--ray-cpus", type=int, default=4, help="num_cpus of the Ray cluster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import ray

    workdir = Path(tempfile.mkdtemp(prefix="tuner-remote-latency-"))
    ray.init(
        address="local",
        num_cpus=args.ray_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _temp_dir=str(Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))),
    )
    rows: dict[str, dict[str, float]] = {}
    try:
        for executor in ("local", "ray"):
            prunes, pruned = prune_latencies(workdir, executor)
            stops = stop_latencies(workdir, executor, args.stops)
            rows[executor] = {
                "pruned trials": pruned,
                "prune p50 s": statistics.median(prunes) if prunes else float("nan"),
                "prune p95 s": quantile(prunes, 0.95),
                "stop p50 s": statistics.median(stops),
                "stop p95 s": quantile(stops, 0.95),
            }
            print(f"{executor}: prunes {[round(x, 3) for x in prunes]}", file=sys.stderr)
            print(f"{executor}: stops {[round(x, 3) for x in stops]}", file=sys.stderr)
    finally:
        ray.shutdown()
    print(f"{'':16}{'local':>10}{'ray':>10}{'ray/local':>11}")
    for key in rows["local"]:
        local, remote = rows["local"][key], rows["ray"][key]
        ratio = "" if key == "pruned trials" else f"{remote / local:11.2f}"
        print(f"{key:16}{local:10.3f}{remote:10.3f}{ratio}")
    print("goal: p95 < 1 s from the eval write (prune) or the stop to the trainer's stop on Ray")
    return 0


if __name__ == "__main__":
    sys.exit(main())
