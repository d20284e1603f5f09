"""Apply a retention policy to a study: delete the checkpoint, exports and archives of the
finished trials that fall out of it (`retention_policy`), locally and in the object store.

One trial at a time, in three steps:
1. **Plan**: list what would go, with sizes (`tuner.artifacts.deletion`). A dry run stops here.
2. **Claim**, one transaction: hold the run's row, refuse if a download pins it, drop its
   checkpoint and export rows (nothing points at the files any more: a download answers 404
   with the deletion's record) and record the deletion DELETING with the whole plan.
3. **Delete** every planned path, then mark the record DONE.
A process killed in step 3 leaves a DELETING record naming everything that was to go: the next
pass (the same call, or any manager's background pass) deletes what is left, idempotently, and
marks it DONE. Runs that are not finished are never candidates, and the files of the trials the
policy keeps are never in a plan.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from tuner.artifacts.deletion import TrialArtifacts, delete_planned, plan_deletion
from tuner.artifacts.store import ArtifactStore
from tuner.domain.entities import Deletion, GcReport, GcTrial, Study
from tuner.domain.errors import QueryError
from tuner.domain.spec import RetentionSpec
from tuner.persistence import repository as repo
from tuner.persistence.ranked import ranked_trials
from tuner.study.front import pareto_front
from tuner.study.operations import Backend
from tuner.study.retention_policy import Verdict, judge, policy_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deleter:
    """How a pass deletes: who it is (for the record), what started it, its throttle, and
    when to stop (a manager shutting down)."""

    worker: str
    #: `policy` (the study's retention, in the background) or `gc` (asked for).
    trigger: str = "gc"
    pause: float = 0.0
    should_stop: Callable[[], bool] = lambda: False
    #: Seconds a deletion must have been DELETING before this pass finishes it (0: any; a
    #: background pass leaves a live one of another process alone).
    resume_after: float = 0.0


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def apply_retention(
    backend: Backend,
    store: ArtifactStore,
    ref: str | int,
    *,
    keep_best_trials: int | None = None,
    dry_run: bool = False,
    deleter: Deleter | None = None,
) -> GcReport:
    """Apply `keep_best_trials` (saved as the study's policy, unless a dry run) or the study's
    own policy; first finish deletions cut short. With `dry_run`, nothing is deleted and the
    report says what would be (the same plan a real pass makes)."""
    deleter = deleter or Deleter(worker=this_process())
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
    policy = study.spec.retention
    k = keep_best_trials or (policy.keep_best_trials if policy else None)
    if k is None:
        raise QueryError(
            [
                (
                    "keepBestTrials",
                    f"study {study.name!r} has no retention policy (retention.keepBestTrials in "
                    f"its spec): give one, e.g. `tuner gc {study.name} --keep-best 3`",
                )
            ]
        )
    if store.remote is not None:
        store.remote.check()  # an unreachable store refuses the pass before anything goes
    saved = False
    if keep_best_trials is not None and not dry_run:
        saved = _save_policy(backend, study, keep_best_trials)
    before = repo.now() - timedelta(seconds=deleter.resume_after)
    unfinished = backend.db.run(
        lambda s: repo.unfinished_deletions(s, study_id=study.id, started_before=before)
    )
    trials = [_resume(backend, store, d, deleter, dry_run=dry_run) for d in unfinished]
    verdicts = _verdicts(backend, study, k)
    for verdict in verdicts:
        if verdict.keep or not verdict.trial.has_artifacts:
            continue
        if deleter.should_stop() or any(t.outcome == "interrupted" for t in trials):
            break
        trials.append(_delete(backend, store, study, verdict, k, deleter, dry_run=dry_run))
    return GcReport(
        study=study,
        keep_best_trials=k,
        policy_from="request" if keep_best_trials is not None else "spec",
        saved=saved,
        dry_run=dry_run,
        kept=[v.trial.number for v in verdicts if v.keep],
        trials=trials,
    )


def finish_unfinished(backend: Backend, store: ArtifactStore, deleter: Deleter) -> int:
    """Finish the deletions of every study that were cut short (DELETING for longer than
    `deleter.resume_after`); how many were finished."""
    before = repo.now() - timedelta(seconds=deleter.resume_after)
    pending = backend.db.run(lambda s: repo.unfinished_deletions(s, started_before=before))
    finished = 0
    for deletion in pending:
        if deleter.should_stop():
            break
        if _resume(backend, store, deletion, deleter, dry_run=False).outcome == "resumed":
            finished += 1
    return finished


def _save_policy(backend: Backend, study: Study, k: int) -> bool:
    current = study.spec.retention
    if current is not None and current.keep_best_trials == k:
        return False
    spec = study.spec.model_copy(update={"retention": RetentionSpec(keep_best_trials=k)})
    backend.db.run(lambda s: repo.update_study_spec(s, study.id, spec))
    return True


def _verdicts(backend: Backend, study: Study, k: int) -> list[Verdict]:
    with backend.db.session() as session:
        finished = repo.finished_trials(session, study.id)
        ranked = ranked_trials(session, study) if study.spec.multi_objective else []
    front: set[int] = set()
    if study.spec.multi_objective:
        front = {m.trial.run_id for m in pareto_front(backend, study.id).members}
    return judge(study.spec, k, finished, ranked, front)


def _resume(
    backend: Backend, store: ArtifactStore, deletion: Deletion, deleter: Deleter, *, dry_run: bool
) -> GcTrial:
    """A deletion that was cut short: delete what is left of its plan, mark it DONE."""
    state = backend.db.run(lambda s: repo.get_run(s, deletion.run_id).state)
    outcome = "would_resume" if dry_run else "resumed"
    if not dry_run:
        if not delete_planned(
            store, deletion.paths, pause=deleter.pause, should_stop=deleter.should_stop
        ):
            outcome = "interrupted"
        else:
            backend.db.run(lambda s: repo.finish_deletion(s, deletion.run_id))
            logger.info(
                "trial %d: finished its deletion cut short (%d bytes)",
                deletion.number,
                deletion.bytes,
            )
    return GcTrial(
        number=deletion.number,
        state=state,
        reason=deletion.reason,
        paths=deletion.paths,
        bytes=deletion.bytes,
        outcome=outcome,
        note=f"started {deletion.started_at:%Y-%m-%d %H:%M:%S %Z} by {deletion.worker}",
    )


def _delete(
    backend: Backend,
    store: ArtifactStore,
    study: Study,
    verdict: Verdict,
    k: int,
    deleter: Deleter,
    *,
    dry_run: bool,
) -> GcTrial:
    trial = verdict.trial
    checkpoints, exports = backend.db.run(lambda s: repo.trial_artifacts(s, trial.run_id))
    planned = plan_deletion(
        store, TrialArtifacts(study.name, trial.number, checkpoints=checkpoints, exports=exports)
    )
    result = GcTrial(
        number=trial.number,
        state=trial.state,
        reason=verdict.reason,
        paths=planned,
        bytes=sum(p.bytes for p in planned),
        outcome="would_delete" if dry_run else "deleted",
    )
    if dry_run:
        until = backend.db.run(lambda s: repo.pinned_until(s, trial.run_id, repo.now()))
        if until is None:
            return result
        why = f"a download of it is in flight (pinned until {until:%H:%M:%S %Z})"
        return replace(result, outcome="skipped", note=why)
    refusal = backend.db.run(
        lambda s: repo.claim_deletion(
            s,
            trial.run_id,
            study_id=study.id,
            paths=planned,
            policy=policy_name(k),
            reason=verdict.reason,
            trigger=deleter.trigger,
            worker=deleter.worker,
        )
    )
    if refusal is not None:
        return replace(result, outcome="skipped", note=refusal)
    if not delete_planned(store, planned, pause=deleter.pause, should_stop=deleter.should_stop):
        return replace(result, outcome="interrupted", note="stopped; the next pass finishes it")
    backend.db.run(lambda s: repo.finish_deletion(s, trial.run_id))
    logger.info(
        "study %s trial %d: deleted %d path(s), %d bytes (%s: %s)",
        study.name,
        trial.number,
        len(planned),
        result.bytes,
        policy_name(k),
        verdict.reason,
    )
    return result
