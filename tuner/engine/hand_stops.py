"""Stops asked for by hand (`POST .../trials/{n}/stop`, `tuner stop STUDY --trial N`), read from
the run rows and carried out: the trial's process gets SIGTERM (SIGKILL after the grace, as a
pruned trial), and it ends PRUNED, with who asked and when in its reason.

PRUNED, not STOPPED: Optuna's "ended early on purpose". The trial is told to Optuna as pruned
(with its last intermediate value), keeps its best step's checkpoint and exports, counts toward
`maxTrials` and the compute budget, and is not run again (STOPPED trials are).

The database is the only channel, so a stop reaches a trial wherever it runs: a local manager
reads the requests of all its trials in one query, a Ray node those of its one trial.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from tuner.engine.active_trial import ActiveTrial
from tuner.engine.outcome import RunState
from tuner.persistence import Database
from tuner.persistence.runs import stops_by_hand

#: Seconds between reads of the stop requests (the stop's latency, at most).
READ_EVERY = 0.5


class HandStops:
    """Reads the stop requests of the trials it is given, at most every `READ_EVERY`."""

    def __init__(self, db: Database, every: float = READ_EVERY) -> None:
        self.db = db
        self.every = every
        self._read_at = 0.0

    def apply(self, trials: Iterable[ActiveTrial]) -> None:
        """Stop those of `trials` a stop was asked for; the read is skipped when not due."""
        candidates = {t.run_id: t for t in trials if t.stop is None and t.exit_code is None}
        now = time.monotonic()
        if not candidates or now - self._read_at < self.every:
            return
        self._read_at = now
        requests = self.db.run(lambda s: stops_by_hand(s, list(candidates)))
        for run_id, request in requests.items():
            trial = candidates[run_id]
            step = trial.last.step if trial.last is not None else None
            trial.stop_with(RunState.PRUNED, request.reason(step), level=logging.INFO)
