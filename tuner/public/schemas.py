"""Public shapes of the REST API: one model per use, built from `tuner.domain.entities`."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tuner.domain.entities import (
    BestModel,
    Checkpoint,
    DeletedPath,
    Deletion,
    EvalStep,
    Export,
    GcReport,
    GcTrial,
    LeaderboardRow,
    MetricHistory,
    Note,
    ParetoFront,
    ParetoMember,
    Placement,
    Study,
    TrialDetail,
)
from tuner.domain.spec import StudySpec

T = TypeVar("T")


class Public(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Page(Public, Generic[T]):
    data: list[T]
    count: int = Field(description="Total number of items matching the filter.")


ErrorCode = Literal[
    "SPEC_INVALID",
    "REQUEST_INVALID",
    "BAD_REQUEST",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "STUDY_NOT_FOUND",
    "TRIAL_NOT_FOUND",
    "ARTIFACT_NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "TIMEOUT",
    "STUDY_EXISTS",
    "STUDY_STATE_CONFLICT",
    "TRIAL_STATE_CONFLICT",
    "SEVERAL_OBJECTIVES",
    "BODY_TOO_LARGE",
    "RANGE_NOT_SATISFIABLE",
    "UNAVAILABLE",
    "INTERNAL",
]


class ErrorDetail(BaseModel):
    field: str = Field(
        description="Path of the field, e.g. `hyperparameters.params[2].minValue`, or the "
        "query parameter; empty when the problem is the whole body."
    )
    message: str
    location: Literal["path", "query", "header", "body"] | None = Field(
        default=None, description="Where the field is, for a request parameter."
    )


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="Stable, machine-readable; see docs/api.md.")
    message: str = Field(description="What is wrong and, where it helps, what to do.")
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The body of every error answer (4xx and 5xx)."""

    error: ErrorBody


def finite(value: float | None) -> float | None:
    """JSON has no NaN: non-finite values are sent as null."""
    if value is None or not math.isfinite(value):
        return None
    return value


class BestSummary(Public):
    number: int
    objective: float | None
    best_step: int | None


class ObjectivePublic(Public):
    metric: str
    goal: str = Field(description="MINIMIZE or MAXIMIZE.")


class ConstraintPublic(Public):
    metric: str
    goal: str = Field(description="The side of the threshold that is safe.")
    threshold: float = Field(
        description="MINIMIZE: the value must be <= it; MAXIMIZE: >= it (Vertex's safetyConfig)."
    )


def objectives_of(spec: StudySpec) -> list[ObjectivePublic]:
    return [ObjectivePublic(metric=o.metric, goal=o.goal.value) for o in spec.objectives]


def constraints_of(spec: StudySpec) -> list[ConstraintPublic]:
    return [
        ConstraintPublic(
            metric=c.metric_id,
            goal=c.goal.value,
            threshold=c.safety_config.safety_threshold if c.safety_config else 0.0,
        )
        for c in spec.constraints
    ]


class BudgetUsePublic(Public):
    measure: str = Field(description="trainSteps, trialSeconds or wallSeconds.")
    used: float
    limit: float


class BudgetPublic(Public):
    """A study's compute budget: what it spent of each limited measure, the binding one
    (closest to its limit) first, and how long since it last improved."""

    measures: list[BudgetUsePublic]
    trials_since_progress: int = Field(
        description="Finished trials since the last better objective (or new front member)."
    )
    seconds_since_progress: float


class StudyPublic(Public):
    id: int
    name: str
    state: str
    state_reason: str | None
    trainer: str
    goal: str = Field(description="The first objective's goal.")
    metric: str = Field(description="The first objective's metric (it ranks by default).")
    objectives: list[ObjectivePublic] = Field(
        default_factory=list, description="Every objective, in the spec's order."
    )
    constraints: list[ConstraintPublic] = Field(default_factory=list)
    budget: BudgetPublic | None = Field(
        default=None, description="The compute budget's progress (null: the study has none)."
    )
    max_trials: int
    counts: dict[str, int]
    best: BestSummary | None
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    warnings: list[str] = Field(default_factory=list)
    note: str | None = Field(
        default=None, description="The study's note (markdown); null: none. `PUT .../note`."
    )

    @classmethod
    def build(
        cls,
        study: Study,
        counts: dict[str, int],
        best: LeaderboardRow | None,
        warnings: list[str] | None = None,
        budget: BudgetPublic | None = None,
        note: Note | None = None,
    ) -> StudyPublic:
        return cls(
            id=study.id,
            name=study.name,
            state=study.state,
            state_reason=study.state_reason,
            trainer=study.spec.trainer,
            goal=study.spec.goal.value,
            metric=study.spec.metric_tag,
            objectives=objectives_of(study.spec),
            constraints=constraints_of(study.spec),
            budget=budget,
            max_trials=study.spec.max_trials,
            counts=counts,
            best=(
                BestSummary(
                    number=best.number, objective=finite(best.objective), best_step=best.best_step
                )
                if best and not study.spec.multi_objective  # several: a front, no best
                else None
            ),
            spec=study.spec.to_document(),
            created_at=study.created_at,
            updated_at=study.updated_at,
            warnings=warnings or [],
            note=note.text if note is not None else None,
        )


class TrialRowPublic(Public):
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None
    best_step: int | None
    last_step: int | None
    duration_seconds: float | None
    started_at: datetime
    ended_at: datetime | None
    failure_reason: str | None = Field(
        default=None, description="Why it failed or stopped (first lines of the reason)."
    )
    last_objective: float | None = Field(
        default=None,
        description="The objective metric at the latest eval step (`objective` is the value "
        "that ranks the trial: its best step's, or the last one's, as the spec says).",
    )
    objectives: dict[str, float | None] = Field(
        default_factory=dict,
        description="Several objectives: each one's value at the ranking step (empty with one).",
    )
    feasible: bool | None = Field(
        default=None,
        description="Whether its safety metrics meet their thresholds at the ranking step "
        "(null: the study has none, or the trial no value yet).",
    )

    @classmethod
    def build(cls, row: LeaderboardRow) -> TrialRowPublic:
        return cls(
            number=row.number,
            state=row.state,
            params=row.params,
            objective=finite(row.objective),
            best_step=row.best_step,
            last_step=row.last_step,
            duration_seconds=row.duration_seconds,
            started_at=row.started_at,
            ended_at=row.ended_at,
            failure_reason=row.failure_reason,
            last_objective=finite(row.last_objective),
            objectives={k: finite(v) for k, v in row.objectives.items()},
            feasible=row.feasible,
        )


class EvalStepPublic(Public):
    step: int
    eval_name: str
    wall_time: float
    metrics: dict[str, float | None]

    @classmethod
    def build(cls, step: EvalStep) -> EvalStepPublic:
        return cls(
            step=step.step,
            eval_name=step.eval_name,
            wall_time=step.wall_time,
            metrics={k: finite(v) for k, v in step.metrics.items()},
        )


class CheckpointPublic(Public):
    step: int
    path: str = Field(description="Relative to the artifact store.")

    @classmethod
    def build(cls, checkpoint: Checkpoint) -> CheckpointPublic:
        return cls(step=checkpoint.step, path=checkpoint.kept_path)


class ExportPublic(Public):
    exporter: str
    version: str
    step: int | None
    matched_by: str | None = Field(
        default=None,
        description="How the export was tied to its step: 'global_step' (read from the "
        "export's variables) or 'write_time' (the last eval written before it).",
    )
    path: str = Field(description="Relative to the artifact store.")

    @classmethod
    def build(cls, export: Export) -> ExportPublic:
        return cls(
            exporter=export.exporter,
            version=export.version,
            step=export.step,
            matched_by=export.matched_by,
            path=export.path,
        )


class ExecutorPublic(Public):
    """Where a trial ran."""

    name: str = Field(description="`local` (a subprocess of its worker) or `ray` (a Ray task).")
    node_id: str | None = Field(default=None, description="The Ray node it ran on.")
    task_id: str | None = Field(default=None, description="Its Ray task.")

    @classmethod
    def build(cls, placement: Placement) -> ExecutorPublic:
        return cls(name=placement.executor, node_id=placement.node, task_id=placement.task)

    def describe(self) -> str:
        if self.name == "local":
            return "local"
        return f"{self.name} (node {self.node_id}, task {self.task_id})"


class DeletedPathPublic(Public):
    path: str = Field(
        description="Relative to the artifact store (a key prefix when `location` is `store`)."
    )
    bytes: int = Field(description="Its size when the deletion was planned.")
    location: Literal["local", "store"] = Field(
        description="`local`: the artifact root's disk; `store`: the object store."
    )
    kind: Literal["dir", "file", "prefix", "object"]

    @classmethod
    def build(cls, path: DeletedPath) -> DeletedPathPublic:
        return cls(
            path=path.path,
            bytes=path.bytes,
            location=path.location,  # type: ignore[arg-type]
            kind=path.kind,  # type: ignore[arg-type]
        )


class DeletionPublic(Public):
    """What retention deleted of a trial: its kept checkpoint, exports and their archives."""

    state: Literal["DELETING", "DONE"] = Field(
        description="DONE: every path below is gone. DELETING: started and not finished (in "
        "progress, or cut short: the next retention pass or `tuner gc` finishes it)."
    )
    policy: str = Field(description="The policy applied, e.g. `keepBestTrials=2`.")
    reason: str = Field(description="Why the trial fell out of it: its rank, or its state.")
    trigger: Literal["policy", "gc"] = Field(
        description="`policy`: the study's retention, applied in the background; `gc`: "
        "`tuner gc` or `POST .../gc`."
    )
    paths: list[DeletedPathPublic]
    bytes: int = Field(description="The sum of the paths' sizes.")
    started_at: datetime
    deleted_at: datetime | None = Field(description="When every path was gone.")
    worker: str = Field(description="The process that deleted them.")
    message: str = Field(description="In words, as a download of them answers it.")

    @classmethod
    def build(cls, deletion: Deletion) -> DeletionPublic:
        return cls(
            state=deletion.state,  # type: ignore[arg-type]
            policy=deletion.policy,
            reason=deletion.reason,
            trigger=deletion.trigger,  # type: ignore[arg-type]
            paths=[DeletedPathPublic.build(p) for p in deletion.paths],
            bytes=deletion.bytes,
            started_at=deletion.started_at,
            deleted_at=deletion.deleted_at,
            worker=deletion.worker,
            message=deletion.describe(),
        )


class TrialDetailPublic(TrialRowPublic):
    failure_reason: str | None
    problems: list[str]
    exit_code: int | None
    worker: str
    executor: ExecutorPublic
    steps: list[EvalStepPublic]
    checkpoints: list[CheckpointPublic]
    exports: list[ExportPublic]
    log_tail: list[str]
    deleted: DeletionPublic | None = Field(
        default=None,
        description="What retention deleted of it (its checkpoint, exports and archives; "
        "its metrics and log stay); null: nothing.",
    )
    note: str | None = Field(
        default=None,
        description="The trial's note (markdown); null: none. `PUT .../trials/{n}/note`.",
    )
    stop_requested_at: datetime | None = Field(
        default=None,
        description="When a stop by hand was asked for (`POST .../trials/{n}/stop`): the "
        "trial ends PRUNED soon after, if it was still running; null: none was.",
    )
    stop_requested_by: str | None = Field(
        default=None, description="Who asked for it: the token's name (or user@host)."
    )

    @classmethod
    def from_detail(
        cls, detail: TrialDetail, log_tail: list[str], spec: StudySpec | None = None
    ) -> TrialDetailPublic:
        run = detail.run
        ranking = next((s for s in detail.steps if s.id == run.objective_step_id), None)
        objectives: dict[str, float | None] = {}
        feasible = None
        if spec is not None and ranking is not None:
            if spec.multi_objective:
                objectives = {
                    o.metric: finite(ranking.metrics.get(o.metric)) for o in spec.objectives
                }
            known = [ranking.metrics.get(c.metric_id) for c in spec.constraints]
            if spec.constraints and all(v is not None for v in known):
                feasible = all(
                    c.violation(float(v or 0.0)) <= 0
                    for c, v in zip(spec.constraints, known, strict=True)
                )
        assert run.number is not None
        duration = (run.ended_at - run.started_at).total_seconds() if run.ended_at else None
        return cls(
            number=run.number,
            state=run.state,
            params=run.params,
            objective=finite(detail.objective),
            best_step=detail.best_step,
            last_step=max((s.step for s in detail.steps), default=None),
            duration_seconds=duration,
            started_at=run.started_at,
            ended_at=run.ended_at,
            failure_reason=run.failure_reason,
            problems=run.problems,
            exit_code=run.exit_code,
            worker=run.worker,
            executor=ExecutorPublic.build(run.executor),
            steps=[EvalStepPublic.build(s) for s in detail.steps],
            checkpoints=[CheckpointPublic.build(c) for c in detail.checkpoints],
            exports=[ExportPublic.build(e) for e in detail.exports],
            log_tail=log_tail,
            objectives=objectives,
            feasible=feasible,
            deleted=DeletionPublic.build(detail.deleted) if detail.deleted else None,
            note=detail.note.text,
            stop_requested_at=run.stop_by_hand.requested_at if run.stop_by_hand else None,
            stop_requested_by=run.stop_by_hand.requested_by if run.stop_by_hand else None,
        )


class BestPublic(Public):
    study: str
    metric: str = Field(default="", description="The objective metric's tag.")
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None
    step: int
    checkpoint: CheckpointPublic | None
    export: ExportPublic | None
    other_exports: list[ExportPublic]

    @classmethod
    def build(cls, best: BestModel) -> BestPublic:
        assert best.run.number is not None
        return cls(
            study=best.study.name,
            metric=best.study.spec.metric_tag,
            number=best.run.number,
            state=best.run.state,
            params=best.run.params,
            objective=finite(best.objective),
            step=best.step,
            checkpoint=CheckpointPublic.build(best.checkpoint) if best.checkpoint else None,
            export=ExportPublic.build(best.export) if best.export else None,
            other_exports=[ExportPublic.build(e) for e in best.other_exports],
        )


class ResumeRequest(Public):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    max_trials: int | None = Field(default=None, ge=1, le=100_000)


#: The longest note, in characters (a page of markdown, not a file store).
MAX_NOTE_CHARS = 32_768


class NoteRequest(Public):
    """A note to set: `PUT /studies/{study}/note`, `PUT /studies/{study}/trials/{n}/note`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    note: str = Field(
        max_length=MAX_NOTE_CHARS,
        description=f"Markdown text, at most {MAX_NOTE_CHARS:,} characters; an empty string "
        "clears the note.",
    )


class NotePublic(Public):
    """A note as set."""

    note: str = Field(description="The note's text (empty: cleared).")
    updated_at: datetime

    @classmethod
    def build(cls, note: Note) -> NotePublic:
        assert note.updated_at is not None
        return cls(note=note.text or "", updated_at=note.updated_at)


class GcRequest(Public):
    """A retention pass asked for: `POST /studies/{study}/gc`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    keep_best_trials: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="The policy to apply; it becomes the study's (saved in its spec's "
        "`retention`) unless `dryRun`. Unset: the study's own policy.",
    )
    dry_run: bool = Field(default=False, description="Report what would go; delete nothing.")


class GcTrialPublic(Public):
    number: int
    state: str
    reason: str = Field(description="Why it falls out of the policy: its rank, or its state.")
    paths: list[DeletedPathPublic]
    bytes: int
    outcome: Literal[
        "deleted", "resumed", "skipped", "interrupted", "would_delete", "would_resume"
    ] = Field(
        description="`deleted`; `resumed`: a deletion cut short, finished now; `skipped`: "
        "not now (`note` says why: a download in flight); `interrupted`: this pass was "
        "stopped, the next finishes it; with `dryRun`, `would_delete` and `would_resume`."
    )
    note: str | None = None

    @classmethod
    def build(cls, trial: GcTrial) -> GcTrialPublic:
        return cls(
            number=trial.number,
            state=trial.state,
            reason=trial.reason,
            paths=[DeletedPathPublic.build(p) for p in trial.paths],
            bytes=trial.bytes,
            outcome=trial.outcome,  # type: ignore[arg-type]
            note=trial.note,
        )


class GcReportPublic(Public):
    """What a retention pass deleted, or with `dryRun` would delete."""

    study: str
    keep_best_trials: int
    policy_from: Literal["spec", "request"] = Field(
        description="`spec`: the study's retention; `request`: `keepBestTrials` of the request."
    )
    policy_saved: bool = Field(description="Whether the request's policy became the study's.")
    dry_run: bool
    kept_trials: list[int] = Field(description="Finished trials the policy keeps, by number.")
    trials: list[GcTrialPublic] = Field(description="Each trial with something to delete.")
    bytes_freed: int = Field(
        description="The bytes of the trials deleted (`deleted`, `resumed`), or with `dryRun` "
        "that a pass would free now (`would_delete`, `would_resume`)."
    )

    @classmethod
    def build(cls, report: GcReport) -> GcReportPublic:
        return cls(
            study=report.study.name,
            keep_best_trials=report.keep_best_trials,
            policy_from=report.policy_from,  # type: ignore[arg-type]
            policy_saved=report.saved,
            dry_run=report.dry_run,
            kept_trials=report.kept,
            trials=[GcTrialPublic.build(t) for t in report.trials],
            bytes_freed=report.bytes_freed,
        )


class Health(BaseModel):
    status: str


class NotReady(Health):
    reason: str | None = Field(default=None, description="Why, when the status does not say.")
    error: ErrorBody


class MetricPointPublic(Public):
    step: int
    value: float | None = Field(description="Null where the value is not finite (NaN, inf).")
    wall_time: float = Field(description="When the trainer wrote the value (Unix seconds).")


class MetricHistoryPublic(Public):
    number: int
    state: str
    eval_name: str = Field(description="The eval dir the points come from.")
    points: list[MetricPointPublic] = Field(description="By step.")
    point_count: int = Field(
        description="How many points the trial has; more than `points` holds when thinned."
    )

    @classmethod
    def build(cls, history: MetricHistory) -> MetricHistoryPublic:
        return cls(
            number=history.number,
            state=history.state,
            eval_name=history.eval_name,
            points=[
                MetricPointPublic(step=p.step, value=finite(p.value), wall_time=p.wall_time)
                for p in history.points
            ],
            point_count=history.point_count,
        )


ChartKind = Literal["parallel", "slice", "rank", "contour", "edf", "timeline"]


class ChartPointPublic(Public):
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None = Field(description="The first objective (null: none, or not finite).")
    rank: float | None = Field(
        description="Place among the chart's eligible trials, 0 = best, 1 = worst (null on the "
        "timeline)."
    )
    started_at: datetime
    ended_at: datetime | None


class EdfPointPublic(Public):
    value: float = Field(description="An objective value.")
    share: float = Field(description="The share of the eligible trials at or below it, 0-1.")


class ChartDataPublic(Public):
    """What one analysis chart draws: a bounded, deterministic sample of the trials the
    leaderboard's states and filters select (the best ones always in it), or, for the EDF,
    quantiles of all of them."""

    chart: ChartKind
    metric: str = Field(description="The first objective's metric.")
    goal: str
    matched: int = Field(description="Trials the states and filters select, in any state.")
    eligible: int = Field(
        description="Of those, the ones the chart can draw: COMPLETED with a finite objective "
        "(every matched trial on the timeline)."
    )
    sampled: int = Field(description="How many of the eligible trials `points` holds.")
    points: list[ChartPointPublic] = Field(
        description="Best first (by number on the timeline); empty for the EDF."
    )
    edf: list[EdfPointPublic] = Field(description="By value; only for the EDF.")


class ParamImportancePublic(Public):
    param: str
    importance: float = Field(description="Share of the objective's variation, 0-1.")


class ImportancesPublic(Public):
    """A study's hyperparameter importances, from Optuna's evaluators (`optuna.importance`)."""

    study: str
    evaluator: str
    importances: list[ParamImportancePublic] = Field(
        description="Most important first; the importances sum to 1."
    )
    trial_count: int = Field(
        description="COMPLETED trials with an objective it is computed from (of those `state` "
        "and `filter` keep, when given)."
    )
    filtered: bool = Field(
        default=False, description="Whether `state` or `filter` narrowed the trials."
    )
    matched_count: int = Field(
        default=0,
        description="Trials (any state) `state` and `filter` kept when it was computed (every "
        "trial of the study without them).",
    )
    finished_trial_count: int = Field(
        description="COMPLETED, PRUNED and FAILED trials when computed: it is recomputed when "
        "this count changes."
    )
    computed_at: datetime
    cached: bool = Field(description="Whether this is a kept evaluation.")
    available_evaluators: list[str] = Field(description="What `evaluator` this server runs.")
    unavailable_evaluators: dict[str, str] = Field(
        default_factory=dict,
        description="The evaluators this server cannot run, each with why and what to "
        "install (fANOVA and mean decrease impurity need the `analysis` extra).",
    )


class ParetoMemberPublic(Public):
    number: int
    objectives: dict[str, float] = Field(description="Each objective at the ranking step.")
    constraints: dict[str, float] = Field(
        default_factory=dict, description="Each safety metric there (all met: on the front)."
    )
    params: dict[str, Any]
    step: int = Field(description="The ranking eval step: every value above is from it.")
    checkpoint: CheckpointPublic | None = Field(
        description="The checkpoint kept for that step (null: none was found)."
    )
    exports: list[ExportPublic] = Field(description="The SavedModels tied to that step.")

    @classmethod
    def build(cls, member: ParetoMember) -> ParetoMemberPublic:
        trial = member.trial
        return cls(
            number=trial.number,
            objectives=trial.objectives,
            constraints=trial.constraints,
            params=trial.params,
            step=trial.step,
            checkpoint=CheckpointPublic.build(member.checkpoint) if member.checkpoint else None,
            exports=[ExportPublic.build(e) for e in member.exports],
        )


class ParetoPage(Page[ParetoMemberPublic]):
    """The non-dominated feasible COMPLETED trials, best first on the first objective."""

    study: str
    objectives: list[ObjectivePublic]
    constraints: list[ConstraintPublic]
    ranked_count: int = Field(description="COMPLETED trials with every objective.")
    infeasible_count: int = Field(description="Of those, the ones missing a safety threshold.")
    filtered: bool = Field(
        default=False,
        description="Whether `state` or `filter` narrowed the trials: the front (and the "
        "counts above) are then of the trials they keep.",
    )
    matched_count: int | None = Field(
        default=None,
        description="Trials (any state) `state` and `filter` keep; null without them.",
    )

    @classmethod
    def build(cls, front: ParetoFront) -> ParetoPage:
        spec = front.study.spec
        return cls(
            data=[ParetoMemberPublic.build(m) for m in front.members],
            count=len(front.members),
            study=front.study.name,
            objectives=objectives_of(spec),
            constraints=constraints_of(spec),
            ranked_count=front.ranked,
            infeasible_count=front.infeasible,
            filtered=front.matched is not None,
            matched_count=front.matched,
        )
