"""A study's trials as CSV: `GET .../trials.csv` and `tuner trials STUDY --csv`.

One row per trial, in the order and with the filters of the trial list (`trial_queries`), read a
page at a time in short sessions, so a 100,000-trial study is never held in memory and no
database connection waits on a slow download. Columns: the trial's facts, every parameter of
the spec (`param:<name>`, empty where a conditional one was not passed), every objective
(`objective`, or `objective:<metric>` with several; `feasible` with safety metrics), and every
metric written at a best step (`metric:<tag>`, its value at the trial's best step, as the
`metric:` sort and filter read it). The `csv` module quotes; a reason keeps its every line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tuner.domain.entities import LeaderboardRow, Study
from tuner.persistence import repository as repo
from tuner.persistence import trial_queries
from tuner.persistence.trial_queries import TrialQuery
from tuner.study.operations import Backend

#: Trials read per page (and per query of their metrics).
PAGE = 500
FIXED_COLUMNS = (
    "number",
    "state",
    "reason",
    "startedAt",
    "endedAt",
    "durationSeconds",
    "bestStep",
    "lastStep",
)


@dataclass(frozen=True)
class TrialsCsv:
    """A checked query and its columns: `chunks()` reads and writes the rows."""

    backend: Backend
    study: Study
    query: TrialQuery
    tags: list[str]

    @property
    def filename(self) -> str:
        return f"{self.study.name}-trials.csv"

    @property
    def columns(self) -> list[str]:
        spec = self.study.spec
        columns = list(FIXED_COLUMNS)
        columns += [f"param:{p.parameter_name}" for p in spec.hyperparameters.all_params]
        if spec.multi_objective:
            columns += [f"objective:{o.metric}" for o in spec.objectives]
        else:
            columns.append("objective")
        if spec.constraints:
            columns.append("feasible")
        columns += [f"metric:{tag}" for tag in self.tags]
        return columns

    def chunks(self) -> Iterator[bytes]:
        """The header, then one chunk of rows per page of trials."""
        yield _line([self.columns])
        offset = 0
        while True:
            with self.backend.db.session() as session:
                rows, total = trial_queries.list_trials(
                    session, self.study, self.query, limit=PAGE, offset=offset
                )
                metrics = trial_queries.best_step_metrics(
                    session, self.study.id, [r.number for r in rows]
                )
            if not rows:
                return
            yield _line([self._cells(r, metrics.get(r.number, {})) for r in rows])
            offset += len(rows)
            if offset >= total:
                return

    def _cells(self, row: LeaderboardRow, metrics: dict[str, float | None]) -> list[Any]:
        spec = self.study.spec
        cells: list[Any] = [
            row.number,
            row.state,
            row.failure_reason,
            row.started_at.isoformat(),
            row.ended_at.isoformat() if row.ended_at else None,
            row.duration_seconds,
            row.best_step,
            row.last_step,
        ]
        cells += [row.params.get(p.parameter_name) for p in spec.hyperparameters.all_params]
        if spec.multi_objective:
            cells += [row.objectives.get(o.metric) for o in spec.objectives]
        else:
            cells.append(row.objective)
        if spec.constraints:
            cells.append(row.feasible)
        cells += [metrics.get(tag) for tag in self.tags]
        return [_cell(c) for c in cells]


def trials_csv(
    backend: Backend,
    ref: str | int,
    *,
    sort: str | None = None,
    states: Sequence[str] = (),
    filters: Sequence[str] = (),
) -> TrialsCsv:
    """The study's trials as `GET .../trials` would list them; a bad `sort` or `filter` raises
    here (`QueryError`), before anything is sent."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        query = trial_queries.parse_query(study.spec, sort=sort, states=states, filters=filters)
        tags = trial_queries.best_step_tags(session, study.id)
    return TrialsCsv(backend, study, query, tags)


def _cell(value: Any) -> Any:
    """None and non-finite numbers are empty cells; booleans as `true`/`false`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _line(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")
