"""`tuner watch`: a live leaderboard in the terminal, fed by a server's event stream."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tuner.client import Client
from tuner.view import STATE_STYLE, fmt_params, fmt_value


@dataclass
class _Row:
    number: int
    state: str
    params: dict[str, Any]
    objective: float | None = None
    best_step: int | None = None
    last_step: int | None = None


@dataclass
class Board:
    """The client's picture of a study, updated event by event."""

    name: str
    metric: str
    maximize: bool
    max_trials: int
    state: str
    rows: dict[int, _Row] = field(default_factory=dict)

    def apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "created":
            self.rows.setdefault(
                data["number"], _Row(data["number"], data.get("state", "RUNNING"), data["params"])
            )
        elif kind == "eval":
            row = self.rows.get(data["number"])
            if row is None:
                return
            value = data.get("objective")
            row.last_step = max(row.last_step or 0, data["step"])
            if value is not None and (row.objective is None or self._better(value, row.objective)):
                row.objective, row.best_step = value, data["step"]
        elif kind == "state":
            row = self.rows.get(data["number"])
            if row is not None:
                row.state = data["state"]
        elif kind in ("study", "end"):
            self.state = data["state"]

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def render(self) -> Group:
        def key(row: _Row) -> tuple[int, float, int]:
            if row.objective is None or math.isnan(row.objective):
                return (1, 0.0, row.number)
            return (0, -row.objective if self.maximize else row.objective, row.number)

        ordered = sorted(self.rows.values(), key=key)
        table = Table()
        for column in (
            "#",
            "state",
            f"{self.metric} {'↑' if self.maximize else '↓'}",
            "best step",
            "last step",
            "params",
        ):
            table.add_column(column)
        for row in ordered[:30]:
            table.add_row(
                str(row.number),
                Text(row.state, style=STATE_STYLE.get(row.state, "")),
                fmt_value(row.objective),
                "-" if row.best_step is None else str(row.best_step),
                "-" if row.last_step is None else str(row.last_step),
                fmt_params(row.params),
            )
        done = sum(r.state in ("COMPLETED", "PRUNED", "FAILED") for r in self.rows.values())
        header = Text(
            f"study {self.name}: {self.state}  {done}/{self.max_trials} trials finished",
            style="bold",
        )
        return Group(header, table)


def watch_study(client: Client, study: str, console: Console) -> str:
    """Follow a study until its stream ends; return its final state."""
    info = client.study(study)
    board = Board(
        name=info["name"],
        metric=info["metric"],
        maximize=info["goal"] == "MAXIMIZE",
        max_trials=info["maxTrials"],
        state=info["state"],
    )
    page = client.trials(study, limit=500)
    for item in page["data"]:
        board.rows[item["number"]] = _Row(
            item["number"],
            item["state"],
            item["params"],
            item["objective"],
            item["bestStep"],
            item["lastStep"],
        )
    if console.is_terminal:
        with Live(board.render(), console=console, refresh_per_second=4) as live:
            for event in client.events(study):
                _apply(board, event.kind, event.data)
                live.update(board.render())
        return board.state
    for event in client.events(study):  # a log, not a screen: one line per change
        _apply(board, event.kind, event.data)
        line = _log_line(board, event.kind, event.data)
        if line:
            console.print(line, highlight=False)
    console.print(board.render())
    return board.state


def _apply(board: Board, kind: str, data: dict[str, Any]) -> None:
    if kind == "snapshot":
        board.state = data["state"]
    else:
        board.apply(kind, data)


def _log_line(board: Board, kind: str, data: dict[str, Any]) -> str | None:
    if kind == "created":
        return f"trial {data['number']} started: {fmt_params(data['params'])}"
    if kind == "eval":
        value = fmt_value(data.get("objective"))
        return f"trial {data['number']} step {data['step']}: {board.metric}={value}"
    if kind == "state":
        row = board.rows.get(data["number"])
        value = fmt_value(row.objective if row else None)
        reason = f" ({data['reason'].splitlines()[0]})" if data.get("reason") else ""
        return f"trial {data['number']} {data['state']}: best {board.metric}={value}{reason}"
    if kind == "study":
        return f"study {board.name} {data['state']}: {data.get('reason') or ''}"
    return None
