"""Frozen domain objects: what the persistence layer hands out (ORM rows never leave it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    #: A stop asked for by hand and not yet carried out (or carried out: the run ended PRUNED).
    stop_by_hand: StopByHand | None = None


@dataclass(frozen=True)
class Note:
    """A note people wrote on a study or a trial (markdown); `text` None: there is none."""

    text: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class StopByHand:
    """A stop of one running trial asked for by hand: when, and by whom (a token's name, or
    `user@host` from the local command line)."""

    requested_at: datetime
    requested_by: str

    def reason(self, step: int | None, *, started: bool = True) -> str:
        """The trial's end reason: `stopped by hand at step 40 (request from alice at
        2026-12-07 10:22:01 UTC)`."""
        if not started:
            where = "before it started"
        elif step is None:
            where = "before its first eval"
        else:
            where = f"at step {step}"
        when = f"{self.requested_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return f"stopped by hand {where} (request from {self.requested_by} at {when})"


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
class DeletedPath:
    """One thing retention deletes of a trial: a local dir or file, or a prefix or object of
    the object store; `path` is relative to the artifact root (a key in the store)."""

    path: str
    #: Its size when the deletion was planned (a file's data counted once however many names
    #: it has: a kept copy is a hard link to the trainer's file).
    bytes: int
    #: `local` (this artifact root's disk) or `store` (the object store).
    location: str
    #: `dir`, `file` (local), `prefix`, `object` (store).
    kind: str


@dataclass(frozen=True)
class Deletion:
    """What retention deleted (DONE) or is deleting (DELETING: started, not finished: in
    progress, or cut short and finished by the next pass) of one trial."""

    run_id: int
    number: int
    state: str
    #: The policy applied, as the spec writes it: `keepBestTrials=2`.
    policy: str
    #: Why the trial fell out: its rank, or its state.
    reason: str
    #: `policy` (the study's retention, applied in the background) or `gc` (`tuner gc`, the API).
    trigger: str
    paths: list[DeletedPath]
    bytes: int
    started_at: datetime
    deleted_at: datetime | None
    #: The process that deleted it.
    worker: str

    @property
    def done(self) -> bool:
        return self.state == "DONE"

    def describe(self) -> str:
        """For messages: `deleted by the study's retention policy on 2026-12-07 10:22:01 UTC
        (keepBestTrials=2: ...)`."""
        by = "the study's retention policy" if self.trigger == "policy" else "`tuner gc`"
        when = self.deleted_at or self.started_at
        verb = "deleted" if self.done else "being deleted (started)"
        return f"{verb} by {by} on {when:%Y-%m-%d %H:%M:%S %Z} ({self.policy}: {self.reason})"


@dataclass(frozen=True)
class FinishedTrial:
    """A finished trial as retention ranks it."""

    run_id: int
    number: int
    state: str
    #: Its leaderboard rank key (`tuner_trial_runs.objective_rank`; None: it does not rank).
    rank: float | None
    #: Whether checkpoint or export rows still point at files of it.
    has_artifacts: bool


@dataclass(frozen=True)
class TrialDetail:
    run: TrialRun
    objective: float | None
    steps: list[EvalStep]
    checkpoints: list[Checkpoint]
    exports: list[Export]
    best_step: int | None
    #: What retention deleted of it (None: nothing).
    deleted: Deletion | None = None
    #: The note people wrote on it.
    note: Note = field(default_factory=lambda: Note(None, None))


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
    #: Trials the leaderboard's state and filter kept (None: the front of every trial).
    matched: int | None = None


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


@dataclass(frozen=True)
class GcTrial:
    """One trial in a retention pass: what goes (or went) of it, and what became of that."""

    number: int
    state: str
    #: Why it falls out of the policy: its rank, or its state.
    reason: str
    paths: list[DeletedPath]
    bytes: int
    #: `deleted`; `resumed` (a deletion cut short, finished now); `skipped` (see `note`);
    #: `interrupted` (this pass was stopped in the middle: the next one finishes it); with a
    #: dry run, `would_delete` and `would_resume`.
    outcome: str
    note: str | None = None

    @property
    def frees(self) -> bool:
        """Whether its bytes are (or, in a dry run, would be) freed by this pass."""
        return self.outcome in ("deleted", "resumed", "would_delete", "would_resume")


@dataclass(frozen=True)
class GcReport:
    """What a retention pass over one study deleted, or with a dry run would delete."""

    study: Study
    keep_best_trials: int
    #: `spec` (the study's retention) or `request` (given to this pass).
    policy_from: str
    #: Whether the given policy became the study's (saved in its spec).
    saved: bool
    dry_run: bool
    #: Finished trials the policy keeps, by number.
    kept: list[int]
    trials: list[GcTrial]

    @property
    def bytes_freed(self) -> int:
        return sum(t.bytes for t in self.trials if t.frees)
