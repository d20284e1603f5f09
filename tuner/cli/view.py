"""Terminal rendering (rich) of the API's public models: the same picture for a local database
and for a server, since both give the CLI these models."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tuner.domain.spec import MAX_TRIALS
from tuner.public.schemas import (
    BestPublic,
    DeletionPublic,
    GcReportPublic,
    ParetoPage,
    StudyPublic,
    TrialDetailPublic,
    TrialRowPublic,
)

STATE_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "PRUNED": "yellow",
    "FAILED": "red",
    "STOPPED": "magenta",
}
FINISHED = ("COMPLETED", "PRUNED", "FAILED")
#: Flags and params that say how many steps a trainer trains for (AI Platform's samples).
PLANNED_STEPS = re.compile(r"^-*(?:train|max|num[-_]train)[-_]steps$")


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


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def elapsed(row: TrialRowPublic, now: datetime | None = None) -> float | None:
    """Seconds the trial ran (so far, for a running one)."""
    if row.duration_seconds is not None:
        return row.duration_seconds
    if row.state != "RUNNING":
        return None
    return ((now or datetime.now(UTC)) - row.started_at).total_seconds()


def planned_steps(study: StudyPublic, params: dict[str, Any]) -> int | None:
    """The steps a trial trains for, where its params or the study's args say so."""
    for name, value in params.items():
        if PLANNED_STEPS.match(name) and isinstance(value, (int, float)):
            return int(value)
    for arg in study.spec.get("args") or []:
        flag, _, value = str(arg).partition("=")
        if PLANNED_STEPS.match(flag) and value.isdigit():
            return int(value)
    return None


def eta_seconds(
    study: StudyPublic, rows: Sequence[TrialRowPublic], now: datetime | None = None
) -> float | None:
    """A rough time to the study's end: finished trials' mean duration for what is left."""
    if study.state != "RUNNING" or study.max_trials >= MAX_TRIALS:
        return None  # a compute budget: its progress says how far the study is
    durations = [r.duration_seconds for r in rows if r.state in FINISHED and r.duration_seconds]
    if not durations:
        return None
    mean = sum(durations) / len(durations)
    running = [r for r in rows if r.state == "RUNNING"]
    finished = sum(study.counts.get(s, 0) for s in FINISHED)
    left = max(0, study.max_trials - finished - study.counts.get("RUNNING", 0))
    parallel = max(1, int(study.spec.get("hyperparameters", {}).get("maxParallelTrials") or 1))
    current = max((mean - (elapsed(r, now) or 0.0) for r in running), default=0.0)
    return max(0.0, current) + math.ceil(left / parallel) * mean


def studies_table(studies: Sequence[StudyPublic], now: datetime | None = None) -> Table:
    now = now or datetime.now(UTC)
    table = Table(title_justify="left", expand=False)
    for column, justify in [
        ("id", "right"),
        ("name", "left"),
        ("state", "left"),
        ("trials", "right"),
        ("running", "right"),
        ("best", "right"),
        ("trainer", "left"),
        ("age", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for study in studies:
        finished = sum(study.counts.get(s, 0) for s in FINISHED)
        best = (
            f"{study.metric}={fmt_value(study.best.objective)} (#{study.best.number})"
            if study.best
            else ("Pareto front" if len(study.objectives) > 1 else "-")
        )
        table.add_row(
            str(study.id),
            study.name,
            Text(study.state, style=STATE_STYLE.get(study.state, "")),
            f"{finished}/{fmt_trial_budget(study)}"
            + (f" ({budget_progress(study)})" if study.budget else ""),
            str(study.counts.get("RUNNING", 0)),
            best,
            study.trainer,
            fmt_duration((now - study.created_at).total_seconds()),
        )
    return table


#: How each budget measure is written.
BUDGET_UNITS = {"trainSteps": "steps", "trialSeconds": "trial-seconds", "wallSeconds": "s wall"}


def fmt_trial_budget(study: StudyPublic) -> str:
    """The trial count, or "∞" when a compute budget bounds the study instead."""
    return "∞" if study.max_trials >= MAX_TRIALS else str(study.max_trials)


def budget_progress(study: StudyPublic) -> str:
    """The binding budget measure: `compute 8,200/20,000 steps (41%)`."""
    if study.budget is None or not study.budget.measures:
        return ""
    top = study.budget.measures[0]
    share = 100 * top.used / top.limit if top.limit else 0
    return (
        f"compute {top.used:,.0f}/{top.limit:,.0f} {BUDGET_UNITS.get(top.measure, '')} "
        f"({share:.0f}%)"
    )


def leaderboard_table(
    study: StudyPublic,
    rows: Sequence[TrialRowPublic],
    *,
    title: str = "",
    now: datetime | None = None,
) -> Table:
    several = len(study.objectives) > 1
    arrow = "↓" if study.goal == "MINIMIZE" else "↑"
    table = Table(title=title or None, title_justify="left", expand=False)
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(f"{study.metric} {arrow}", justify="right")
    for objective in study.objectives[1:] if several else []:
        table.add_column(f"{objective.metric} {_arrow(objective.goal)}", justify="right")
    if study.constraints:
        table.add_column("safe", justify="center")
    table.add_column("last", justify="right")
    table.add_column("best step", justify="right")
    table.add_column("step", justify="right")
    table.add_column("time", justify="right")
    table.add_column("params", overflow="fold")
    for row in rows:
        planned = planned_steps(study, row.params)
        step = "-" if row.last_step is None else str(row.last_step)
        if planned and row.state == "RUNNING":
            step = f"{row.last_step or 0}/{planned}"
        others = [fmt_value(row.objectives.get(o.metric)) for o in study.objectives[1:]]
        safe = [] if not study.constraints else [_feasible_mark(row.feasible)]
        table.add_row(
            str(row.number),
            Text(row.state, style=STATE_STYLE.get(row.state, "")),
            fmt_value(row.objective),
            *(others if several else []),
            *safe,
            fmt_value(row.last_objective),
            "-" if row.best_step is None else str(row.best_step),
            step,
            fmt_duration(elapsed(row, now)),
            fmt_params(row.params),
        )
    return table


def _arrow(goal: str) -> str:
    return "↓" if goal == "MINIMIZE" else "↑"


def _feasible_mark(feasible: bool | None) -> str:
    return "-" if feasible is None else ("yes" if feasible else "no")


def pareto_table(page: ParetoPage) -> Table:
    """The front: one row per member, every objective and safety metric, the ranking step,
    whether a checkpoint and exports were kept for it, the params."""
    table = Table(
        title=f"{page.study}: Pareto front, {page.count} of {page.ranked_count} ranked trials"
        + (f" ({page.infeasible_count} infeasible)" if page.infeasible_count else ""),
        title_justify="left",
        expand=False,
    )
    table.add_column("#", justify="right")
    for objective in page.objectives:
        table.add_column(f"{objective.metric} {_arrow(objective.goal)}", justify="right")
    for constraint in page.constraints:
        side = "<=" if constraint.goal == "MINIMIZE" else ">="
        table.add_column(f"{constraint.metric} {side} {constraint.threshold:g}", justify="right")
    table.add_column("step", justify="right")
    table.add_column("kept", justify="left")
    table.add_column("params", overflow="fold")
    for member in page.data:
        kept = []
        if member.checkpoint is not None:
            kept.append("checkpoint")
        if member.exports:
            kept.append(f"{len(member.exports)} export(s)")
        table.add_row(
            str(member.number),
            *(fmt_value(member.objectives.get(o.metric)) for o in page.objectives),
            *(fmt_value(member.constraints.get(c.metric)) for c in page.constraints),
            str(member.step),
            ", ".join(kept) or "-",
            fmt_params(member.params),
        )
    return table


def study_header(
    study: StudyPublic, rows: Sequence[TrialRowPublic] = (), now: datetime | None = None
) -> Text:
    parts = [f"study {study.name} (id {study.id}): {study.state}"]
    finished = sum(study.counts.get(s, 0) for s in FINISHED)
    parts.append(f"{finished}/{fmt_trial_budget(study)} trials finished")
    spent = budget_progress(study)
    if spent:
        parts.append(spent)
    detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(study.counts.items()) if n)
    if detail:
        parts.append(f"({detail})")
    if study.best is not None and study.best.objective is not None:
        parts.append(
            f"best {study.metric}={fmt_value(study.best.objective)} (trial {study.best.number})"
        )
    eta = eta_seconds(study, rows, now)
    if eta is not None:
        parts.append(f"ETA ~{fmt_duration(eta)}")
    text = Text("  ".join(parts), style="bold")
    if study.state_reason and study.state != "RUNNING":
        text.append(f"\n{study.state_reason}", style="dim")
    return text


def study_view(
    study: StudyPublic, rows: Sequence[TrialRowPublic], now: datetime | None = None
) -> RenderableType:
    return Group(study_header(study, rows, now), leaderboard_table(study, rows, now=now))


def trial_view(study: StudyPublic, trial: TrialDetailPublic) -> RenderableType:
    """One trial in full: what it received, how it ended, every metric per step, artifacts."""
    lines = [
        f"study       {study.name}",
        f"trial       {trial.number}  {trial.state}"
        + (f" (exit code {trial.exit_code})" if trial.exit_code is not None else ""),
        f"objective   {study.metric}={fmt_value(trial.objective)}"
        + (f" at step {trial.best_step}" if trial.best_step is not None else ""),
        f"params      {fmt_params(trial.params)}",
        f"time        {fmt_duration(elapsed(trial))} (started {trial.started_at:%F %T})",
        f"worker      {trial.worker}",
        f"executor    {trial.executor.describe()}",
    ]
    head = Text("\n".join(lines))
    parts: list[RenderableType] = [head]
    if trial.failure_reason:
        parts.append(Text(f"reason      {trial.failure_reason}", style="red"))
    for problem in trial.problems:
        parts.append(Text(f"problem     {problem}", style="yellow"))
    tags = sorted({tag for step in trial.steps for tag in step.metrics})
    if trial.steps:
        table = Table(title="eval steps", title_justify="left")
        table.add_column("eval")
        table.add_column("step", justify="right")
        for tag in tags:
            table.add_column(tag, justify="right")
        for step in trial.steps:
            marker = " *" if step.step == trial.best_step else ""
            table.add_row(
                step.eval_name,
                f"{step.step}{marker}",
                *(fmt_value(step.metrics.get(tag)) for tag in tags),
            )
        parts.append(table)
    for checkpoint in trial.checkpoints:
        parts.append(Text(f"checkpoint  step {checkpoint.step}: {checkpoint.path}"))
    for export in trial.exports:
        at = "?" if export.step is None else export.step
        parts.append(Text(f"export      step {at}: {export.path}"))
    if trial.deleted is not None:
        parts.append(deletion_view(trial.deleted))
    if trial.log_tail:
        parts.append(Text("log (last lines)", style="bold"))
        parts.append(Text("\n".join(trial.log_tail), style="dim"))
    return Group(*parts)


def fmt_bytes(count: int) -> str:
    """`12,345,678 bytes (12.3 MB)`: exact, and readable."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count:,} bytes ({count / size:.1f} {unit})"
    return f"{count:,} bytes"


def _path_lines(paths: Sequence[Any], indent: str) -> list[str]:
    return [f"{indent}{p.location:<5} {p.kind:<6} {p.path} ({fmt_bytes(p.bytes)})" for p in paths]


def deletion_view(deleted: DeletionPublic) -> Text:
    """What retention deleted of a trial (its metrics and log stay)."""
    lines = [
        f"retention   {deleted.message}",
        f"{'':<11} {fmt_bytes(deleted.bytes)} by {deleted.worker}; its metrics and log stay",
        *_path_lines(deleted.paths, " " * 12),
    ]
    return Text("\n".join(lines), style="yellow" if deleted.state != "DONE" else "dim")


GC_OUTCOMES = {
    "deleted": "deleted",
    "resumed": "finished (cut short before)",
    "skipped": "skipped",
    "interrupted": "interrupted",
    "would_delete": "would delete",
    "would_resume": "would finish (cut short before)",
}


def gc_view(report: GcReportPublic) -> RenderableType:
    """A retention pass: per trial what goes (or would), and the bytes freed."""
    source = "given" if report.policy_from == "request" else "the study's policy"
    if report.policy_saved:
        source += "; now the study's policy"
    kept = ", ".join(map(str, report.kept_trials)) or "none"
    parts: list[RenderableType] = [
        Text(
            f"study {report.study}: keepBestTrials={report.keep_best_trials} ({source}); "
            f"kept trials: {kept}",
            style="bold",
        )
    ]
    if not report.trials:
        parts.append(Text("nothing to delete"))
    for trial in report.trials:
        outcome = GC_OUTCOMES.get(trial.outcome, trial.outcome)
        lines = [
            f"trial {trial.number} {trial.state}: {outcome}, {fmt_bytes(trial.bytes)}",
            f"  {trial.reason}",
        ]
        if trial.note:
            lines.append(f"  {trial.note}")
        lines += _path_lines(trial.paths, "    ")
        parts.append(Text("\n".join(lines), style="yellow" if trial.outcome == "skipped" else ""))
    total = fmt_bytes(report.bytes_freed)
    if report.dry_run:
        parts.append(Text(f"dry run: would free {total}; nothing was deleted", style="bold"))
    else:
        parts.append(Text(f"freed {total}", style="bold"))
    return Group(*parts)


def best_view(best: BestPublic, artifact_root: str | None) -> Text:
    """The best trial; paths under `artifact_root` when local, relative to the store otherwise."""

    def where(path: str) -> str:
        return f"{artifact_root}/{path}" if artifact_root else path

    lines = [
        f"study       {best.study}",
        f"best trial  {best.number}",
        f"objective   {best.metric + '=' if best.metric else ''}{fmt_value(best.objective)}",
        f"best step   {best.step}",
        f"params      {fmt_params(best.params)}",
    ]
    if best.checkpoint is not None:
        lines.append(f"checkpoint  {where(best.checkpoint.path)}")
    else:
        lines.append("checkpoint  none kept for that step")
    if best.export is not None:
        lines.append(f"export      {where(best.export.path)}")
    else:
        others = ", ".join(
            f"{e.exporter}/{e.version} (step {e.step if e.step is not None else '?'})"
            for e in best.other_exports
        )
        lines.append(
            "export      none for that step"
            + (
                f"; exports of this trial: {others}"
                if others
                else "; no SavedModel of the trial was recorded (a saved_model.pb anywhere in its "
                "trial dir, or in the spec's exportDirs)"
            )
        )
    return Text("\n".join(lines))
