"""Compute saved by early stopping and TPE, in training steps and in trial wall time: random
search vs TPE vs TPE with the default pruner, and the candidates for what
`enableTrialEarlyStopping: true` should mean.

Configurations of the same study (same params, same `maxTrials`, `maxParallelTrials` 2,
`seed` = the run's seed), each run over several seeds. The baselines:

- `random`: `algorithm: RANDOM_SEARCH`, no early stopping;
- `tpe`: `algorithm: ALGORITHM_UNSPECIFIED` (the tuner's TPE), no early stopping;
- `tpe+prune`: TPE with `enableTrialEarlyStopping: true`, i.e. the current default pruner
  (`tuner.domain.spec.DEFAULT_PRUNER`: median, 3 startup trials, warm-up `auto`, a third of
  the longest
  completed trial's steps; before that choice it was median without warm-up, which
  `--variant old-default` runs).

The candidates (`--candidates`: all of them, or a comma-separated subset), each TPE with
`enableTrialEarlyStopping: true` and an explicit `earlyStopping`, its resources taken from the
task's train steps T and eval interval E (each task prints what they come to):

- `median-warmup`: `{type: median, startupTrials: 3, warmupSteps: T/3}`;
- `percentile75`: `{type: percentile, percentile: 75, startupTrials: 3}` (keep the top 75 %);
- `sha`: `{type: successive_halving, minResource: R, reductionFactor: 3}`, Optuna's
  `SuccessiveHalvingPruner` (asynchronous successive halving), R = T/9 in whole eval
  intervals and at least E: rungs at R, 3R, 9R, ... below T (no decision at the last eval);
- `hyperband`: `{type: hyperband, minResource: R, maxResource: T, reductionFactor: 3}`.

(All steps above are rounded to whole eval intervals.) The tasks:

- `curves`: `bench/curves_trainer.py`, a synthetic trainer without TensorFlow whose learning
  curves cross (a high learning rate converges fast to a worse floor, a low one slowly to a better
  one), 4 params, 1000 steps with an eval every 100 (and `--eval-seconds` of sleep before each);
- `house_prices`: the real custom-Estimator example (`examples/house_prices/spec.yaml`,
  300 steps with an eval every 50; ~8 s a trial on 2 cores);
- `pareto` (only with `--task pareto`): two objectives, for what `enableTrialEarlyStopping:
  true` means with several (`DEFAULT_MULTI_OBJECTIVE_PRUNER`). `bench/pareto_trainer.py` writes
  the curves' rmse and a `latency_ms` in conflict with it (a wider net is more accurate but
  slower); the study has the curves' params, `metrics: rmse and latency_ms, both MINIMIZE`, TPE,
  and its own configurations instead of the ones above: `none` (no early stopping, the
  baseline), `dominated-1`, `-2`, `-3` (`earlyStopping: {type: dominated, minDominating: K,
  startupTrials: 3, warmupSteps: auto}`) and `dominated-1-warmup50` (K = 1, no decision before
  T/2); `--pareto-configs` picks a subset. Its measure is the hypervolume of the COMPLETED
  trials' front within the reference point rmse 1.0, latency_ms 4.0 (the worst values worth
  counting: `bench/pareto_task.py`), its target the median over seeds of `none`'s final
  hypervolume; compute-to-target, ratios (`none` / config) and intervals as below, with "best
  reaches the target" read as "the hypervolume so far reaches it", and beside them each
  config's final hypervolume against `none`'s after as many steps (same seed). Each trial's
  objective vector is read from the tuner's tables and checked against Optuna's
  `trial.values`; the dominance rule is re-checked from the recorded eval vectors
  (`pareto_task.audit`). The last lines choose `min_dominating` for the default: the
  `dominated-K` that reaches the target with the least compute in both measures without a
  lower median final hypervolume than `none`'s. Its runs go around an engine bug with TPE and
  pruned trials of a study with several objectives (`pareto_task.pruned_trials_workaround`).

Every run is a real study: `tuner.study.operations.submit_study`, then `StudyManager(...).run()`
with
trial processes, on its own temporary SQLite database and artifact root (deleted afterwards), with
`Settings().poll_interval` unless `--poll-interval` says otherwise. A listener on the journal
records, as trials finish, each trial's last eval step (its training steps; for a pruned trial
the last eval step it wrote, which undercounts the steps it trained before SIGTERM landed),
objective, and the wall time of its trainer process: from the `TrialProcess` coming to be (just
after the spawn, cold or forked warm) to the manager first seeing it exited (it sleeps on the
processes' pidfds, so at once unless busy). That is timed by wrapping `TrialProcess.__init__`
and `TrialProcess.poll` during the run (measurement only: the wrappers call the originals), so a
pruned trial's start-up (importing TensorFlow, building the graph) and its exit after SIGTERM
count in full. Per run: total steps, summed trial-seconds, the study's wall time (`run()` start
to end), best objective (of COMPLETED trials: a pruned trial has no objective in the tuner).

Per task, the target is the median over seeds of `random`'s best at its full budget; a run's
compute-to-target is the compute (steps, or trial-seconds) spent, in the order trials finish,
when its best first reaches the target. The median compute-to-target of a configuration is the
lower median with "not reached" counted as infinite: the compute by which at least half of its
seeds had reached the target. Each configuration gets the ratio random/configuration in both
measures, with a 90% interval from resampling the seeds. The goal for a candidate: ratio >= 2.5
(random's median best with at most 1/2.5 of its compute) on both tasks, in steps and in
trial-seconds; the last lines name the candidate that meets it, or the closest (the highest
worst ratio of the four). Prune-decision latencies (`StudyManager.prune_latencies`: seconds from
an eval event's wall time to the decision) are pooled over every pruned run.

`--variant NAME` (repeatable) adds an opt-in configuration beside those; some only change the
spec's `earlyStopping` (a user setting), others monkeypatch library code inside the run (to
measure a proposed default); they never change the baselines and candidates, and are not in the
verdict.

    python bench/search.py --candidates --json /tmp/search.json      # everything, both tasks
    python bench/search.py --skip-estimator --curves-seeds 5         # a quick look
    python bench/search.py --reuse /tmp/search.json --variant warmup --configs random \\
        --json /tmp/search-warmup.json    # a variant beside the stored runs
    python bench/search.py --task pareto --json /tmp/search-pareto.json   # two objectives

Budgets (`--budget steps`, `--budget trial-seconds`, either or both: each mode is a run set of
its own, for every task asked). The study then carries `budget: {trainSteps: B}` or
`{trialSeconds: B}` and no `maxTrials` (the engine lifts the trial count, claims a trial while
the budget has room for one more at the finished trials' mean cost, and ends the study
COMPLETED with "compute budget spent: ..."), so that what early stopping saves buys more
trials. B by default is what random search's fixed-`maxTrials` run spends: `maxTrials` x train
steps, or `maxTrials` x a trial's seconds as the engine counts them (`nominal_trial_seconds`;
`--budget-amount TASK:MODE=B` sets it). Everything else is as above, per mode: the target is
random's (pareto: `none`'s) median final best at the same budget, compute-to-target the
compute spent in finishing order when the best first reaches it; a budget table gives the
trials each run bought, what it spent against B (the bench's count, and the engine's:
`tuner.persistence.budget.spent`, a run's last step and its run-table start to end) and how
each study ended. The verdict judges the step-budget runs in steps and the
trial-seconds-budget runs in trial-seconds.

    python bench/search.py --task curves --configs random,tpe,tpe+prune \
        --candidates sha,hyperband --budget steps --budget trial-seconds --jobs 6 \
        --json /tmp/budget-curves.json

With `--json`, each run is also appended as it finishes to `<json>.partial.jsonl`, which
`--reuse` reads too (a session cut short keeps its runs). Runs stored by an older version
(without trial wall times) still load with `--reuse`: their wall-time figures are missing, and
the wall-time ratios leave them out.
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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import optuna

from tuner.domain.config import Settings
from tuner.domain.entities import JournalEntry
from tuner.domain.spec import DEFAULT_PRUNER, PrunerSpec, load_spec_file, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.persistence.budget import spent as budget_spent
from tuner.study import operations as study_ops
from tuner.study import sampling
from tuner.study.operations import Backend
from tuner.trial.execution import TrialProcess

# bench/ is sys.path[0] when this runs as a script (python bench/search.py), as it is meant to.
import pareto_task  # isort: skip

REPO = Path(__file__).resolve().parents[1]
CURVES_TRAINER = REPO / "bench" / "curves_trainer.py"
HOUSE_SPEC = REPO / "examples" / "house_prices" / "spec.yaml"
PARETO_TRAINER = REPO / "bench" / "pareto_trainer.py"
#: The tasks with one objective (judged together by `decide`); `pareto` runs only when asked.
TASKS = ("curves", "house_prices")
ALL_TASKS = (*TASKS, pareto_task.TASK)
BASE_CONFIGS = ("random", "tpe", "tpe+prune")
#: A candidate's goal: random / candidate compute to target, on both tasks, in both measures.
GOAL_RATIO = 2.5
TARGET_P95 = 1.0
#: The two measures of compute: training steps, and trainer-process wall seconds.
MEASURES = ("steps", "seconds")
#: `--budget` modes: the spec key of each, and the measure a run under it is judged in.
BUDGET_KEYS = {"steps": "trainSteps", "trial-seconds": "trialSeconds"}
BUDGET_MEASURE = {"steps": "steps", "trial-seconds": "seconds"}
#: A trial's seconds as the engine counts them against a trial-seconds budget (its run's
#: start to end in the run table: the spawn and the engine's bookkeeping included), measured
#: with the machine lightly shared (1-minute load 6 on 2 cores): house_prices, 300 steps with
#: an eval every 75, warm start, 2 in parallel: about 12 s; curves and pareto: their evals'
#: sleeps plus about 0.9 s. A trial-seconds budget's default is `max_trials` of these; on a
#: busier machine trials cost more (up to twice as much at load 20), and `--budget-amount`
#: sets B to what random search's trials cost there.
HOUSE_TRIAL_SECONDS = 12.0
START_SECONDS = 0.9

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
    #: `--budget`: the study carries `budget: {trainSteps: B}` (`steps`) or `{trialSeconds: B}`
    #: (`trial-seconds`) and no `maxTrials` (None: `maxTrials` as above, no budget).
    budget: str | None = None
    #: B, in steps or trial-seconds (`max_trials` then only says where B came from).
    budget_amount: float | None = None

    @property
    def label(self) -> str:
        """The task, with its budget mode if any: `curves`, `curves (steps)`."""
        return self.task if self.budget is None else f"{self.task} ({self.budget})"

    def budget_text(self) -> str:
        if self.budget is None or self.budget_amount is None:
            return f"maxTrials {self.max_trials}"
        unit = "steps" if self.budget == "steps" else "trial-seconds"
        key = BUDGET_KEYS[self.budget]
        return f"budget {{{key}: {self.budget_amount:,.0f}}} ({unit}), no maxTrials"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskSetup:
        """A stored setup (files of older versions have no budget fields)."""
        return cls(**data)


def nominal_trial_seconds(setup: TaskSetup) -> float:
    """A full trial's seconds as the engine counts them, about (`HOUSE_TRIAL_SECONDS`)."""
    if setup.task == "house_prices":
        return HOUSE_TRIAL_SECONDS * setup.train_steps / 300
    return setup.train_steps // setup.eval_every * setup.eval_seconds + START_SECONDS


def default_budget(setup: TaskSetup, mode: str) -> float:
    """What random search spends with `maxTrials` fixed: `max_trials` full trials, in steps
    or in (nominal) trial-seconds."""
    if mode == "steps":
        return float(setup.max_trials * setup.train_steps)
    return round(setup.max_trials * nominal_trial_seconds(setup), 1)


def setup_key(data: dict[str, Any]) -> dict[str, Any]:
    """A stored setup with the fields older versions lacked filled in, for comparing."""
    return asdict(TaskSetup.from_json(data))


def apply_budget(document: dict[str, Any], setup: TaskSetup) -> dict[str, Any]:
    """Under `--budget`: the study's compute budget instead of its trial count."""
    if setup.budget is None:
        return document
    if setup.budget_amount is None:
        raise ValueError(f"{setup.task}: budget {setup.budget} without an amount")
    hp = document["hyperparameters"]
    hp.pop("maxTrials", None)
    amount = setup.budget_amount
    value: float = int(amount) if setup.budget == "steps" else float(amount)
    document["budget"] = {BUDGET_KEYS[setup.budget]: value}
    return document


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
    """The server's registry (`trainers.yaml`) plus the synthetic trainers, registered
    in-process."""
    listed = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    trainers = {name: listed.get(name) for name in listed.names()}
    for name, script in (("curves", CURVES_TRAINER), (pareto_task.TASK, PARETO_TRAINER)):
        trainers[name] = Trainer(name=name, argv=(sys.executable, str(script)), working_dir=REPO)
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
    """Change what `DEFAULT_PRUNER` (the pruner of `enableTrialEarlyStopping: true` without
    `earlyStopping`) builds, as a changed default in `tuner/domain/spec.py` would."""
    original = sampling.make_pruner

    def make_pruner(pruner: PrunerSpec | None) -> optuna.pruners.BasePruner:
        if pruner == DEFAULT_PRUNER:
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
            "old-default",
            "median pruner without warm-up (what enableTrialEarlyStopping meant before "
            "DEFAULT_PRUNER's warm-up: auto)",
            early_stopping=lambda s: {"type": "median", "startupTrials": 3},
        ),
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
            "percentile pruner at 75, as the candidate percentile75 (kept for stored runs)",
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
            "Hyperband from one eval interval to the full steps, reduction factor 3 (the "
            "candidate hyperband on the default steps; kept for stored runs)",
            early_stopping=lambda s: {
                "type": "hyperband",
                "minResource": s.eval_every,
                "maxResource": s.train_steps,
                "reductionFactor": 3,
            },
        ),
        Variant(
            "sha",
            "successive halving from one eval interval, reduction factor 3 (the candidate "
            "sha on the default steps; kept for stored runs)",
            early_stopping=lambda s: {
                "type": "successive_halving",
                "minResource": s.eval_every,
                "reductionFactor": 3,
            },
        ),
        Variant(
            "default-percentile75",
            "library change: DEFAULT_PRUNER becomes type percentile, percentile 75 "
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


def _eval_steps(setup: TaskSetup, fraction: float) -> int:
    """`fraction` of the train steps in whole eval intervals, at least one."""
    return max(setup.eval_every, _steps(setup, fraction))


def _sha_min_resource(setup: TaskSetup) -> int:
    """Successive halving's first rung: T/9 (the reduction factor squared), so that the
    rungs R, 3R, 9R below T leave room for two or three decisions."""
    return _eval_steps(setup, 1 / 9)


#: The candidates for what `enableTrialEarlyStopping: true` should mean (first-class
#: configurations: named without a prefix, run with `--candidates`, judged in the verdict).
CANDIDATES: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "median-warmup",
            "median pruner, 3 startup trials, no decision before 1/3 of the train steps",
            early_stopping=lambda s: {
                "type": "median",
                "startupTrials": 3,
                "warmupSteps": _eval_steps(s, 1 / 3),
            },
        ),
        Variant(
            "percentile75",
            "percentile pruner keeping the top 75%%, 3 startup trials, no warm-up",
            early_stopping=lambda s: {"type": "percentile", "percentile": 75.0, "startupTrials": 3},
        ),
        Variant(
            "sha",
            "successive halving (ASHA), first rung at 1/9 of the train steps, reduction factor 3",
            early_stopping=lambda s: {
                "type": "successive_halving",
                "minResource": _sha_min_resource(s),
                "reductionFactor": 3,
            },
        ),
        Variant(
            "hyperband",
            "Hyperband from 1/9 of the train steps to all of them, reduction factor 3",
            early_stopping=lambda s: {
                "type": "hyperband",
                "minResource": _sha_min_resource(s),
                "maxResource": s.train_steps,
                "reductionFactor": 3,
            },
        ),
    )
}


def config_names(
    base: Sequence[str], variants: Sequence[str], candidates: Sequence[str] = ()
) -> list[str]:
    return [*base, *candidates, *(f"v:{v}" for v in variants)]


def _variant_of(config: str) -> Variant | None:
    """A candidate's or variant's definition (None for a baseline or an unknown name)."""
    if config in CANDIDATES:
        return CANDIDATES[config]
    if config.startswith("v:"):
        return VARIANTS.get(config.removeprefix("v:"))
    return None


def known_config(config: str) -> bool:
    return (
        config in BASE_CONFIGS or _variant_of(config) is not None or config in pareto_task.CONFIGS
    )


def study_document(setup: TaskSetup, config: str, seed: int) -> dict[str, Any]:
    return apply_budget(_study_document(setup, config, seed), setup)


def _study_document(setup: TaskSetup, config: str, seed: int) -> dict[str, Any]:
    if setup.task == pareto_task.TASK:
        return pareto_task.study_document(curves_document(setup), setup, config, seed)
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
        variant = _variant_of(config)
        if variant is None:
            raise KeyError(f"unknown configuration {config!r}")
        hp.update(algorithm=variant.algorithm, enableTrialEarlyStopping=True)
        if variant.early_stopping is not None:
            document["earlyStopping"] = variant.early_stopping(setup)
    return document


def config_definition(setup: TaskSetup, config: str) -> dict[str, Any]:
    """What a configuration runs on a task: stored with each run, compared on `--reuse`."""
    document = study_document(setup, config, seed=0)
    hp = document["hyperparameters"]
    variant = _variant_of(config)
    return {
        "algorithm": hp["algorithm"],
        "enableTrialEarlyStopping": hp["enableTrialEarlyStopping"],
        "earlyStopping": document.get("earlyStopping"),
        "patch": config if variant is not None and variant.patch is not None else None,
    }


def _rungs(setup: TaskSetup, first: int, factor: int) -> list[int]:
    """The steps at which successive halving decides: first, first x factor, ... below the
    train steps (a decision at the last eval would only throw a finished trial away)."""
    out, rung = [], first
    while rung < setup.train_steps:
        out.append(rung)
        rung *= factor
    return out


def describe_config(setup: TaskSetup, config: str) -> str:
    """One line: what the configuration is on this task, with the resources it comes to."""
    if setup.task == pareto_task.TASK:
        return pareto_task.describe(setup, config)
    if config == "random":
        return "RANDOM_SEARCH, no early stopping"
    if config == "tpe":
        return "TPE, no early stopping"
    if config == "tpe+prune":
        d = DEFAULT_PRUNER
        rule = {"median": "median (= percentile 50)", "percentile": f"percentile {d.percentile:g}"}
        rule_text = rule.get(d.type, d.type)
        return (
            "TPE, enableTrialEarlyStopping: true without earlyStopping, i.e. DEFAULT_PRUNER: "
            f"{rule_text}, startupTrials {d.startup_trials}, warmupSteps {d.warmup_steps}"
        )
    variant = _variant_of(config)
    if variant is None:
        return "(not defined in this version; stored runs only)"
    algorithm = "TPE" if variant.algorithm == "ALGORITHM_UNSPECIFIED" else variant.algorithm
    if variant.early_stopping is None:
        return f"{algorithm}, {variant.help.replace('%%', '%')}"
    es = variant.early_stopping(setup)
    text = f"{algorithm}, earlyStopping {json.dumps(es)}"
    factor = int(es.get("reductionFactor", 3))
    if es["type"] == "successive_halving" and isinstance(es.get("minResource"), int):
        text += f": rungs at {_rungs(setup, es['minResource'], factor)} steps"
    elif es["type"] == "hyperband" and isinstance(es.get("minResource"), int):
        low, high = es["minResource"], int(es.get("maxResource", setup.train_steps))
        brackets = math.floor(math.log(high / low, factor)) + 1
        per = " / ".join(str(_rungs(setup, low * factor**b, factor)) for b in range(brackets))
        text += f": {brackets} bracket{'s' if brackets > 1 else ''}, rungs at {per} steps"
    return text


def _variant_patch(config: str, setup: TaskSetup) -> AbstractContextManager[None]:
    variant = _variant_of(config)
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
    #: Wall seconds of its trainer process(es), from creation to exit (None: not recorded, as in
    #: files of older versions); 0 for a trial whose process never started.
    seconds: float | None = None
    #: When its process was created, seconds since the run started.
    started_at: float | None = None
    #: Whether it was forked from a preloading parent (None: not known).
    warm: bool | None = None
    #: Several objectives only: a COMPLETED trial's objective vector as the tuner ranks it.
    values: list[float] | None = None
    #: Several objectives only: each eval's (step, objective vector, when the manager ingested
    #: it, when the trainer wrote it: seconds since the run started), and its end's reason.
    curve: list[tuple[int, list[float], float, float]] | None = None
    reason: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class RunResult:
    task: str
    config: str
    seed: int
    setup: dict[str, Any]
    #: The study's wall time: `StudyManager.run()` from start to end.
    wall_seconds: float
    trials: list[TrialRecord]
    prune_latencies: list[float]
    #: What ran (`config_definition`; None in files of older versions).
    definition: dict[str, Any] | None = None
    #: The machine's 1-minute load average when the run started and when it ended (None in
    #: files of older versions): trial-seconds stretch when other work shares the cores.
    load_average: list[float] | None = None
    total_steps: int = 0
    best: float | None = None
    #: Summed trainer-process seconds (None unless every trial's were recorded).
    trial_seconds: float | None = None
    #: (steps spent so far, best so far) after each finished trial, in finishing order
    #: (pareto: the completed trials' hypervolume so far instead of the best).
    sequence: list[tuple[int, float | None]] = field(default_factory=list)
    #: pareto: the final hypervolume of the completed trials' front (None for other tasks).
    hypervolume: float | None = None
    #: pareto: trials whose objective vector in the tuner's tables is not Optuna's.
    values_mismatch: list[int] = field(default_factory=list)
    #: The study's end as the engine recorded it (None in files of older versions).
    end_state: str | None = None
    end_reason: str | None = None
    #: What the engine counted against the budget (`tuner.persistence.budget.spent`): the
    #: runs' last global steps, and their seconds from start to end in the run table.
    engine_steps: int | None = None
    engine_trial_seconds: float | None = None

    def __post_init__(self) -> None:
        spent, best = 0, None
        self.sequence = []
        for t in self.trials:
            spent += t.steps
            if t.state == "COMPLETED" and t.objective is not None:
                best = t.objective if best is None else min(best, t.objective)
            self.sequence.append((spent, best))
        self.total_steps, self.best = spent, best
        if self.task == pareto_task.TASK:
            self.sequence = list(pareto_task.progress(self.trials))
            self.hypervolume = self.sequence[-1][1] if self.sequence else 0.0
        seconds = [t.seconds for t in self.trials]
        timed = bool(seconds) and all(s is not None for s in seconds)
        self.trial_seconds = round(sum(s or 0.0 for s in seconds), 2) if timed else None

    @property
    def timed(self) -> bool:
        return self.trial_seconds is not None

    def compute_to_target(self, target: float, measure: str = "steps") -> float:
        """Compute spent (`steps`, or trial-`seconds`), in finishing order, when the best so far
        first reaches `target`: inf if it never does, nan for seconds of an untimed run."""
        if measure == "seconds" and not self.timed:
            return math.nan
        if self.task == pareto_task.TASK:
            return pareto_task.compute_to_target(self.trials, target, measure)
        spent = 0.0
        for t in self.trials:
            spent += t.steps if measure == "steps" else (t.seconds or 0.0)
            if t.state == "COMPLETED" and t.objective is not None and t.objective <= target:
                return spent
        return math.inf

    @property
    def score(self) -> str:
        """What the target is on: the best objective, or the final hypervolume (pareto)."""
        value = self.hypervolume if self.task == pareto_task.TASK else self.best
        return "-" if value is None else f"{value:.4f}"

    def total(self, measure: str) -> float:
        if measure == "steps":
            return float(self.total_steps)
        return math.nan if self.trial_seconds is None else self.trial_seconds

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """A stored run; files of older versions have no definition and no wall times."""
        return cls(
            task=data["task"],
            config=data["config"],
            seed=data["seed"],
            setup=data["setup"],
            wall_seconds=data["wall_seconds"],
            trials=[TrialRecord.from_json(t) for t in data["trials"]],
            prune_latencies=data["prune_latencies"],
            definition=data.get("definition"),
            load_average=data.get("load_average"),
            values_mismatch=data.get("values_mismatch") or [],
            end_state=data.get("end_state"),
            end_reason=data.get("end_reason"),
            engine_steps=data.get("engine_steps"),
            engine_trial_seconds=data.get("engine_trial_seconds"),
        )

    @property
    def trial_count(self) -> int:
        return len(self.trials)

    def spent(self, budget: str) -> float:
        """What the run spent in a budget mode's measure (the bench's own count)."""
        return self.total(BUDGET_MEASURE[budget])


class ProcessClock:
    """When each trainer process came to be and when the manager first saw it exited
    (`time.monotonic()`, by `id()` of its `TrialProcess`).

    While installed, `TrialProcess.__init__` and `TrialProcess.poll` are wrapped (measurement
    only: the wrappers call the originals and return what they return). A `TrialProcess` is
    made right after its trainer is spawned, cold (`Popen`) or warm (forked from a preloading
    parent); the manager sleeps on the trial processes' pidfds, so the first `poll` that returns
    an exit code comes at once after the exit, unless the manager is busy.
    """

    def __init__(self) -> None:
        self.created: dict[int, float] = {}
        self.exited: dict[int, float] = {}

    @contextmanager
    def installed(self) -> Iterator[None]:
        init, poll = TrialProcess.__init__, TrialProcess.poll
        clock = self

        def timed_init(process: TrialProcess, *args: Any, **kwargs: Any) -> None:
            init(process, *args, **kwargs)
            clock.created[id(process)] = time.monotonic()
            clock.exited.pop(id(process), None)

        def timed_poll(process: TrialProcess) -> int | None:
            code = poll(process)
            if code is not None:
                clock.exited.setdefault(id(process), time.monotonic())
            return code

        TrialProcess.__init__ = timed_init  # type: ignore[method-assign, assignment]
        TrialProcess.poll = timed_poll  # type: ignore[method-assign, assignment]
        try:
            yield
        finally:
            TrialProcess.__init__ = init  # type: ignore[method-assign]
            TrialProcess.poll = poll  # type: ignore[method-assign]


class Recorder:
    """Listens to the manager: each trial's params, last eval step, process times, and end, in
    order. `manager` is set once the manager exists (its active trials give the processes)."""

    def __init__(self, clock: ProcessClock, tags: Sequence[str] | None = None) -> None:
        self.start = time.monotonic()
        self.wall_start = time.time()
        self.clock = clock
        #: The objectives' tags of a study with several: each eval's vector is recorded.
        self.tags = list(tags) if tags else None
        self.curves: dict[int, list[tuple[int, list[float], float, float]]] = {}
        self.values_mismatch: list[int] = []
        self.manager: StudyManager | None = None
        self.params: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, int] = {}
        #: The trainer processes of each trial (more than one after a failed warm start).
        self.processes: dict[int, list[TrialProcess]] = {}
        self.finished: dict[int, TrialRecord] = {}

    def _note_process(self, number: int) -> None:
        if self.manager is None:
            return
        for active in self.manager.active.values():
            if active.number == number:
                seen = self.processes.setdefault(number, [])
                if all(p is not active.process for p in seen):
                    seen.append(active.process)

    def _times(self, number: int) -> tuple[float | None, float | None, bool | None]:
        """(seconds, started_at, warm) of a trial's processes."""
        if self.manager is None:
            return None, None, None
        processes = self.processes.get(number, [])
        if not processes:
            return 0.0, None, None  # it never started (e.g. its trainer could not be run)
        created = self.clock.created.get(id(processes[0]))
        exited = self.clock.exited.get(id(processes[-1]))
        warm = getattr(processes[0], "warm", None)
        if created is None:
            return None, None, warm
        started_at = round(created - self.start, 3)
        if exited is None:
            return None, started_at, warm
        return round(exited - created, 3), started_at, warm

    def read_objectives(self, backend: Backend, spec: Any) -> None:
        """Each COMPLETED trial's objective (with several, its vector), as the run table ranks
        it; with several, checked against the values Optuna was told."""
        tags = [o.metric for o in spec.objectives]

        def read(session: Any) -> dict[int, list[float | None]]:
            study = repo.get_study(session, spec.name)
            return {
                r.number: [repo.objective_value(session, r, tag) for tag in tags]
                for r in repo.runs(session, study.id, state="COMPLETED")
                if r.number is not None
            }

        for number, values in backend.db.run(read).items():
            if number not in self.finished or values[0] is None:
                continue
            self.finished[number].objective = float(values[0])
            if len(tags) > 1 and all(v is not None for v in values):
                self.finished[number].values = [float(v or 0.0) for v in values]
        if len(tags) > 1:
            told = {
                t.number: t.values
                for t in optuna.load_study(study_name=spec.name, storage=backend.storage).trials
                if t.state == optuna.trial.TrialState.COMPLETE
            }
            ours = {n: t.values for n, t in self.finished.items() if t.values is not None}
            self.values_mismatch = sorted(
                n
                for n in ours.keys() | told.keys()
                if n not in ours
                or n not in told
                or not all(math.isclose(a, b) for a, b in zip(ours[n], told[n], strict=True))
            )

    def __call__(self, event: JournalEntry) -> None:
        n = event.number
        if n is None:
            return  # the study's own state
        if event.kind == "created":
            self.params[n] = dict(event.data.get("params") or {})
            self._note_process(n)
        elif event.kind == "eval":
            self.steps[n] = max(self.steps.get(n, 0), int(event.data["step"]))
            metrics = event.data.get("metrics") or {}
            if self.tags and all(metrics.get(tag) is not None for tag in self.tags):
                seen = round(time.monotonic() - self.start, 3)
                written = round(float(event.data["wallTime"]) - self.wall_start, 3)
                vector = [float(metrics[tag]) for tag in self.tags]
                step = int(event.data["step"])
                self.curves.setdefault(n, []).append((step, vector, seen, written))
        elif event.kind == "state" and "state" in event.data and n not in self.finished:
            self._note_process(n)
            seconds, started_at, warm = self._times(n)
            self.finished[n] = TrialRecord(
                number=n,
                state=str(event.data["state"]),
                steps=self.steps.get(n, 0),
                objective=None,  # read from the run table once the study ended
                params=self.params.get(n, {}),
                finished_at=round(time.monotonic() - self.start, 3),
                seconds=seconds,
                started_at=started_at,
                warm=warm,
                curve=self.curves.get(n) if self.tags else None,
                reason=event.data.get("reason") if self.tags else None,
            )


def run_one(setup: TaskSetup, config: str, seed: int) -> RunResult:
    """One study, start to end, in a temp dir of its own."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tuner.domain.spec").setLevel(logging.ERROR)  # spec.yaml's ignored scaleTier
    root = Path(tempfile.mkdtemp(prefix=f"bench-search-{setup.task}-"))
    clock = ProcessClock()
    try:
        settings = Settings(
            database_url=f"sqlite:///{root / 'tuner.db'}",
            artifact_root=root / "artifacts",
            trainers_file=REPO / "trainers.yaml",
            poll_interval=setup.poll_interval,
        )
        backend = Backend.connect(settings.database_url)
        try:
            workaround = (
                pareto_task.pruned_trials_workaround()
                if setup.task == pareto_task.TASK
                else nullcontext()
            )
            with _variant_patch(config, setup), clock.installed(), workaround:
                spec = parse_spec(study_document(setup, config, seed))
                reg = registry()
                study_ops.submit_study(backend, spec, reg)
                several = [o.metric for o in spec.objectives] if spec.multi_objective else None
                recorder = Recorder(clock, several)
                manager = StudyManager(
                    backend,
                    reg,
                    settings,
                    slots=spec.hyperparameters.max_parallel_trials,
                    studies=[spec.name],
                )
                recorder.manager = manager
                stop_listening = backend.db.listen(recorder)
                load = [round(os.getloadavg()[0], 2)]
                started = time.monotonic()
                try:
                    manager.run()
                finally:
                    stop_listening()
                wall = time.monotonic() - started
                load.append(round(os.getloadavg()[0], 2))
                recorder.read_objectives(backend, spec)
                end = backend.db.run(lambda session: _engine_end(session, spec.name))
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
        definition=config_definition(setup, config),
        load_average=load,
        values_mismatch=recorder.values_mismatch,
        **end,
    )


def _engine_end(session: Any, name: str) -> dict[str, Any]:
    """The study's end state and reason, and what the engine counted against its budget."""
    study = repo.get_study(session, name)
    used = budget_spent(session, study)
    return {
        "end_state": study.state,
        "end_reason": study.state_reason,
        "engine_steps": used.steps,
        "engine_trial_seconds": round(used.trial_seconds, 2),
    }


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


def fmt_seconds(value: float, decimals: int = 0) -> str:
    if math.isnan(value):
        return "n/a"
    return "not reached" if math.isinf(value) else f"{value:,.{decimals}f}s"


def fmt_ratio_short(num: float, den: float) -> str:
    """`fmt_ratio` for a table cell."""
    if math.isnan(num) or math.isnan(den):
        return "n/a"
    if math.isinf(den):
        return "neither" if math.isinf(num) else "unreached"
    return "inf" if math.isinf(num) else f"{num / den:.2f}x"


def fmt_x(ratio: float | None) -> str:
    """A ratio from `ctt_ratio`: 0 means the other did not reach the target, nan neither."""
    if ratio is None or math.isnan(ratio):
        return "n/a"
    if ratio == 0:
        return "unreached"
    return "inf" if math.isinf(ratio) else f"{ratio:.2f}x"


def fmt_ratio(num: float, den: float) -> str:
    if math.isnan(num) or math.isnan(den):
        return "n/a (untimed)"
    if math.isinf(den) and math.isinf(num):
        return "n/a (neither reached)"
    if math.isinf(den):
        return "< 1 (not reached)"
    if math.isinf(num):
        return "inf"
    return f"{num / den:.2f}x"


def ctt_ratio(a: float, c: float) -> float:
    """random's median compute-to-target over another's: inf if only the other reached it,
    0 if only random did, nan if neither (or either is untimed)."""
    if math.isnan(a) or math.isnan(c):
        return math.nan
    if math.isinf(a) and math.isinf(c):
        return math.nan
    if math.isinf(c):
        return 0.0
    return math.inf if math.isinf(a) else a / c


def median_to_target(runs: Sequence[RunResult], target: float, measure: str) -> float:
    """The lower median compute-to-target over the runs that have the measure (nan if none)."""
    values = [r.compute_to_target(target, measure) for r in runs]
    return lower_median([x for x in values if not math.isnan(x)])


def bootstrap_ratio(
    baseline: list[RunResult],
    other: list[RunResult],
    target: float,
    measure: str = "steps",
    rounds: int = 2000,
) -> tuple[float, float]:
    """A 90% interval of `ctt_ratio` when the seeds are resampled (paired by seed; seeds
    without the measure in either are left out)."""
    a = {r.seed: r.compute_to_target(target, measure) for r in baseline}
    c = {r.seed: r.compute_to_target(target, measure) for r in other}
    seeds = sorted(s for s in a.keys() & c.keys() if not (math.isnan(a[s]) or math.isnan(c[s])))
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

    if math.isnan(low) or math.isnan(high):
        return "n/a"
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


def _median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _or_zero(ratio: float | None) -> float:
    """A ratio for ranking: an undefined one (untimed, or neither reached) counts as 0."""
    return 0.0 if ratio is None or math.isnan(ratio) else ratio


def _goal(ratio: float | None) -> bool:
    return ratio is not None and not math.isnan(ratio) and ratio >= GOAL_RATIO


def summarize(task: str, runs: list[RunResult], configs: list[str]) -> dict[str, Any]:
    by_config = {
        c: sorted((r for r in runs if r.config == c), key=lambda r: r.seed) for c in configs
    }
    baseline = [r.best for r in by_config.get("random", []) if r.best is not None]
    if not baseline:
        print(f"\n{task}: no random-search runs, no target")
        return {}
    target = statistics.median(baseline)
    setup = TaskSetup.from_json(by_config["random"][0].setup)
    full = full_steps(setup, by_config["random"])
    print(
        f"\n== {task}: {setup.budget_text()}, {setup.train_steps} steps a trial "
        f"(eval every {setup.eval_every}), {setup.parallel} in parallel, "
        f"{len(by_config['random'])} seeds; poll {setup.poll_interval}s"
    )
    print(f"target = median over seeds of random's best = {target:.4f}")
    out: dict[str, Any] = {
        "task": setup.task,
        "budget": setup.budget,
        "budget_amount": setup.budget_amount,
        "target": target,
        "full_budget_steps": full,
        "goal_ratio": GOAL_RATIO,
        "configs": {},
    }
    rows: dict[str, dict[str, Any]] = out["configs"]

    print("\ncompute in training steps (a pruned trial: its last eval step)")
    header = (
        f"{'config':<17}{'seeds':>6}{'med best':>10}{'med steps':>11}{'% budget':>9}"
        f"{'steps to target':>17}{'reached':>9}{'@25%':>6}{'@50%':>6}{'pruned/run':>11}"
    )
    print(header)
    print("-" * len(header))
    for config, rs in by_config.items():
        if not rs:
            continue
        ctt = [r.compute_to_target(target) for r in rs]
        bests = [r.best if r.best is not None else math.inf for r in rs]
        steps = [float(r.total_steps) for r in rs]
        pruned = [sum(t.state == "PRUNED" for t in r.trials) for r in rs]
        row: dict[str, Any] = {
            "definition": (
                config_definition(setup, config) if known_config(config) else rs[-1].definition
            ),
            "description": describe_config(setup, config),
            "seeds": len(rs),
            "median_best": statistics.median(bests),
            "median_total_steps": statistics.median(steps),
            "median_compute_to_target": lower_median(ctt),
            "reached": sum(not math.isinf(x) for x in ctt),
            #: seeds that reached the target within a quarter / half of the full budget
            "reached_by_25pct": sum(x <= full / 4 for x in ctt),
            "reached_by_50pct": sum(x <= full / 2 for x in ctt),
            "median_pruned": statistics.median(pruned),
            #: the study's wall time (`StudyManager.run()`), median over seeds
            "median_wall_seconds": statistics.median(r.wall_seconds for r in rs),
        }
        rows[config] = row
        print(
            f"{config:<17}{len(rs):>6}{row['median_best']:>10.4f}"
            f"{row['median_total_steps']:>11,.0f}{row['median_total_steps'] / full:>9.0%}"
            f"{fmt_steps(row['median_compute_to_target']):>17}"
            f"{row['reached']:>5}/{len(rs):<3}{row['reached_by_25pct']:>6}"
            f"{row['reached_by_50pct']:>6}{row['median_pruned']:>11g}"
        )

    budget_report(setup, by_config, rows)

    print(
        "\ncompute in trial-seconds (each trainer process from creation to exit, start-up and "
        "a pruned trial's exit included); study s = the study's wall time"
    )
    header = (
        f"{'config':<17}{'timed':>6}{'med trial-s':>12}{'% random':>9}{'trial-s to target':>19}"
        f"{'s/completed':>12}{'s/pruned':>9}{'warm':>6}{'study s':>9}"
    )
    print(header)
    print("-" * len(header))
    random_timed = [r.total("seconds") for r in by_config["random"] if r.timed]
    random_seconds = _median_or_nan(random_timed)
    for config, rs in by_config.items():
        if not rs:
            continue
        row = rows[config]
        timed = [r for r in rs if r.timed]
        trials = [t for r in timed for t in r.trials]
        done = [t.seconds for t in trials if t.state == "COMPLETED" and t.seconds is not None]
        cut = [t.seconds for t in trials if t.state == "PRUNED" and t.seconds is not None]
        warm_known = [t.warm for t in trials if t.warm is not None]
        row.update(
            timed_seeds=len(timed),
            median_trial_seconds=_median_or_nan([r.total("seconds") for r in timed]),
            median_seconds_to_target=median_to_target(timed, target, "seconds"),
            median_seconds_completed_trial=_median_or_nan(done),
            median_seconds_pruned_trial=_median_or_nan(cut),
            warm_trials=sum(warm_known),
            trials_timed=len(trials),
        )
        share = row["median_trial_seconds"] / random_seconds if random_seconds else math.nan
        warm = f"{sum(warm_known) / len(warm_known):.0%}" if warm_known else "-"
        print(
            f"{config:<17}{f'{len(timed)}/{len(rs)}':>6}"
            f"{fmt_seconds(row['median_trial_seconds']):>12}"
            f"{'n/a' if math.isnan(share) else f'{share:.0%}':>9}"
            f"{fmt_seconds(row['median_seconds_to_target']):>19}"
            f"{fmt_seconds(row['median_seconds_completed_trial'], 1):>12}"
            f"{fmt_seconds(row['median_seconds_pruned_trial'], 1):>9}"
            f"{warm:>6}{row['median_wall_seconds']:>9.1f}"
        )

    loads = [x for rs in by_config.values() for r in rs for x in (r.load_average or [])]
    if loads:
        cores = os.cpu_count() or 1
        out["load_average"] = {"median": statistics.median(loads), "max": max(loads)}
        print(
            f"machine load (1-min load average at run starts and ends): median "
            f"{statistics.median(loads):.1f}, max {max(loads):.1f}, on {cores} cores"
            + (
                "; other work shared the cores, which stretches trial-seconds"
                if max(loads) > cores
                else ""
            )
        )

    print(
        f"\ncompute to target, random / config (90% seed bootstrap); "
        f"goal >= {GOAL_RATIO:g}x in both measures"
    )
    header = f"{'config':<17}{'steps':>12}{'(90%)':>15}{'trial-s':>12}{'(90%)':>15}{'goal':>14}"
    print(header)
    print("-" * len(header))
    for config in rows:
        if config == "random":
            continue
        row = rows[config]
        cells = []
        met: dict[str, bool] = {}
        for measure in MEASURES:
            a = median_to_target(by_config["random"], target, measure)
            c = median_to_target(by_config[config], target, measure)
            ratio = ctt_ratio(a, c)
            low, high = bootstrap_ratio(by_config["random"], by_config[config], target, measure)
            key = (
                "ratio_random_over_this" if measure == "steps" else "ratio_seconds_random_over_this"
            )
            row[key] = None if math.isnan(ratio) else ratio
            row[key.replace("random_over_this", "bootstrap_90")] = [low, high]
            met[measure] = _goal(ratio)
            cells.append(f"{fmt_ratio_short(a, c):>12}{fmt_interval(low, high):>15}")
        row["goal_met"] = met
        goal = {
            (True, True): "met",
            (True, False): "steps only",
            (False, True): "trial-s only",
            (False, False): "MISSED",
        }[(met["steps"], met["seconds"])]
        print(f"{config:<17}{''.join(cells)}{goal:>14}")

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
    if setup.task == "curves":
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


def full_steps(setup: TaskSetup, baseline: Sequence[RunResult]) -> float:
    """The steps a run is measured against: B under a step budget, the baseline's median
    steps under a trial-seconds budget, `maxTrials` x train steps without a budget."""
    if setup.budget == "steps" and setup.budget_amount is not None:
        return setup.budget_amount
    if setup.budget is not None and baseline:
        return statistics.median(r.total_steps for r in baseline)
    return setup.max_trials * setup.train_steps


def budget_report(
    setup: TaskSetup, by_config: dict[str, list[RunResult]], rows: dict[str, dict[str, Any]]
) -> None:
    """Under a budget: how many trials it bought, what each run spent against it (the bench's
    count and the engine's), and why the studies ended."""
    if setup.budget is None or setup.budget_amount is None:
        return
    amount = setup.budget_amount
    unit = "steps" if setup.budget == "steps" else "trial-s"
    print(
        f"\nthe budget: {amount:,.0f} {unit} a run; spent = the bench's count (trial-s: "
        "trainer processes), engine = what the engine counted (runs' last steps, run-table "
        "seconds); ends: studies ended COMPLETED by the compute budget"
    )
    header = (
        f"{'config':<21}{'trials/run':>11}{'range':>10}{'spent % med':>12}{'max':>7}"
        f"{'engine % med':>13}{'max':>7}{'ends':>9}"
    )
    print(header)
    print("-" * len(header))
    for config, rs in by_config.items():
        if not rs or config not in rows:
            continue
        counts = [r.trial_count for r in rs]
        spent = [
            r.spent(setup.budget) / amount for r in rs if not math.isnan(r.spent(setup.budget))
        ]
        engine = [
            (r.engine_steps if setup.budget == "steps" else r.engine_trial_seconds) for r in rs
        ]
        engine_share = [float(e) / amount for e in engine if e is not None]
        by_budget = [
            r
            for r in rs
            if r.end_state == "COMPLETED" and (r.end_reason or "").startswith("compute budget")
        ]
        others = sorted({f"{r.end_state}: {r.end_reason}" for r in rs if r not in by_budget})
        rows[config].update(
            median_trials=statistics.median(counts),
            trials_range=[min(counts), max(counts)],
            median_spent_share=_median_or_nan(spent),
            max_spent_share=max(spent, default=math.nan),
            median_engine_share=_median_or_nan(engine_share),
            max_engine_share=max(engine_share, default=math.nan),
            ended_by_budget=len(by_budget),
            other_ends=others,
        )
        row = rows[config]

        def pct(x: float) -> str:
            return "n/a" if math.isnan(x) else f"{x:.0%}"

        print(
            f"{config:<21}{row['median_trials']:>11g}{f'{min(counts)}-{max(counts)}':>10}"
            f"{pct(row['median_spent_share']):>12}{pct(row['max_spent_share']):>7}"
            f"{pct(row['median_engine_share']):>13}{pct(row['max_engine_share']):>7}"
            f"{len(by_budget):>5}/{len(rs):<3}"
        )
        for other in others:
            print(f"  {config}: a study ended otherwise: {other}")


def judged_columns(summaries: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(summary key, task, measure) the verdict reads: without a budget each task's runs in
    both measures; under budgets, the step-budget runs in steps and the trial-seconds-budget
    runs in trial-seconds (a run is judged in what bounded it)."""
    present = [(key, s) for key, s in summaries.items() if s and s.get("task", key) in TASKS]
    budgeted = [(key, s) for key, s in present if s.get("budget")]
    if budgeted:
        return [(key, s["task"], BUDGET_MEASURE[s["budget"]]) for key, s in budgeted]
    return [(key, s.get("task", key), m) for key, s in present for m in MEASURES]


def decide(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Which candidate meets the goal on every task, in both measures; or which is closest."""
    columns = judged_columns(summaries)
    if not columns:
        print("\nverdict: none (no task has random-search runs, so no target)")
        return {}
    keys = list(dict.fromkeys(key for key, _, _ in columns))
    present = {c for key in keys for c in summaries[key]["configs"]}
    judged = [c for c in ("tpe+prune", *CANDIDATES) if c in present]
    others = sorted((c for c in present if c not in judged and c != "random"), key=_config_order)
    budgeted = any(summaries[key].get("budget") for key in keys)
    print(
        f"\n== verdict: what should enableTrialEarlyStopping: true mean? Goal: random search's "
        f"median best with at most 1/{GOAL_RATIO:g} of its compute (random / config >= "
        f"{GOAL_RATIO:g}x) on both tasks, in steps and in trial-seconds"
        + (
            " (under budgets: the step-budget runs in steps, the trial-seconds-budget runs in "
            "trial-seconds)"
            if budgeted
            else ""
        )
    )
    label = {"steps": "steps", "seconds": "trial-s"}

    def title(key: str, task: str, measure: str) -> str:
        return f"{task} {label[measure]}"

    width = {c: max(12, len(title(*c)) + 3) for c in columns}
    header = f"{'config':<17}" + "".join(f"{title(*c):>{width[c]}}" for c in columns)
    header += f"{'worst':>11}  goal"
    print(header)
    print("-" * len(header))
    table: dict[str, Any] = {}
    for config in [*judged, *others]:
        ratios: dict[str, dict[str, float | None]] = {}
        untimed: list[tuple[str, str]] = []  # (summary, measure) without wall times to compare
        cells = []
        for column in columns:
            key, _, m = column
            rows = summaries[key]["configs"]
            row = rows.get(config, {})
            name = "ratio_random_over_this" if m == "steps" else "ratio_seconds_random_over_this"
            value = row.get(name)
            ratios.setdefault(key, {})[m] = value
            timed = row.get("timed_seeds") and rows["random"]["timed_seeds"]
            if row and m == "seconds" and not timed:
                untimed.append((key, m))
            text = "not run" if not row else "untimed" if (key, m) in untimed else fmt_x(value)
            cells.append(f"{text:>{width[column]}}")
        compared = [(key, m) for key, _, m in columns if (key, m) not in untimed]
        worst_at = min(compared, key=lambda km: _or_zero(ratios[km[0]][km[1]]), default=None)
        worst = 0.0 if worst_at is None else _or_zero(ratios[worst_at[0]][worst_at[1]])
        met = not untimed and all(_goal(ratios[key][m]) for key, _, m in columns)
        if config in judged:
            note = "met" if met else "missed"
            if config == "tpe+prune":
                note += " (the current default)"
        else:
            note = "(reference, not judged)"
        table[config] = {
            "ratios": ratios,
            "worst": worst,
            "worst_at": list(worst_at) if worst_at else None,
            "untimed": [list(x) for x in untimed],
            "met": met,
            "judged": config in judged,
        }
        print(f"{config:<17}{''.join(cells)}{fmt_x(worst):>11}  {note}")
    covered = {(task, m) for _, task, m in columns}
    both = all((t, m) in covered for t in TASKS for m in MEASURES)
    tasks = list(dict.fromkeys(task for _, task, _ in columns))
    scope = "both tasks" if both else f"{' and '.join(tasks)} (not every task and measure run)"
    meeting = sorted((c for c in judged if table[c]["met"]), key=lambda c: -table[c]["worst"])

    def weakest(config: str) -> str:
        at = table[config]["worst_at"]
        if not at:
            return f"weakest: {fmt_x(table[config]['worst'])}"
        row = summaries[at[0]]["configs"].get(config, {})
        key = "ratio_bootstrap_90" if at[1] == "steps" else "ratio_seconds_bootstrap_90"
        low, high = row.get(key) or (math.nan, math.nan)
        interval = fmt_interval(
            math.nan if low is None else low, math.inf if high is None else high
        )
        return (
            f"weakest: {at[0]} {label[at[1]]} {fmt_x(table[config]['worst'])}, "
            f"90% seed bootstrap {interval}"
        )

    if meeting:
        best = meeting[0]
        line = f"{best} meets the goal on {scope} in both measures ({weakest(best)})"
        if meeting[1:]:
            line += f"; also meeting it: {', '.join(meeting[1:])}"
    elif judged:
        closest = max(judged, key=lambda c: _closeness(table[c], summaries, c))
        line = (
            f"no candidate meets the goal on {scope} in both measures; "
            f"closest: {closest} ({weakest(closest)})"
        )
        if table[closest]["untimed"]:
            line += "; some runs have no trial wall times, so the time measure is missing"
    else:
        line = "no candidates were run (--candidates)"
    if not both:
        line += "; the goal needs both tasks in both measures: run the rest too"
    print(f"verdict: {line}")
    return {
        "goal_ratio": GOAL_RATIO,
        "tasks": tasks,
        "columns": [list(c) for c in columns],
        "configs": table,
        "verdict": line,
    }


def _closeness(
    entry: dict[str, Any], summaries: dict[str, dict[str, Any]], config: str
) -> tuple[float, int, float, float]:
    """How near a candidate is to the goal: its worst ratio, then how many of its ratios meet
    the goal, then their geometric mean (an unreached one as 0.1x), then the share of its
    seeds that reached the target."""
    values = [_or_zero(v) for r in entry["ratios"].values() for v in r.values()]
    meeting = sum(v >= GOAL_RATIO for v in values)
    logs = [math.log(min(max(v, 0.1), 1e3)) for v in values]
    mean = math.exp(sum(logs) / len(logs)) if logs else 0.0
    reached = [
        row["reached"] / row["seeds"]
        for s in summaries.values()
        if s and (row := s["configs"].get(config)) is not None
    ]
    return entry["worst"], meeting, mean, sum(reached) / len(reached) if reached else 0.0


# -- the pareto task's report -------------------------------------------------------------------


def summarize_pareto(runs: list[RunResult], configs: list[str]) -> dict[str, Any]:
    """The figures of the pareto task: final hypervolume, compute, compute to the baseline's
    median final hypervolume (baseline / config, with the seed bootstrap), the checks, and the
    choice of `min_dominating`."""
    base_name = pareto_task.BASELINE
    by_config = {
        c: sorted((r for r in runs if r.config == c), key=lambda r: r.seed) for c in configs
    }
    base = by_config.get(base_name, [])
    if not base:
        print(f"\npareto: no {base_name} runs, no target")
        return {}
    target = statistics.median(r.hypervolume or 0.0 for r in base)
    setup = TaskSetup.from_json(base[0].setup)
    full = full_steps(setup, base)
    print(
        f"\n== {setup.label}: {setup.budget_text()}, {setup.train_steps} steps a trial (eval "
        f"every {setup.eval_every}, {setup.eval_seconds:g}s each), {setup.parallel} in "
        f"parallel, {len(base)} seeds; poll {setup.poll_interval}s"
    )
    print(
        f"target = median over seeds of {base_name}'s final hypervolume = {target:.4f} "
        f"(reference point rmse, latency_ms = {pareto_task.REFERENCE})"
    )
    out: dict[str, Any] = {
        "task": setup.task,
        "budget": setup.budget,
        "budget_amount": setup.budget_amount,
        "target": target,
        "reference": list(pareto_task.REFERENCE),
        "full_budget_steps": full,
        "configs": {},
    }
    rows: dict[str, dict[str, Any]] = out["configs"]
    header = (
        f"{'config':<21}{'seeds':>6}{'med HV':>8}{'HV range':>15}{'med steps':>11}"
        f"{'% budget':>9}{'med trial-s':>12}{'pruned/run':>11}{'reached':>9}"
        f"{'steps to target':>17}{'trial-s to target':>19}"
    )
    print(header)
    print("-" * len(header))
    for config, rs in by_config.items():
        if not rs:
            continue
        volumes = [r.hypervolume or 0.0 for r in rs]
        timed = [r for r in rs if r.timed]
        row: dict[str, Any] = {
            "definition": config_definition(setup, config),
            "description": describe_config(setup, config),
            "seeds": len(rs),
            "median_hypervolume": statistics.median(volumes),
            "hypervolumes": volumes,
            "median_total_steps": statistics.median(r.total_steps for r in rs),
            "median_trial_seconds": _median_or_nan([r.total("seconds") for r in timed]),
            "median_pruned": statistics.median(
                sum(t.state == "PRUNED" for t in r.trials) for r in rs
            ),
            "reached": sum(not math.isinf(r.compute_to_target(target)) for r in rs),
            "median_compute_to_target": median_to_target(rs, target, "steps"),
            "median_seconds_to_target": median_to_target(timed, target, "seconds"),
            "median_wall_seconds": statistics.median(r.wall_seconds for r in rs),
        }
        rows[config] = row
        spread = f"{min(volumes):.3f}-{max(volumes):.3f}"
        print(
            f"{config:<21}{len(rs):>6}{row['median_hypervolume']:>8.4f}{spread:>15}"
            f"{row['median_total_steps']:>11,.0f}{row['median_total_steps'] / full:>9.0%}"
            f"{fmt_seconds(row['median_trial_seconds']):>12}{row['median_pruned']:>11g}"
            f"{row['reached']:>5}/{len(rs):<3}{fmt_steps(row['median_compute_to_target']):>17}"
            f"{fmt_seconds(row['median_seconds_to_target']):>19}"
        )
    budget_report(setup, by_config, rows)

    print(
        f"\ncompute to target, {base_name} / config (90% seed bootstrap); at equal steps: the "
        f"config's final hypervolume minus {base_name}'s after as many steps (same seed), median "
        "and seeds where it is higher"
    )
    header = (
        f"{'config':<21}{'steps':>12}{'(90%)':>15}{'trial-s':>12}{'(90%)':>15}"
        f"{'at equal steps':>16}{'higher':>8}"
    )
    print(header)
    print("-" * len(header))
    for config, row in rows.items():
        if config == base_name:
            continue
        cells = []
        for measure, key in (("steps", "ratio_steps"), ("seconds", "ratio_seconds")):
            a = median_to_target(base, target, measure)
            c = median_to_target(by_config[config], target, measure)
            ratio = ctt_ratio(a, c)
            low, high = bootstrap_ratio(base, by_config[config], target, measure)
            row[key] = None if math.isnan(ratio) else ratio
            row[f"{key}_bootstrap_90"] = [low, high]
            cells.append(f"{fmt_ratio_short(a, c):>12}{fmt_interval(low, high):>15}")
        paired = {r.seed: r for r in base}
        gains = [
            (r.hypervolume or 0.0)
            - pareto_task.hypervolume_at(paired[r.seed].sequence, r.total_steps)
            for r in by_config[config]
            if r.seed in paired
        ]
        row["median_gain_at_equal_steps"] = pareto_task.median(gains)
        row["seeds_higher_at_equal_steps"] = sum(g > 0 for g in gains)
        cells.append(f"{row['median_gain_at_equal_steps']:>+16.4f}")
        cells.append(f"{row['seeds_higher_at_equal_steps']:>4}/{len(gains):<3}")
        print(f"{config:<21}{''.join(cells)}")

    print()
    for config, rs in by_config.items():
        if not rs or config not in rows:
            continue
        row = rows[config]
        latencies = [x for r in rs for x in r.prune_latencies]
        pruned, on_front = 0, 0
        for r in rs:
            n, good = pareto_task.pruned_on_front(r.trials, setup)
            pruned, on_front = pruned + n, on_front + good
        rule = (row["definition"] or {}).get("earlyStopping")
        audits = [pareto_task.audit(r.trials, rule, setup) for r in rs]
        missed = [
            dict(a, seed=r.seed) for r, x in zip(rs, audits, strict=True) for a in x["missed"]
        ]
        unfounded = [
            dict(a, seed=r.seed) for r, x in zip(rs, audits, strict=True) for a in x["unfounded"]
        ]
        unchecked = sum(x["unchecked"] for x in audits)
        mismatched = {r.seed: r.values_mismatch for r in rs if r.values_mismatch}
        row.update(
            pruned_total=pruned,
            pruned_on_final_front=on_front,
            audit_missed=missed,
            audit_unfounded=unfounded,
            values_mismatch=mismatched,
        )
        parts = []
        if latencies:
            p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
            row["prune_latency"] = {"decisions": len(latencies), "p50": p50, "p95": p95}
            parts.append(f"{len(latencies)} decisions, latency p50 {p50:.3f}s p95 {p95:.3f}s")
        if pruned:
            parts.append(
                f"{pruned} pruned, {on_front} of which would have been on their run's final "
                "front (noiseless)"
            )
        if rule is not None:
            parts.append(
                f"audit: {len(missed)} missed, {len(unfounded)} unfounded prunes"
                + (
                    f" ({unchecked} trials without write times not checked for missed)"
                    if unchecked
                    else ""
                )
                + (f" (missed: {missed[:3]})" if missed else "")
                + (f" (unfounded: {unfounded[:3]})" if unfounded else "")
            )
        parts.append(
            "objective vectors = Optuna's"
            if not mismatched
            else f"objective vectors differ from Optuna's: {mismatched}"
        )
        print(f"{config}: {'; '.join(parts)}")

    choice, reason = pareto_task.choose(rows)
    out["choice"] = {"config": choice, "reason": reason}
    print(f"\nchoice of DEFAULT_MULTI_OBJECTIVE_PRUNER.min_dominating: {reason}")
    return out


def print_runs(runs: list[RunResult], target: float) -> None:
    print(
        f"{'config':<21}{'seed':>5}{'best':>9}{'steps':>9}{'to target':>13}"
        f"{'trial-s':>9}{'to target':>13}{'study s':>9}{'states':>26}"
    )
    for r in sorted(runs, key=lambda r: (_config_order(r.config), r.seed)):
        states: dict[str, int] = {}
        for t in r.trials:
            states[t.state] = states.get(t.state, 0) + 1
        text = " ".join(f"{k[:4]}={v}" for k, v in sorted(states.items()))
        print(
            f"{r.config:<21}{r.seed:>5}{r.score:>9}{r.total_steps:>9,}"
            f"{fmt_steps(r.compute_to_target(target)):>13}"
            f"{fmt_seconds(r.total('seconds')):>9}"
            f"{fmt_seconds(r.compute_to_target(target, 'seconds')):>13}"
            f"{r.wall_seconds:>9.1f}{text:>26}"
        )


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--task",
        action="append",
        default=[],
        choices=ALL_TASKS,
        help=f"run only this task (repeatable; default: {' and '.join(TASKS)}, less --skip-*)",
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
    p.add_argument("--pareto-seeds", type=int, default=8)
    p.add_argument("--pareto-trials", type=int, default=22, help="maxTrials of a pareto run")
    p.add_argument(
        "--pareto-configs",
        default=",".join(pareto_task.CONFIGS),
        help="comma-separated subset of the pareto task's configurations: "
        + "; ".join(f"{c.name}: {c.help}" for c in pareto_task.CONFIGS.values()),
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
        "--candidates",
        nargs="?",
        const="all",
        default=None,
        metavar="NAMES",
        help="also run the candidates for enableTrialEarlyStopping: true (all of them, or a "
        "comma-separated subset) and judge them: "
        + "; ".join(f"{v.name}: {v.help}" for v in CANDIDATES.values()),
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
    p.add_argument(
        "--budget",
        action="append",
        default=[],
        choices=sorted(BUDGET_KEYS),
        help="run the studies under a compute budget instead of maxTrials (repeatable: each "
        "mode is a run set of its own): budget {trainSteps: B} or {trialSeconds: B}, B by "
        "default what random search's fixed-maxTrials run spends (maxTrials x train steps, or "
        "x a trial's nominal seconds); the verdict then judges the step-budget runs in steps "
        "and the trial-seconds-budget runs in trial-seconds",
    )
    p.add_argument(
        "--budget-amount",
        action="append",
        default=[],
        metavar="TASK:MODE=B",
        help="B for a task and budget mode, e.g. curves:trial-seconds=130 (repeatable)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report the --reuse runs that match the setups asked",
    )
    p.add_argument("--json", type=Path, help="write every run's raw results here")
    p.add_argument("--runs", action="store_true", help="also print one line per run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("tuner.domain.spec").setLevel(logging.ERROR)  # spec.yaml's ignored scaleTier
    base = [c for c in args.configs.split(",") if c]
    unknown = set(base) - set(BASE_CONFIGS)
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {BASE_CONFIGS}")
    candidates: list[str] = []
    if args.candidates is not None:
        asked = [c for c in args.candidates.split(",") if c]
        candidates = list(CANDIDATES) if asked == ["all"] else asked
        unknown = set(candidates) - set(CANDIDATES)
        if unknown:
            raise SystemExit(
                f"--candidates: unknown {sorted(unknown)}; choose from {list(CANDIDATES)} or all"
            )
    configs = config_names(base, args.variant, candidates)
    pareto_configs = [c for c in args.pareto_configs.split(",") if c]
    unknown = set(pareto_configs) - set(pareto_task.CONFIGS)
    if unknown:
        raise SystemExit(
            f"--pareto-configs: unknown {sorted(unknown)}; choose from {list(pareto_task.CONFIGS)}"
        )
    tasks = set(args.task) or {
        t
        for t, skip in (("curves", args.skip_curves), ("house_prices", args.skip_estimator))
        if not skip
    }
    setups: list[tuple[TaskSetup, int, int]] = []
    if "curves" in tasks:
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
    if pareto_task.TASK in tasks:
        setup = TaskSetup(
            task=pareto_task.TASK,
            max_trials=args.pareto_trials,
            parallel=2,
            train_steps=1000,
            eval_every=100,
            eval_seconds=args.eval_seconds,
            poll_interval=args.poll_interval,
        )
        setups.append((setup, args.seeds or args.pareto_seeds, args.jobs))
    if "house_prices" in tasks:
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
    if args.budget:
        amounts = parse_amounts(args.budget_amount)
        setups = [
            (
                replace(
                    setup,
                    budget=mode,
                    budget_amount=amounts.get((setup.task, mode), default_budget(setup, mode)),
                ),
                seeds,
                jobs,
            )
            for setup, seeds, jobs in setups
            for mode in dict.fromkeys(args.budget)
        ]

    reused: list[RunResult] = []
    for path in args.reuse:
        reused += [RunResult.from_json(r) for r in load_runs(path)]
    #: Each run as it finishes, one JSON line, so that a long session cut short keeps its runs
    #: (`--reuse` reads it).
    partial = args.json.with_suffix(".partial.jsonl") if args.json else None
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
        task_configs = pareto_configs if setup.task == pareto_task.TASK else configs
        have: dict[tuple[str, int], RunResult] = {}
        changed = 0
        for r in reused:
            if (
                r.task != setup.task
                or setup_key(r.setup) != asdict(setup)
                or r.seed not in seed_list
            ):
                continue
            if (
                r.definition is not None
                and known_config(r.config)
                and r.definition != config_definition(setup, r.config)
            ):
                changed += 1  # stored under a name whose definition has changed since
                continue
            have[(r.config, r.seed)] = r
        wanted = sorted({*task_configs, *(c for c, _ in have)}, key=_config_order)
        todo = [(setup, c, s) for s in seed_list for c in task_configs if (c, s) not in have]
        if args.report_only:
            todo = []
            wanted = [c for c in wanted if any(k == c for k, _ in have)]
        print(
            f"\n{setup.label}: {setup.budget_text()}; {setup.train_steps} train steps, an eval "
            f"every {setup.eval_every}; configurations (resources from these steps):"
        )
        for config in wanted:
            print(f"  {config:<21}{describe_config(setup, config)}")
        untimed = sum(not r.timed for r in have.values())
        print(
            f"{setup.label}: {len(todo)} runs to do, {len(have)} reused"
            + (f" ({untimed} without trial wall times)" if untimed else "")
            + (f", {changed} stored runs left out (their definition changed)" if changed else "")
            + f"; {jobs} at a time ...",
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
                    _keep(partial, result)
        else:
            for job in todo:
                result = _run_job(job)
                runs.append(result)
                _progress(result, len(runs) - len(have), len(todo), started)
                _keep(partial, result)
        if setup.task == pareto_task.TASK:
            summaries[setup.label] = summarize_pareto(runs, wanted)
        else:
            summaries[setup.label] = summarize(setup.label, runs, wanted)
        if args.runs and summaries[setup.label]:
            print_runs(runs, summaries[setup.label]["target"])
        all_runs += runs
    decision = decide(summaries) if tasks & set(TASKS) else {}
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
            "decision": decision,
            "runs": [asdict(r) for r in all_runs],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(document), indent=1) + "\n")
        print(f"\nraw results: {args.json}")
    return 0


def load_runs(path: Path) -> list[dict[str, Any]]:
    """The stored runs of a `--json` file, or of its `.partial.jsonl` (one run a line)."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(json.loads(text)["runs"])


def _keep(partial: Path | None, result: RunResult) -> None:
    if partial is None:
        return
    partial.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("a") as out:
        out.write(json.dumps(_finite(asdict(result))) + "\n")


def parse_amounts(items: Sequence[str]) -> dict[tuple[str, str], float]:
    """`--budget-amount TASK:MODE=B` options, by (task, mode)."""
    out: dict[tuple[str, str], float] = {}
    for item in items:
        where, _, value = item.partition("=")
        task, _, mode = where.partition(":")
        if task not in ALL_TASKS or mode not in BUDGET_KEYS or not value:
            raise SystemExit(f"--budget-amount {item!r}: want TASK:MODE=B, e.g. curves:steps=40000")
        out[(task, mode)] = float(value)
    return out


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
    """Baselines, then candidates (in their order), then variants and others by name."""
    if config in BASE_CONFIGS:
        return BASE_CONFIGS.index(config), ""
    if config in CANDIDATES:
        return len(BASE_CONFIGS) + list(CANDIDATES).index(config), ""
    if config in pareto_task.CONFIGS:
        return len(BASE_CONFIGS) + len(CANDIDATES) + list(pareto_task.CONFIGS).index(config), ""
    return len(BASE_CONFIGS) + len(CANDIDATES) + len(pareto_task.CONFIGS), config


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
    pruned = sum(t.state == "PRUNED" for t in result.trials)
    score = "hypervolume" if result.task == pareto_task.TASK else "best"
    budget = TaskSetup.from_json(result.setup).label
    print(
        f"  [{done}/{total} {time.monotonic() - started:6.0f}s] {budget} {result.config} "
        f"seed {result.seed}: {score} {result.score}, {result.total_steps:,} steps, "
        f"{fmt_seconds(result.total('seconds'))} of trials, {pruned} pruned, "
        f"{result.wall_seconds:.0f}s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
