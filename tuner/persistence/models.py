"""Table classes of the tuner's own schema (Optuna keeps its tables and migrations apart).

Authority for each fact:
- the spec, a study's lifecycle, a trial's lifecycle (with states Optuna cannot express, such as
  STOPPED), its process, every eval value, kept checkpoints and exports: these tables;
- the sampler's view (params, told values, intermediate values): Optuna's tables, written by
  the manager from these facts, read only by Optuna.
ORM rows never leave `tuner.persistence`; the repository turns them into `tuner.domain.entities`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STUDY_STATES = ("RUNNING", "COMPLETED", "FAILED", "STOPPED")
TRIAL_STATES = ("RUNNING", "COMPLETED", "PRUNED", "FAILED", "STOPPED")
TOKEN_SCOPES = ("read", "write")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StudyRow(Base):
    __tablename__ = "tuner_studies"
    __table_args__ = (CheckConstraint(_in("state", STUDY_STATES), name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    spec_json: Mapped[str] = mapped_column(Text)
    trainer: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The `seq` of the study's newest event (see `StudyEventRow`).
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: A note on the study (markdown), written by people; loaded only when asked for.
    note: Mapped[str | None] = mapped_column(Text, deferred=True)
    note_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    runs: Mapped[list[TrialRunRow]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )


class TrialRunRow(Base):
    """One trial: its Optuna trial, its process and its outcome."""

    __tablename__ = "tuner_trial_runs"
    __table_args__ = (
        CheckConstraint(_in("state", TRIAL_STATES), name="state"),
        UniqueConstraint("study_id", "number", name="uq_tuner_trial_runs_study_number"),
        #: A study's trials of one state in objective order: the best COMPLETED trial(s) and a
        #: page of them are read from it, and counts by state are covered by it (it replaces
        #: the former (study_id, state) index, which is its prefix).
        Index(
            "ix_tuner_trial_runs_study_state_rank", "study_id", "state", "objective_rank", "number"
        ),
        Index("ix_tuner_trial_runs_study_rank", "study_id", "objective_rank", "number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("tuner_studies.id", ondelete="CASCADE"))
    #: Null only while the trial is being claimed (the slot is reserved before Optuna is asked).
    number: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    state: Mapped[str] = mapped_column(String(16))
    #: The values the trainer received on its command line (JSON object).
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    worker: Mapped[str] = mapped_column(String(255))
    #: The fencing token of the worker's lease: it grows at every takeover, and every write a
    #: manager makes about the run is conditional on (worker, lease_epoch, RUNNING).
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    output_dir: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    #: Problems found while reading its event files (JSON list of strings).
    problems_json: Mapped[str] = mapped_column(Text, default="[]")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When its trainer process started (the first one, if a cold retry started another) and
    #: when its manager saw it exit: a compute budget's trial-seconds are the trainer's own,
    #: not the claim's, the start-up's or the upload's.
    trainer_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    trainer_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The eval step with the best objective value: its checkpoint is kept.
    #: (No foreign key: eval steps are created after the run and die with it.)
    best_step_id: Mapped[int | None] = mapped_column(Integer)
    #: The eval step whose value is the trial's objective (the best or the last, per spec).
    objective_step_id: Mapped[int | None] = mapped_column(Integer)
    #: The objective step's value as a sort key, smaller is better (negated when the goal is
    #: MAXIMIZE); null without a finite objective. Kept with `objective_step_id`, indexed with
    #: the study so that a leaderboard page or the best trial costs its rows, not the study's.
    objective_rank: Mapped[float | None] = mapped_column(Float)
    #: Where it ran: `local` (a subprocess of its manager) or `ray` (a task on a Ray node,
    #: whose ids are kept here).
    executor: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    executor_node: Mapped[str | None] = mapped_column(String(255))
    executor_task: Mapped[str | None] = mapped_column(String(255))
    #: Why its manager asks it to stop (read by a supervisor on another machine).
    stop_request: Mapped[str | None] = mapped_column(Text)
    #: A stop asked for by hand (`POST .../trials/{n}/stop`): when, and who asked (the token's
    #: name). Its supervisor, wherever it runs, ends the trial PRUNED.
    stop_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_requested_by: Mapped[str | None] = mapped_column(String(255))
    #: A note on the trial (markdown), written by people; loaded only when asked for.
    note: Mapped[str | None] = mapped_column(Text, deferred=True)
    note_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    study: Mapped[StudyRow] = relationship(back_populates="runs")


class TrialSortValueRow(Base):
    """A trial's value for one sort key other than its objective: each param (a categorical as
    its place in the spec's list) and each metric at its best step, finite values only.

    Kept beside the run and indexed with the study and the key, so that a page sorted by a
    param or a metric reads its rows in index order instead of computing the key for every
    trial of the study (a pass over 100,000 trials for 50 rows). A trial without a value for
    the key (an inactive conditional param, a metric never written, NaN) has no row.
    """

    __tablename__ = "tuner_trial_sort_values"
    __table_args__ = (
        # With the run id: a page and a filter's trials come from the index alone.
        Index("ix_tuner_trial_sort_values_order", "study_id", "key", "value", "number", "run_id"),
    )

    run_id: Mapped[int] = mapped_column(
        ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"), primary_key=True
    )
    #: `param:<name>` or `metric:<tag>`, as the trial list's `sort` names them.
    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("tuner_studies.id", ondelete="CASCADE"))
    value: Mapped[float] = mapped_column(Float)
    #: The trial's number: ties go by it, from the index.
    number: Mapped[int] = mapped_column(Integer)


# Descending sorts keep ties in number order: read forwards from an index of their own
# (backwards, each run of equal values would be sorted again: 75 ms in place of 2 ms for a page
# 50,000 rows down on SQLite, many values being equal).
Index(
    "ix_tuner_trial_sort_values_order_desc",
    TrialSortValueRow.study_id,
    TrialSortValueRow.key,
    TrialSortValueRow.value.desc(),
    TrialSortValueRow.number,
    TrialSortValueRow.run_id,
)


class EvalStepRow(Base):
    """One evaluation of one checkpoint, as read from an eval dir's event files."""

    __tablename__ = "tuner_eval_steps"
    __table_args__ = (
        UniqueConstraint("run_id", "eval_name", "step", name="uq_tuner_eval_steps_run_name_step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"))
    eval_name: Mapped[str] = mapped_column(String(255))
    step: Mapped[int] = mapped_column(Integer)
    wall_time: Mapped[float] = mapped_column(Float)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)


class EvalMetricRow(Base):
    __tablename__ = "tuner_eval_metrics"
    __table_args__ = (
        UniqueConstraint("eval_step_id", "tag", name="uq_tuner_eval_metrics_step_tag"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    eval_step_id: Mapped[int] = mapped_column(ForeignKey("tuner_eval_steps.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(255))
    #: Null stands for NaN (SQLite cannot store NaN).
    value: Mapped[float | None] = mapped_column(Float)
    wall_time: Mapped[float] = mapped_column(Float)


class CheckpointRow(Base):
    """A checkpoint the tuner copied out of the estimator's rotation."""

    __tablename__ = "tuner_checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_tuner_checkpoints_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    #: Checkpoint prefix as the estimator named it (e.g. `.../model.ckpt-200`).
    source_path: Mapped[str] = mapped_column(Text)
    #: Prefix of the kept copy, relative to the artifact root.
    kept_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: With an object store: the `.tar.gz` of the kept copy there (key relative to the store's
    #: root, sha256, size), set once it is uploaded and verified; the API serves only that.
    archive_path: Mapped[str | None] = mapped_column(Text)
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    archive_size: Mapped[int | None] = mapped_column(BigInteger)


class ExportRow(Base):
    """A SavedModel export under `<output>/export/<exporter>/<version>/`."""

    __tablename__ = "tuner_exports"
    __table_args__ = (
        UniqueConstraint("run_id", "exporter", "version", name="uq_tuner_exports_run_exp_ver"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"))
    exporter: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    #: Relative to the artifact root.
    path: Mapped[str] = mapped_column(Text)
    #: A hard-linked copy out of the exporter's own clean-up (`exports_to_keep`), kept while
    #: this export belongs to the trial's best step; relative to the artifact root.
    kept_path: Mapped[str | None] = mapped_column(Text)
    eval_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("tuner_eval_steps.id", ondelete="SET NULL")
    )
    #: The global step stored in the export's own variables (the checkpoint it was made from).
    global_step: Mapped[int | None] = mapped_column(Integer)
    #: How `eval_step_id` was found: `global_step` (evidence) or `write_time` (a guess).
    matched_by: Mapped[str | None] = mapped_column(String(16))
    #: With an object store: the `.tar.gz` of the kept copy there (key relative to the store's
    #: root, sha256, size), set once it is uploaded and verified; the API serves only that.
    archive_path: Mapped[str | None] = mapped_column(Text)
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    archive_size: Mapped[int | None] = mapped_column(BigInteger)


class EventFileRow(Base):
    """How far an event file has been read, and what was wrong with it."""

    __tablename__ = "tuner_event_files"
    __table_args__ = (UniqueConstraint("run_id", "path", name="uq_tuner_event_files_run_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"))
    #: Relative to the trial's output dir.
    path: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(Integer, default=0)


class ApiTokenRow(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "tuner_api_tokens"
    __table_args__ = (CheckConstraint(_in("scope", TOKEN_SCOPES), name="scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StudyEventRow(Base):
    """The study's journal: what its event stream tells, in the order it was committed.

    `seq` counts per study. It is taken from `StudyRow.event_seq` by the same transaction that
    makes the change, and that update holds the study row until the commit, so events commit in
    `seq` order: a reader that has seen `seq` N has seen every event up to N, and a client can
    resume after N (`Last-Event-ID`) without loss or repetition.
    """

    __tablename__ = "tuner_study_events"
    __table_args__ = (UniqueConstraint("study_id", "seq", name="uq_tuner_study_events_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("tuner_studies.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    #: The trial the event is about (null for study events).
    number: Mapped[int | None] = mapped_column(Integer)
    data_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


DELETION_STATES = ("DELETING", "DONE")


class DeletionRow(Base):
    """What retention deleted of one run: written DELETING (with every path it is about to
    delete) in the transaction that also drops the run's checkpoint and export rows, DONE once
    every path is gone. A DELETING row outlives a process killed mid-deletion: the next pass
    deletes what is left (deleting is idempotent) and marks it DONE."""

    __tablename__ = "tuner_deletions"
    __table_args__ = (CheckConstraint(_in("state", DELETION_STATES), name="state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(
        ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"), unique=True
    )
    study_id: Mapped[int] = mapped_column(
        ForeignKey("tuner_studies.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    #: The policy applied (`keepBestTrials=2`) and why the run fell out of it.
    policy: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    #: `policy` (the study's retention, in the background) or `gc` (`tuner gc`, the API).
    trigger: Mapped[str] = mapped_column(String(16))
    #: JSON list of {path, bytes, location, kind}, relative to the artifact root.
    paths_json: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PinRow(Base):
    """A download (or pull) of a run's artifacts in flight: retention does not delete them
    while a pin of the run is unexpired. Its holder renews `expires_at` while it streams."""

    __tablename__ = "tuner_pins"
    __table_args__ = (Index("ix_tuner_pins_run_expires", "run_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("tuner_trial_runs.id", ondelete="CASCADE"))
    #: Who holds it (`api <host>:<pid>`, `tuner export <host>:<pid>`), for messages.
    holder: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
