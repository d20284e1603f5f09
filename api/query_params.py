"""The trial list's query parameters, shared by `GET .../trials` and `GET .../trials.csv`, so
the two take the same query and list the same trials."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query

#: A trial state, as the `state` query parameter takes it (repeatable).
TrialState = Literal["RUNNING", "COMPLETED", "PRUNED", "FAILED", "STOPPED"]
StatesQuery = Annotated[
    list[TrialState] | None,
    Query(description="Only trials in these states; repeat for several (OR)."),
]
SortQuery = Annotated[
    str | None,
    Query(
        max_length=300,
        description="One key, '-' first for descending: objective (the default: best "
        "first), number, startedAt, endedAt, duration, state, bestStep, lastStep, "
        "metric:<tag> (its value at the trial's best step), param:<name>. Ties go by trial "
        "number; trials without the value come last in either direction.",
    ),
]
FiltersQuery = Annotated[
    list[str] | None,
    Query(
        alias="filter",
        description="<subject><op><value>, subject metric:<tag>, param:<name> or "
        "objective, op one of <, <=, >, >=, =, != (e.g. metric:rmse<0.5, "
        "param:optimizer=adam); repeat for several (AND). A trial without the value "
        "passes none.",
    ),
]
