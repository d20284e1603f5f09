"""What a manager knows of one trial it runs: its process, its lease, what it has seen."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuner.artifacts.store import TrialPaths
from tuner.domain.entities import Lease, Observation, Study
from tuner.domain.spec import StudySpec
from tuner.engine.outcome import Decision, RunState, Step, Stop
from tuner.outputs.events import CheckpointPathValue, ScalarValue
from tuner.outputs.reader import TrialOutputs
from tuner.trial.execution import TrialCommand, TrialProcess
from tuner.trial.warm_starts import ParentKey

__all__ = ["ActiveTrial", "KeptCheckpoint", "TrialLog"]

logger = logging.getLogger("tuner.engine.trial")


class TrialLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines start with the trial they are about: `study S trial N: ...`."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"study {extra['study']} trial {extra['number']}: {msg}", kwargs


@dataclass
class KeptCheckpoint:
    """The checkpoint kept for a trial's best step, and whether its eval named it."""

    step: int
    source: Path
    kept: Path
    confirmed: bool


@dataclass
class ActiveTrial:
    """A trial this manager runs: its process, what it writes, and what it has seen."""

    run_id: int
    study: Study
    number: int
    optuna_trial_id: int
    paths: TrialPaths
    process: TrialProcess
    outputs: TrialOutputs
    lease: Lease
    started: float = field(default_factory=time.monotonic)
    #: When it started, by the clock (the run row's `started_at`, give or take a few ms).
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The values the trainer received, by parameter.
    params: dict[str, Any] = field(default_factory=dict)
    #: The Optuna trial from the ask (telling it by object saves a lookup by number).
    optuna_trial: Any = None
    #: When the trial last wrote a value (for `stallTimeoutSeconds`).
    progressed: float = field(default_factory=time.monotonic)
    objective_dir: str | None = None
    best: Observation | None = None
    last: Observation | None = None
    reported_steps: set[int] = field(default_factory=set)
    #: Steps of objective evals whose every metric was exactly 0 (check `empty-eval`).
    empty_steps: list[int] = field(default_factory=list)
    #: Whether an objective value came from an eval after training (global step > 0).
    trained: bool = False
    #: `checkpoint_path` summaries read, by (eval name, step): they may come after the metrics.
    reported_checkpoints: dict[tuple[str, int], str] = field(default_factory=dict)
    kept: KeptCheckpoint | None = None
    #: Why the best step's checkpoint could not be kept yet (retried at every poll).
    checkpoint_miss: str | None = None
    #: Why it was asked to stop (None: it runs until its trainer exits).
    stop: Stop | None = None
    #: Values read but not yet stored (the database was unavailable): stored on the next tick.
    pending_values: list[ScalarValue | CheckpointPathValue] = field(default_factory=list)
    pending_offsets: dict[str, int] = field(default_factory=dict)
    has_exports: bool = False
    #: Its process's exit code, once it has exited (its artifacts may still be uploading).
    exit_code: int | None = None
    #: When its manager saw the process exit (the end of its trainer-seconds).
    exited_at: datetime | None = None
    #: The outcome once decided at its end.
    decision: Decision | None = None
    #: The finishing steps already done (a finish retried after a database error does each
    #: once).
    done: set[Step] = field(default_factory=set)
    #: Its artifacts could not be stored: its local copy stays on this machine.
    local_copy_kept: bool = False
    #: Given up because this machine's disk is full: its local copy goes.
    disk_full: bool = False
    #: Writes about it made since the last commit, done with the next one (`flush`).
    unflushed: list[Callable[[Any], Any]] = field(default_factory=list)
    #: Whether any value was read from its files (a warm start that failed before: retried).
    values_read: bool = False
    #: The preloading parent it forks from (None: its trainer starts cold).
    warm_key: ParentKey | None = None
    #: What it was started with (a warm start that failed is run again cold with it).
    command: TrialCommand | None = None
    #: How its warm start ended, when it was run again cold after it.
    warm_failure: str | None = None

    def __post_init__(self) -> None:
        self.log = TrialLog(logger, {"study": self.study.name, "number": self.number})

    @property
    def spec(self) -> StudySpec:
        return self.study.spec

    def stop_with(
        self, state: RunState, reason: str, *, level: int = logging.WARNING, replacing: bool = False
    ) -> bool:
        """Ask the trial's process to stop, and record why (the first reason stands, unless
        `replacing`). Returns whether its process was still running."""
        running = self.process.request_stop()
        if not running and state is RunState.PRUNED:
            return False  # it exited on its own: it finished, whatever the pruner says
        if self.stop is None or replacing:
            self.stop = Stop(state, reason)
            self.log.log(level, "%s", reason)
        return running
