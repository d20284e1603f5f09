"""Liveness: take over the runs of managers that are gone, and run their params again.

Optuna's own heartbeat (`storages/_heartbeat.py`) only works inside `optimize()`; this is its
counterpart for trials run by any number of managers. A manager on this host whose process no
longer exists is gone at once; any other when `StalenessJudge` has watched its heartbeat stay
the same for a full timeout of this manager's own clock. A trial process of a taken-over run
on this host (its manager paused or dead) is killed first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Container
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.artifacts.store import ArtifactStore
from tuner.domain.entities import Study, TrialRun
from tuner.engine.leases import StalenessJudge, WorkerId
from tuner.engine.optuna_link import OptunaLink
from tuner.persistence import Database
from tuner.persistence.leases import take_over
from tuner.persistence.runs import active_runs, attached_trial_ids
from tuner.persistence.studies import get_study
from tuner.study import viewers
from tuner.study.operations import Backend
from tuner.trial.execution import process_exists, signal_group

logger = logging.getLogger(__name__)


def _writes_to(pid: int, log_path: Path) -> bool:
    """Whether a process's stdout is that log (a warm trial's command line is its parent's)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/fd/1")) == log_path
    except OSError:
        return False


class Liveness:
    """Finds stale runs of other managers and takes them over, at most every `every` s."""

    def __init__(
        self,
        backend: Backend,
        store: ArtifactStore,
        optuna_link: OptunaLink,
        *,
        worker_id: str,
        timeout: float,
    ) -> None:
        self.backend = backend
        self.db: Database = backend.db
        self.store = store
        self.optuna = optuna_link
        self.worker_id = worker_id
        self.judge = StalenessJudge(timeout)
        self.every = min(10.0, timeout / 4)
        self._last_reap = 0.0
        #: Optuna trial id -> monotonic time it was first seen RUNNING with no run of ours.
        self._unattached: dict[int, float] = {}

    def reap_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_reap < self.every:
            return False
        self._last_reap = now
        return True

    def tell_unattached_asks(self, studies: list[Study]) -> None:
        """Tell FAIL the Optuna trials of these studies that are RUNNING with no run of ours,
        once this manager has seen them so for a full timeout of its own clock: a manager asked
        for them and never attached them (held up past its reservation's takeover, or gone).
        Left RUNNING, TPE's constant liar and optuna-dashboard would count them forever. An
        enqueued retry among them is enqueued again, so that it is not lost."""
        now = time.monotonic()
        seen_now: dict[int, float] = {}
        for study in studies:
            if self.optuna.gone(study):
                continue
            opened = self.optuna.study(study)
            running = opened.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            ids = [t._trial_id for t in running]
            attached = self.db.run(functools.partial(attached_trial_ids, optuna_trial_ids=ids))
            for trial in running:
                if trial._trial_id in attached:
                    continue
                first = self._unattached.get(trial._trial_id, now)
                seen_now[trial._trial_id] = first
                if now - first >= self.judge.timeout:
                    self._tell_unattached(study, trial)
                    seen_now.pop(trial._trial_id)
        self._unattached = seen_now

    def _tell_unattached(self, study: Study, trial: FrozenTrial) -> None:
        self.optuna.fail(study, trial.number)
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is not None:
            self.optuna.requeue(study, trial.params, retry_of=int(retry_of))
        logger.warning(
            "study %s: Optuna trial %d was asked by a manager that never attached it (held up "
            "or gone); told FAIL%s",
            study.name,
            trial.number,
            f", its params (a retry of trial {retry_of}) enqueued again" if retry_of else "",
        )

    def reap_stale(self, own_runs: Container[int]) -> None:
        """Take over the stale running runs of other managers (`own_runs` are this one's)."""
        host = socket.gethostname()
        runs = [
            r
            for r in self.db.run(active_runs)
            if r.id not in own_runs and r.worker != self.worker_id
        ]
        stale = {r.id for r in self.judge.stale(runs, time.monotonic())}
        for run in runs:
            owner = WorkerId.parse(run.worker)
            local = owner.host == host
            local_dead = local and owner.pid is not None and not process_exists(owner.pid)
            if not local_dead and run.id not in stale:
                continue
            if local:
                self._kill_local_trial(run)
            self._take_over(run)

    def _kill_local_trial(self, run: TrialRun) -> None:
        """SIGKILL a run's trial process group on this host, if the pid is still that trial."""
        if not run.pid or not run.output_dir:
            return
        try:
            cmdline = Path(f"/proc/{run.pid}/cmdline").read_bytes()
        except OSError:
            return
        if os.fsencode(str(self.store.resolve(run.output_dir))) in cmdline or (
            run.log_path and _writes_to(run.pid, self.store.resolve(run.log_path))
        ):
            signal_group(run.pid, signal.SIGKILL)

    def _take_over(self, run: TrialRun) -> None:
        reason = f"its manager {run.worker} stopped renewing its lease; the trial runs again"
        if run.number is None:
            reason = f"its manager {run.worker} stopped renewing it before a trial was attached"
        if not self.db.run(lambda s: take_over(s, run, reason=reason)):
            return  # renewed meanwhile, or taken by another manager
        what = f"trial {run.number}" if run.number is not None else "a reserved slot"
        logger.warning("study id %s %s: %s", run.study_id, what, reason)
        if run.number is None or run.optuna_trial_id is None:
            return
        study = self.db.run(lambda s: get_study(s, run.study_id))
        stopped = viewers.Outcome("STOPPED", reason)
        if self.optuna.gone(study):
            # Nothing to tell or enqueue; the study's next claim pauses it, with the reason.
            viewers.trial_finished(
                self.backend, self.store, study, run.id, stopped, optuna_attrs_too=False
            )
            return
        frozen = self.optuna.trial(run.optuna_trial_id)
        running = frozen.state is TrialState.RUNNING
        viewers.trial_finished(
            self.backend, self.store, study, run.id, stopped, optuna_attrs_too=running
        )
        if running:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self.optuna.fail(study, run.number)
        # Only the manager whose takeover won gets here: the params are enqueued once.
        self.optuna.requeue(study, frozen.params, retry_of=run.number)
