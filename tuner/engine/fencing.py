"""Self-fencing: a manager renews its trials' leases, and stops its own trials before any other
manager may take them over.

The rules are in `tuner.engine.leases`; this part keeps the clock. Leases are renewed every
`heartbeat_every` seconds (one transaction for all of them); once they could not be renewed for
`fence_after` seconds (the database unreachable, the manager held up), every local trial is
stopped, and the watchdog process (`tuner.trial.watchdog`) does the same even when this
manager is paused or dead.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from tuner.domain.config import Settings
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.leases import fence_after, heartbeat_every
from tuner.engine.outcome import RunState
from tuner.persistence import Database
from tuner.persistence.leases import renew_leases
from tuner.trial.watchdog import Watchdog


class Fencing:
    """The leases of one manager's trials: renewal, fencing, and the watchdog behind them."""

    def __init__(self, db: Database, settings: Settings, watchdog: Watchdog | None = None) -> None:
        self.db = db
        self.grace = settings.stop_grace_seconds
        timeout = settings.heartbeat_timeout
        self.every = heartbeat_every(timeout)
        self.after = fence_after(timeout, settings.stop_grace_seconds)
        #: Shared by the trials of one process (`watchdog` given: its owner closes it).
        self._owns_watchdog = watchdog is None
        self.watchdog = watchdog or watchdog_for(settings)
        self.renewed_at = time.monotonic()
        self.last_renewal = 0.0
        self._ticked_at = 0.0

    def fence_if_unrenewed(self, trials: Collection[ActiveTrial]) -> None:
        """Stop every local trial once the leases could not be renewed for `after` seconds."""
        unrenewed = time.monotonic() - self.renewed_at
        if not trials or unrenewed < self.after:
            return
        reason = (
            f"stopped by its manager: its lease was not renewed for {unrenewed:.0f} s "
            "(database unreachable, or the manager was paused); its params run again"
        )
        for trial in trials:
            pruned = trial.stop is not None and trial.stop.state is RunState.PRUNED
            trial.stop_with(RunState.STOPPED, reason, replacing=pruned)
            trial.process.enforce_stop(self.grace)

    def held_up_for(self) -> float | None:
        """Called at every tick: the seconds since the last one when they exceed the fence
        time (the manager was paused or starved), else None."""
        now = time.monotonic()
        gap = now - self._ticked_at if self._ticked_at else 0.0
        self._ticked_at = now
        return gap if gap >= self.after else None

    def renewal_due(self) -> bool:
        return time.monotonic() - self.last_renewal >= self.every

    def renew(self, trials: Collection[ActiveTrial]) -> set[int]:
        """Renew every lease in one transaction; the run ids whose lease another manager took.

        A tick held up past the watchdog's deadline (a lock wait, a pause) fenced its trials
        first: their exit is then the watchdog's doing, not the trainer's."""
        self.fence_if_unrenewed(trials)
        leases = [t.lease for t in trials]
        lost = self.db.run(lambda s: renew_leases(s, leases)) if leases else set()
        self.renewed_at = self.last_renewal = time.monotonic()
        if trials:
            self.watchdog.renew(self.after)
        return lost

    def watch(self, pid: int, *, first: bool = False) -> None:
        """Put a new trial's process group under the watchdog. The first trial's claim wrote
        (and so renewed) its lease just now."""
        self.watchdog.watch(pid)
        self.watchdog.renew(self.after)
        if first:
            self.renewed_at = time.monotonic()

    def forget(self, pid: int) -> None:
        self.watchdog.forget(pid)

    def close(self) -> None:
        if self._owns_watchdog:
            self.watchdog.close()


def watchdog_for(settings: Settings) -> Watchdog:
    """A watchdog with the grace of these settings (at most 5 s after SIGTERM)."""
    return Watchdog(min(settings.stop_grace_seconds, 5.0))
