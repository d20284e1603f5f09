"""Terminal rendering of studies, leaderboards and the best model (rich)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tuner.entities import BestModel, LeaderboardRow, Study

STATE_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "PRUNED": "yellow",
    "FAILED": "red",
    "STOPPED": "magenta",
}


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    return f"{value:.6g}"


def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def leaderboard_table(study: Study, rows: Sequence[LeaderboardRow], *, title: str = "") -> Table:
    tag = study.spec.metric_tag
    arrow = "↓" if study.spec.goal.value == "MINIMIZE" else "↑"
    table = Table(title=title or None, title_justify="left", expand=False)
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(f"{tag} {arrow}", justify="right")
    table.add_column("best step", justify="right")
    table.add_column("last step", justify="right")
    table.add_column("time", justify="right")
    table.add_column("params", overflow="fold")
    for row in rows:
        duration = row.duration_seconds
        table.add_row(
            str(row.number),
            Text(row.state, style=STATE_STYLE.get(row.state, "")),
            fmt_value(row.objective),
            "-" if row.best_step is None else str(row.best_step),
            "-" if row.last_step is None else str(row.last_step),
            "-" if duration is None else f"{duration:.1f}s",
            fmt_params(row.params),
        )
    return table


def study_header(study: Study, counts: dict[str, int], best: LeaderboardRow | None) -> Text:
    spec = study.spec
    parts = [f"study {study.name}: {study.state}"]
    done = sum(counts.get(s, 0) for s in ("COMPLETED", "PRUNED", "FAILED"))
    parts.append(f"{done}/{spec.max_trials} trials finished")
    detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()) if n)
    if detail:
        parts.append(f"({detail})")
    if best is not None and best.objective is not None:
        parts.append(f"best {spec.metric_tag}={fmt_value(best.objective)} (trial {best.number})")
    text = Text("  ".join(parts), style="bold")
    if study.state_reason and study.state != "RUNNING":
        text.append(f"\n{study.state_reason}", style="dim")
    return text


def live_view(
    study: Study, counts: dict[str, int], rows: Sequence[LeaderboardRow]
) -> RenderableType:
    best = next((r for r in rows if r.state == "COMPLETED" and r.objective is not None), None)
    return Group(study_header(study, counts, best), leaderboard_table(study, rows))


def best_model_text(best: BestModel, artifact_root: str) -> Text:
    spec = best.study.spec
    run = best.run
    lines = [
        f"study       {best.study.name} ({best.study.state})",
        f"best trial  {run.number}",
        f"objective   {spec.metric_tag}={fmt_value(best.objective)} "
        f"({spec.objective.value} eval, {spec.goal.value})",
        f"best step   {best.step}",
        f"params      {fmt_params(run.params)}",
    ]
    if best.checkpoint is not None:
        lines.append(f"checkpoint  {artifact_root}/{best.checkpoint.kept_path}")
    else:
        lines.append("checkpoint  none kept for that step")
    if best.export is not None:
        lines.append(f"export      {artifact_root}/{best.export.path}")
    else:
        others = ", ".join(
            f"{e.exporter}/{e.version} (step {e.step if e.step is not None else '?'})"
            for e in best.other_exports
        )
        lines.append(
            "export      none for that step"
            + (f"; exports of this trial: {others}" if others else "; the trial exported nothing")
        )
    return Text("\n".join(lines))
