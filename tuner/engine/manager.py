"""The study manager: claim a trial, run it, ingest its eval metrics live, tell Optuna.

One manager owns a number of local trial slots and works on every RUNNING study it is allowed
to (one study for `tuner run`, all of them for `tuner worker` and `tuner serve`). Any number of
managers may share one database: slots are reserved under a lock on the study row, and a
manager whose heartbeat goes stale has its trials failed and re-enqueued by the others.

The manager never imports TensorFlow; event files are read by `tuner.outputs.events`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.artifacts.infrastructure import artifact_store_problem, is_infrastructure
from tuner.artifacts.object_store import ObjectStore, ObjectStoreError
from tuner.artifacts.store import (
    ArtifactStore,
    checkpoint_prefix_for,
    drop_checkpoint,
    drop_export,
    find_exports,
    keep_checkpoint,
    keep_export,
)
from tuner.artifacts.uploads import (
    KeptArtifacts,
    Uploader,
    clean_local_copy,
    upload_session_files,
)
from tuner.domain.config import Settings
from tuner.domain.entities import Lease, Observation, Study, TrialRun
from tuner.domain.errors import ArtifactNotFoundError, LeaseLostError, TrialTakenError, TunerError
from tuner.domain.spec import Check, ObjectiveMode
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.engine.active_trial import ActiveTrial, KeptCheckpoint
from tuner.engine.leases import (
    StalenessJudge,
    WorkerId,
    fence_after,
    heartbeat_every,
    new_worker_id,
)
from tuner.engine.verdict import decide, final_problems, limit_reached
from tuner.outputs.bundle import savedmodel_global_step
from tuner.outputs.events import CheckpointPathValue
from tuner.outputs.hparams import HPARAMS_DIR
from tuner.outputs.reader import TrialOutputs
from tuner.persistence import is_unavailable
from tuner.persistence import repository as repo
from tuner.study import sampling, viewers
from tuner.study.operations import (
    Backend,
    OptunaStudyMissingError,
    optuna_study_missing,
    release_stale_trial_ids,
    tell,
)
from tuner.study.proposals import Exhausted, propose
from tuner.trial.execution import (
    TrialCommand,
    TrialProcess,
    build_command,
    describe_exit,
    process_exists,
    signal_group,
    tail_lines,
    wait_for_exit,
)
from tuner.trial.resources import Capacity, Need, ResourceLedger
from tuner.trial.warm_starts import ParentKey, WarmStartError, WarmStarts
from tuner.trial.watchdog import Watchdog

logger = logging.getLogger(__name__)

BACKOFF_MAX = 60.0
#: Seconds a shutting-down manager waits for an ended trial's upload before stopping it.
UPLOAD_GRACE = 30.0
#: Seconds between touches of the liveness file.
ALIVE_EVERY = 5.0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _writes_to(pid: int, log_path: Path) -> bool:
    """Whether a process's stdout is that log (a warm trial's command line is its parent's)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/fd/1")) == log_path
    except OSError:
        return False


def default_worker_id() -> str:
    """Unique per start: `<host>:<pid>:<nonce>` (see `tuner.engine.leases.WorkerId`)."""
    return new_worker_id()


@dataclass(frozen=True)
class TrialEvent:
    """What the manager reports to a listener (the terminal view, the API's event stream)."""

    kind: str  # created | eval | state
    study: str
    number: int
    data: dict[str, Any]


Listener = Callable[[TrialEvent], None]


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
    """Runs trials in local slots until told to stop (or, with `study`, until it ends)."""

    def __init__(
        self,
        backend: Backend,
        registry: TrainerRegistry,
        settings: Settings,
        *,
        slots: int,
        studies: Sequence[str] | None = None,
        worker_id: str | None = None,
        listener: Listener | None = None,
        capacity: Capacity | None = None,
    ) -> None:
        self.backend = backend
        self.db = backend.db
        self.registry = registry
        self.settings = settings
        self.slots = slots
        self.study_names = list(studies) if studies is not None else None
        self.worker_id = worker_id or default_worker_id()
        self.listener = listener
        self.store = ArtifactStore(settings.artifact_root)
        #: With an object store: trials run in the local `store` and are uploaded at the end.
        self.uploader = (
            Uploader(
                ObjectStore(settings.artifact_url),
                self.store,
                give_up_after=settings.upload_give_up_seconds,
            )
            if settings.artifact_url
            else None
        )
        self.warm = WarmStarts(self.store.root / ".warm", enabled=settings.warm_starts)
        self.active: dict[int, ActiveTrial] = {}
        #: GPUs and CPUs held by the trials in `active` (`capacity`: None, GPUs not managed).
        self.resources = ResourceLedger(capacity or Capacity(), _RunningProcesses(self.active))
        #: Claims cut short by a database error: (run id, study, Optuna trial number or None).
        self._abandoned: list[tuple[int, Study, int | None]] = []
        self._unrunnable: set[int] = set()
        self._optuna: dict[int, optuna.Study] = {}
        self._last_heartbeat = 0.0
        self._last_reap = 0.0
        self._stopping = False
        self._interrupted = False
        timeout = settings.heartbeat_timeout
        self._heartbeat_every = heartbeat_every(timeout)
        self._reap_every = min(10.0, timeout / 4)
        self._fence_after = fence_after(timeout, settings.stop_grace_seconds)
        self._renewed_at = time.monotonic()
        self.judge = StalenessJudge(timeout)
        self.watchdog = Watchdog(min(settings.stop_grace_seconds, 5.0))
        #: Study id -> (monotonic time before which it is not launched, current back-off).
        self._backoff: dict[int, tuple[float, float]] = {}
        self._infra_checked = (0.0, None)  # type: tuple[float, str | None]
        self._rotation = 0
        #: Seconds from an objective value's event being written to the prune decision.
        self.prune_latencies: list[float] = []
        #: Touched while the loop turns (`tuner worker-alive` reads it: a container's liveness).
        self.alive_file: Path | None = None
        self._alive_at = 0.0

    # -- the loop -------------------------------------------------------------------------------

    def run(
        self, *, until_done: bool = True, should_stop: Callable[[], bool] | None = None
    ) -> None:
        """Tick until the manager's studies are all finished (or `should_stop()`)."""
        try:
            while not (should_stop and should_stop()):
                busy = self.tick()
                if until_done and not busy and not self.active:
                    break
                # Wakes early when a trial exits, so the next one starts at once.
                wait_for_exit(
                    [t.process for t in self.active.values()],
                    self.settings.poll_interval,
                    also=self.warm.wake_fds(),
                )
        finally:
            self.shutdown()

    def tick(self) -> bool:
        """One pass: ingest, finish, launch. Returns whether work remains for this manager."""
        self._fence_if_unrenewed()
        self._touch_alive_file()
        try:
            now = time.monotonic()
            if now - self._last_reap >= self._reap_every:
                self._last_reap = now
                self._isolated("taking over stale runs", self._reap_stale)
            self._clean_abandoned()
            for trial in list(self.active.values()):
                self._service_isolated(trial)
            self.warm.reap_orphans()
            running, counts = self.db.run(self._running_studies_and_counts)
            self.judge.database_answered(time.monotonic())
            self._stop_trials_of_inactive_studies(running)
            more = self._launch(running, counts)
            if time.monotonic() - self._last_heartbeat >= self._heartbeat_every:
                self._renew_leases()
            return more or bool(self.active)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self.judge.database_failed()
            # Trials keep running (until the lease would lapse: `_fence_if_unrenewed`); what
            # they write is read and buffered until the database is back.
            logger.warning("database unavailable, retrying: %s", _first_line(exc))
            return True

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

    # -- leases ----------------------------------------------------------------------------------

    def _write(self, lease: Lease, work: Callable[[Any], Any]) -> Any:
        """Run `work` in one transaction, only while this manager still holds `lease`."""

        def guarded(session: Any) -> Any:
            repo.hold_lease(session, lease)
            return work(session)

        return self.db.run(guarded)

    def _renew_leases(self) -> None:
        # A tick held up past the watchdog's deadline (a lock wait, a pause): its trials were
        # fenced, and their exit is the watchdog's doing, not the trainer's.
        self._fence_if_unrenewed()
        leases = [t.lease for t in self.active.values()]
        lost = self.db.run(lambda s: repo.renew_leases(s, leases)) if leases else set()
        self._renewed_at = self._last_heartbeat = time.monotonic()
        if self.active:
            self.watchdog.renew(self._fence_after)
        for run_id in lost:
            self._abandon(self.active[run_id], "another manager took its run over")

    def _fence_if_unrenewed(self) -> None:
        """Stop every local trial once the leases could not be renewed for `fence_after`."""
        unrenewed = time.monotonic() - self._renewed_at
        if not self.active or unrenewed < self._fence_after:
            return
        for trial in self.active.values():
            if trial.outcome is None or trial.outcome == "PRUNED":
                trial.outcome = "STOPPED"
                trial.outcome_reason = (
                    f"stopped by its manager: its lease was not renewed for {unrenewed:.0f} s "
                    "(database unreachable, or the manager was paused); its params run again"
                )
                logger.warning(
                    "study %s trial %d: %s", trial.study.name, trial.number, trial.outcome_reason
                )
            trial.process.request_stop()
            trial.process.enforce_stop(self.settings.stop_grace_seconds)

    def _abandon(self, trial: ActiveTrial, why: str) -> None:
        """Kill a trial whose run this manager no longer holds, and record nothing about it."""
        signal_group(trial.process.pid, signal.SIGKILL)
        trial.process.stop(0)
        self.watchdog.forget(trial.process.pid)
        self.active.pop(trial.run_id, None)
        logger.warning(
            "study %s trial %d: %s; its process was killed, nothing recorded",
            trial.study.name,
            trial.number,
            why,
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
            code = trial.process.stop(remaining)
            if trial.outcome is None:
                trial.outcome, trial.outcome_reason = "STOPPED", f"{reason} ({describe_exit(code)})"
            if not self._stored_before_shutdown(trial, reason):
                continue
            try:
                self._finish(trial, code)
            except TunerError as exc:
                logger.error("trial %s: could not record its end: %s", trial.number, exc)
        self.active.clear()
        self.watchdog.close()
        self.warm.close()
        if self.uploader is not None:
            self.uploader.close()

    def _stored_before_shutdown(self, trial: ActiveTrial, reason: str) -> bool:
        """A trial that ended and is uploading gets `UPLOAD_GRACE` seconds to finish it; one
        that does not is recorded STOPPED (not counted, run again), never COMPLETED."""
        if self.uploader is None or trial.exit_code is None or "stored" in trial.recorded:
            return True
        try:
            self.uploader.wait(trial.run_id, UPLOAD_GRACE)
            if self._stored(trial, trial.exit_code):
                return True
        except Exception as exc:
            if is_unavailable(exc):
                logger.error("trial %s: could not record its end: %s", trial.number, exc)
                return False
            raise
        self._stop_unstored(trial, f"{reason} while its artifacts were uploading")
        return True

    def _stop_unstored(self, trial: ActiveTrial, reason: str) -> None:
        """Record the trial STOPPED (not counted, run again): its artifacts are not stored."""
        problems = trial.decision[3] if trial.decision else []
        trial.decision = ("STOPPED", reason, None, problems)
        trial.recorded.add("stored")

    # -- launching -------------------------------------------------------------------------------

    def _running_studies_and_counts(
        self, session: Any
    ) -> tuple[list[Study], dict[int, dict[str, int]]]:
        studies = repo.running_studies(session, self.study_names)
        return studies, {s.id: repo.trial_counts(session, s.id) for s in studies}

    def _launch(self, studies: list[Study], counts: dict[int, dict[str, int]]) -> bool:
        """Fill free slots, one per study in turn (round robin, starting one further at each
        tick), so no study starves the others; return whether any study has work left."""
        more = False
        eligible: list[Study] = []
        now = time.monotonic()
        for study in studies:
            unrunnable = self._unrunnable_here(study)
            if unrunnable is not None:
                if study.id not in self._unrunnable:
                    self._unrunnable.add(study.id)
                    logger.warning("study %s: %s; left to others", study.name, unrunnable)
                continue
            if self._study_is_over(study, counts[study.id]):
                continue
            more = True
            if self._backoff.get(study.id, (0.0, 0.0))[0] <= now:
                eligible.append(study)
        if not eligible or self._slots_full() or self._winding_down:
            return more
        infrastructure = self._infrastructure_problem()
        if infrastructure is not None:
            return more
        start = self._rotation % len(eligible)
        self._rotation += 1
        eligible = eligible[start:] + eligible[:start]
        while eligible and not self._slots_full() and not (self._stopping or self._interrupted):
            for study in list(eligible):
                if self._slots_full() or self._winding_down:
                    break
                if not self._claim_isolated(study):
                    eligible.remove(study)
        return more

    def _unrunnable_here(self, study: Study) -> str | None:
        """Why this manager never runs the study's trials (None: it does)."""
        if study.spec.trainer not in self.registry:
            return f"trainer {study.spec.trainer!r} is not in this manager's registry"
        return self.resources.capacity.refusal(Need.of(study.spec))

    def _slots_full(self) -> bool:
        """Whether every slot runs a trial. A trial whose process exited and whose artifacts
        upload frees its slot; at most `slots` uploads wait at once."""
        running = len(self.resources.running)
        return running >= self.slots or len(self.active) - running >= self.slots

    def _claim_isolated(self, study: Study) -> bool:
        """Claim and start one trial; an error pauses (or backs off) this study, not the rest."""
        try:
            return self._claim_and_start(study)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if self._optuna_study_gone(study):
                self._lost_optuna_study(study, "a trial could not be started: ")
            elif is_infrastructure(exc):
                self._back_off(study, f"the artifact store failed: {_first_line(exc)}")
            else:
                logger.exception("study %s: could not start a trial", study.name)
                reason = (
                    f"paused: a trial could not be started ({type(exc).__name__}: "
                    f"{_first_line(exc)}); fix the cause and resume the study"
                )
                self.db.run(lambda s: repo.set_study_state(s, study.id, "STOPPED", reason))
                self._emit("state", study, -1, {"study_state": "STOPPED", "reason": reason})
            return False

    def _back_off(self, study: Study, why: str) -> None:
        _, current = self._backoff.get(study.id, (0.0, 0.0))
        delay = min(BACKOFF_MAX, max(1.0, current * 2))
        self._backoff[study.id] = (time.monotonic() + delay, delay)
        logger.warning("study %s: %s; not counted, retrying in %.0f s", study.name, why, delay)

    def _infrastructure_problem(self) -> str | None:
        """Why no trial can be started here now (no space, a read-only or missing artifact
        root), checked at most every 2 s; such trials would fail without being at fault."""
        checked_at, problem = self._infra_checked
        now = time.monotonic()
        if now - checked_at < 2.0:
            return problem
        problem = artifact_store_problem(self.store.root)
        if problem is None and self.uploader is not None:
            problem = self.uploader.problem()
        if problem is not None and problem != self._infra_checked[1]:
            logger.warning("not starting trials: %s (retrying)", problem)
        self._infra_checked = (now, problem)
        return problem

    def _study_is_over(self, study: Study, counts: dict[str, int]) -> bool:
        """End a study whose budget is spent or whose failures reached the limit."""
        spec = study.spec
        failed = counts.get("FAILED", 0)
        completed = counts.get("COMPLETED", 0) + counts.get("PRUNED", 0)
        running = counts.get("RUNNING", 0)
        limit = spec.hyperparameters.max_failed_trials
        if limit and failed >= limit:
            reason = f"{failed} trials failed (maxFailedTrials={limit})"
            return self._end_study(study, "FAILED", reason, running)
        first = min(3, spec.max_trials)
        if not limit and completed == 0 and failed >= first:
            reason = f"the first {failed} trials all failed (set maxFailedTrials to allow more)"
            return self._end_study(study, "FAILED", reason, running)
        if completed + failed >= spec.max_trials:
            if running:
                return True  # no new trials, but not over until those finish
            reason = f"{completed + failed} of {spec.max_trials} trials finished"
            return self._end_study(study, "COMPLETED", reason, running)
        return False

    def _end_study(self, study: Study, state: str, reason: str, running: int) -> bool:
        self.db.run(lambda s: repo.set_study_state(s, study.id, state, reason))
        logger.info("study %s %s: %s", study.name, state, reason)
        if state == "FAILED":
            for trial in self.active.values():
                if trial.study.id == study.id and trial.outcome is None:
                    trial.outcome, trial.outcome_reason = "STOPPED", f"study failed: {reason}"
                    trial.process.request_stop()
        return True

    def _claim_and_start(self, study: Study) -> bool:
        need = Need.of(study.spec)
        if not self.resources.fits(need):
            return False  # claimed once a trial here ends and frees its GPUs (or CPUs)
        trainer = self.registry.get(study.spec.trainer)
        base_env = need.base_environment()
        warm_key = self.warm.key(trainer, base_env)
        if warm_key is not None and self.warm.status(warm_key) == "warming":
            return False  # its trials start once the parent has imported (it wakes the loop)
        claim = self.db.run(lambda s: self._reserve(s, study.id))
        if claim is None:
            return False
        run_id, ordinal = claim
        lease = Lease(run_id, self.worker_id, 0)
        try:
            optuna_study = self._optuna_study(study)
            proposal = propose(self.backend, study.spec, ordinal=ordinal)
        except Exception:
            self._abandoned.append((run_id, study, None))
            raise
        if isinstance(proposal, Exhausted):
            self._drop_reservation(run_id)
            running = self.db.run(lambda s: repo.trial_counts(s, study.id)).get("RUNNING", 0)
            if not running:
                self._end_study(study, "COMPLETED", proposal.reason, 0)
            return False
        trial = proposal
        params = sampling.trainer_values(study.spec, trial.params)
        paths = self.store.trial_paths(study.name, trial.number)
        granted = self.resources.grant(run_id, need)  # held while `active` has the run
        command = build_command(
            trainer,
            args=list(study.spec.args),
            params=params,
            output_dir_flag=study.spec.output_dir_flag,
            output_dir=paths.output_dir,
            trial_number=trial.number,
            study_name=study.name,
            base_env=base_env,
        )
        command = self.resources.apply(command, granted, trainer)
        started = functools.partial(
            viewers.trial_started,
            self.backend,
            self.store,
            study,
            number=trial.number,
            optuna_trial_id=trial._trial_id,
            paths=paths,
            trainer_values=params,
        )

        attach = functools.partial(
            repo.attach_trial,
            run_id=run_id,
            number=trial.number,
            optuna_trial_id=trial._trial_id,
            params=params,
            output_dir=self.store.relative(paths.output_dir),
            log_path=self.store.relative(paths.log_path),
        )
        # Attached before the process exists: a trainer that runs always has its run row.
        if not self._attach_or_drop(lease, attach, run_id, study, trial.number):
            return True
        try:
            paths.output_dir.mkdir(parents=True, exist_ok=True)
            process, start_note = self._start_process(warm_key, trainer, command, paths.log_path)
        except (OSError, ValueError) as exc:
            started()
            self._start_failed(study, lease, trial, optuna_study, command.argv[0], exc)
            return True
        self.watchdog.watch(process.pid)
        self.watchdog.renew(self._fence_after)
        if not self.active:
            self._renewed_at = time.monotonic()  # the claim's writes renewed the lease
        self.active[run_id] = ActiveTrial(
            run_id=run_id,
            study=study,
            number=trial.number,
            optuna_trial_id=trial._trial_id,
            paths=paths,
            process=process,
            outputs=TrialOutputs(paths.output_dir, study.spec),
            lease=lease,
            warm_key=warm_key,
            command=command,
            params=params,
            optuna_trial=trial,
        )
        self._write(lease, lambda s: repo.set_pid(s, run_id, process.pid))
        if start_note is not None:
            self._add_problems(self.active[run_id], [start_note])
        started()  # while the trainer starts up
        given = granted.describe()
        logger.info(
            "study %s: trial %d started (pid %d%s%s)",
            study.name,
            trial.number,
            process.pid,
            ", warm" if process.warm else "",
            f", {given}" if given else "",
        )
        self._emit("created", study, trial.number, {"params": params, "state": "RUNNING"})
        return True

    def _start_process(
        self, warm_key: ParentKey | None, trainer: Trainer, command: TrialCommand, log_path: Path
    ) -> tuple[TrialProcess, str | None]:
        """Start a trial warm if its trainer's parent is ready, else cold; and why it is cold
        when its trainer asked for warm starts."""
        if warm_key is not None and self.warm.status(warm_key) == "ready":
            try:
                return self.warm.start(warm_key, trainer, command, log_path), None
            except WarmStartError as exc:
                failed = f"started cold: the warm start failed ({exc})"
                return TrialProcess.start(command, log_path), failed
        cold_because = self.warm.note(warm_key)
        note = (
            None if cold_because is None else f"started cold: warm starts are off ({cold_because})"
        )
        return TrialProcess.start(command, log_path), note

    def _retry_cold(self, trial: ActiveTrial, code: int) -> bool:
        """Run a warm trial that failed before its first eval again, cold (once).

        Whether a failure comes from the warm start can only be told by trying without it;
        a trainer whose cold retries got further starts cold on this worker from then on.
        """
        key = trial.warm_key
        if (
            key is None
            or not trial.process.warm
            or code == 0
            or trial.outcome is not None
            or trial.values_read
            or not self.warm.should_retry_cold(key)
        ):
            return False
        trial.warm_failure = f"warm start {describe_exit(code)} before any eval"
        logger.warning(
            "study %s trial %d: %s; running it again cold",
            trial.study.name,
            trial.number,
            trial.warm_failure,
        )
        for entry in trial.paths.output_dir.iterdir():
            if entry.name != HPARAMS_DIR:
                shutil.rmtree(
                    entry
                ) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        with open(trial.paths.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n--- {trial.warm_failure}; starting it again cold ---\n")
        assert trial.command is not None
        self.watchdog.forget(trial.process.pid)
        trial.process = TrialProcess.start(trial.command, trial.paths.log_path)
        self.watchdog.watch(trial.process.pid)
        trial.outputs = TrialOutputs(trial.paths.output_dir, trial.spec)
        trial.pending_offsets = {}
        self._write(trial.lease, lambda s: repo.set_pid(s, trial.run_id, trial.process.pid))
        self._add_problems(
            trial,
            [
                f"{trial.warm_failure}; it was run again with a cold start (see its log). "
                "If the cold start gets further, this trainer starts cold on this worker; "
                "leave 'preload' out of its registry entry to start it cold everywhere"
            ],
        )
        return True

    def _attach_or_drop(
        self, lease: Lease, attach: Callable[[Any], None], run_id: int, study: Study, number: int
    ) -> bool:
        """Attach the asked trial to the run; False (the reservation dropped) if another
        manager's run has it (Optuna's queue pop is not atomic on SQLite)."""
        try:
            self._attach(lease, attach)
        except TrialTakenError:
            self._drop_reservation(run_id)
            return False
        except Exception:
            self._abandoned.append((run_id, study, number))
            raise
        return True

    def _attach(self, lease: Lease, attach: Callable[[Any], None]) -> None:
        """Attach the asked trial to the run; `TrialTakenError` if another run has it.

        A run of a study deleted in optuna-dashboard may still hold the trial's id (SQLite
        gives freed ids again): once such ids are released, the trial is this run's.
        """
        try:
            self._write(lease, attach)
        except TrialTakenError:
            if not release_stale_trial_ids(self.backend):
                raise
            self._write(lease, attach)

    def _reserve(self, session: Any, study_id: int) -> tuple[int, int] | None:
        return repo.reserve_run_with_ordinal(session, study_id, worker=self.worker_id)

    def _start_failed(
        self,
        study: Study,
        lease: Lease,
        trial: optuna.trial.Trial,
        optuna_study: optuna.Study,
        program: str,
        exc: Exception,
    ) -> None:
        """A trial that could not even start: the machine's fault (STOPPED, run again after a
        back-off) or the trainer's (FAILED)."""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        infrastructure = is_infrastructure(exc) and not (
            isinstance(exc, FileNotFoundError) and exc.filename == program
        )
        state = "STOPPED" if infrastructure else "FAILED"
        reason = f"could not start {program}: {detail}"
        if infrastructure:
            reason = f"the machine could not start it ({detail}); not counted, run again"
        self._write(
            lease,
            lambda s: repo.finish_run(s, lease.run_id, state=state, reason=reason, lease=lease),
        )
        viewers.trial_finished(
            self.backend, self.store, study, lease.run_id, viewers.Outcome(state, reason)
        )
        tell(optuna_study, trial.number, state=TrialState.FAIL)
        if infrastructure:
            optuna_study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            self._back_off(study, reason)
        self._emit("state", study, trial.number, {"state": state, "reason": reason})

    def _clean_abandoned(self) -> None:
        """Undo claims cut short by a database error: drop the slot, fail the Optuna trial."""
        while self._abandoned:
            run_id, study, number = self._abandoned[0]
            if number is not None and not self._optuna_study_gone(study):
                tell(self._optuna_study(study), number, state=TrialState.FAIL)
            self._drop_reservation(run_id)
            self._abandoned.pop(0)

    def _drop_reservation(self, run_id: int) -> None:
        self.db.run(lambda s: repo.drop_reservation(s, run_id))

    def _optuna_study(self, study: Study) -> optuna.Study:
        if study.id not in self._optuna:
            try:
                existing = len(self.backend.storage.get_all_trials(self._optuna_id(study)))
                opened = self.backend.optuna_study(study.spec, seed_offset=existing)
            except KeyError:
                raise OptunaStudyMissingError(study.name) from None
            viewers.name_study_objective(opened, study)
            self._optuna[study.id] = opened
        return self._optuna[study.id]

    def _optuna_study_gone(self, study: Study) -> bool:
        """Whether the study's Optuna study was deleted (or renamed) outside the tuner."""
        opened = self._optuna.get(study.id)
        optuna_id = opened._study_id if opened is not None else None
        return optuna_study_missing(self.backend.storage, study.name, optuna_id)

    def _lost_optuna_study(self, study: Study, context: str = "") -> None:
        """Pause a study whose Optuna study is gone, with the reason (resuming cannot help: it
        says what to do), and stop its local trials; nothing is told to Optuna or enqueued."""
        gone = OptunaStudyMissingError(study.name)
        reason = f"paused: {context}{gone}"
        self._optuna.pop(study.id, None)
        self.db.run(lambda s: repo.set_study_state(s, study.id, "STOPPED", reason))
        release_stale_trial_ids(self.backend)
        logger.error("study %s: %s", study.name, reason)
        self._emit("state", study, -1, {"study_state": "STOPPED", "reason": reason})
        for trial in [t for t in self.active.values() if t.study.id == study.id]:
            trial.recorded.update({"told", "requeued"})
            if trial.decision is None:
                why = f"stopped: its Optuna study {study.name!r} was deleted outside the tuner"
                trial.decision = ("STOPPED", why, None, [])
            self._end_on_error(trial, gone)

    def _optuna_id(self, study: Study) -> int:
        return self.backend.storage.get_study_id_from_name(study.name)

    # -- one running trial ----------------------------------------------------------------------

    def _service_isolated(self, trial: ActiveTrial) -> None:
        """Service one trial; what goes wrong with it ends that trial, not the manager."""
        if trial.run_id not in self.active:
            return  # ended meanwhile, with the other trials of its study
        try:
            self._service(trial)
        except LeaseLostError:
            self._abandon(trial, "another manager took its run over")
        except Exception as exc:
            if is_unavailable(exc):
                raise
            if self._optuna_study_gone(trial.study):
                self._lost_optuna_study(trial.study)
                return
            logger.exception("study %s trial %d: internal error", trial.study.name, trial.number)
            self._end_on_error(trial, exc)

    def _end_on_error(self, trial: ActiveTrial, exc: Exception) -> None:
        """Stop a trial the manager cannot go on serving, and record why (if it still can)."""
        code = trial.process.stop(self.settings.stop_grace_seconds)
        if self.uploader is not None and "stored" not in trial.recorded:
            trial.decision = None  # not COMPLETED without its artifacts in the store
        if trial.decision is None:
            if is_infrastructure(exc):
                state = "STOPPED"
                reason = f"the machine failed ({_first_line(exc)}); not counted, run again"
            else:
                state = "FAILED"
                reason = f"the tuner could not serve this trial: {type(exc).__name__}: {exc}"
            trial.decision = (state, reason, None, [])
        try:
            self._finish(trial, code)
        except Exception as again:
            if is_unavailable(again):
                raise
            logger.exception("study %s trial %d: not recorded", trial.study.name, trial.number)
        self.watchdog.forget(trial.process.pid)
        self.active.pop(trial.run_id, None)

    def _service(self, trial: ActiveTrial) -> None:
        self._fence_if_unrenewed()
        if trial.exit_code is None:
            code = trial.process.poll()
            self._ingest(trial, flush=code is None)  # an ended trial's writes go with its end
            if code is None:
                self._enforce_limits(trial)
                trial.process.enforce_stop(self.settings.stop_grace_seconds)
                if self.uploader is not None:
                    every = self.settings.log_upload_seconds
                    self.uploader.sync_log(trial.run_id, trial.paths.log_path, every)
                return
            # Children that outlived the trainer (e.g. ones that ignored SIGTERM) go with it.
            signal_group(trial.process.pid, signal.SIGKILL)
            self.warm.trial_ended(trial.process.pid)
            self._ingest(trial, final=True)  # written between the poll above and the exit
            if self._retry_cold(trial, code):
                return
            trial.exit_code = code
        if not self._stored(trial, trial.exit_code):
            return  # uploading: the trial keeps its slot and its lease meanwhile
        self._finish(trial, trial.exit_code)
        self.watchdog.forget(trial.process.pid)
        del self.active[trial.run_id]
        stored = self.uploader is not None and "kept local" not in trial.recorded
        if stored and not self.settings.keep_local_copies:
            clean_local_copy(self.store, trial.study.name, trial.number)

    # -- the object store ------------------------------------------------------------------------

    def _stored(self, trial: ActiveTrial, code: int) -> bool:
        """Whether the ended trial's artifacts are in the object store (or there is none).

        The outcome is decided first; the upload then runs on the uploader's threads while this
        manager goes on. A trial is recorded (and COMPLETED) only once its kept artifacts are
        stored and verified; an upload that keeps failing stops it, not counted, with its
        local copy kept.
        """
        if self.uploader is None or "stored" in trial.recorded:
            return True
        self._decide(trial, code)
        self._flush(trial)  # its values show on the leaderboard during the upload
        try:
            report = self.uploader.poll(trial.run_id, lambda: self._kept_artifacts(trial))
        except ObjectStoreError as exc:
            where = self.uploader.store.url
            self._stop_unstored(
                trial,
                f"its artifacts could not be stored in {where} ({exc}); not counted, run again "
                f"(its local copy stays in {trial.paths.output_dir} on {socket.gethostname()})",
            )
            trial.recorded.add("kept local")
            self._back_off(trial.study, f"the object store failed: {exc}")
            return True
        if report is None:
            return False
        run_id = trial.run_id
        if report.checkpoint is not None:
            step, archive = report.checkpoint
            self._later(trial, lambda s: repo.set_checkpoint_archive(s, run_id, step, archive))
        for export_id, stored in report.exports:
            self._later(
                trial,
                functools.partial(repo.set_export_archive, export_id=export_id, archive=stored),
            )
        logger.info(
            "study %s trial %d: %d objects (%.1f MB) stored in %s in %.1f s",
            trial.study.name,
            trial.number,
            report.objects,
            report.bytes / 1e6,
            self.uploader.store.url,
            report.seconds,
        )
        trial.recorded.add("stored")
        return True

    def _kept_artifacts(self, trial: ActiveTrial) -> KeptArtifacts:
        kept_exports = self.db.run(lambda s: repo.kept_exports(s, trial.run_id))
        exports = [(i, self.store.resolve(p), Path(p).name) for i, p in kept_exports]
        return KeptArtifacts(
            study=trial.study.name,
            output_dir=trial.paths.output_dir,
            log_path=trial.paths.log_path,
            checkpoint=(trial.kept.step, trial.kept.kept) if trial.kept else None,
            exports=exports,
            eval_patterns=trial.outputs.layout.eval_patterns,
        )

    def _enforce_limits(self, trial: ActiveTrial) -> None:
        """Stop a trial past its deadline, or one that has written nothing for too long."""
        if trial.outcome is not None:
            return
        reason = limit_reached(trial, default_max_seconds=self.settings.trial_max_seconds)
        if reason is None:
            return
        trial.outcome, trial.outcome_reason = "FAILED", reason
        logger.warning("study %s trial %d: %s", trial.study.name, trial.number, reason)
        trial.process.request_stop()

    def _ingest(self, trial: ActiveTrial, *, final: bool = False, flush: bool = True) -> None:
        """Read what the trial wrote, store it, act on it. `flush=False`: the deferred writes
        wait for the end's transaction (the trial has exited)."""
        polled_at = time.time()
        result = trial.outputs.poll(final=final)
        trial.pending_values.extend(result.values)
        trial.pending_offsets.update(result.changed_offsets)
        if result.values:
            trial.progressed = time.monotonic()
            trial.values_read = True
            if trial.warm_failure is not None and trial.warm_key is not None:
                self.warm.cold_retry_worked(
                    trial.warm_key,
                    f"trial {trial.number}'s {trial.warm_failure}, and its cold start did not",
                )
        for value in result.values:
            if isinstance(value, CheckpointPathValue):
                trial.reported_checkpoints[(value.eval_name, value.step)] = value.path
        observations: list[Observation] = []
        if trial.pending_values or trial.pending_offsets:
            observations = self._write(
                trial.lease,
                lambda s: repo.record_eval_values(
                    s,
                    trial.run_id,
                    trial.pending_values,
                    trial.pending_offsets,
                    objective_tag=trial.spec.metric_tag,
                    study_id=trial.study.id,
                    number=trial.number,
                ),
            )
            trial.pending_values = []
            trial.pending_offsets = {}
        if result.problems:
            self._add_problems(trial, result.problems)
            for problem in result.problems:
                logger.warning("study %s trial %d: %s", trial.study.name, trial.number, problem)
        for observation in observations:
            self._observe(trial, observation)
        self._keep_best_checkpoint(trial)
        recorded = self._record_exports(trial, polled_at)
        trial.has_exports = trial.has_exports or recorded
        matched = (
            bool(observations)
            and trial.has_exports
            and self._write(
                trial.lease,
                lambda s: repo.match_exports_by_step(s, trial.run_id, trial.objective_dir),
            )
        )
        if recorded or matched or (observations and trial.has_exports):
            self._keep_best_export(trial)
        if flush and not final:
            self._flush(trial)

    def _observe(self, trial: ActiveTrial, obs: Observation) -> None:
        """A new objective value: keep the best checkpoint, report it, maybe prune."""
        if not trial.outputs.accepts_objective_from(obs.eval_name):
            return
        if trial.objective_dir is None:
            trial.objective_dir = obs.eval_name
            trial.outputs.settle()
        if obs.eval_name != trial.objective_dir:
            return
        if obs.all_zero and trial.spec.checks(Check.EMPTY_EVAL):
            trial.empty_steps.append(obs.step)
            logger.warning(
                "study %s trial %d: eval at step %d has every metric exactly 0 (no data?); "
                "not counted",
                trial.study.name,
                trial.number,
                obs.step,
            )
            return
        trial.trained = trial.trained or obs.step > 0
        if trial.last is None or obs.step >= trial.last.step:
            trial.last = obs
        improved = obs.is_finite and (
            trial.best is None or trial.spec.is_better(obs.value, trial.best.value)
        )
        if improved:
            trial.best = obs
        objective = trial.best if trial.spec.objective is ObjectiveMode.BEST else trial.last
        best_id = trial.best.eval_step_id if trial.best else None
        objective_id = objective.eval_step_id if objective else None
        rank = repo.objective_rank(objective.value if objective else None, trial.spec.goal)
        self._later(
            trial,
            lambda s: repo.set_objective_steps(
                s,
                trial.run_id,
                best_step_id=best_id,
                objective_step_id=objective_id,
                objective_rank=rank,
            ),
        )
        self._emit(
            "eval",
            trial.study,
            trial.number,
            {
                "step": obs.step,
                "value": obs.value if obs.is_finite else None,
                "best": trial.best.value if trial.best else None,
            },
        )
        if obs.is_finite and trial.outcome is None and obs.step not in trial.reported_steps:
            self._report_and_maybe_prune(trial, obs)

    def _report_and_maybe_prune(self, trial: ActiveTrial, obs: Observation) -> None:
        trial.reported_steps.add(obs.step)
        study = self._optuna_study(trial.study)
        # What `Trial.report` / `Trial.should_prune` do, without building a `Trial` (whose
        # constructor re-reads the trial from storage on every report).
        storage = self.backend.storage
        try:
            storage.set_trial_intermediate_value(trial.optuna_trial_id, obs.step, obs.value)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told by the manager that took the run over (LeaseLostError), or, while the run
            # is still ours, by someone outside the tuner (optuna-dashboard's "tell").
            self._write(trial.lease, lambda s: None)
            self._told_elsewhere(trial, obs)
            return
        if trial.spec.pruner is None:
            return
        prune = study.pruner.prune(study, storage.get_trial(trial.optuna_trial_id))
        latency = max(0.0, time.time() - obs.wall_time)
        self.prune_latencies.append(latency)
        logger.debug(
            "trial %d step %d: prune decision %.3fs after the eval", trial.number, obs.step, latency
        )
        if prune and trial.process.request_stop():
            # (a trial that already exited on its own has finished, whatever the pruner says)
            trial.outcome = "PRUNED"
            trial.outcome_reason = (
                f"stopped early at step {obs.step} ({trial.spec.metric_tag}={obs.value:.6g})"
            )
            logger.info(
                "study %s trial %d: pruned at step %d", trial.study.name, trial.number, obs.step
            )

    def _told_elsewhere(self, trial: ActiveTrial, obs: Observation) -> None:
        """Stop a trial whose Optuna trial was finished outside the tuner; it is FAILED: the
        tuner counts as completed only what it saw the trainer complete."""
        told = self.backend.storage.get_trial(trial.optuna_trial_id)
        value = f" (value {told.value})" if told.value is not None else ""
        trial.outcome = "FAILED"
        trial.outcome_reason = (
            f"its Optuna trial was told {told.state.name}{value} outside the tuner, e.g. in "
            f"optuna-dashboard, while it ran; stopped at step {obs.step}"
        )
        logger.warning(
            "study %s trial %d: %s", trial.study.name, trial.number, trial.outcome_reason
        )
        trial.process.request_stop()

    def _keep_best_checkpoint(self, trial: ActiveTrial) -> None:
        """Protect the best step's checkpoint from the estimator's rotation, at every poll.

        The eval's `checkpoint_path` summary names the checkpoint; it may be read a poll after
        the metrics, so until then the estimator's own naming of the step's checkpoint is kept,
        and replaced if the summary names another. A checkpoint not found yet is tried again.
        """
        best = trial.best
        if best is None:
            return
        reported = trial.reported_checkpoints.get((best.eval_name, best.step))
        reported = reported or best.checkpoint_path
        kept = trial.kept
        if kept is not None and kept.step == best.step and (kept.confirmed or reported is None):
            return
        model_dir = trial.paths.output_dir / trial.outputs.layout.model_dir
        prefix = checkpoint_prefix_for(
            trial.paths.output_dir, best.step, reported, model_dir=model_dir
        )
        if prefix is None:
            trial.checkpoint_miss = f"its checkpoint_path {reported!r} is outside the trial dir"
            return
        if kept is not None and kept.step == best.step and kept.source == prefix:
            kept.confirmed = True
            return
        if kept is not None and kept.step == best.step:
            drop_checkpoint(kept.kept)  # a guess that the step's summary contradicts
            trial.kept = None
        try:
            kept_prefix = keep_checkpoint(prefix, trial.paths.kept_dir)
        except ArtifactNotFoundError as exc:
            trial.checkpoint_miss = str(exc)
            return
        relative = self.store.relative(kept_prefix)

        def record(session: Any) -> list[Any]:
            repo.add_checkpoint(
                session, trial.run_id, step=best.step, source_path=str(prefix), kept_path=relative
            )
            return repo.remove_checkpoints_except(session, trial.run_id, best.step)

        for old in self._write(trial.lease, record):
            drop_checkpoint(self.store.resolve(old.kept_path))
        trial.kept = KeptCheckpoint(best.step, prefix, kept_prefix, confirmed=reported is not None)
        trial.checkpoint_miss = None

    def _keep_best_export(self, trial: ActiveTrial) -> None:
        """Keep a linked copy of the best step's export; drop copies of former best steps."""
        best_id = trial.best.eval_step_id if trial.best else None
        keep, drop = self._write(
            trial.lease, lambda s: repo.exports_to_keep(s, trial.run_id, best_id)
        )
        for export_id, path in keep:
            try:
                kept = keep_export(self.store.resolve(path), trial.paths.kept_dir)
            except ArtifactNotFoundError as exc:
                self._add_problems(trial, [str(exc)])
                continue
            self._set_export_kept(trial, export_id, self.store.relative(kept))
        for export_id, kept_path in drop:
            self._set_export_kept(trial, export_id, None)
            drop_export(self.store.resolve(kept_path))

    def _later(self, trial: ActiveTrial, work: Callable[[Any], Any]) -> None:
        """A write about the trial, done with the next commit about it (`_flush` or the end):
        an ingest commits once instead of once per write. Kept until committed."""
        trial.unflushed.append(work)

    def _flush(self, trial: ActiveTrial) -> None:
        """Commit the trial's deferred writes in one transaction."""
        if trial.unflushed:
            items = list(trial.unflushed)
            self._write(trial.lease, lambda s: [work(s) for work in items])
            del trial.unflushed[: len(items)]

    def _add_problems(self, trial: ActiveTrial, problems: list[str]) -> None:
        self._write(trial.lease, lambda s: repo.add_problems(s, trial.run_id, problems))

    def _set_export_kept(self, trial: ActiveTrial, export_id: int, kept_path: str | None) -> None:
        self._write(trial.lease, lambda s: repo.set_export_kept(s, export_id, kept_path))

    def _record_exports(self, trial: ActiveTrial, polled_at: float) -> bool:
        """Record new exports; one written after the event poll waits for the next tick, so
        that the eval step it belongs to has been read first."""
        patterns = trial.outputs.layout.export_patterns
        found = [
            e for e in find_exports(trial.paths.output_dir, patterns) if e.written_at < polled_at
        ]
        if not found:
            return False
        known = self.db.run(lambda s: repo.known_exports(s, trial.run_id))  # a read
        new = [e for e in found if (e.exporter, e.version) not in known]
        if not new:
            return False

        steps = {export.path: savedmodel_global_step(export.path) for export in new}

        def record(session: Any) -> None:
            for export in new:
                repo.add_export(
                    session,
                    trial.run_id,
                    exporter=export.exporter,
                    version=export.version,
                    path=self.store.relative(export.path),
                    wall_time=export.written_at,
                    global_step=steps[export.path],
                    eval_name=trial.objective_dir,
                )

        self._write(trial.lease, record)
        return True

    def _finish(self, trial: ActiveTrial, code: int) -> None:
        """Decide and record the trial's outcome, then tell Optuna.

        The run's end is recorded first, conditional on the lease (`LeaseLostError` if another
        manager took the run over: then nothing is told or enqueued). Safe to call again after
        a database error: the decision is made once, and each write is done once.
        """
        self._decide(trial, code)
        assert trial.decision is not None
        state, reason, value, problems = trial.decision
        if "finished" not in trial.recorded:

            def record(session: Any) -> None:
                repo.hold_lease(session, trial.lease)
                for work in trial.unflushed:
                    work(session)
                if problems:
                    repo.add_problems(session, trial.run_id, problems)
                repo.finish_run(
                    session,
                    trial.run_id,
                    state=state,
                    exit_code=code,
                    reason=reason,
                    lease=trial.lease,
                )

            self.db.run(record)
            trial.unflushed.clear()
            trial.recorded.add("finished")
        if "viewers" not in trial.recorded:
            viewers.trial_finished(
                self.backend,
                self.store,
                trial.study,
                trial.run_id,
                viewers.outcome_of(trial, code),
                optuna_attrs_too="told" not in trial.recorded,
                known=viewers.RunFacts(
                    number=trial.number,
                    optuna_trial_id=trial.optuna_trial_id,
                    output_dir=self.store.relative(trial.paths.output_dir),
                    params=trial.params,
                    started_at=trial.started_at,
                ),
            )
            trial.recorded.add("viewers")
        if self.uploader is not None and "session stored" not in trial.recorded:
            try:  # the HParams session's end, written just above
                upload_session_files(self.uploader.store, self.store, trial.paths.output_dir)
            except (ObjectStoreError, OSError) as exc:
                logger.warning(
                    "study %s trial %d: session end not stored: %s",
                    trial.study.name,
                    trial.number,
                    exc,
                )
            trial.recorded.add("session stored")
        if "told" not in trial.recorded:
            study = self._optuna_study(trial.study)
            try:
                told = trial.optuna_trial or trial.number  # by object: no lookup by number
                if state == "COMPLETED":
                    tell(study, told, value)
                elif state == "PRUNED":
                    tell(study, told, state=TrialState.PRUNED)
                else:
                    tell(study, told, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                logger.warning("study %s trial %d: already told", trial.study.name, trial.number)
            trial.recorded.add("told")
        if state == "STOPPED" and "requeued" not in trial.recorded:
            params = self.backend.storage.get_trial(trial.optuna_trial_id).params
            self._optuna_study(trial.study).enqueue_trial(
                params, user_attrs={"retry_of": trial.number}
            )
            trial.recorded.add("requeued")
        logger.info("study %s trial %d: %s %s", trial.study.name, trial.number, state, reason or "")
        self._emit(
            "state",
            trial.study,
            trial.number,
            {"state": state, "reason": reason, "objective": value, "exit_code": code},
        )

    def _decide(self, trial: ActiveTrial, code: int) -> None:
        """The trial's outcome, decided once."""
        if trial.decision is None:
            trial.decision = (*self._outcome(trial, code), self._final_problems(trial))
            self._judge_cold_retry(trial, code)

    def _judge_cold_retry(self, trial: ActiveTrial, code: int) -> None:
        """A cold retry that also failed before any eval: the trainer's own failure."""
        if trial.warm_failure is None or trial.warm_key is None or trial.values_read:
            return
        if code == 0:
            self.warm.cold_retry_worked(
                trial.warm_key,
                f"trial {trial.number}'s {trial.warm_failure}, and its cold start exited 0",
            )
        else:
            self.warm.cold_retry_failed(trial.warm_key)

    def _outcome(self, trial: ActiveTrial, code: int) -> tuple[str, str | None, float | None]:
        verdict = decide(
            trial,
            code,
            log_tail=tail_lines(trial.paths.log_path, self.settings.log_tail_lines),
            store_problem=lambda: artifact_store_problem(self.store.root),
            tags_seen=lambda name: self.db.run(lambda s: repo.tags_seen(s, trial.run_id, name)),
        )
        if verdict.infrastructure is not None:
            self._back_off(trial.study, verdict.infrastructure)
        return verdict.state, verdict.reason, verdict.objective

    def _final_problems(self, trial: ActiveTrial) -> list[str]:
        if not trial.has_exports:
            return final_problems(trial, [])  # nothing recorded, nothing unmatched: no read
        return final_problems(trial, self.db.run(lambda s: repo.unmatched_exports(s, trial.run_id)))

    def _stop_trials_of_inactive_studies(self, running: list[Study]) -> None:
        """Stop local trials of studies that were stopped (e.g. over the API) or deleted."""
        running_ids = {s.id for s in running}
        for trial in self.active.values():
            if trial.study.id not in running_ids and trial.outcome is None:
                trial.outcome, trial.outcome_reason = "STOPPED", "study stopped"
                trial.process.request_stop()

    # -- liveness --------------------------------------------------------------------------------

    def _reap_stale(self) -> None:
        """Take over running runs whose manager is gone, and run their params again.

        A manager on this host whose process no longer exists is gone at once; any other when
        `self.judge` has seen its heartbeat unchanged for a full timeout. A trial process of a
        taken-over run on this host (its manager paused or dead) is killed first.
        """
        host = socket.gethostname()
        runs = [
            r
            for r in self.db.run(repo.active_runs)
            if r.id not in self.active and r.worker != self.worker_id
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

    @property
    def _winding_down(self) -> bool:
        """Asked to stop or stopping: no new trial is launched."""
        return self._stopping or self._interrupted

    def stop_requested(self) -> None:
        """Ask every local trial to stop (on SIGTERM/SIGINT, before `shutdown`) and launch none.

        The outcome is set here, with the signal: a trial whose exit a tick sees before
        `shutdown` runs was stopped, not killed by an unknown hand (it would be FAILED).
        """
        self._interrupted = True
        for trial in self.active.values():
            if trial.outcome is None:
                trial.outcome = "STOPPED"
                trial.outcome_reason = "interrupted: its manager was asked to stop"
            trial.process.request_stop()

    def _take_over(self, run: TrialRun) -> None:
        reason = f"its manager {run.worker} stopped renewing its lease; the trial runs again"
        if not self.db.run(lambda s: repo.take_over(s, run, reason=reason)):
            return  # renewed meanwhile, or taken by another manager
        logger.warning("study id %s trial %s: %s", run.study_id, run.number, reason)
        if run.number is None or run.optuna_trial_id is None:
            return
        study = self.db.run(lambda s: repo.get_study(s, run.study_id))
        stopped = viewers.Outcome("STOPPED", reason)
        if self._optuna_study_gone(study):
            # Nothing to tell or enqueue; the study's next claim pauses it, with the reason.
            viewers.trial_finished(
                self.backend, self.store, study, run.id, stopped, optuna_attrs_too=False
            )
            return
        optuna_study = self._optuna_study(study)
        frozen = self.backend.storage.get_trial(run.optuna_trial_id)
        running = frozen.state is TrialState.RUNNING
        viewers.trial_finished(
            self.backend, self.store, study, run.id, stopped, optuna_attrs_too=running
        )
        if running:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                tell(optuna_study, run.number, state=TrialState.FAIL)
        # Only the manager whose takeover won gets here: the params are enqueued once.
        optuna_study.enqueue_trial(frozen.params, user_attrs={"retry_of": run.number})

    def _emit(self, kind: str, study: Study, number: int, data: dict[str, Any]) -> None:
        if self.listener is not None:
            try:
                self.listener(TrialEvent(kind=kind, study=study.name, number=number, data=data))
            except Exception:  # a broken view must not stop trials
                logger.exception("trial event listener failed")
