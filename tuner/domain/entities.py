"""Frozen domain objects: what the persistence layer hands out (ORM rows never leave it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tuner.domain.spec import StudySpec


@dataclass(frozen=True)
class Study:
    id: int
    name: str
    spec: StudySpec
    state: str
    state_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Placement:
    """Where a trial ran: `local` (a subprocess of its manager) or `ray` (a Ray task)."""

    executor: str = "local"
    #: The Ray node's id (None for a local trial).
    node: str | None = None
    #: The Ray task's id (None for a local trial).
    task: str | None = None


@dataclass(frozen=True)
class TrialRun:
    id: int
    study_id: int
    number: int | None
    optuna_trial_id: int | None
    state: str
    params: dict[str, Any]
    worker: str
    output_dir: str | None
    log_path: str | None
    pid: int | None
    exit_code: int | None
    failure_reason: str | None
    problems: list[str]
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None
    best_step_id: int | None
    objective_step_id: int | None
    lease_epoch: int = 0
    executor: Placement = field(default_factory=Placement)


@dataclass(frozen=True)
class Lease:
    """A manager's claim on a running trial run: valid while the row still carries it."""

    run_id: int
    worker: str
    epoch: int


@dataclass(frozen=True)
class EvalStep:
    id: int
    eval_name: str
    step: int
    wall_time: float
    checkpoint_path: str | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredArchive:
    """A kept artifact's `.tar.gz` in the object store, as uploaded and verified."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Checkpoint:
    step: int
    source_path: str
    kept_path: str
    archive: StoredArchive | None = None


@dataclass(frozen=True)
class Export:
    exporter: str
    version: str
    #: Relative to the artifact root: the kept copy when there is one, else the original.
    path: str
    step: int | None
    #: How the export was tied to `step`: "global_step", "write_time", or None (not tied).
    matched_by: str | None = None
    archive: StoredArchive | None = None


@dataclass(frozen=True)
class Observation:
    """A new value of a trial's objective, read from one eval step."""

    eval_step_id: int
    eval_name: str
    step: int
    value: float
    checkpoint_path: str | None
    #: When the trainer wrote the value (the event's wall time).
    wall_time: float
    #: Every metric of the eval step is exactly 0: an eval that saw no batch.
    all_zero: bool = False

    @property
    def is_finite(self) -> bool:
        return math.isfinite(self.value)


@dataclass(frozen=True)
class LeaderboardRow:
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None
    best_step: int | None
    last_step: int | None
    started_at: datetime
    ended_at: datetime | None
    failure_reason: str | None
    #: The objective tag's value at the latest eval step (the best may be earlier).
    last_objective: float | None = None
    #: Every objective's value at the ranking step (several objectives), by metric.
    objectives: dict[str, float | None] = field(default_factory=dict)
    #: Whether its safety metrics meet their thresholds there (None: no constraints, no value).
    feasible: bool | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class TrialDetail:
    run: TrialRun
    objective: float | None
    steps: list[EvalStep]
    checkpoints: list[Checkpoint]
    exports: list[Export]
    best_step: int | None


@dataclass(frozen=True)
class BestModel:
    """The best trial's best eval step and the artifacts that belong to it."""

    study: Study
    run: TrialRun
    objective: float
    step: int
    checkpoint: Checkpoint | None
    export: Export | None
    other_exports: list[Export]


@dataclass(frozen=True)
class RankedTrial:
    """A COMPLETED trial's objectives and safety metrics, all from its ranking eval step."""

    run_id: int
    number: int
    params: dict[str, Any]
    step: int
    objectives: dict[str, float]
    constraints: dict[str, float]
    feasible: bool


@dataclass(frozen=True)
class ParetoMember:
    """A trial on the front, with the artifacts kept for its ranking step."""

    trial: RankedTrial
    checkpoint: Checkpoint | None
    exports: list[Export]


@dataclass(frozen=True)
class ParetoFront:
    """The non-dominated feasible COMPLETED trials of a study."""

    study: Study
    members: list[ParetoMember]
    #: COMPLETED trials that have every objective (the front is taken from them).
    ranked: int
    #: Those that miss a safety threshold: never on the front.
    infeasible: int


@dataclass(frozen=True)
class MetricPoint:
    step: int
    #: NaN where the trainer wrote a non-finite value (stored as null).
    value: float
    #: When the trainer wrote the value (the event's wall time).
    wall_time: float


@dataclass(frozen=True)
class MetricHistory:
    """One metric of one trial, step by step, as a plotting client draws it."""

    number: int
    state: str
    #: The eval dir the points come from.
    eval_name: str
    points: list[MetricPoint]
    #: How many points the trial has, before thinning to the response's cap.
    point_count: int


@dataclass(frozen=True)
class StudyEvent:
    """One entry of a study's journal: `seq` counts per study, from 1."""

    seq: int
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class JournalEntry:
    """A journal event as this process committed it, for in-process listeners
    (`Database.listen`): the same kinds and data as the API's event stream."""

    study_id: int
    seq: int
    kind: str
    number: int | None
    data: dict[str, Any]
