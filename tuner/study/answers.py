"""What the API answers, as its public models, for the routes and for the local CLI alike.

`tuner studies`, `tuner show`, `tuner trials`, ... read a local database through these same
functions, and a server's routes answer with them: the two print the same thing by
construction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tuner.artifacts.object_store import ObjectStoreError
from tuner.artifacts.store import ArtifactStore
from tuner.artifacts.trial_logs import TrialLog, open_log
from tuner.domain import budget as budget_rules
from tuner.domain.budget import Spent
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import ArtifactNotFoundError
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries
from tuner.persistence.budget import spent
from tuner.public.schemas import (
    BestPublic,
    BudgetPublic,
    BudgetUsePublic,
    GcReportPublic,
    NotePublic,
    Page,
    ParetoPage,
    StudyPublic,
    TrialDetailPublic,
    TrialRowPublic,
)
from tuner.study import operations as study_ops
from tuner.study.front import pareto_front
from tuner.study.operations import Backend
from tuner.study.retention import Deleter, apply_retention, this_process

logger = logging.getLogger(__name__)


def overview(backend: Backend, study: Study, warnings: list[str] | None = None) -> StudyPublic:
    with backend.db.session() as session:
        counts = repo.trial_counts(session, study.id)
        rows, _ = repo.leaderboard(session, study, state="COMPLETED", limit=1)
        used = spent(session, study) if study.spec.budget is not None else None
        note = repo.study_note(session, study.id)
    best = rows[0] if rows and rows[0].objective is not None else None
    return StudyPublic.build(study, counts, best, warnings, budget_public(study, used), note)


def budget_public(study: Study, used: Spent | None) -> BudgetPublic | None:
    budget = study.spec.budget
    if budget is None or used is None:
        return None
    return BudgetPublic(
        measures=[
            BudgetUsePublic(measure=m, used=round(u, 3), limit=cap)
            for m, u, cap in budget_rules.progress(budget, used)
        ],
        trials_since_progress=used.since_progress,
        seconds_since_progress=round(used.seconds_since_progress, 3),
    )


def get_study(backend: Backend, ref: str | int) -> StudyPublic:
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
    return overview(backend, study)


def list_studies(
    backend: Backend, *, state: str | None = None, limit: int = 50, offset: int = 0
) -> Page[StudyPublic]:
    with backend.db.session() as session:
        found, total = repo.list_studies(session, state=state, limit=limit, offset=offset)
    return Page[StudyPublic](data=[overview(backend, s) for s in found], count=total)


def list_trials(
    backend: Backend,
    ref: str | int,
    *,
    sort: str | None = None,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
    limit: int = 50,
    offset: int = 0,
) -> Page[TrialRowPublic]:
    """The leaderboard, sorted and filtered (see `trial_queries`); `count` is the filtered total."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        query = trial_queries.parse_query(study.spec, sort=sort, states=states, filters=filters)
        rows, total = trial_queries.list_trials(session, study, query, limit=limit, offset=offset)
    return Page[TrialRowPublic](data=[TrialRowPublic.build(r) for r in rows], count=total)


def get_trial(
    backend: Backend, store: ArtifactStore, ref: str | int, number: int, *, tail: int
) -> TrialDetailPublic:
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        detail = repo.trial_detail(session, study, number)
    lines: list[str] = []
    if detail.run.log_path:
        log = _open_log_quietly(store, detail.run.log_path)
        lines = log.tail(tail) if log is not None else []
    return TrialDetailPublic.from_detail(detail, lines, study.spec)


def _open_log_quietly(store: ArtifactStore, relative: str) -> TrialLog | None:
    """The log for a tail in a trial's detail: an unreachable store leaves the tail empty."""
    try:
        return open_log(store, relative)
    except (OSError, ObjectStoreError) as exc:
        logger.warning("log %s not read: %s", relative, exc)
        return None


def set_study_note(backend: Backend, ref: str | int, text: str) -> NotePublic:
    """`PUT .../note` and `tuner note STUDY TEXT`: replace the study's note ("" clears it)."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        note = repo.set_study_note(session, study.id, text)
    return NotePublic.build(note)


def set_trial_note(backend: Backend, ref: str | int, number: int, text: str) -> NotePublic:
    """`PUT .../trials/{n}/note` and `tuner note STUDY --trial N TEXT`."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        note = repo.set_trial_note(session, study.id, number, text)
    return NotePublic.build(note)


def stop_trial(
    backend: Backend, store: ArtifactStore, ref: str | int, number: int, *, by: str, tail: int
) -> TrialDetailPublic:
    """`POST .../trials/{n}/stop` and `tuner stop STUDY --trial N`: ask whoever supervises the
    running trial to stop it; it ends PRUNED with `by` and the time in its reason."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        repo.request_stop_by_hand(session, study.id, number, by=by)
    return get_trial(backend, store, ref, number, tail=tail)


def delete_study(
    backend: Backend, store: ArtifactStore, ref: str | int, *, delete_artifacts: bool
) -> None:
    """Delete the study's records, and with `delete_artifacts` its files and objects. An
    unreachable object store refuses the delete before any record goes."""
    if delete_artifacts and store.remote is not None:
        store.remote.check()
    study = study_ops.delete_study(backend, ref)
    if delete_artifacts:
        store.delete_study(study.name)


def collect_garbage(
    backend: Backend,
    store: ArtifactStore,
    settings: Settings,
    ref: str | int,
    *,
    keep_best_trials: int | None = None,
    dry_run: bool = False,
) -> GcReportPublic:
    """`tuner gc` and `POST .../gc`: apply a retention policy to the study now."""
    deleter = Deleter(worker=this_process(), pause=settings.retention_pause_seconds)
    report = apply_retention(
        backend, store, ref, keep_best_trials=keep_best_trials, dry_run=dry_run, deleter=deleter
    )
    return GcReportPublic.build(report)


def get_best(backend: Backend, ref: str | int) -> BestPublic:
    return BestPublic.build(study_ops.best_model(backend, ref))


def get_pareto(
    backend: Backend, ref: str | int, *, states: Sequence[str] = (), filters: Sequence[str] = ()
) -> ParetoPage:
    return ParetoPage.build(pareto_front(backend, ref, states=states, filters=filters))


def log_file(backend: Backend, store: ArtifactStore, ref: str | int, number: int) -> TrialLog:
    """The trial's log, on disk or in the object store."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        run = repo.get_run_by_number(session, study.id, number)
    if not run.log_path:
        raise ArtifactNotFoundError(f"study {study.name!r} trial {number} has no log yet")
    log = open_log(store, run.log_path)
    if log is not None:
        return log
    if store.remote is not None and run.state == "RUNNING":
        raise ArtifactNotFoundError(
            f"study {study.name!r} trial {number}: its log is on worker {run.worker} while it "
            f"runs, and is stored in {store.remote.url} when it ends"
        )
    raise ArtifactNotFoundError(f"study {study.name!r} trial {number}: its log file is gone")
