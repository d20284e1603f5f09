"""How a trial ends: the rules that decide its state and reason, apart from the loop.

COMPLETED needs evidence that the trainer trained and evaluated (`tuner.domain.spec.Check`); a
failure of the machine is told apart from the trainer's; a trial past its deadline or silent for
too long is stopped. Pure functions of what the supervisor saw: the supervisor does the writing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tuner.domain.spec import Check, ObjectiveMode, StudySpec
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.outcome import RunState
from tuner.outputs.hypertune import HYPERTUNE_EVAL_NAME
from tuner.outputs.reader import describe_missing_objective
from tuner.trial.execution import describe_exit

__all__ = [
    "FINAL_STEP_FLAGS",
    "Vector",
    "Verdict",
    "decide",
    "final_problems",
    "final_step_from_flags",
    "limit_reached",
    "ranking_vector",
]


@dataclass(frozen=True)
class Verdict:
    state: RunState
    reason: str | None
    objective: float | None
    #: Set when the machine, not the trainer, made the trial fail: its study backs off.
    infrastructure: str | None = None


def decide(
    trial: ActiveTrial,
    code: int,
    *,
    log_tail: list[str],
    store_problem: Callable[[], str | None],
    tags_seen: Callable[[str | None], list[str]],
) -> Verdict:
    """The trial's state, the reason, and its objective if COMPLETED.

    COMPLETED needs evidence that the trainer trained and evaluated: an exit code of 0 says
    little (many trainers exit 0 on any error), so each check of `tuner.domain.spec.Check` that
    the spec does not skip must hold too.
    """
    stop = trial.stop
    if stop is not None and stop.state is not RunState.FAILED:
        return Verdict(stop.state, stop.reason, None)
    log = "\n".join(log_tail)
    log_part = f"\nlast log lines:\n{log}" if log else "\n(the log is empty)"
    if stop is not None:
        return Verdict(RunState.FAILED, f"{stop.reason}{log_part}", None)
    if code != 0:
        problem = store_problem()
        if problem is not None:
            reason = f"trainer {describe_exit(code)} while {problem}: not counted, run again"
            return Verdict(RunState.STOPPED, f"{reason}{log_part}", None, infrastructure=problem)
        return Verdict(RunState.FAILED, f"trainer {describe_exit(code)}{log_part}", None)
    if trial.last is None:
        return _without_objective(trial, tags_seen, log_part)
    return _on_evidence(trial, log_part)


def _without_objective(
    trial: ActiveTrial, tags_seen: Callable[[str | None], list[str]], log_part: str
) -> Verdict:
    """A trainer that exited 0 without a (counted) objective value: FAILED, saying where the
    objective or other tags really are."""
    tag = trial.spec.metric_tag
    if trial.empty_steps:
        steps = ", ".join(str(step) for step in trial.empty_steps[:10])
        return Verdict(
            RunState.FAILED,
            f"[check {Check.EMPTY_EVAL}] every eval of {tag!r} (steps {steps}) had all its "
            "metrics exactly 0: the eval saw no data? (an eval input, such as a file glob, "
            f"that matches nothing); add '{Check.EMPTY_EVAL.value}' to skipChecks to count "
            f"such evals{log_part}",
            None,
        )
    seen = tags_seen(None)
    hypertune = set(tags_seen(HYPERTUNE_EVAL_NAME))
    read = [t for t in seen if t not in hypertune]
    where = describe_missing_objective(trial.outputs, tag, hypertune, read)
    lost = "".join(f"; records were lost in {reason}" for reason in trial.outputs.damaged.values())
    return Verdict(
        RunState.FAILED,
        f"trainer exited 0 without reporting the objective {tag!r} ({where}{lost}){log_part}",
        None,
    )


def _on_evidence(trial: ActiveTrial, log_part: str) -> Verdict:
    """The checks of a trainer that reported its objective: finite, trained, undamaged."""
    spec = trial.spec
    tag = spec.metric_tag
    objective = trial.best if spec.objective is ObjectiveMode.BEST else trial.last
    assert trial.last is not None
    damaged = trial.outputs.damaged.get(trial.objective_dir or "")
    if not trial.last.is_finite or objective is None:
        # A diverged trial fails even when an earlier eval was finite (its best
        # checkpoint and every metric are kept).
        bad = trial.last
        return Verdict(
            RunState.FAILED,
            f"objective {tag!r} is {bad.value} at step {bad.step}: not a finite number",
            None,
        )
    if not trial.trained and spec.checks(Check.UNTRAINED):
        return Verdict(
            RunState.FAILED,
            f"[check {Check.UNTRAINED}] every eval of {tag!r} is at global step 0: the "
            "trainer never trained (a training input that matches nothing?); add "
            f"'{Check.UNTRAINED.value}' to skipChecks to accept it{log_part}",
            None,
        )
    if damaged is not None and spec.checks(Check.DAMAGED_EVENTS):
        return Verdict(
            RunState.FAILED,
            f"[check {Check.DAMAGED_EVENTS}] the objective's events lost records, which may "
            f"have held its best value: {damaged}; add '{Check.DAMAGED_EVENTS.value}' to "
            "skipChecks to rank the trial on what was read",
            None,
        )
    return Verdict(RunState.COMPLETED, None, objective.value)


@dataclass(frozen=True)
class Vector:
    """A COMPLETED trial's objectives and constraint values, all from its ranking step."""

    values: tuple[float, ...]
    constraints: tuple[float, ...]


def ranking_vector(spec: StudySpec, step: int, metrics: Mapping[str, float | None]) -> Vector | str:
    """Every objective and safety metric at the ranking step, or why the trial cannot rank:
    one of them is missing or not a finite number there."""
    problems = []
    for tag in spec.ranked_metrics:
        value = metrics.get(tag)
        if tag not in metrics:
            problems.append(f"{tag!r} is missing")
        elif value is None or not math.isfinite(value):
            problems.append(f"{tag!r} is {value if value is not None else 'NaN'}")
    if problems:
        seen = ", ".join(sorted(metrics)) or "none"
        return (
            f"the ranking eval (global step {step}) cannot rank the trial: "
            f"{'; '.join(problems)} (metrics at that step: {seen}); every metric of "
            "studySpec.metrics / hyperparameters.metrics must be written at each eval"
        )
    values = tuple(float(metrics[o.metric] or 0.0) for o in spec.objectives)
    constraints = tuple(c.violation(float(metrics[c.metric_id] or 0.0)) for c in spec.constraints)
    return Vector(values, constraints)


def final_problems(
    trial: ActiveTrial, unmatched_exports: list[tuple[str, str, int | None]]
) -> list[str]:
    """What the trial's end shows is missing: the best step's checkpoint, export matches."""
    problems: list[str] = []
    best = trial.best
    if best is not None and (trial.kept is None or trial.kept.step != best.step):
        why = trial.checkpoint_miss or "no checkpoint was found for it"
        problems.append(f"best step {best.step}: no checkpoint kept ({why})")
    for exporter, version, step in unmatched_exports:
        if step is None:
            problems.append(
                f"export {exporter}/{version}: not tied to an eval step (it was written "
                "before any eval, and its variables hold no global step)"
            )
        else:
            problems.append(
                f"export {exporter}/{version}: made from global step {step}, which was "
                "never evaluated"
            )
    return problems


def limit_reached(trial: ActiveTrial, *, default_max_seconds: float | None) -> str | None:
    """Why a running trial must stop now: past its deadline, or silent for too long."""
    spec = trial.spec
    now = time.monotonic()
    limit = spec.max_trial_duration_seconds or default_max_seconds
    if limit is not None and now - trial.started > limit:
        field_name = (
            "maxTrialDurationSeconds"
            if spec.max_trial_duration_seconds
            else ("TUNER_TRIAL_MAX_SECONDS")
        )
        return f"stopped: it ran longer than {field_name}={limit:g} s"
    elif spec.stall_timeout_seconds and now - trial.progressed > spec.stall_timeout_seconds:
        return (
            f"stopped: no new metric for {now - trial.progressed:.0f} s "
            f"(stallTimeoutSeconds={spec.stall_timeout_seconds:g})"
        )
    return None


#: Flags that name how many steps a trainer trains (`--train-steps=200`, `--max_steps 200`):
#: its last eval is at that step. Epoch counts are left out on purpose: whether a trainer's
#: steps are epochs or global steps cannot be told from the flag.
FINAL_STEP_FLAGS = (
    "train-steps",
    "train_steps",
    "max-steps",
    "max_steps",
    "num-train-steps",
    "num_train_steps",
    "training-steps",
    "training_steps",
)


def final_step_from_flags(args: list[str], params: dict[str, object]) -> int | None:
    """The step a trial trains to, from its fixed args or its params, if one of them says."""
    for name in FINAL_STEP_FLAGS:
        if name in params:
            return _whole(params[name])
    for index, arg in enumerate(args):
        flag, has_value, value = arg.partition("=")
        if flag.lstrip("-") not in FINAL_STEP_FLAGS or not flag.startswith("--"):
            continue
        if not has_value and index + 1 < len(args):
            value = args[index + 1]
        return _whole(value)
    return None


def _whole(value: object) -> int | None:
    try:
        number = float(str(value))
    except ValueError:
        return None
    return int(number) if number.is_integer() and number > 0 else None
