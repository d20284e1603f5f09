"""`tuner watch`: a live leaderboard in the terminal, fed by a study's events: a server's event
stream, or the local database's journal (the same events, read where the server reads them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from tuner.cli.output import fit
from tuner.cli.sources import Source
from tuner.cli.view import FINISHED, fmt_params, fmt_value, study_view
from tuner.public.schemas import StudyPublic, TrialRowPublic


@dataclass
class Board:
    """The client's picture of a study, updated event by event (events may repeat what the
    first page already showed: applying one twice changes nothing)."""

    study: StudyPublic
    rows: dict[int, TrialRowPublic] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return self.study.state

    @property
    def maximize(self) -> bool:
        return self.study.goal == "MAXIMIZE"

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "snapshot":
            self.study = self.study.model_copy(update={"state": data["state"]})
            for item in data.get("trials", []):
                self.rows.setdefault(item["number"], _row(item))
        elif kind == "created":
            self.rows.setdefault(data["number"], _row(data))
        elif kind == "eval":
            self._eval(data)
        elif kind == "state":
            row = self.rows.get(data["number"])
            if row is not None:
                update: dict[str, Any] = {"state": data["state"]}
                if data.get("endedAt"):
                    ended = datetime.fromisoformat(data["endedAt"])
                    update["ended_at"] = ended
                    update["duration_seconds"] = (ended - row.started_at).total_seconds()
                self.rows[row.number] = row.model_copy(update=update)
        elif kind == "study":
            update = {"state": data["state"], "state_reason": data.get("reason")}
            if data.get("maxTrials"):
                update["max_trials"] = data["maxTrials"]
            self.study = self.study.model_copy(update=update)
        elif kind == "end":
            self.study = self.study.model_copy(update={"state": data["state"]})

    def _eval(self, data: dict[str, Any]) -> None:
        row = self.rows.get(data["number"])
        if row is None:
            return
        update: dict[str, Any] = {"last_step": max(row.last_step or 0, data["step"])}
        value = data.get("objective")
        if value is not None and data["step"] >= (row.last_step or 0):
            update["last_objective"] = value
        if value is not None and (row.objective is None or self._better(value, row.objective)):
            update.update(objective=value, best_step=data["step"])
        self.rows[row.number] = row.model_copy(update=update)

    def _better(self, a: float, b: float) -> bool:
        if math.isnan(b):
            return True
        return a > b if self.maximize else a < b

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state, as the events told them (the study's own counts are its first
        read's)."""
        counts: dict[str, int] = {}
        for row in self.rows.values():
            counts[row.state] = counts.get(row.state, 0) + 1
        return counts

    def render(self, limit: int = 30) -> RenderableType:
        def key(row: TrialRowPublic) -> tuple[int, float, int]:
            if row.objective is None or math.isnan(row.objective):
                return (1, 0.0, row.number)
            return (0, -row.objective if self.maximize else row.objective, row.number)

        ordered = sorted(self.rows.values(), key=key)
        study = self.study.model_copy(update={"counts": self.counts})
        return study_view(study, ordered[:limit], datetime.now(UTC))


def _row(data: dict[str, Any]) -> TrialRowPublic:
    return TrialRowPublic.model_validate(
        {
            "number": data["number"],
            "state": data.get("state", "RUNNING"),
            "params": data.get("params", {}),
            "objective": data.get("objective"),
            "bestStep": data.get("bestStep"),
            "lastStep": data.get("lastStep"),
            "durationSeconds": None,
            "startedAt": data.get("startedAt") or datetime.now(UTC).isoformat(),
            "endedAt": None,
        }
    )


def watch_study(source: Source, study: str, console: Console) -> str:
    """Follow a study until its events end; return its final state.

    The board is built from the study and its trials, then moved on by the events; a trial
    that started and ended between the two reads would be missed, so the final board (and
    its count) is read again once the events end.
    """
    events = source.events(study)  # from now: what the trials read next may repeat, harmlessly
    board = Board(source.study(study))
    _reread(board, source, study)
    if console.is_terminal:
        with Live(fit(board.render(), console), console=console, refresh_per_second=4) as live:
            for event in events:
                if event.kind == "end":
                    _reread(board, source, study)
                board.apply(event.kind, event.data)
                live.update(fit(board.render(), console))
        return board.state
    for event in events:  # a log, not a screen: one line per change
        if event.kind == "end":
            _reread(board, source, study)
        board.apply(event.kind, event.data)
        line = _log_line(board, event.kind, event.data)
        if line:
            console.print(line, highlight=False)
    console.print(board.render())
    return board.state


def _reread(board: Board, source: Source, study: str) -> None:
    board.study = source.study(study)
    board.rows = {row.number: row for row in _all_trials(source, study)}


def _all_trials(source: Source, study: str) -> list[TrialRowPublic]:
    rows: list[TrialRowPublic] = []
    while True:
        page = source.trials(study, sort="number", limit=500, offset=len(rows))
        rows += page.data
        if not page.data or len(rows) >= page.count:
            return rows


def _log_line(board: Board, kind: str, data: dict[str, Any]) -> str | None:
    metric = board.study.metric
    if kind == "created":
        return f"trial {data['number']} started: {fmt_params(data['params'])}"
    if kind == "eval" and "objective" in data and data["objective"] is not None:
        value = fmt_value(data.get("objective"))
        return f"trial {data['number']} step {data['step']}: {metric}={value}"
    if kind == "state":
        row = board.rows.get(data["number"])
        value = fmt_value(row.objective if row else None)
        reason = f" ({data['reason'].splitlines()[0]})" if data.get("reason") else ""
        return f"trial {data['number']} {data['state']}: best {metric}={value}{reason}"
    if kind == "study":
        return f"study {board.study.name} {data['state']}: {data.get('reason') or ''}"
    if kind == "end":
        finished = sum(board.counts.get(s, 0) for s in FINISHED)
        return f"study {board.study.name} ended {data['state']} ({finished} trials finished)"
    return None
