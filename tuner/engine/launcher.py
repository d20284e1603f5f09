"""Start one trial of a study: reserve a slot, ask Optuna, attach, start the process.

The slot is reserved first (a run row, under the study's row lock, so that several managers
respect its parallelism), then Optuna is asked for the params (`tuner.study.proposals`), the
trial is attached to the run before its process exists (a trainer that runs always has its run
row), and its process starts warm (a fork of a parent that imported TensorFlow) or cold.
A claim cut short by a database error is undone on a later tick (`clean_abandoned`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.artifacts.infrastructure import is_infrastructure
from tuner.artifacts.store import ArtifactStore, TrialPaths
from tuner.domain.config import Settings
from tuner.domain.entities import Lease, Study
from tuner.domain.errors import LeaseLostError, TrialTakenError, first_line
from tuner.domain.telemetry import TRIAL_CLAIMS
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.fencing import Fencing
from tuner.engine.finisher import end_unstarted
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import RunState
from tuner.engine.ray_executor import RayExecutor
from tuner.engine.store_sync import BackOff
from tuner.engine.writes import LeaseWrites
from tuner.outputs.reader import TrialOutputs
from tuner.persistence.runs import (
    attach_trial,
    drop_reservation,
    reserve_run_with_ordinal,
    set_pid,
)
from tuner.persistence.studies import trial_counts
from tuner.study import sampling, viewers
from tuner.study.operations import Backend, release_stale_trial_ids
from tuner.study.proposals import Exhausted, propose
from tuner.trial.execution import TrialCommand, TrialProcess, build_command
from tuner.trial.resources import Grant, Need, ResourceLedger
from tuner.trial.warm_starts import ParentKey, WarmStartError, WarmStarts

logger = logging.getLogger(__name__)

EndStudy = Callable[[Study, str, str], None]


@dataclass(frozen=True)
class Claim:
    """A reserved run and the Optuna trial asked for it."""

    study: Study
    lease: Lease
    trial: optuna.trial.Trial
    params: dict[str, Any]
    paths: TrialPaths


class Launcher:
    """Claims and starts trials into the manager's table of active trials."""

    def __init__(
        self,
        backend: Backend,
        registry: TrainerRegistry,
        store: ArtifactStore,
        settings: Settings,
        *,
        worker_id: str,
        resources: ResourceLedger,
        warm: WarmStarts,
        writes: LeaseWrites,
        fencing: Fencing,
        optuna_link: OptunaLink,
        active: MutableMapping[int, ActiveTrial],
        back_off: BackOff,
        end_study: EndStudy,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.resources = resources
        self.warm = warm
        self.writes = writes
        self.fencing = fencing
        self.optuna = optuna_link
        self.active = active
        self.back_off = back_off
        self.end_study = end_study
        #: Claims cut short by a database error: (run id, study, Optuna trial number or None).
        self._abandoned: list[tuple[int, Study, int | None]] = []
        #: With a cluster executor, claimed trials are sent there instead of started here.
        self.remote: RayExecutor | None = None

    def claim_and_start(self, study: Study) -> bool:
        """Start one trial of the study; False when none can start now (try another)."""
        need = Need.of(study.spec)
        if self.remote is not None:
            return self._claim_and_send(study, need, self.remote)
        if not self.resources.fits(need):
            return False  # claimed once a trial here ends and frees its GPUs (or CPUs)
        trainer = self.registry.get(study.spec.trainer)
        base_env = need.base_environment()
        warm_key = self.warm.key(trainer, base_env)
        if warm_key is not None and self.warm.status(warm_key) == "warming":
            return False  # its trials start once the parent has imported (it wakes the loop)
        claim = self._reserve_and_ask(study)
        if claim is None:
            return False
        granted = self.resources.grant(claim.lease.run_id, need)  # held while `active` has it
        command = self._command(claim, trainer, granted, base_env)
        started = functools.partial(
            viewers.trial_started,
            self.backend,
            self.store,
            study,
            number=claim.trial.number,
            optuna_trial_id=claim.trial._trial_id,
            paths=claim.paths,
            trainer_values=claim.params,
        )
        if not self._attach_or_drop(claim):
            return True
        try:
            claim.paths.output_dir.mkdir(parents=True, exist_ok=True)
            process, note = self._start_process(warm_key, trainer, command, claim.paths.log_path)
        except (OSError, ValueError) as exc:
            started()
            self._start_failed(claim, command.argv[0], exc)
            return True
        trial = self._track(claim, process, warm_key, command)
        if note is not None:
            self.writes.add_problems(trial, [note])
        started()  # while the trainer starts up
        given = granted.describe()
        logger.info(  # the format scripts and tests read: "study S: trial N started (pid P...)"
            "study %s: trial %d started (pid %d%s%s)",
            study.name,
            trial.number,
            process.pid,
            ", warm" if process.warm else "",
            f", {given}" if given else "",
        )
        return True

    def _claim_and_send(self, study: Study, need: Need, remote: RayExecutor) -> bool:
        """Claim a trial and send it to the cluster, where its node takes the lease over."""
        if not remote.has_room(need):
            return False  # claimed once the cluster has room (a claim does not queue in Ray)
        trainer = self.registry.get(study.spec.trainer)
        claim = self._reserve_and_ask(study)
        if claim is None:
            return False
        if not self._attach_or_drop(claim):
            return True
        try:
            sent = remote.submit(
                study,
                claim.lease,
                number=claim.trial.number,
                optuna_trial_id=claim.trial._trial_id,
                optuna_params=claim.trial.params,
                params=claim.params,
                trainer=trainer,
            )
        except Exception as exc:
            self._send_failed(claim, exc)
            return True
        logger.info(  # cf. the local "started" line
            "study %s: trial %d sent to Ray (%g CPU(s), %d GPU(s))",
            study.name,
            sent.number,
            sent.need.cpus or 1,
            sent.need.gpus,
        )
        return True

    def _send_failed(self, claim: Claim, exc: Exception) -> None:
        """The cluster refused the task: not the trainer's fault (STOPPED, run again later)."""
        what = f"{type(exc).__name__}: {first_line(exc)}"
        reason = f"could not be sent to Ray ({what}); not counted, run again"
        self._end_unstarted(claim, RunState.STOPPED, reason)
        self.back_off(claim.study, reason)

    def _end_unstarted(self, claim: Claim, state: RunState, reason: str) -> None:
        end_unstarted(
            self.backend,
            self.store,
            self.optuna,
            claim.study,
            claim.lease,
            number=claim.trial.number,
            optuna_params=claim.trial.params,
            state=state,
            reason=reason,
        )

    def _reserve_and_ask(self, study: Study) -> Claim | None:
        """Reserve a run and ask Optuna for its params; None when there is nothing to run."""
        reserved = self.writes.db.run(
            lambda s: reserve_run_with_ordinal(s, study.id, worker=self.worker_id)
        )
        if reserved is None:
            return None
        run_id, ordinal = reserved
        try:
            self.optuna.study(study)  # opened first: a study deleted in Optuna raises here
            proposal = propose(self.backend, study.spec, ordinal=ordinal)
        except Exception:
            self._abandoned.append((run_id, study, None))
            raise
        if isinstance(proposal, Exhausted):
            self._drop_reservation(run_id)
            counts = self.writes.db.run(lambda s: trial_counts(s, study.id))
            if not counts.get("RUNNING", 0):
                self.end_study(study, "COMPLETED", proposal.reason)
            return None
        params = sampling.trainer_values(study.spec, proposal.params)
        paths = self.store.trial_paths(study.name, proposal.number)
        TRIAL_CLAIMS.inc()
        return Claim(study, Lease(run_id, self.worker_id, 0), proposal, params, paths)

    def _command(
        self, claim: Claim, trainer: Trainer, granted: Grant, base_env: dict[str, str]
    ) -> TrialCommand:
        spec = claim.study.spec
        command = build_command(
            trainer,
            args=list(spec.args),
            params=claim.params,
            output_dir_flag=spec.output_dir_flag,
            output_dir=claim.paths.output_dir,
            trial_number=claim.trial.number,
            study_name=claim.study.name,
            base_env=base_env,
        )
        return self.resources.apply(command, granted, trainer)

    def _attach_or_drop(self, claim: Claim) -> bool:
        """Attach the asked trial to the run; False (the reservation dropped) if another
        manager's run has it (Optuna's queue pop is not atomic on SQLite)."""
        attach = functools.partial(
            attach_trial,
            run_id=claim.lease.run_id,
            number=claim.trial.number,
            optuna_trial_id=claim.trial._trial_id,
            params=claim.params,
            output_dir=self.store.relative(claim.paths.output_dir),
            log_path=self.store.relative(claim.paths.log_path),
        )
        try:
            try:
                self.writes.write(claim.lease, attach)
            except TrialTakenError:
                # A run of a study deleted in optuna-dashboard may still hold the trial's id
                # (SQLite gives freed ids again): once such ids are released, it is ours.
                if not release_stale_trial_ids(self.backend):
                    raise
                self.writes.write(claim.lease, attach)
        except TrialTakenError:
            self._drop_reservation(claim.lease.run_id)
            return False
        except LeaseLostError:
            # Held up (paused, starved) between the ask and the attach for so long that another
            # manager took the reservation over: the asked trial is given back (told FAIL).
            logger.warning(
                "study %s: trial %d was asked while this manager was held up, and its "
                "reservation was taken over meanwhile; told FAIL, not run",
                claim.study.name,
                claim.trial.number,
            )
            self._abandoned.append((claim.lease.run_id, claim.study, claim.trial.number))
            return False
        except Exception:
            self._abandoned.append((claim.lease.run_id, claim.study, claim.trial.number))
            raise
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

    def _track(
        self,
        claim: Claim,
        process: TrialProcess,
        warm_key: ParentKey | None,
        command: TrialCommand,
    ) -> ActiveTrial:
        """The started trial, under the watchdog, in the table of active trials."""
        self.fencing.watch(process.pid, first=not self.active)
        run_id = claim.lease.run_id
        trial = ActiveTrial(
            run_id=run_id,
            study=claim.study,
            number=claim.trial.number,
            optuna_trial_id=claim.trial._trial_id,
            paths=claim.paths,
            process=process,
            outputs=TrialOutputs(claim.paths.output_dir, claim.study.spec),
            lease=claim.lease,
            warm_key=warm_key,
            command=command,
            params=claim.params,
            optuna_trial=claim.trial,
        )
        self.active[run_id] = trial
        self.writes.write(claim.lease, lambda s: set_pid(s, run_id, process.pid))
        return trial

    def _start_failed(self, claim: Claim, program: str, exc: Exception) -> None:
        """A trial that could not even start: the machine's fault (STOPPED, run again after a
        back-off) or the trainer's (FAILED)."""
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        infrastructure = is_infrastructure(exc) and not (
            isinstance(exc, FileNotFoundError) and exc.filename == program
        )
        state = RunState.STOPPED if infrastructure else RunState.FAILED
        reason = f"could not start {program}: {detail}"
        if infrastructure:
            reason = f"the machine could not start it ({detail}); not counted, run again"
        self._end_unstarted(claim, state, reason)
        if infrastructure:
            self.back_off(claim.study, reason)

    def clean_abandoned(self) -> None:
        """Undo claims cut short by a database error: drop the slot, fail the Optuna trial."""
        while self._abandoned:
            run_id, study, number = self._abandoned[0]
            if number is not None and not self.optuna.gone(study):
                self.optuna.fail(study, number)
            self._drop_reservation(run_id)
            self._abandoned.pop(0)

    def _drop_reservation(self, run_id: int) -> None:
        self.writes.db.run(lambda s: drop_reservation(s, run_id))
