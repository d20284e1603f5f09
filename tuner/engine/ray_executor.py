"""Trials on a Ray cluster: the manager claims, Ray places, the node supervises.

With `--executor ray` a manager claims trials exactly as with local slots (leases, Optuna,
each study's limits; `--slots` bounds how many it has in flight) and sends each one to Ray as a
task asking for the study's `cpusPerTrial` CPUs (1 without it) and `gpusPerTrial` GPUs, so that
Ray picks the node and sets the task's `CUDA_VISIBLE_DEVICES`. On the node the task runs the
trial's supervisor next to the trainer (`tuner.engine.remote_trial`), which takes the lease over
from the manager. The database is the only channel between them:

- while the task waits for its node, the manager holds and renews the lease; once the node holds
  it, the manager only watches the run row;
- a node that dies (or a task Ray kills) stops renewing: the lease lapses and a manager takes
  the run over and runs its params again, once, as for a local trial whose manager died;
- a manager that sees the run taken from its task (its lease lost, the run ended by another)
  cancels the task with force, so the trainer stops on its node (the node's watchdog kills the
  trainer when the task's process dies);
- a manager that shuts down writes a stop request on its runs; each node stops its trainer and
  records the trial STOPPED (its params run again); tasks still running after the grace are
  cancelled with force.

Ray is an optional dependency (`pip install 'estimator-tuner[ray]'`): only this module imports
it, and only when a manager is started with the Ray executor. Ray never retries a task itself
(`max_retries=0`): a trial is run again only through its lease, so it runs in one place.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.entities import Lease, Study
from tuner.domain.errors import ConfigError, first_line
from tuner.domain.telemetry import PRUNE_LATENCY
from tuner.domain.trainers import Trainer
from tuner.engine.finisher import end_unstarted
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import RunState
from tuner.engine.ray_capacity import ClusterCapacity, fits, ray_cpus
from tuner.engine.remote_trial import NodeJob, NodeOutcome, run_on_node
from tuner.persistence import Database
from tuner.persistence.leases import holders, renew_leases, request_stop
from tuner.study.operations import Backend
from tuner.trial.resources import Need

logger = logging.getLogger(__name__)

#: Seconds between reads of the runs' lease holders.
HOLDERS_EVERY = 1.0
#: The Ray namespace the manager's driver joins (tasks are not named; it keeps them apart).
NAMESPACE = "estimator-tuner"


def import_ray() -> Any:
    """Ray, or a `ConfigError` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'estimator-tuner[ray]' "
            f"(it could not be imported: {exc})"
        ) from None
    return ray


def run_trial_task(job: NodeJob) -> NodeOutcome:
    """The Ray task: the trial's supervisor on the node Ray chose (`tuner.engine.remote_trial`)."""
    import ray

    _log_to_stderr()
    context = ray.get_runtime_context()
    gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    return run_on_node(
        job,
        executor="ray",
        node=context.get_node_id(),
        task=context.get_task_id() or "",
        gpu_ids=gpu_ids,
    )


def _log_to_stderr() -> None:
    """A Ray worker has no logging set up: the supervisor's lines (the tuner's, at INFO) go to
    its stderr, which is the worker's log file and the driver's console."""
    tuner_logger = logging.getLogger("tuner")
    if not tuner_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        tuner_logger.addHandler(handler)
        tuner_logger.setLevel(logging.INFO)
        tuner_logger.propagate = False


@dataclass
class RemoteTrial:
    """A trial sent to the cluster: its claim and its task."""

    run_id: int
    study: Study
    number: int
    #: The params as Optuna holds them (what is enqueued again).
    optuna_params: dict[str, Any]
    #: The manager's lease, held until the node takes it over.
    lease: Lease
    need: Need
    ref: Any
    submitted: float = field(default_factory=time.monotonic)
    #: The node's lease, once it holds the run.
    node_lease: Lease | None = None
    cancelled: bool = False


class RayExecutor:
    """The Ray side of a manager: submits claimed trials and watches them to their end."""

    def __init__(
        self,
        backend: Backend,
        store: ArtifactStore,
        settings: Settings,
        optuna_link: OptunaLink,
        *,
        worker_id: str,
        address: str | None,
    ) -> None:
        self.ray = import_ray()
        self.backend = backend
        self.db: Database = backend.db
        self.store = store
        self.settings = settings
        self.optuna = optuna_link
        self.worker_id = worker_id
        self.address = address
        #: The trials in flight, by run id.
        self.trials: dict[int, RemoteTrial] = {}
        #: Node-side measures of the trials that ended here (seconds, eval write to prune).
        self.prune_latencies: list[float] = []
        self._holders_read = 0.0
        self._renewed = 0.0
        self._renewed_ok = time.monotonic()
        self.capacity = ClusterCapacity(self.ray, settings)
        self._connect()
        self._task = self.ray.remote(run_trial_task)

    def _connect(self) -> None:
        """Join the cluster (or start one on this machine); a process already connected to
        Ray (an application embedding a manager) keeps its connection, and closes it."""
        options: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": True}
        if self.address:
            options["address"] = self.address
        else:
            options["include_dashboard"] = False
        self._owns_connection = not self.ray.is_initialized()
        try:
            if self._owns_connection:
                self.ray.init(**options)
        except Exception as exc:
            where = self.address or "a new local cluster"
            raise ConfigError(
                f"--executor ray: cannot connect to {where}: {first_line(exc)}"
            ) from None
        nodes = self.capacity.alive_nodes(fresh=True)
        if len(nodes) > 1 and not self.settings.artifact_url:
            self.close()
            raise ConfigError(
                f"--executor ray: the cluster has {len(nodes)} nodes, and trials on one node "
                "cannot write into another's disk: set TUNER_ARTIFACT_ROOT to an object store "
                "(s3://bucket/prefix, gs://, az://) that every node and the API reach"
            )
        resources = self.ray.cluster_resources()
        logger.info(
            "Ray executor: %d node(s), %g CPU(s), %g GPU(s) at %s",
            len(nodes),
            resources.get("CPU", 0),
            resources.get("GPU", 0),
            self.address or "a local cluster",
        )

    # -- capacity --------------------------------------------------------------------------------

    def refusal(self, need: Need) -> str | None:
        """Why no node of the cluster can ever run such a trial (`ClusterCapacity`)."""
        return self.capacity.refusal(need)

    def has_room(self, need: Need) -> bool:
        """Whether the cluster has the CPUs and GPUs free for one more trial now, counting the
        tasks sent and not yet placed (a claim waits instead of queueing in Ray)."""
        free = self.capacity.free()
        if free is None:
            return False
        if fits(need, free, self._unplaced()):
            return True
        now = time.monotonic()
        if fits(need, free) and now - self._holders_read >= 0.1:
            # Tasks not known to be placed may have started since: Ray counts them already.
            self._holders_read = now
            self._check_holders()
            return fits(need, free, self._unplaced())
        return False

    def _unplaced(self) -> list[Need]:
        return [t.need for t in self.trials.values() if t.node_lease is None and not t.cancelled]

    # -- submitting ------------------------------------------------------------------------------

    def submit(
        self,
        study: Study,
        lease: Lease,
        *,
        number: int,
        optuna_trial_id: int,
        optuna_params: dict[str, Any],
        params: dict[str, Any],
        trainer: Trainer,
    ) -> RemoteTrial:
        need = Need.of(study.spec)
        job = NodeJob(
            settings=self.settings,
            study=study,
            lease=lease,
            number=number,
            optuna_trial_id=optuna_trial_id,
            params=params,
            trainer=trainer,
        )
        self.capacity.forget_free()
        ref = self._task.options(
            num_cpus=ray_cpus(need),
            num_gpus=need.gpus,
            max_retries=0,
            retry_exceptions=False,
            scheduling_strategy="SPREAD",
            name=f"tuner:{study.name}:trial-{number}",
        ).remote(job)
        trial = RemoteTrial(lease.run_id, study, number, dict(optuna_params), lease, need, ref)
        if not self.trials:
            self._renewed_ok = time.monotonic()  # the claim wrote (so renewed) its lease
        self.trials[lease.run_id] = trial
        return trial

    # -- watching --------------------------------------------------------------------------------

    def watch(self, *, renew_every: float) -> None:
        """One pass over the trials in flight: collect the ended tasks, renew the leases the
        manager still holds, and cancel the tasks whose run was taken from them."""
        if not self.trials:
            return
        self._collect_ended()
        now = time.monotonic()
        if now - self._renewed >= renew_every:
            self._renewed = now
            self._renew_held()
        if now - self._holders_read >= HOLDERS_EVERY:
            self._holders_read = now
            self._check_holders()

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, waking as soon as one of the tasks ends."""
        refs = [t.ref for t in self.trials.values()]
        if refs:
            self.ray.wait(refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)

    def _collect_ended(self) -> None:
        refs = [t.ref for t in self.trials.values()]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        ended = {id(r) for r in ready}
        if ended:
            self.capacity.forget_free()  # their resources are free again
        for trial in [t for t in self.trials.values() if id(t.ref) in ended]:
            self._ended(trial)

    def _ended(self, trial: RemoteTrial) -> None:
        """A task that returned or failed: its outcome is the node's to record; a task that
        never took its lease leaves the run to this manager, which ends it (run again)."""
        try:
            outcome: NodeOutcome = self.ray.get(trial.ref)
        except Exception as exc:
            why = first_line(exc) or type(exc).__name__
            if trial.cancelled:
                logger.info(
                    "study %s trial %d: its Ray task was cancelled", trial.study.name, trial.number
                )
            elif trial.node_lease is None and self._still_ours(trial):
                self._end_unstarted(trial, f"its Ray task failed before it started ({why})")
            else:
                logger.warning(
                    "study %s trial %d: its Ray task failed (%s); the run is taken over and run "
                    "again once its lease lapses",
                    trial.study.name,
                    trial.number,
                    why,
                )
        else:
            self.prune_latencies.extend(outcome.prune_latencies)
            for latency in outcome.prune_latencies:
                PRUNE_LATENCY.observe(latency)
            if outcome.state is None and trial.node_lease is None and self._still_ours(trial):
                self._end_unstarted(trial, outcome.reason or "its node could not take it")
        self.trials.pop(trial.run_id, None)

    def _still_ours(self, trial: RemoteTrial) -> bool:
        """Whether this manager still holds the run (its node never took it over)."""
        held = self.db.run(lambda s: holders(s, [trial.run_id])).get(trial.run_id)
        return held == (trial.lease, True)

    def _end_unstarted(self, trial: RemoteTrial, reason: str) -> None:
        """End a run whose task never started its trainer: STOPPED, not counted, run again."""
        reason = f"{reason}; not counted, run again"
        ended = end_unstarted(
            self.backend,
            self.store,
            self.optuna,
            trial.study,
            trial.lease,
            number=trial.number,
            optuna_params=trial.optuna_params,
            state=RunState.STOPPED,
            reason=reason,
        )
        if ended:
            logger.warning("study %s trial %d: %s", trial.study.name, trial.number, reason)

    def _renew_held(self) -> None:
        """Renew the leases this manager still holds (tasks waiting for their node)."""
        held = [t for t in self.trials.values() if t.node_lease is None and not t.cancelled]
        if held:
            self.db.run(lambda s: renew_leases(s, [t.lease for t in held]))
        self._renewed_ok = time.monotonic()

    def _check_holders(self) -> None:
        """Learn which runs their node took over, and cancel the tasks whose run was taken
        from them (by another manager's takeover: the epoch moved past the node's)."""
        found = self.db.run(lambda s: holders(s, list(self.trials)))
        for run_id, (holder, running) in found.items():
            trial = self.trials.get(run_id)
            if trial is None or trial.cancelled:
                continue
            taken = _taken_from(trial, holder, manager=self.worker_id)
            if taken:
                self.cancel(trial, "its run was taken over by another manager")
            elif running and holder.worker != self.worker_id:
                trial.node_lease = holder  # the node holds it (and renews it) now

    def cancel(self, trial: RemoteTrial, why: str) -> None:
        """Cancel a task with force: its process dies, and its watchdog kills the trainer."""
        if trial.cancelled:
            return
        trial.cancelled = True
        logger.warning(
            "study %s trial %d: %s; its Ray task is cancelled", trial.study.name, trial.number, why
        )
        try:
            self.ray.cancel(trial.ref, force=True)
        except Exception as exc:  # already ended, or its node is gone
            logger.info("cancelling trial %d's task: %s", trial.number, first_line(exc))

    # -- stopping --------------------------------------------------------------------------------

    def stop_studies(self, running_ids: set[int]) -> None:
        """Tasks of studies no longer running that have not started yet are cancelled and their
        runs ended here; started ones stop on their node (it reads its study's state)."""
        for trial in list(self.trials.values()):
            if trial.study.id in running_ids or trial.node_lease is not None or trial.cancelled:
                continue
            if self._still_ours(trial):  # else its node has it, and stops it itself
                self.cancel(trial, "its study is no longer running")
                self._end_unstarted(trial, "study stopped before its task started")

    def fence_if_unrenewed(self, after: float) -> None:
        """The manager could not renew its leases for `after` seconds: tasks that have not
        taken their lease over must not start under it (another manager may take the run)."""
        if time.monotonic() - self._renewed_ok < after:
            return
        for trial in list(self.trials.values()):
            if trial.node_lease is None:
                self.cancel(trial, "its manager could not renew its lease in time")

    def shutdown(self, reason: str, grace: float) -> None:
        """Ask every node to stop its trial (recorded STOPPED, run again), wait up to the
        grace and a little more, then cancel what is left with force."""
        if self.trials:
            ids = list(self.trials)
            try:
                self.db.run(lambda s: request_stop(s, ids, reason))
            except Exception as exc:
                logger.warning("could not ask the nodes to stop: %s", first_line(exc))
            try:
                for trial in list(self.trials.values()):
                    if trial.node_lease is None and self._still_ours(trial):
                        self.cancel(trial, reason)  # not started: ended here, run again
                        self._end_unstarted(trial, f"{reason} before its task started")
            except Exception as exc:  # the database is away: their leases lapse instead
                logger.warning("could not end the trials not yet started: %s", first_line(exc))
            deadline = time.monotonic() + grace + 2 * STOP_WAIT
            while self.trials and time.monotonic() < deadline:
                self._collect_ended()
                time.sleep(0.1)
            for trial in list(self.trials.values()):
                self.cancel(trial, f"{reason}: still running after the grace")
        self.close()

    def close(self) -> None:
        if not self._owns_connection:
            return
        try:
            self.ray.shutdown()
        except Exception as exc:  # pragma: no cover - best effort at exit
            logger.info("ray.shutdown: %s", first_line(exc))


#: Seconds a node may need to notice a stop request (its poll) and record the trial's end.
STOP_WAIT = 2.0


def _taken_from(trial: RemoteTrial, holder: Lease, *, manager: str) -> bool:
    """Whether a run was taken from the trial's task. The node takes the manager's lease over
    with the next epoch and its own worker id, and ends the run under it; a takeover by another
    manager ends the run with the epoch after the one it saw (the manager's id kept, if the
    node never held it)."""
    handed_over = trial.lease.epoch + 1
    if holder == trial.lease:
        return False  # still this manager's: the task waits for its node
    # Else it is the node's (running, or ended by it), or it was taken.
    return not (holder.worker != manager and holder.epoch == handed_over)
