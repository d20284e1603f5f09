"""The study manager: a short loop over the parts that claim, run and finish trials.

One manager owns a number of local trial slots and works on every RUNNING study it is allowed
to (one study for `tuner run`, all of them for `tuner worker` and `tuner serve`). Any number of
managers may share one database: slots are reserved under a lock on the study row, and a
manager whose heartbeat goes stale has its trials taken over by the others. Each tick:

1. fence: stop every local trial if the leases could not be renewed in time (`Fencing`);
2. reap: take over the runs of managers that are gone (`Liveness`);
3. supervise each active trial: ingest, observe, keep, exit, store sync, finish
   (`TrialSupervisor`);
4. claim: start trials of the claimable studies in the free slots (`Scheduler`, `Launcher`);
5. renew the leases when due (`Fencing`).

Beside the loop, `RetentionPass` applies the studies' retention policies on a thread of its
own: a trial's end only marks its study due.

The manager never imports TensorFlow; event files are read by `tuner.outputs.events`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from tuner.artifacts.infrastructure import is_infrastructure
from tuner.artifacts.object_store import ObjectStore
from tuner.artifacts.store import ArtifactStore
from tuner.artifacts.uploads import Uploader
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import LeaseLostError, first_line
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.fencing import Fencing
from tuner.engine.hand_stops import HandStops
from tuner.engine.launcher import Launcher
from tuner.engine.leases import new_worker_id
from tuner.engine.liveness import Liveness
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import Decision, RunState, Step
from tuner.engine.ray_executor import RayExecutor
from tuner.engine.retention import RetentionPass
from tuner.engine.scheduler import REMOTE_FULL_WAIT, Scheduler
from tuner.engine.store_sync import StoreSync
from tuner.engine.supervisor import build_supervisor
from tuner.engine.writes import LeaseWrites
from tuner.persistence import is_unavailable
from tuner.persistence.studies import running_studies, set_study_state, trial_counts
from tuner.study.operations import Backend, OptunaStudyMissingError
from tuner.trial.execution import wait_for_exit
from tuner.trial.resources import Capacity, ResourceLedger
from tuner.trial.warm_starts import WarmStarts

logger = logging.getLogger(__name__)

#: Seconds between touches of the liveness file.
ALIVE_EVERY = 5.0


def default_worker_id() -> str:
    """Unique per start: `<host>:<pid>:<nonce>` (see `tuner.engine.leases.WorkerId`)."""
    return new_worker_id()


class _RunningProcesses(Collection[int]):
    """The run ids of active trials whose process still runs: a trial that exited frees its
    GPUs and CPUs while its artifacts upload (it keeps its slot and lease until recorded)."""

    def __init__(self, active: dict[int, ActiveTrial]) -> None:
        self._active = active

    def __contains__(self, run_id: object) -> bool:
        trial = self._active.get(run_id) if isinstance(run_id, int) else None
        return trial is not None and trial.exit_code is None

    def __iter__(self) -> Iterator[int]:
        return (r for r, t in list(self._active.items()) if t.exit_code is None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class StudyManager:
    """Runs trials in local slots until told to stop (or, with `studies`, until they end)."""

    def __init__(
        self,
        backend: Backend,
        registry: TrainerRegistry,
        settings: Settings,
        *,
        slots: int,
        studies: Sequence[str] | None = None,
        worker_id: str | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self.backend = backend
        self.db = backend.db
        self.settings = settings
        self.study_names = list(studies) if studies is not None else None
        self.worker_id = worker_id or default_worker_id()
        self.store = ArtifactStore(settings.artifact_root)
        self.warm = WarmStarts(self.store.root / ".warm", enabled=settings.warm_starts)
        #: The trials this manager runs, by run id (shared by the parts below).
        self.active: dict[int, ActiveTrial] = {}
        #: GPUs and CPUs held by the trials in `active` (`capacity`: None, GPUs not managed).
        self.resources = ResourceLedger(capacity or Capacity(), _RunningProcesses(self.active))
        self._assemble(registry, slots)
        self._stopping = False
        self._interrupted = False
        #: Touched while the loop turns (`tuner worker-alive` reads it: a container's liveness).
        self.alive_file: Path | None = None
        self._alive_at = 0.0

    def _assemble(self, registry: TrainerRegistry, slots: int) -> None:
        """The parts, each given only what its job needs."""
        self.optuna = OptunaLink(self.backend)
        self.fencing = Fencing(self.db, self.settings)
        self.liveness = Liveness(
            self.backend,
            self.store,
            self.optuna,
            worker_id=self.worker_id,
            timeout=self.settings.heartbeat_timeout,
        )
        writes = LeaseWrites(self.db)
        self.store_sync = StoreSync(
            self._uploader(), self.store, writes, self.settings, back_off=self._back_off
        )
        self.scheduler = Scheduler(
            self.db, registry, self.store, self.store_sync, self.resources, self.active, slots=slots
        )
        self.supervisor = build_supervisor(
            self.backend,
            self.store,
            self.settings,
            warm=self.warm,
            fencing=self.fencing,
            optuna_link=self.optuna,
            writes=writes,
            store_sync=self.store_sync,
            back_off=self._back_off,
        )
        self.launcher = Launcher(
            self.backend,
            registry,
            self.store,
            self.settings,
            worker_id=self.worker_id,
            resources=self.resources,
            warm=self.warm,
            writes=writes,
            fencing=self.fencing,
            optuna_link=self.optuna,
            active=self.active,
            back_off=self._back_off,
            end_study=self.scheduler.end_study,
        )
        self.hand_stops = HandStops(self.db)
        self.retention = RetentionPass(
            self.backend, self.settings, worker_id=self.worker_id, studies=self.study_names
        )
        self.remote: RayExecutor | None = None
        if self.settings.executor == "ray":
            self.remote = RayExecutor(
                self.backend,
                self.store,
                self.settings,
                self.optuna,
                worker_id=self.worker_id,
                address=self.settings.ray_address,
            )
            self.launcher.remote = self.remote
            self.scheduler.remote = self.remote.trials
            self.scheduler.refusal = self.remote.refusal
            self.scheduler.shows_waits = True

    def _uploader(self) -> Uploader | None:
        """With an object store, trials run in the local `store` and are uploaded at the end."""
        if not self.settings.artifact_url:
            return None
        return Uploader(
            ObjectStore(self.settings.artifact_url),
            self.store,
            give_up_after=self.settings.upload_give_up_seconds,
        )

    @property
    def prune_latencies(self) -> list[float]:
        """Seconds from an objective value's event being written to the prune decision (made
        here, or on a cluster's node for the trials that ended there)."""
        remote = self.remote.prune_latencies if self.remote is not None else []
        return [*self.supervisor.ingestor.prune_latencies, *remote]

    @property
    def in_flight(self) -> int:
        """The trials this manager runs: here, and on a cluster."""
        return len(self.active) + (len(self.remote.trials) if self.remote is not None else 0)

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self, *, until_done: bool = True, should_stop: Callable[[], bool] | None = None
    ) -> None:
        """Tick until the manager's studies are all finished (or `should_stop()`)."""
        try:
            while not (should_stop and should_stop()):
                busy = self.tick()
                if until_done and not busy and not self.in_flight:
                    break
                # Wakes early when a trial exits, so the next one starts at once.
                if self.remote is not None and not self.active:
                    full = self.scheduler.slots_full()
                    self.remote.wait(REMOTE_FULL_WAIT if full else self.settings.poll_interval)
                else:
                    wait_for_exit(
                        [t.process for t in self.active.values()],
                        self.settings.poll_interval,
                        also=self.warm.wake_fds(),
                    )
        finally:
            self.shutdown()

    def tick(self) -> bool:
        """One pass of the numbered steps above. Returns whether work remains here."""
        self._notice_hold_up()
        self.fencing.fence_if_unrenewed(list(self.active.values()))
        if self.remote is not None:
            self.remote.fence_if_unrenewed(self.fencing.after)
        self._touch_alive_file()
        try:
            if self.liveness.reap_due():
                self._isolated(
                    "taking over stale runs", lambda: self.liveness.reap_stale(self.active)
                )
                # Every running study: an asked trial is told by whoever finds it.
                studies = self.db.run(lambda s: running_studies(s, None))
                self._isolated(
                    "telling unattached Optuna trials",
                    lambda: self.liveness.tell_unattached_asks(studies),
                )
            self.launcher.clean_abandoned()
            for trial in list(self.active.values()):
                self._supervise(trial)
            self._isolated(
                "reading the stops asked for by hand",
                lambda: self.hand_stops.apply(list(self.active.values())),
            )
            if self.remote is not None:
                remote = self.remote
                self._isolated(
                    "watching the trials on Ray",
                    lambda: remote.watch(renew_every=self.fencing.every),
                )
            self.warm.reap_orphans()
            self.retention.tick()
            more = self._claim()
            if self.fencing.renewal_due():
                self._renew_leases()
            return more or bool(self.in_flight)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.liveness.judge.database_failed()
            # Trials keep running (until their leases would lapse: `Fencing`); what they
            # write is read and buffered until the database is back.
            logger.warning("database unavailable, retrying: %s", first_line(exc))
            return True

    def _notice_hold_up(self) -> None:
        """A manager held up past its fence time (paused, starved) says so, and makes its
        pooled connections again: their first use would fail as if the database were away."""
        gap = self.fencing.held_up_for()
        if gap is None:
            return
        logger.warning(
            "this manager was held up for %.0f s (paused or starved): its leases lapsed, its "
            "trials were fenced; connections to the database are made again",
            gap,
        )
        self.db.dispose()
        self.backend.storage.engine.dispose()

    def _renew_leases(self) -> None:
        for run_id in self.fencing.renew(list(self.active.values())):
            self._abandon(self.active[run_id], "another manager took its run over")

    def _touch_alive_file(self) -> None:
        now = time.monotonic()
        if self.alive_file is None or now - self._alive_at < ALIVE_EVERY:
            return
        self._alive_at = now
        try:
            self.alive_file.parent.mkdir(parents=True, exist_ok=True)
            self.alive_file.touch()
        except OSError as exc:
            logger.warning("liveness file %s not touched: %s", self.alive_file, exc)

    def _isolated(self, what: str, work: Callable[[], None]) -> None:
        """Run `work`; an error other than the database's is logged, not fatal."""
        try:
            work()
        except Exception as exc:
            if is_unavailable(exc):
                raise
            logger.exception("error while %s (the manager goes on)", what)

    # -- supervising -----------------------------------------------------------------------------

    def _supervise(self, trial: ActiveTrial) -> None:
        """One step of one trial; what goes wrong with it ends that trial, not the manager."""
        if trial.run_id not in self.active:
            return  # ended meanwhile, with the other trials of its study
        try:
            if self.supervisor.step(trial):
                del self.active[trial.run_id]
                self.retention.trial_ended(trial.study)
        except LeaseLostError:
            self._abandon(trial, "another manager took its run over")
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if self.optuna.gone(trial.study):
                self._lost_optuna_study(trial.study)
                return
            trial.log.exception("internal error")
            self._end_on_error(trial, exc)

    def _end_on_error(self, trial: ActiveTrial, exc: Exception) -> None:
        self.supervisor.end_on_error(trial, exc)
        self.active.pop(trial.run_id, None)

    def _abandon(self, trial: ActiveTrial, why: str) -> None:
        self.supervisor.abandon(trial, why)
        self.active.pop(trial.run_id, None)

    # -- claiming --------------------------------------------------------------------------------

    def _claim(self) -> bool:
        """Fill free slots, one trial per claimable study in turn; whether work remains."""
        if self.scheduler.remote_slots_full_and_read_lately():
            return True
        running, counts = self.db.run(self._running_studies_and_counts)
        self.liveness.judge.database_answered(time.monotonic())
        self._stop_trials_of_inactive_studies(running)
        eligible, more = self.scheduler.claimable(running, counts)
        while eligible and not self._claims_over():
            for study in list(eligible):
                if self._claims_over():
                    break
                if not self._claim_isolated(study):
                    eligible.remove(study)
        return more

    def _claims_over(self) -> bool:
        return self.scheduler.slots_full() or self._stopping or self._interrupted

    def _running_studies_and_counts(
        self, session: Any
    ) -> tuple[list[Study], dict[int, dict[str, int]]]:
        studies = running_studies(session, self.study_names)
        return studies, {s.id: trial_counts(session, s.id) for s in studies}

    def _claim_isolated(self, study: Study) -> bool:
        """Claim and start one trial; an error pauses (or backs off) this study, not the rest."""
        try:
            return self.launcher.claim_and_start(study)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if self.optuna.gone(study):
                self._lost_optuna_study(study, "a trial could not be started: ")
            elif is_infrastructure(exc):
                self._back_off(study, f"the artifact store failed: {first_line(exc)}")
            else:
                logger.exception("study %s: could not start a trial", study.name)
                reason = (
                    f"paused: a trial could not be started ({type(exc).__name__}: "
                    f"{first_line(exc)}); fix the cause and resume the study"
                )
                self.db.run(lambda s: set_study_state(s, study.id, "STOPPED", reason))
            return False

    def _back_off(self, study: Study, why: str) -> None:
        self.scheduler.back_off(study, why)

    def _stop_trials_of_inactive_studies(self, running: list[Study]) -> None:
        """Stop local trials of studies that were stopped (e.g. over the API) or deleted."""
        running_ids = {s.id for s in running}
        if self.remote is not None:
            self.remote.stop_studies(running_ids)
        for trial in self.active.values():
            if trial.study.id not in running_ids:
                trial.stop_with(RunState.STOPPED, "study stopped", level=logging.INFO)

    def _lost_optuna_study(self, study: Study, context: str = "") -> None:
        """Pause a study whose Optuna study is gone, with the reason (resuming cannot help: it
        says what to do), and stop its local trials; nothing is told to Optuna or enqueued."""
        gone = OptunaStudyMissingError(study.name)
        reason = f"paused: {context}{gone}"
        self.optuna.forget(study)
        self.db.run(lambda s: set_study_state(s, study.id, "STOPPED", reason))
        logger.error("study %s: %s", study.name, reason)
        for trial in [t for t in self.active.values() if t.study.id == study.id]:
            trial.done.update({Step.TOLD, Step.REQUEUED})
            if trial.decision is None:
                why = f"stopped: its Optuna study {study.name!r} was deleted outside the tuner"
                trial.decision = Decision(RunState.STOPPED, why)
            self._end_on_error(trial, gone)

    # -- stopping --------------------------------------------------------------------------------

    def stop_requested(self) -> None:
        """Ask every local trial to stop (on SIGTERM/SIGINT, before `shutdown`) and launch none.

        The outcome is set here, with the signal: a trial whose exit a tick sees before
        `shutdown` runs was stopped, not killed by an unknown hand (it would be FAILED).
        """
        self._interrupted = True
        for trial in self.active.values():
            trial.stop_with(
                RunState.STOPPED, "interrupted: its manager was asked to stop", level=logging.INFO
            )

    def shutdown(self, reason: str = "interrupted") -> None:
        """Stop every local trial (SIGTERM, SIGKILL after the grace) and record it STOPPED.

        A stopped trial does not use up the budget: its params are enqueued again, so resuming
        the study runs them first.
        """
        if self._stopping:
            return
        self._stopping = True
        for trial in self.active.values():
            trial.process.request_stop()
        deadline = time.monotonic() + self.settings.stop_grace_seconds
        for trial in list(self.active.values()):
            remaining = max(0.0, deadline - time.monotonic())
            self.supervisor.finish_stopped(trial, reason, remaining)
        self.active.clear()
        if self.remote is not None:
            self.remote.shutdown(f"{reason}: its manager stopped", self.settings.stop_grace_seconds)
        self.fencing.close()
        self.warm.close()
        self.store_sync.close()
        self.retention.close(drain=not self._interrupted)
