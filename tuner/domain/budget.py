"""A study's compute budget: what it has spent, whether one more trial fits, when it is over.

Pure rules over `Spent` (read from the run table by `tuner.persistence.budget`): the scheduler
asks them before claiming, the reservation asks them again under the study's lock (so managers
racing for the last room cannot both take it), and the API shows `progress`.

A new trial is claimed while the budget has room for one more, estimated from the finished
trials: what they cost on average, counted for the new trial and for every running one (at least
what each has spent so far). Before any trial has finished there is no estimate, and a trial is
claimed while anything is left. A study therefore overshoots by at most the spread of its trials'
costs, and says by how much: "compute budget spent: 20,140 of 20,000 steps".
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.domain.spec import BudgetSpec

#: The measures, as the spec and the API name them, and how a number of each is written.
MEASURES = ("trainSteps", "trialSeconds", "wallSeconds")
UNITS = {"trainSteps": "steps", "trialSeconds": "trial-seconds", "wallSeconds": "seconds"}


@dataclass(frozen=True)
class RunCost:
    """What one run has spent: its last global step and its trainer's seconds."""

    steps: int
    seconds: float
    finished: bool


@dataclass(frozen=True)
class Spent:
    """What a study has spent so far, and the history its no-progress rules read."""

    runs: list[RunCost]
    #: Seconds since the study was created.
    wall_seconds: float
    #: Finished trials (COMPLETED, PRUNED, FAILED), in the order they ended.
    finished: int = 0
    #: Finished trials since the last one that improved the objective (or joined the front).
    since_progress: int = 0
    #: Seconds since that trial ended (since the study's creation when none did).
    seconds_since_progress: float = 0.0

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.runs)

    @property
    def trial_seconds(self) -> float:
        return sum(r.seconds for r in self.runs)

    def used(self, measure: str) -> float:
        if measure == "trainSteps":
            return float(self.steps)
        if measure == "trialSeconds":
            return self.trial_seconds
        return self.wall_seconds


def limit(budget: BudgetSpec, measure: str) -> float | None:
    value = {
        "trainSteps": budget.train_steps,
        "trialSeconds": budget.trial_seconds,
        "wallSeconds": budget.wall_seconds,
    }[measure]
    return None if value is None else float(value)


def fmt(measure: str, value: float) -> str:
    """`20,140 steps`, `3,610 trial-seconds`."""
    return f"{value:,.0f} {UNITS[measure]}"


def _estimate(spent: Spent, measure: str) -> float | None:
    """The mean cost of a finished trial in `measure` (None before any finished)."""
    finished = [r for r in spent.runs if r.finished]
    if not finished:
        return None
    if measure == "trainSteps":
        return sum(r.steps for r in finished) / len(finished)
    return sum(r.seconds for r in finished) / len(finished)


def no_room(budget: BudgetSpec, spent: Spent) -> str | None:
    """Why no further trial fits the budget (None: one more fits)."""
    for measure in MEASURES:
        cap = limit(budget, measure)
        if cap is None:
            continue
        used = spent.used(measure)
        if used >= cap:
            return f"compute budget spent: {used:,.0f} of {fmt(measure, cap)}"
        mean = _estimate(spent, "trialSeconds" if measure == "wallSeconds" else measure)
        if mean is None:
            continue
        if measure == "wallSeconds":
            projected = used + mean  # a trial started now ends about then
        else:
            # Each running trial is expected to cost at least the mean: what it still needs.
            ahead = 0.0
            for run in spent.runs:
                if not run.finished:
                    so_far = run.steps if measure == "trainSteps" else run.seconds
                    ahead += max(mean, so_far) - so_far
            projected = used + ahead + mean
        if projected > cap:
            return (
                f"compute budget spent: {used:,.0f} of {fmt(measure, cap)}, and a trial costs "
                f"about {fmt(measure, mean)}"
            )
    return None


def out_of_time(budget: BudgetSpec, spent: Spent) -> str | None:
    """Why running trials must stop now: the wall-time budget is over."""
    if budget.wall_seconds is not None and spent.wall_seconds >= budget.wall_seconds:
        return (
            f"wall-time budget spent: {spent.wall_seconds:,.0f} of "
            f"{budget.wall_seconds:,.0f} seconds"
        )
    return None


def no_progress(budget: BudgetSpec, spent: Spent, *, several: bool) -> str | None:
    """Why the study stops for lack of progress (Vertex's `maxNumTrialsNoProgress`,
    `maxDurationNoProgress`), once `minTrials` trials have finished."""
    if spent.finished < max(1, budget.min_trials):
        return None
    better = "a new Pareto-front member" if several else "a better objective"
    if budget.no_progress_trials is not None and spent.since_progress >= budget.no_progress_trials:
        return f"no progress: {better} in none of the last {spent.since_progress} trials"
    if (
        budget.no_progress_seconds is not None
        and spent.seconds_since_progress >= budget.no_progress_seconds
    ):
        return f"no progress: {better} for {spent.seconds_since_progress:,.0f} s"
    return None


def progress(budget: BudgetSpec, spent: Spent) -> list[tuple[str, float, float]]:
    """(measure, used, limit) of each limited measure, the binding one (closest to its
    limit) first."""
    rows = [
        (measure, spent.used(measure), cap)
        for measure in MEASURES
        if (cap := limit(budget, measure)) is not None
    ]
    return sorted(rows, key=lambda row: -row[1] / row[2])
