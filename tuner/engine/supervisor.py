"""The supervisor of one trial: ingest -> observe -> keep -> exit -> store sync -> finish.

`step` is called once per tick for each trial a manager runs; it needs the trial's parts, not
the manager, so it can supervise a single trial on its own (next to the trainer, on another
machine): `build_supervisor` makes one from the shared pieces (tests/test_manager.py runs a
trial with it and no manager).
"""

from __future__ import annotations

import functools
import logging
import signal
from datetime import UTC, datetime

from tuner.artifacts.infrastructure import is_infrastructure
from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.errors import TunerError, first_line
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.cold_retry import ColdRetries
from tuner.engine.fencing import Fencing
from tuner.engine.finisher import Finisher
from tuner.engine.ingest import Ingestor
from tuner.engine.keeper import Keeper
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import Decision, RunState, Stop
from tuner.engine.store_sync import BackOff, StoreSync
from tuner.engine.verdict import limit_reached
from tuner.engine.writes import LeaseWrites
from tuner.persistence import is_unavailable
from tuner.study.operations import Backend
from tuner.trial.execution import describe_exit, signal_group
from tuner.trial.warm_starts import WarmStarts


class TrialSupervisor:
    """Moves one trial along, one step per tick, until its end is recorded."""

    def __init__(
        self,
        settings: Settings,
        fencing: Fencing,
        ingestor: Ingestor,
        finisher: Finisher,
        store_sync: StoreSync,
        cold_retries: ColdRetries,
        warm: WarmStarts,
    ) -> None:
        self.settings = settings
        self.fencing = fencing
        self.ingestor = ingestor
        self.finisher = finisher
        self.store_sync = store_sync
        self.cold_retries = cold_retries
        self.warm = warm

    def step(self, trial: ActiveTrial) -> bool:
        """One step; True once the trial's end is recorded (the caller lets it go)."""
        self.fencing.fence_if_unrenewed([trial])
        if trial.exit_code is None:
            code = trial.process.poll()
            self.ingestor.ingest(
                trial, flush=code is None
            )  # an ended trial's writes go with its end
            if code is None:
                self._enforce_limits(trial)
                trial.process.enforce_stop(self.settings.stop_grace_seconds)
                self.store_sync.sync_log(trial)
                return False
            # Children that outlived the trainer (e.g. ones that ignored SIGTERM) go with it.
            signal_group(trial.process.pid, signal.SIGKILL)
            self.warm.trial_ended(trial.process.pid)
            self.ingestor.ingest(trial, final=True)  # written between the poll and the exit
            if self.cold_retries.retry(trial, code):
                return False
            trial.exit_code = code
            trial.exited_at = datetime.now(UTC)
        ended = trial.exit_code
        if not self.store_sync.stored(trial, lambda: self.finisher.decide(trial, ended)):
            return False  # uploading: the trial keeps its slot and its lease meanwhile
        self.finisher.finish(trial, ended)
        self.fencing.forget(trial.process.pid)
        self.store_sync.clean_up(trial)
        return True

    def _enforce_limits(self, trial: ActiveTrial) -> None:
        """Stop a trial past its deadline, or one that has written nothing for too long."""
        if trial.stop is not None:
            return
        reason = limit_reached(trial, default_max_seconds=self.settings.trial_max_seconds)
        if reason is not None:
            trial.stop_with(RunState.FAILED, reason)

    def end_on_error(self, trial: ActiveTrial, exc: Exception) -> None:
        """Stop a trial that cannot be served any longer, and record why (if it still can)."""
        code = trial.process.stop(self.settings.stop_grace_seconds)
        self.store_sync.forget_unstored(trial)
        if trial.decision is None:
            if is_infrastructure(exc):
                trial.decision = Decision(
                    RunState.STOPPED,
                    f"the machine failed ({first_line(exc)}); not counted, run again",
                )
            else:
                trial.decision = Decision(
                    RunState.FAILED,
                    f"the tuner could not serve this trial: {type(exc).__name__}: {exc}",
                )
        try:
            self.finisher.finish(trial, code)
        except Exception as again:
            if is_unavailable(again):
                raise
            trial.log.exception("not recorded")
        self.fencing.forget(trial.process.pid)

    def abandon(self, trial: ActiveTrial, why: str) -> None:
        """Kill a trial whose run is no longer this supervisor's; nothing is recorded."""
        signal_group(trial.process.pid, signal.SIGKILL)
        trial.process.stop(0)
        self.fencing.forget(trial.process.pid)
        trial.log.warning("%s; its process was killed, nothing recorded", why)

    def finish_stopped(self, trial: ActiveTrial, reason: str, grace: float) -> None:
        """Stop the trial (SIGTERM, SIGKILL after `grace`) and record it STOPPED, unless it
        ended otherwise; an ended trial that is uploading gets a last chance to store."""
        code = trial.process.stop(grace)
        if trial.stop is None:
            trial.stop = Stop(RunState.STOPPED, f"{reason} ({describe_exit(code)})")
        decide = functools.partial(self.finisher.decide, trial, code)
        if not self.store_sync.stored_before_shutdown(trial, reason, decide):
            return
        try:
            self.finisher.finish(trial, code)
        except TunerError as exc:
            logging.getLogger(__name__).error(
                "trial %s: could not record its end: %s", trial.number, exc
            )


def build_supervisor(
    backend: Backend,
    store: ArtifactStore,
    settings: Settings,
    *,
    warm: WarmStarts,
    fencing: Fencing,
    optuna_link: OptunaLink,
    writes: LeaseWrites,
    store_sync: StoreSync,
    back_off: BackOff,
) -> TrialSupervisor:
    """A supervisor and the parts it alone uses (ingest, keeper, finisher, cold retries)."""
    cold_retries = ColdRetries(warm, writes, fencing)
    ingestor = Ingestor(
        writes, Keeper(store, writes), optuna_link, cold_retry_worked=cold_retries.worked
    )
    finisher = Finisher(
        backend,
        store,
        settings,
        writes,
        optuna_link,
        store_sync,
        cold_retries,
        back_off=back_off,
    )
    return TrialSupervisor(settings, fencing, ingestor, finisher, store_sync, cold_retries, warm)
