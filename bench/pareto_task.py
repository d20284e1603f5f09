"""The `pareto` task of `bench/search.py`: early stopping for a study with two objectives.

The study is the `curves` task's (the same four params, budget and steps) on
`bench/pareto_trainer.py`, whose trials write `rmse` (the curves trainer's crossing curves) and
`latency_ms` (growing with width, falling over training as early exits learn), with
`hyperparameters.metrics: [{metricId: rmse, goal: MINIMIZE}, {metricId: latency_ms, goal:
MINIMIZE}]` and the tuner's TPE. Configurations (`CONFIGS`):

- `none`: no early stopping (the baseline);
- `dominated-K` for K = 1, 2, 3: `earlyStopping: {type: dominated, minDominating: K,
  startupTrials: 3, warmupSteps: auto}` (auto: a third of the longest completed trial's steps);
- `dominated-1-warmup50`: K = 1 with no decision before half of the train steps.

The measure is the hypervolume of the front of the COMPLETED trials (a pruned trial has no
objective vector), each trial's vector as the tuner ranks it (both objectives at its ranking
step, read from the tuner's tables and checked against Optuna's `trial.values`), bounded by the
fixed reference point `REFERENCE`: rmse 1.0 (an untrained net starts at 1 + its floor, >= 1.2;
below 1.0 it has learned something) and latency 4.0 ms (a converged width-245 net; the widest
trial on the noiseless front of this task has width ~110: wider nets gain little rmse, their
floor bottoming out at width 190-270 and their curves slower, for much more latency). Trials
outside that box add nothing.
The target is the median over seeds of the baseline's final hypervolume; compute-to-target,
its lower median and the bootstrap interval of baseline / config are as for the other tasks
(`bench/search.py`), with "best so far reaches the target" read as "the hypervolume of the
completed trials so far reaches it".

Every run of this task goes around an engine bug (`pruned_trials_workaround`): the engine
stores each eval's first objective as an Optuna intermediate value even with several objectives
(which Optuna's own `Trial.report` refuses), and the TPE sampler, ranking a pruned trial by its
last intermediate value, asks for `study.direction`, which raises in a study with several: the
first proposal after a pruned trial fails and the study is stopped.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import optuna
import pareto_trainer  # bench/ is on sys.path: bench/search.py runs as a script
from optuna.samplers._tpe import sampler as tpe_sampler

from tuner.domain.pareto import dominated_by_count, hypervolume, to_minimize
from tuner.domain.spec import Goal

TASK = "pareto"
OBJECTIVES: tuple[tuple[str, Goal], ...] = (("rmse", Goal.MINIMIZE), ("latency_ms", Goal.MINIMIZE))
GOALS = [goal for _, goal in OBJECTIVES]
#: The hypervolume's reference point (rmse, latency_ms): see the module docstring.
REFERENCE = (1.0, 4.0)
BASELINE = "none"
#: How late an eval may be ingested after a completed trial's end for the audit to count that
#: trial as known to the rule at that eval (journal times; the rule reads the database).
AUDIT_MARGIN = 0.5


class Setup(Protocol):
    train_steps: int
    eval_every: int


class Trial(Protocol):
    number: int
    state: str
    steps: int
    seconds: float | None
    values: list[float] | None


@dataclass(frozen=True)
class Config:
    name: str
    help: str
    #: The spec's `earlyStopping` for a task setup (None: no early stopping).
    early_stopping: Callable[[Setup], dict[str, Any]] | None


def _dominated(
    k: int, warmup: Callable[[Setup], int | str] = lambda s: "auto"
) -> Callable[[Setup], dict[str, Any]]:
    def early_stopping(setup: Setup) -> dict[str, Any]:
        return {
            "type": "dominated",
            "minDominating": k,
            "startupTrials": 3,
            "warmupSteps": warmup(setup),
        }

    return early_stopping


def _half(setup: Setup) -> int:
    return round(setup.train_steps / 2 / setup.eval_every) * setup.eval_every


CONFIGS: dict[str, Config] = {
    c.name: c
    for c in (
        Config(BASELINE, "TPE, no early stopping (the baseline)", None),
        *(
            Config(
                f"dominated-{k}",
                f"TPE, stop a trial dominated at a step by {k} completed trial(s), after 3 "
                "completed trials, warm-up auto (a third of the longest completed trial)",
                _dominated(k),
            )
            for k in (1, 2, 3)
        ),
        Config(
            "dominated-1-warmup50",
            "TPE, dominated by 1 completed trial, after 3 completed, no decision before half "
            "of the train steps",
            _dominated(1, _half),
        ),
    )
}


def study_document(curves: dict[str, Any], setup: Setup, config: str, seed: int) -> dict[str, Any]:
    """The curves task's document (`curves`) made into the two-objective study of `config`."""
    document = dict(curves, trainer=TASK, seed=seed)
    document["name"] = f"{TASK}-{config}-{seed}"
    hp = dict(document["hyperparameters"])
    hp.pop("goal", None)
    hp.pop("hyperparameterMetricTag", None)
    hp["metrics"] = [{"metricId": tag, "goal": goal.value} for tag, goal in OBJECTIVES]
    rule = CONFIGS[config].early_stopping
    hp.update(algorithm="ALGORITHM_UNSPECIFIED", enableTrialEarlyStopping=rule is not None)
    document["hyperparameters"] = hp
    document.pop("earlyStopping", None)
    if rule is not None:
        document["earlyStopping"] = rule(setup)
    return document


def describe(setup: Setup, config: str) -> str:
    rule = CONFIGS[config].early_stopping
    if rule is None:
        return "TPE, two objectives (rmse, latency_ms), no early stopping"
    return f"TPE, two objectives, earlyStopping {rule(setup)}"


@contextmanager
def pruned_trials_workaround() -> Iterator[None]:
    """While open, TPE ranks a pruned trial of a study with several objectives as Optuna ranks
    one without intermediate values (as if the engine had not stored them, which Optuna's
    `Trial.report` would not have done): no `study.direction`, no RuntimeError."""
    original = tpe_sampler._get_pruned_trial_score

    def score(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> tuple[float, float]:
        if len(study.directions) > 1:
            return 1, 0.0
        return original(trial, study)

    tpe_sampler._get_pruned_trial_score = score
    try:
        yield
    finally:
        tpe_sampler._get_pruned_trial_score = original


# -- hypervolume and compute to target -----------------------------------------------------------


def front_hypervolume(vectors: Sequence[Sequence[float]]) -> float:
    """The hypervolume of the vectors' front within `REFERENCE` (0 with none)."""
    if not vectors:
        return 0.0
    points = to_minimize(vectors, GOALS)
    reference = to_minimize([REFERENCE], GOALS)[0]
    return hypervolume(points, reference)


def progress(trials: Sequence[Trial]) -> list[tuple[int, float]]:
    """(steps spent so far, hypervolume of the completed trials so far) after each trial, in
    the order given (finishing order)."""
    spent, completed, out = 0, [], []
    for t in trials:
        spent += t.steps
        if t.state == "COMPLETED" and t.values is not None:
            completed.append(t.values)
        out.append((spent, front_hypervolume(completed)))
    return out


def hypervolume_at(sequence: Sequence[tuple[int, float | None]], steps: float) -> float:
    """The hypervolume a run (its `progress`) had once it had spent at most `steps`."""
    reached = [hv for spent, hv in sequence if spent <= steps and hv is not None]
    return reached[-1] if reached else 0.0


def compute_to_target(trials: Sequence[Trial], target: float, measure: str) -> float:
    """Compute (`steps`, or trial-`seconds`) spent, in finishing order, when the completed
    trials' hypervolume first reaches `target`: inf if it never does."""
    spent, completed = 0.0, []
    for t in trials:
        spent += t.steps if measure == "steps" else (t.seconds or 0.0)
        if t.state == "COMPLETED" and t.values is not None:
            completed.append(t.values)
            if front_hypervolume(completed) >= target:
                return spent
    return math.inf


# -- diagnostics ---------------------------------------------------------------------------------


def expected_vector(params: dict[str, Any], setup: Setup) -> tuple[float, float]:
    """A trial's noiseless vector had it run all its steps (under `objective: best` the ranking
    step is its lowest rmse; noiseless, its last step)."""
    args = (
        float(params["learning_rate"]),
        int(params["width"]),
        float(params["dropout"]),
        str(params["optimizer"]),
    )
    steps = range(setup.eval_every, setup.train_steps + 1, setup.eval_every)
    rmse, step = min((pareto_trainer.curves.expected_rmse(s, *args), s) for s in steps)
    return rmse, pareto_trainer.expected_latency(step, *args)


def pruned_on_front(trials: Sequence[Any], setup: Setup) -> tuple[int, int]:
    """Pruned trials, and how many of them would have been on the run's final front: their
    noiseless full-run vector dominated by none of its completed trials' vectors."""
    completed = [t.values for t in trials if t.state == "COMPLETED" and t.values is not None]
    matrix = to_minimize(completed, GOALS) if completed else np.empty((0, len(GOALS)))
    pruned = [t for t in trials if t.state == "PRUNED"]
    good = 0
    for t in pruned:
        point = to_minimize([expected_vector(t.params, setup)], GOALS)[0]
        good += dominated_by_count(point, matrix) == 0
    return len(pruned), good


def audit(trials: Sequence[Any], rule: dict[str, Any] | None, setup: Setup) -> dict[str, Any]:
    """Re-check the dominance rule from the recorded evals (step, vector, when the manager
    ingested it, when the trainer wrote it: seconds since the run started) and trial ends.

    `missed`: an eval of a trial below the last step, after the startup trials and the warm-up,
    dominated by at least `minDominating` trials that had completed `AUDIT_MARGIN` seconds
    before it was ingested, after which the trial still wrote an eval more than `AUDIT_MARGIN`
    seconds after that ingest: the rule should have stopped it there and did not. (A trial whose
    later evals were all written by then had exited, or nearly: the engine does not prune a
    trial that finished on its own.) `unfounded`: a pruned trial none of whose evals was
    dominated by that many trials completed by then (with the margin the other way). Both
    should be empty. Runs recorded without the write times are not checked for `missed`.
    """
    if rule is None:
        return {"missed": [], "unfounded": [], "unchecked": 0}
    k, startup = int(rule["minDominating"]), int(rule["startupTrials"])
    ends = {t.number: t.finished_at for t in trials if t.state == "COMPLETED" and t.curve}
    curves = {t.number: t.curve for t in trials if t.number in ends}

    def dominating(step: int, vector: Sequence[float], before: float) -> int | None:
        """How many trials completed before `before` dominate `vector` at `step`; None when the
        rule may not decide yet (startup, warm-up)."""
        done = [n for n, end in ends.items() if end < before]
        if len(done) < startup:
            return None
        longest = max(curves[n][-1][0] for n in done)
        warm = rule["warmupSteps"]
        if step < (longest / 3 if warm == "auto" else int(warm)):
            return None
        others = []
        for n in done:
            at = [e[1] for e in curves[n] if e[0] <= step]
            if at:
                others.append(at[-1])
        if not others:
            return 0
        point = to_minimize([vector], GOALS)[0]
        return dominated_by_count(point, to_minimize(others, GOALS))

    missed, unfounded, unchecked = [], [], 0
    for t in trials:
        if not t.curve or t.state not in ("COMPLETED", "PRUNED"):
            continue
        written = [e[3] for e in t.curve if len(e) > 3]
        unchecked += len(written) < len(t.curve)
        for step, vector, seen, *_ in t.curve:
            if step >= setup.train_steps or len(written) < len(t.curve):
                continue
            count = dominating(step, vector, seen - AUDIT_MARGIN)
            alive = max(written) > seen + AUDIT_MARGIN
            if count is not None and count >= k and alive:
                missed.append(
                    {"number": t.number, "state": t.state, "step": step, "dominating": count}
                )
                break
        if t.state == "PRUNED" and not any(
            (count := dominating(e[0], e[1], e[2] + AUDIT_MARGIN)) is not None
            and count >= k
            and e[0] < setup.train_steps
            for e in t.curve
        ):
            unfounded.append({"number": t.number, "reason": t.reason})
    return {"missed": missed, "unfounded": unfounded, "unchecked": unchecked}


# -- the choice ----------------------------------------------------------------------------------


def choose(rows: dict[str, dict[str, Any]]) -> tuple[str | None, str]:
    """The `dominated-K` (K = 1, 2, 3, warm-up auto: the default's shape) that reaches the
    target with the least compute in both measures without a lower median final hypervolume
    than the baseline's; with none, the closest. Returns (config or None, reason)."""
    base = rows.get(BASELINE)
    if not base:
        return None, "no baseline runs"
    eligible = [c for c in ("dominated-1", "dominated-2", "dominated-3") if c in rows]
    if not eligible:
        return None, "no dominated-K runs"

    def worst(c: str) -> float:
        ratios = [rows[c].get("ratio_steps"), rows[c].get("ratio_seconds")]
        return min(0.0 if r is None or math.isnan(r) else r for r in ratios)

    def keeps(c: str) -> bool:
        return bool(rows[c]["median_hypervolume"] >= base["median_hypervolume"])

    good = [c for c in eligible if keeps(c) and worst(c) > 1.0]
    if good:
        best = max(good, key=worst)
        return best, (
            f"{best} reaches the baseline's median hypervolume with the least compute "
            f"(baseline / {best}: {rows[best]['ratio_steps']:.2f}x steps, "
            f"{rows[best]['ratio_seconds']:.2f}x trial-seconds) and keeps its median final "
            f"hypervolume ({rows[best]['median_hypervolume']:.4f} vs "
            f"{base['median_hypervolume']:.4f})"
        )
    closest = max(eligible, key=lambda c: (worst(c), rows[c]["median_hypervolume"]))
    return None, (
        f"no dominated-K saves compute without losing hypervolume; closest: {closest} "
        f"(worst ratio {worst(closest):.2f}x, median final hypervolume "
        f"{rows[closest]['median_hypervolume']:.4f} vs {base['median_hypervolume']:.4f})"
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan
