"""Trial leases: when a manager may take over another's run, and when it must stop its own.

A run is held by one manager under a lease: the run row's (worker, lease_epoch, RUNNING), renewed
by every write the manager makes about it and by its heartbeat
(`tuner.persistence.leases.hold_lease`). Two rules keep a trial in one place only, whatever
pauses or outages happen:

- **The taker waits a full timeout of its own observation.** A run is stale when this manager has
  watched its heartbeat stay the same for `heartbeat_timeout` seconds of its own monotonic
  clock, counted only while it could reach the database itself. A manager that was cut off
  (or paused) therefore never takes over runs for heartbeats that it, not their owner, missed;
  clocks of other hosts do not matter.
- **The owner stops first (self-fencing).** A manager that has not renewed its leases for
  `fence_after` seconds stops its trials (SIGTERM, SIGKILL after the grace), and its watchdog
  (`tuner.trial.watchdog`) does so even if the manager itself is paused or dead.
  `fence_after` leaves
  the grace and two heartbeats of margin before `heartbeat_timeout`, so by the time a taker may
  act the old trial is gone.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime

from tuner.domain.entities import TrialRun

__all__ = [
    "StalenessJudge",
    "WorkerId",
    "fence_after",
    "heartbeat_every",
    "new_worker_id",
]


def heartbeat_every(heartbeat_timeout: float) -> float:
    """Seconds between lease renewals: at most 5, and at least four per timeout."""
    return min(5.0, heartbeat_timeout / 4)


def fence_after(heartbeat_timeout: float, stop_grace_seconds: float) -> float:
    """Seconds without a renewal after which a manager stops its own trials."""
    margin = stop_grace_seconds + 2 * heartbeat_every(heartbeat_timeout)
    return max(heartbeat_timeout / 2, heartbeat_timeout - margin)


@dataclass(frozen=True)
class WorkerId:
    """`<host>:<pid>:<nonce>`: unique per start (a container's pid 1 restarts as pid 1), and
    still telling people which host and process it is."""

    host: str
    pid: int | None

    @classmethod
    def parse(cls, worker: str) -> WorkerId:
        host, _, rest = worker.partition(":")
        pid = rest.split(":", 1)[0]
        return cls(host, int(pid) if pid.isdigit() else None)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class StalenessJudge:
    """Decides which other managers' runs are stale, from this manager's own observations."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: Monotonic time since which the database has answered every query (None: it did not).
        self.reachable_since: float | None = None
        #: run id -> (heartbeat seen, monotonic time it was first seen).
        self._seen: dict[int, tuple[datetime, float]] = {}

    def database_failed(self) -> None:
        """The database did not answer: observations so far no longer count."""
        self.reachable_since = None
        self._seen.clear()

    def database_answered(self, now: float) -> None:
        if self.reachable_since is None:
            self.reachable_since = now

    def stale(self, runs: list[TrialRun], now: float) -> list[TrialRun]:
        """The runs whose heartbeat this manager has seen unchanged for a full timeout."""
        self.database_answered(now)
        current = {run.id for run in runs}
        for run_id in list(self._seen):
            if run_id not in current:
                del self._seen[run_id]
        stale: list[TrialRun] = []
        for run in runs:
            seen = self._seen.get(run.id)
            if seen is None or seen[0] != run.heartbeat_at:
                self._seen[run.id] = (run.heartbeat_at, now)
            elif now - seen[1] >= self.timeout:
                stale.append(run)
        return stale
