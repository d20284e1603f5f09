"""How a trial ends, as types: one authority for each fact.

- `Stop`: why a running trial was asked to stop (pruned, stopped, failed by a limit), set
  once by `ActiveTrial.stop_with` while it runs;
- `Decision`: the outcome decided at its end (state, reason, objective, problems), made once;
- `Step`: the finishing steps already done, so a finish retried after a database error does
  each of them once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RunState(enum.StrEnum):
    """The end states of a run, as the run table and the API spell them."""

    COMPLETED = "COMPLETED"
    PRUNED = "PRUNED"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Stop:
    """Why a running trial was asked to stop: its end state unless its end says otherwise."""

    state: RunState
    reason: str


@dataclass(frozen=True)
class Decision:
    """A trial's outcome, decided once at its end."""

    state: RunState
    reason: str | None
    #: The objective told to Optuna: only a COMPLETED trial has one.
    objective: float | None = None
    #: What its end shows is missing (the best step's checkpoint, unmatched exports).
    problems: tuple[str, ...] = ()
    #: Several objectives: every objective's value at the ranking step, in the spec's order.
    values: tuple[float, ...] = ()
    #: Safety metrics: each one's constraint value at the ranking step (<= 0: met).
    constraints: tuple[float, ...] = ()

    def unstored(self, reason: str) -> Decision:
        """The same trial recorded STOPPED (not counted, run again): its artifacts are not
        in the object store."""
        return Decision(RunState.STOPPED, reason, None, self.problems)


class Step(enum.Enum):
    """The finishing steps of a trial, each done once."""

    #: Its kept artifacts are in the object store (or there is none).
    STORED = "stored"
    #: Its end is recorded in the run table (with its deferred writes and problems).
    RECORDED = "recorded"
    #: optuna-dashboard's attrs and TensorBoard's session end are written.
    VIEWERS = "viewers"
    #: The HParams session end is uploaded to the object store.
    SESSION_STORED = "session stored"
    #: Optuna is told (or must not be: its study or trial is gone or taken over).
    TOLD = "told"
    #: A STOPPED trial's params are enqueued again (or must not be).
    REQUEUED = "requeued"
