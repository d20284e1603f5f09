"""Compute saved by early stopping and TPE: random search vs TPE vs TPE with the default pruner.

Three configurations of the same study (same params, same `maxTrials`, `maxParallelTrials` 2,
`seed` = the run's seed), each run over several seeds:

- `random`: `algorithm: RANDOM_SEARCH`, no early stopping;
- `tpe`: `algorithm: ALGORITHM_UNSPECIFIED` (the tuner's TPE), no early stopping;
- `tpe+prune`: TPE with `enableTrialEarlyStopping: true`, i.e. the default pruner
  (`PrunerSpec()`: median, 3 startup trials, no warmup).

on two tasks:

- `curves`: `bench/curves_trainer.py`, a synthetic trainer without TensorFlow whose learning
  curves cross (a high learning rate converges fast to a worse floor, a low one slowly to a better
  one), 4 params, 1000 steps with an eval every 100 (and `--eval-seconds` of sleep before each);
- `house_prices`: the real custom-Estimator example (`examples/house_prices/spec.yaml`,
  300 steps with an eval every 50; ~8 s a trial on 2 cores).

Every run is a real study: `tuner.studies.submit_study`, then `StudyManager(...).run()` with
trial processes, on its own temporary SQLite database and artifact root (deleted afterwards), with
`Settings().poll_interval` unless `--poll-interval` says otherwise. A listener on the manager
records, as trials finish, each trial's last eval step (its training steps; for a pruned trial
the last eval step it wrote, which undercounts the steps it trained before SIGTERM landed) and
objective. From that, per run: total steps, best objective (of COMPLETED trials: a pruned trial
has no objective in the tuner), and the sequence (steps spent so far, best so far).

Per task, the target is the median over seeds of `random`'s best at its full budget; a run's
compute-to-target is the steps spent when its best-so-far first reaches the target. The median
compute-to-target of a configuration is the lower median with "not reached" counted as infinite:
the steps by which at least half of its seeds had reached the target. The headline ratios are
random/tpe+prune (goal: >= 2) and random/tpe; prune-decision latencies
(`StudyManager.prune_latencies`: seconds from an eval event's wall time to the decision) are
pooled over every pruned run.

`--variant NAME` (repeatable) adds an opt-in configuration beside the three; some only change the
spec's `earlyStopping` (a user setting), others monkeypatch library code inside the run (to
measure a proposed default); they never change the headline configurations.

    python bench/search.py --json /tmp/search.json                  # both tasks (~35 min)
    python bench/search.py --skip-estimator --curves-seeds 5        # a quick look
    python bench/search.py --reuse /tmp/search.json --variant warmup --configs random \\
        --json /tmp/search-warmup.json    # a variant beside the stored runs
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tuner import sampling
from tuner import studies as study_ops
from tuner.config import Settings
from tuner.manager import StudyManager, TrialEvent
from tuner.spec import PrunerSpec, load_spec_file, parse_spec
from tuner.studies import Backend
from tuner.trainers import Trainer, TrainerRegistry

REPO = Path(__file__).resolve().parents[1]
CURVES_TRAINER = REPO / "bench" / "curves_trainer.py"
HOUSE_SPEC = REPO / "examples" / "house_prices" / "spec.yaml"
TASKS = ("curves", "house_prices")
BASE_CONFIGS = ("random", "tpe", "tpe+prune")
TARGET_RATIO = 2.0
TARGET_P95 = 1.0

optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- tasks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSetup:
    """What a task's runs share; runs are reused from a JSON file only under the same setup."""

    task: str
    max_trials: int
    parallel: int
    train_steps: int
    eval_every: int
    eval_seconds: float
    poll_interval: float


def curves_document(setup: TaskSetup) -> dict[str, Any]:
    return {
        "name": "curves",
        "trainer": "curves",
        "args": [
            f"--train-steps={setup.train_steps}",
            f"--eval-every-steps={setup.eval_every}",
            f"--eval-seconds={setup.eval_seconds}",
        ],
        "objective": "best",
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": setup.max_trials,
            "maxParallelTrials": setup.parallel,
            "params": [
                {
                    "parameterName": "learning_rate",
                    "type": "DOUBLE",
                    "minValue": 1e-4,
                    "maxValue": 1e-1,
                    "scaleType": "UNIT_LOG_SCALE",
                },
                {
                    "parameterName": "width",
                    "type": "INTEGER",
                    "minValue": 8,
                    "maxValue": 512,
                    "scaleType": "UNIT_LOG_SCALE",
                },
                {
                    "parameterName": "dropout",
                    "type": "DOUBLE",
                    "minValue": 0.0,
                    "maxValue": 0.5,
                    "scaleType": "UNIT_LINEAR_SCALE",
                },
                {
                    "parameterName": "optimizer",
                    "type": "CATEGORICAL",
                    "categoricalValues": ["adam", "rmsprop", "momentum", "sgd"],
                },
            ],
        },
    }


def house_document(setup: TaskSetup) -> dict[str, Any]:
    """`examples/house_prices/spec.yaml` with the bench's budget and step counts."""
    document = load_spec_file(HOUSE_SPEC).to_document()
    document["args"] = [
        f"--train-steps={setup.train_steps}",
        f"--eval-every-steps={setup.eval_every}",
    ]
    hp = document["hyperparameters"]
    hp["maxTrials"] = setup.max_trials
    hp["maxParallelTrials"] = setup.parallel
    return document


def registry() -> TrainerRegistry:
    """The server's registry (`trainers.yaml`) plus the curves trainer, registered in-process."""
    listed = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    trainers = {name: listed.get(name) for name in listed.names()}
    trainers["curves"] = Trainer(
        name="curves", argv=(sys.executable, str(CURVES_TRAINER)), working_dir=REPO
    )
    return TrainerRegistry(trainers)


# -- configurations and variants -----------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """An opt-in configuration: TPE plus a pruner setting and/or a patched library default."""

    name: str
    help: str
    #: The spec's `earlyStopping` for a task setup (None: `enableTrialEarlyStopping` defaults).
    early_stopping: Callable[[TaskSetup], dict[str, Any]] | None = None
    #: A library change applied inside the run (a monkeypatch, undone afterwards), or None.
    patch: Callable[[TaskSetup], AbstractContextManager[None]] | None = None
    algorithm: str = "ALGORITHM_UNSPECIFIED"


@contextmanager
def _patched_default_pruner(**changes: Any) -> Iterator[None]:
    """Change what `PrunerSpec()` (the pruner of `enableTrialEarlyStopping: true` without
    `earlyStopping`) builds, as a changed default in `tuner/spec.py` would."""
    original = sampling.make_pruner

    def make_pruner(pruner: PrunerSpec | None) -> optuna.pruners.BasePruner:
        if pruner == PrunerSpec():
            pruner = PrunerSpec.model_validate({**pruner.model_dump(), **changes})
        return original(pruner)

    sampling.make_pruner = make_pruner  # what `Backend.optuna_study` calls
    try:
        yield
    finally:
        sampling.make_pruner = original


def _steps(setup: TaskSetup, fraction: float) -> int:
    """`fraction` of the train steps, rounded to a whole number of eval intervals."""
    return round(setup.train_steps * fraction / setup.eval_every) * setup.eval_every


def _warmup(fraction: float) -> Callable[[TaskSetup], dict[str, Any]]:
    def early_stopping(setup: TaskSetup) -> dict[str, Any]:
        return {"type": "median", "startupTrials": 3, "warmupSteps": _steps(setup, fraction)}

    return early_stopping


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "warmup",
            "median pruner, no decision before 50%% of the train steps",
            early_stopping=_warmup(0.5),
        ),
        Variant(
            "warmup30",
            "median pruner, no decision before 30%% of the train steps",
            early_stopping=_warmup(0.3),
        ),
        Variant(
            "percentile75",
            "percentile pruner at 75: prune only trials worse than 3 in 4 completed ones",
            early_stopping=lambda s: {"type": "percentile", "percentile": 75.0, "startupTrials": 3},
        ),
        Variant(
            "percentile25",
            "percentile pruner at 25: keep only trials better than 1 in 4 completed ones",
            early_stopping=lambda s: {"type": "percentile", "percentile": 25.0, "startupTrials": 3},
        ),
        Variant(
            "startup5",
            "median pruner, 5 startup trials",
            early_stopping=lambda s: {"type": "median", "startupTrials": 5},
        ),
        Variant(
            "hyperband",
            "Hyperband from one eval interval to the full steps, reduction factor 3",
            early_stopping=lambda s: {
                "type": "hyperband",
                "minResource": s.eval_every,
                "maxResource": s.train_steps,
                "reductionFactor": 3,
            },
        ),
        Variant(
            "sha",
            "successive halving from one eval interval, reduction factor 3",
            early_stopping=lambda s: {
                "type": "successive_halving",
                "minResource": s.eval_every,
                "reductionFactor": 3,
            },
        ),
        Variant(
            "default-percentile75",
            "library change: PrunerSpec() defaults to type percentile, percentile 75 "
            "(monkeypatched make_pruner; the spec says only enableTrialEarlyStopping: true)",
            patch=lambda s: _patched_default_pruner(type="percentile", percentile=75.0),
        ),
        Variant(
            "random+prune",
            "RANDOM_SEARCH with the default pruner (pruning alone, without TPE)",
            algorithm="RANDOM_SEARCH",
        ),
    )
}


def config_names(base: Sequence[str], variants: Sequence[str]) -> list[str]:
    return [*base, *(f"v:{v}" for v in variants)]


def study_document(setup: TaskSetup, config: str, seed: int) -> dict[str, Any]:
    document = curves_document(setup) if setup.task == "curves" else house_document(setup)
    document["name"] = f"{setup.task}-{config.replace(':', '-').replace('+', '-')}-{seed}"
    document["seed"] = seed
    document.pop("earlyStopping", None)
    hp = document["hyperparameters"]
    if config == "random":
        hp.update(algorithm="RANDOM_SEARCH", enableTrialEarlyStopping=False)
    elif config == "tpe":
        hp.update(algorithm="ALGORITHM_UNSPECIFIED", enableTrialEarlyStopping=False)
    elif config == "tpe+prune":
        hp.update(algorithm="ALGORITHM_UNSPECIFIED", enableTrialEarlyStopping=True)
    else:
        variant = VARIANTS[config.removeprefix("v:")]
        hp.update(algorithm=variant.algorithm, enableTrialEarlyStopping=True)
        if variant.early_stopping is not None:
            document["earlyStopping"] = variant.early_stopping(setup)
    return document


def _variant_patch(config: str, setup: TaskSetup) -> AbstractContextManager[None]:
    variant = VARIANTS.get(config.removeprefix("v:")) if config.startswith("v:") else None
    if variant is not None and variant.patch is not None:
        return variant.patch(setup)
    return nullcontext()


# -- one run -------------------------------------------------------------------------------------


@dataclass
class TrialRecord:
    number: int
    state: str
    steps: int
    objective: float | None
    params: dict[str, Any]
    finished_at: float  # seconds since the run started


@dataclass
class RunResult:
    task: str
    config: str
    seed: int
    setup: dict[str, Any]
    wall_seconds: float
    trials: list[TrialRecord]
    prune_latencies: list[float]
    total_steps: int = 0
    best: float | None = None
    #: (steps spent so far, best so far) after each finished trial, in finishing order.
    sequence: list[tuple[int, float | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        spent, best = 0, None
        self.sequence = []
        for t in self.trials:
            spent += t.steps
            if t.state == "COMPLETED" and t.objective is not None:
                best = t.objective if best is None else min(best, t.objective)
            self.sequence.append((spent, best))
        self.total_steps, self.best = spent, best

    def compute_to_target(self, target: float) -> float:
        for spent, best in self.sequence:
            if best is not None and best <= target:
                return float(spent)
        return math.inf

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        trials = [TrialRecord(**t) for t in data["trials"]]
        return cls(
            task=data["task"],
            config=data["config"],
            seed=data["seed"],
            setup=data["setup"],
            wall_seconds=data["wall_seconds"],
            trials=trials,
            prune_latencies=data["prune_latencies"],
        )


class Recorder:
    """Listens to the manager: each trial's params, last eval step, and end, in order."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.params: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, int] = {}
        self.finished: dict[int, TrialRecord] = {}

    def __call__(self, event: TrialEvent) -> None:
        n = event.number
        if event.kind == "created":
            self.params[n] = dict(event.data.get("params") or {})
        elif event.kind == "eval":
            self.steps[n] = max(self.steps.get(n, 0), int(event.data["step"]))
        elif event.kind == "state" and n not in self.finished:
            objective = event.data.get("objective")
            self.finished[n] = TrialRecord(
                number=n,
                state=str(event.data["state"]),
                steps=self.steps.get(n, 0),
                objective=float(objective) if objective is not None else None,
                params=self.params.get(n, {}),
                finished_at=round(time.monotonic() - self.start, 3),
            )


def run_one(setup: TaskSetup, config: str, seed: int) -> RunResult:
    """One study, start to end, in a temp dir of its own."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tuner.spec").setLevel(logging.ERROR)  # spec.yaml's ignored scaleTier
    root = Path(tempfile.mkdtemp(prefix=f"bench-search-{setup.task}-"))
    try:
        settings = Settings(
            database_url=f"sqlite:///{root / 'tuner.db'}",
            artifact_root=root / "artifacts",
            trainers_file=REPO / "trainers.yaml",
            poll_interval=setup.poll_interval,
        )
        backend = Backend.connect(settings.database_url)
        try:
            with _variant_patch(config, setup):
                spec = parse_spec(study_document(setup, config, seed))
                reg = registry()
                study_ops.submit_study(backend, spec, reg)
                recorder = Recorder()
                manager = StudyManager(
                    backend,
                    reg,
                    settings,
                    slots=spec.hyperparameters.max_parallel_trials,
                    studies=[spec.name],
                    listener=recorder,
                )
                started = time.monotonic()
                manager.run()
                wall = time.monotonic() - started
        finally:
            backend.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    trials = sorted(recorder.finished.values(), key=lambda t: t.finished_at)
    return RunResult(
        task=setup.task,
        config=config,
        seed=seed,
        setup=asdict(setup),
        wall_seconds=round(wall, 2),
        trials=trials,
        prune_latencies=[round(x, 4) for x in manager.prune_latencies],
    )


def _run_job(job: tuple[TaskSetup, str, int]) -> RunResult:
    return run_one(*job)


# -- reporting -----------------------------------------------------------------------------------


def lower_median(values: Sequence[float]) -> float:
    return statistics.median_low(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_steps(value: float) -> str:
    return "not reached" if math.isinf(value) else f"{value:,.0f}"


def fmt_ratio(num: float, den: float) -> str:
    if math.isinf(den) and math.isinf(num):
        return "n/a (neither reached)"
    if math.isinf(den):
        return "< 1 (not reached)"
    if math.isinf(num):
        return "inf"
    return f"{num / den:.2f}x"


def ctt_ratio(a: float, c: float) -> float:
    """random's median compute-to-target over another's: inf if only the other reached it,
    0 if only random did, nan if neither."""
    if math.isinf(a) and math.isinf(c):
        return math.nan
    if math.isinf(c):
        return 0.0
    return math.inf if math.isinf(a) else a / c


def bootstrap_ratio(
    baseline: list[RunResult], other: list[RunResult], target: float, rounds: int = 2000
) -> tuple[float, float]:
    """A 90% interval of `ctt_ratio` when the seeds are resampled (paired by seed)."""
    a = {r.seed: r.compute_to_target(target) for r in baseline}
    c = {r.seed: r.compute_to_target(target) for r in other}
    seeds = sorted(a.keys() & c.keys())
    if not seeds:
        return math.nan, math.nan
    rng = random.Random(0)
    ratios = []
    for _ in range(rounds):
        sample = [rng.choice(seeds) for _ in seeds]
        ratio = ctt_ratio(
            lower_median([a[s] for s in sample]), lower_median([c[s] for s in sample])
        )
        ratios.append(math.inf if math.isnan(ratio) else ratio)  # neither: no evidence either way
    return percentile(ratios, 5), percentile(ratios, 95)


def fmt_interval(low: float, high: float) -> str:
    def one(x: float) -> str:
        return "inf" if math.isinf(x) else f"{x:.2f}x"

    return f"{one(low)}-{one(high)}"


def pruned_would_have(run: RunResult, target: float, setup: TaskSetup) -> tuple[int, int]:
    """curves only: pruned trials, and how many of them would have reached `target` (noiseless
    best over the full steps, from the trainer's own formula)."""
    sys.path.insert(0, str(REPO / "bench"))
    import curves_trainer as curves

    pruned = [t for t in run.trials if t.state == "PRUNED"]
    good = 0
    for t in pruned:
        p = t.params
        args = (float(p["learning_rate"]), int(p["width"]), float(p["dropout"]), p["optimizer"])
        steps = range(setup.eval_every, setup.train_steps + 1, setup.eval_every)
        if min(curves.expected_rmse(s, *args) for s in steps) <= target:
            good += 1
    return len(pruned), good


def summarize(task: str, runs: list[RunResult], configs: list[str]) -> dict[str, Any]:
    by_config = {
        c: sorted((r for r in runs if r.config == c), key=lambda r: r.seed) for c in configs
    }
    baseline = [r.best for r in by_config.get("random", []) if r.best is not None]
    if not baseline:
        print(f"\n{task}: no random-search runs, no target")
        return {}
    target = statistics.median(baseline)
    setup = TaskSetup(**by_config["random"][0].setup)
    full = setup.max_trials * setup.train_steps
    print(
        f"\n== {task}: {setup.max_trials} trials x {setup.train_steps} steps "
        f"(eval every {setup.eval_every}), {setup.parallel} in parallel, "
        f"{len(by_config['random'])} seeds; poll {setup.poll_interval}s"
    )
    print(f"target = median over seeds of random's best = {target:.4f}")
    header = (
        f"{'config':<23}{'seeds':>6}{'med best':>10}{'med steps':>11}{'% budget':>9}"
        f"{'med to target':>15}{'reached':>9}{'@25%':>6}{'@50%':>6}"
        f"{'pruned/run':>11}{'wall s/run':>11}"
    )
    print(header)
    print("-" * len(header))
    out: dict[str, Any] = {"target": target, "full_budget_steps": full, "configs": {}}
    for config, rs in by_config.items():
        if not rs:
            continue
        ctt = [r.compute_to_target(target) for r in rs]
        bests = [r.best if r.best is not None else math.inf for r in rs]
        steps = [float(r.total_steps) for r in rs]
        pruned = [sum(t.state == "PRUNED" for t in r.trials) for r in rs]
        row = {
            "seeds": len(rs),
            "median_best": statistics.median(bests),
            "median_total_steps": statistics.median(steps),
            "median_compute_to_target": lower_median(ctt),
            "reached": sum(not math.isinf(x) for x in ctt),
            #: seeds that reached the target within a quarter / half of the full budget
            "reached_by_25pct": sum(x <= full / 4 for x in ctt),
            "reached_by_50pct": sum(x <= full / 2 for x in ctt),
            "median_pruned": statistics.median(pruned),
            "median_wall_seconds": statistics.median(r.wall_seconds for r in rs),
        }
        out["configs"][config] = row
        print(
            f"{config:<23}{len(rs):>6}{row['median_best']:>10.4f}"
            f"{row['median_total_steps']:>11,.0f}{row['median_total_steps'] / full:>9.0%}"
            f"{fmt_steps(row['median_compute_to_target']):>15}"
            f"{row['reached']:>5}/{len(rs):<3}{row['reached_by_25pct']:>6}"
            f"{row['reached_by_50pct']:>6}{row['median_pruned']:>11g}"
            f"{row['median_wall_seconds']:>11.1f}"
        )
    rows = out["configs"]
    a = rows["random"]["median_compute_to_target"]
    for config in rows:
        if config == "random":
            continue
        c = rows[config]["median_compute_to_target"]
        ratio = ctt_ratio(a, c)
        rows[config]["ratio_random_over_this"] = None if math.isnan(ratio) else ratio
        low, high = bootstrap_ratio(by_config["random"], by_config[config], target)
        rows[config]["ratio_bootstrap_90"] = [low, high]
        mark = ""
        if config != "tpe":
            mark = "; goal >= 2x: " + ("met" if ratio >= TARGET_RATIO else "MISSED")
        print(
            f"compute to target, random / {config}: {fmt_ratio(a, c)} "
            f"(90% seed bootstrap {fmt_interval(low, high)}{mark})"
        )
    for config, rs in by_config.items():
        latencies = [x for r in rs for x in r.prune_latencies]
        if not latencies:
            continue
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        rows[config]["prune_latency"] = {
            "decisions": len(latencies),
            "p50": p50,
            "p95": p95,
            "max": max(latencies),
        }
        verdict = "met" if p95 < TARGET_P95 else "MISSED"
        print(
            f"prune-decision latency, {config}: {len(latencies)} decisions, p50 {p50:.3f}s, "
            f"p95 {p95:.3f}s (goal < {TARGET_P95:g}s: {verdict}), max {max(latencies):.3f}s"
        )
    if task == "curves":
        for config, rs in by_config.items():
            counts = [pruned_would_have(r, target, setup) for r in rs]
            total = sum(n for n, _ in counts)
            if total:
                good = sum(g for _, g in counts)
                rows[config]["pruned_total"] = total
                rows[config]["pruned_that_would_reach_target"] = good
                print(
                    f"{config}: {total} trials pruned over {len(rs)} seeds, {good} of which "
                    f"would have reached the target (noiseless curve)"
                )
    return out


def print_runs(runs: list[RunResult], target: float) -> None:
    print(f"{'config':<23}{'seed':>5}{'best':>9}{'steps':>9}{'to target':>13}{'states':>26}")
    for r in sorted(runs, key=lambda r: (r.config, r.seed)):
        states: dict[str, int] = {}
        for t in r.trials:
            states[t.state] = states.get(t.state, 0) + 1
        text = " ".join(f"{k[:4]}={v}" for k, v in sorted(states.items()))
        best = f"{r.best:.4f}" if r.best is not None else "-"
        print(
            f"{r.config:<23}{r.seed:>5}{best:>9}{r.total_steps:>9,}"
            f"{fmt_steps(r.compute_to_target(target)):>13}{text:>26}"
        )


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--skip-estimator", action="store_true", help="skip the house_prices task")
    p.add_argument("--skip-curves", action="store_true", help="skip the synthetic task")
    p.add_argument("--seeds", type=int, default=None, help="seeds for both tasks (overrides)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, +1, ...")
    p.add_argument("--curves-seeds", type=int, default=20)
    p.add_argument("--curves-trials", type=int, default=40, help="maxTrials of a curves run")
    p.add_argument(
        "--eval-seconds",
        type=float,
        default=0.3,
        help="curves trainer: sleep before each eval (> the poll interval, like an Estimator)",
    )
    p.add_argument("--estimator-seeds", type=int, default=5)
    p.add_argument("--estimator-trials", type=int, default=12, help="maxTrials of a house run")
    p.add_argument("--estimator-steps", type=int, default=300)
    p.add_argument("--estimator-eval-every", type=int, default=50)
    p.add_argument(
        "--poll-interval",
        type=float,
        default=Settings.model_fields["poll_interval"].default,
        help="manager tick (the headline uses the default)",
    )
    p.add_argument(
        "--jobs", type=int, default=3, help="curves runs at a time (each its own process)"
    )
    p.add_argument("--estimator-jobs", type=int, default=1, help="house_prices runs at a time")
    p.add_argument(
        "--configs",
        default=",".join(BASE_CONFIGS),
        help="comma-separated subset of the base configurations to run",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=sorted(VARIANTS),
        help="add an opt-in configuration (repeatable): "
        + "; ".join(f"{v.name}: {v.help}" for v in VARIANTS.values()),
    )
    p.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="take runs with the same setup from this --json file (repeatable)",
    )
    p.add_argument("--json", type=Path, help="write every run's raw results here")
    p.add_argument("--runs", action="store_true", help="also print one line per run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    base = [c for c in args.configs.split(",") if c]
    unknown = set(base) - set(BASE_CONFIGS)
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {BASE_CONFIGS}")
    configs = config_names(base, args.variant)
    setups: list[tuple[TaskSetup, int, int]] = []
    if not args.skip_curves:
        setup = TaskSetup(
            task="curves",
            max_trials=args.curves_trials,
            parallel=2,
            train_steps=1000,
            eval_every=100,
            eval_seconds=args.eval_seconds,
            poll_interval=args.poll_interval,
        )
        setups.append((setup, args.seeds or args.curves_seeds, args.jobs))
    if not args.skip_estimator:
        setup = TaskSetup(
            task="house_prices",
            max_trials=args.estimator_trials,
            parallel=2,
            train_steps=args.estimator_steps,
            eval_every=args.estimator_eval_every,
            eval_seconds=0.0,
            poll_interval=args.poll_interval,
        )
        setups.append((setup, args.seeds or args.estimator_seeds, args.estimator_jobs))

    reused: list[RunResult] = []
    for path in args.reuse:
        reused += [RunResult.from_json(r) for r in json.loads(path.read_text())["runs"]]
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Optuna {optuna.__version__}"
    )
    code = code_version()
    print(
        f"code: {code['commit']}{' + local changes in ' + code['dirty'] if code['dirty'] else ''}"
    )
    all_runs: list[RunResult] = []
    summaries: dict[str, Any] = {}
    for setup, seeds, jobs in setups:
        seed_list = list(range(args.first_seed, args.first_seed + seeds))
        have = {
            (r.config, r.seed): r
            for r in reused
            if r.task == setup.task and r.setup == asdict(setup) and r.seed in seed_list
        }
        wanted = sorted({*configs, *(c for c, _ in have)}, key=_config_order)
        todo = [(setup, c, s) for s in seed_list for c in configs if (c, s) not in have]
        print(
            f"\n{setup.task}: {len(todo)} runs to do, {len(have)} reused; {jobs} at a time ...",
            flush=True,
        )
        started = time.monotonic()
        runs = list(have.values())
        if jobs > 1 and len(todo) > 1:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for future in as_completed([pool.submit(_run_job, job) for job in todo]):
                    result = future.result()
                    runs.append(result)
                    _progress(result, len(runs) - len(have), len(todo), started)
        else:
            for job in todo:
                result = _run_job(job)
                runs.append(result)
                _progress(result, len(runs) - len(have), len(todo), started)
        summaries[setup.task] = summarize(setup.task, runs, wanted)
        if args.runs and summaries[setup.task]:
            print_runs(runs, summaries[setup.task]["target"])
        all_runs += runs
    if args.json:
        document = {
            "machine": {
                "host": platform.node(),
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "optuna": optuna.__version__,
            },
            "code": code,
            "argv": sys.argv[1:] if argv is None else list(argv),
            "summary": summaries,
            "runs": [asdict(r) for r in all_runs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(document), indent=1) + "\n")
        print(f"\nraw results: {args.json}")
    return 0


def code_version() -> dict[str, str]:
    """The commit the runs start from, and uncommitted changes under tuner/ (runs use the
    working tree as it is when this process starts)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "tuner")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": " ".join(dirty.split())}


def _config_order(config: str) -> tuple[int, str]:
    return (
        (BASE_CONFIGS.index(config), "") if config in BASE_CONFIGS else (len(BASE_CONFIGS), config)
    )


def _finite(value: Any) -> Any:
    """The document with infinities ("not reached") as null, so it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _progress(result: RunResult, done: int, total: int, started: float) -> None:
    best = f"{result.best:.4f}" if result.best is not None else "-"
    pruned = sum(t.state == "PRUNED" for t in result.trials)
    print(
        f"  [{done}/{total} {time.monotonic() - started:6.0f}s] {result.task} {result.config} "
        f"seed {result.seed}: best {best}, {result.total_steps:,} steps, {pruned} pruned, "
        f"{result.wall_seconds:.0f}s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
