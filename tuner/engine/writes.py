"""Writes about a trial, each one only while its manager still holds the trial's lease.

Every write checks the lease in the same transaction (`LeaseLostError` once another manager has
taken the run over), so a manager that was paused or cut off can never record anything about a
trial that now runs elsewhere. Writes that need not be seen at once wait for the trial's next
commit (`later`, then `flush` or the end's transaction): an ingest commits once, not once per
write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tuner.domain.entities import Lease
from tuner.engine.active_trial import ActiveTrial
from tuner.persistence import Database
from tuner.persistence.leases import hold_lease
from tuner.persistence.runs import add_problems

Work = Callable[[Any], Any]


class LeaseWrites:
    """The one way the engine writes about a running trial."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def write(self, lease: Lease, work: Work) -> Any:
        """Run `work` in one transaction, only while `lease` is still held."""

        def guarded(session: Any) -> Any:
            hold_lease(session, lease)
            return work(session)

        return self.db.run(guarded)

    def later(self, trial: ActiveTrial, work: Work) -> None:
        """A write done with the trial's next commit; kept until committed."""
        trial.unflushed.append(work)

    def flush(self, trial: ActiveTrial) -> None:
        """Commit the trial's deferred writes in one transaction."""
        if trial.unflushed:
            items = list(trial.unflushed)
            self.write(trial.lease, lambda s: [work(s) for work in items])
            del trial.unflushed[: len(items)]

    def add_problems(self, trial: ActiveTrial, problems: Sequence[str]) -> None:
        self.write(trial.lease, lambda s: add_problems(s, trial.run_id, problems))
