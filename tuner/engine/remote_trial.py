"""One trial's supervisor on another machine, next to its trainer, under the trial's lease.

A manager with a cluster executor (`tuner.engine.ray_executor`) claims a trial as always (a
run row under its lease, Optuna's params, the trial attached) and sends a `NodeJob` to a node.
There, `run_on_node`:

1. takes the lease over from the manager (`hand_over`: the epoch grows, the run records its
   executor, node and task); a manager that no longer held it gets nothing started;
2. starts the trainer cold, with an environment built on this node (`tuner.trial.environment`)
   and the devices the cluster gave the task;
3. supervises it exactly as a local manager does (`build_supervisor`: ingest, prune, keep the
   best checkpoint, upload, record its end), renews the lease itself and fences itself (its
   watchdog kills the trainer if this process dies or stalls);
4. stops it when the database says so: a stop request on the run (its manager shuts down) or
   its study no longer running, read every half second.

The database is the only channel with the manager: nothing here imports the cluster's library,
so a test (or another executor) can run a node's part on its own. Warm starts are not used on a
node: a preloading parent would have to outlive the task that started it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.artifacts.object_store import ObjectStore
from tuner.artifacts.store import ArtifactStore
from tuner.artifacts.uploads import Uploader
from tuner.domain.config import Settings
from tuner.domain.entities import Lease, Study
from tuner.domain.errors import LeaseLostError, first_line
from tuner.domain.trainers import Trainer
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.fencing import Fencing, watchdog_for
from tuner.engine.finisher import end_unstarted
from tuner.engine.hand_stops import HandStops
from tuner.engine.leases import new_worker_id
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import Decision, RunState, Step
from tuner.engine.store_sync import StoreSync
from tuner.engine.supervisor import TrialSupervisor, build_supervisor
from tuner.engine.writes import LeaseWrites
from tuner.outputs.reader import TrialOutputs
from tuner.persistence import is_unavailable
from tuner.persistence.leases import hand_over, stop_signal
from tuner.persistence.runs import set_pid, stops_by_hand
from tuner.study import viewers
from tuner.study.operations import Backend, OptunaStudyMissingError
from tuner.trial.execution import TrialProcess, build_command, wait_for_exit
from tuner.trial.resources import GPU_VARIABLE, Need
from tuner.trial.warm_starts import WarmStarts
from tuner.trial.watchdog import Watchdog

logger = logging.getLogger(__name__)

#: Seconds between reads of the run's stop request and its study's state (the stop's latency).
STOP_POLL = 0.5


@dataclass(frozen=True)
class NodeJob:
    """What a manager sends with a claimed trial: everything the node needs but the database."""

    settings: Settings
    study: Study
    #: The manager's lease on the run, handed over when the node starts the trial.
    lease: Lease
    number: int
    optuna_trial_id: int
    params: dict[str, Any]
    #: The registry entry, resolved by the manager (the node runs what the server allows).
    trainer: Trainer


@dataclass(frozen=True)
class NodeOutcome:
    """How a node's part ended: the recorded state (None: nothing recorded, the run was no
    longer this node's) and what it measured."""

    state: str | None
    reason: str | None
    worker: str
    pid: int | None = None
    prune_latencies: list[float] = field(default_factory=list)


def run_on_node(
    job: NodeJob,
    *,
    executor: str,
    node: str,
    task: str,
    gpu_ids: Sequence[str] | None = None,
) -> NodeOutcome:
    """Run one claimed trial here to its recorded end (see the module's docstring)."""
    job = dataclasses.replace(job, settings=node_settings(job.settings, os.environ))
    backend, optuna_link = _connection(job.settings.database_url)
    node_part = NodeSupervisor(backend, job, _watchdog(job.settings), optuna_link)
    return node_part.run(executor=executor, node=node, task=task, gpu_ids=gpu_ids)


#: A process that runs one trial after another (a Ray worker) keeps its database connections,
#: its opened Optuna studies and its watchdog from one to the next: a trial pays for none.
_connections: dict[str, tuple[Backend, OptunaLink]] = {}
_watchdogs: dict[float, Watchdog] = {}


def _connection(url: str) -> tuple[Backend, OptunaLink]:
    found = _connections.get(url)
    if found is None:
        backend = Backend.connect(url, auto_init=False, pre_ping=False)
        found = _connections[url] = (backend, OptunaLink(backend))
    return found


def _watchdog(settings: Settings) -> Watchdog:
    """One per process: it guards the trial this process runs now, and dies with it."""
    watchdog = _watchdogs.get(settings.stop_grace_seconds)
    if watchdog is None:
        watchdog = _watchdogs[settings.stop_grace_seconds] = watchdog_for(settings)
    return watchdog


def node_settings(manager: Settings, environ: Mapping[str, str]) -> Settings:
    """The manager's settings, but for this node's own local dir for the trials it runs (its
    `TUNER_WORK_DIR`, with an object store) when the node's environment sets one."""
    work_dir = environ.get("TUNER_WORK_DIR")
    if manager.artifact_url and work_dir:
        return manager.model_copy(
            update={"artifact_root": Path(work_dir), "work_dir": Path(work_dir)}
        )
    return manager


class NodeSupervisor:
    """The parts a manager would use for this one trial, on this node."""

    def __init__(
        self,
        backend: Backend,
        job: NodeJob,
        watchdog: Watchdog | None = None,
        optuna_link: OptunaLink | None = None,
    ) -> None:
        self.backend = backend
        self.db = backend.db
        self.job = job
        self.settings = job.settings
        self.worker_id = new_worker_id()
        self.store = ArtifactStore(self.settings.artifact_root)
        self.optuna = optuna_link or OptunaLink(backend)
        self.fencing = Fencing(self.db, self.settings, watchdog)
        self.writes = LeaseWrites(self.db)
        uploader = None
        if self.settings.artifact_url:
            uploader = Uploader(
                ObjectStore(self.settings.artifact_url),
                self.store,
                give_up_after=self.settings.upload_give_up_seconds,
            )
        self.store_sync = StoreSync(
            uploader, self.store, self.writes, self.settings, back_off=self._back_off
        )
        self.warm = WarmStarts(self.store.root / ".warm", enabled=False)
        self.supervisor: TrialSupervisor = build_supervisor(
            backend,
            self.store,
            self.settings,
            warm=self.warm,
            fencing=self.fencing,
            optuna_link=self.optuna,
            writes=self.writes,
            store_sync=self.store_sync,
            back_off=self._back_off,
        )
        self._stop_checked = 0.0
        self.hand_stops = HandStops(self.db, every=STOP_POLL)

    def _back_off(self, study: Study, why: str) -> None:
        logger.warning("study %s: %s (on this node)", study.name, why)

    def run(
        self, *, executor: str, node: str, task: str, gpu_ids: Sequence[str] | None
    ) -> NodeOutcome:
        job = self.job
        try:
            lease = self.db.run(
                lambda s: hand_over(
                    s, job.lease, worker=self.worker_id, executor=executor, node=node, task=task
                )
            )
        except LeaseLostError:
            why = "its run was no longer its manager's when the task started"
            logger.warning("study %s trial %d: %s; nothing run", job.study.name, job.number, why)
            return NodeOutcome(None, why, self.worker_id)
        # The hand-over renewed the lease and read no stop: the next of each is due later.
        self.fencing.last_renewal = self._stop_checked = time.monotonic()
        try:
            if self._stopped_by_hand_before_start(lease):
                return NodeOutcome("PRUNED", "stopped by hand before it started", self.worker_id)
            trial = self._start(lease, gpu_ids)
            if trial is None:
                return NodeOutcome("FAILED", "could not start", self.worker_id)
            trial.log.info("started on %s node %s (pid %d)", executor, node, trial.process.pid)
            return self._supervise(trial)
        finally:
            self.fencing.close()
            self.store_sync.close()

    # -- starting --------------------------------------------------------------------------------

    def _stopped_by_hand_before_start(self, lease: Lease) -> bool:
        """A trial stopped by hand while its task waited for a node: ended PRUNED here, its
        trainer never started."""
        request = self.db.run(lambda s: stops_by_hand(s, [lease.run_id])).get(lease.run_id)
        if request is None:
            return False
        job = self.job
        end_unstarted(
            self.backend,
            self.store,
            self.optuna,
            job.study,
            lease,
            number=job.number,
            optuna_params={},
            state=RunState.PRUNED,
            reason=request.reason(None, started=False),
        )
        return True

    def _start(self, lease: Lease, gpu_ids: Sequence[str] | None) -> ActiveTrial | None:
        job, study = self.job, self.job.study
        spec = study.spec
        paths = self.store.trial_paths(study.name, job.number)
        command = build_command(
            job.trainer,
            args=list(spec.args),
            params=job.params,
            output_dir_flag=spec.output_dir_flag,
            output_dir=paths.output_dir,
            trial_number=job.number,
            study_name=study.name,
            base_env=Need.of(spec).base_environment(),
        )
        if gpu_ids is not None:  # the cluster placed it: it sees its devices, and only those
            command.env[GPU_VARIABLE] = ",".join(gpu_ids)
        viewers.trial_started(
            self.backend,
            self.store,
            study,
            number=job.number,
            optuna_trial_id=job.optuna_trial_id,
            paths=paths,
            trainer_values=job.params,
        )
        try:
            paths.output_dir.mkdir(parents=True, exist_ok=True)
            process = TrialProcess.start(command, paths.log_path)
        except (OSError, ValueError) as exc:
            self._start_failed(lease, command.argv[0], exc)
            return None
        self.fencing.watch(process.pid, first=True)
        trial = ActiveTrial(
            run_id=lease.run_id,
            study=study,
            number=job.number,
            optuna_trial_id=job.optuna_trial_id,
            paths=paths,
            process=process,
            outputs=TrialOutputs(paths.output_dir, spec),
            lease=lease,
            command=command,
            params=job.params,
        )
        self.writes.write(lease, lambda s: set_pid(s, lease.run_id, process.pid))
        return trial

    def _start_failed(self, lease: Lease, program: str, exc: Exception) -> None:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        end_unstarted(
            self.backend,
            self.store,
            self.optuna,
            self.job.study,
            lease,
            number=self.job.number,
            optuna_params={},  # a FAILED trial is not run again
            state=RunState.FAILED,
            reason=f"could not start {program} on its node: {detail}",
        )

    # -- supervising -----------------------------------------------------------------------------

    def _supervise(self, trial: ActiveTrial) -> NodeOutcome:
        """Tick until the trial's end is recorded, or its lease is lost."""
        try:
            while True:
                if self._tick(trial):
                    break
                wait_for_exit([trial.process], self.settings.poll_interval)
        except LeaseLostError:
            self.supervisor.abandon(trial, "its lease was taken over")
            return self._outcome(trial, recorded=False)
        except BaseException as exc:  # a cancelled task (KeyboardInterrupt), a signal
            if isinstance(exc, Exception):
                raise
            self.supervisor.finish_stopped(
                trial, "its task was cancelled", self.settings.stop_grace_seconds
            )
            raise
        return self._outcome(trial, recorded=True)

    def _tick(self, trial: ActiveTrial) -> bool:
        """One step of the trial, its stop signals and its lease; True once its end is
        recorded. A database outage is waited out (the fencing stops the trainer in time)."""
        try:
            if self.supervisor.step(trial):
                return True
            self._read_stop_signal(trial)
            if self.fencing.renewal_due() and self.fencing.renew([trial]):
                raise LeaseLostError(trial.run_id)
        except LeaseLostError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                logger.warning("database unavailable, retrying: %s", first_line(exc))
                return False
            self._end_on_error(trial, exc)
            return True
        return False

    def _read_stop_signal(self, trial: ActiveTrial) -> None:
        now = time.monotonic()
        if trial.stop is not None or now - self._stop_checked < STOP_POLL:
            return
        self._stop_checked = now
        why = self.db.run(lambda s: stop_signal(s, trial.run_id))
        if why is not None:
            trial.stop_with(RunState.STOPPED, why, level=logging.INFO)
        else:
            self.hand_stops.apply([trial])

    def _end_on_error(self, trial: ActiveTrial, exc: Exception) -> None:
        if self.optuna.gone(trial.study):
            self.optuna.forget(trial.study)
            trial.done.update({Step.TOLD, Step.REQUEUED})
            if trial.decision is None:
                why = (
                    f"stopped: its Optuna study {trial.study.name!r} was deleted outside the tuner"
                )
                trial.decision = Decision(RunState.STOPPED, why)
            exc = OptunaStudyMissingError(trial.study.name)
        else:
            trial.log.exception("internal error")
        self.supervisor.end_on_error(trial, exc)

    def _outcome(self, trial: ActiveTrial, *, recorded: bool) -> NodeOutcome:
        decision = trial.decision
        return NodeOutcome(
            str(decision.state) if recorded and decision else None,
            decision.reason if recorded and decision else None,
            self.worker_id,
            pid=trial.process.pid,
            prune_latencies=list(self.supervisor.ingestor.prune_latencies),
        )
