"""The CLI's study commands: read (`studies`, `show`, `leaderboard`, `trials`, `trial`, `logs`,
`best`) and write (`stop`, `resume`, `delete`, `retry`, `gc`), each against the local database
or, with `--server` (or `TUNER_SERVER`), a server, printing the same either way."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from pydantic import BaseModel

from tuner.cli.exits import ExitCode, exit_code, unreachable
from tuner.cli.output import fit, make_console
from tuner.cli.sources import Source, open_source
from tuner.cli.view import (
    best_view,
    fmt_trial_budget,
    gc_view,
    leaderboard_table,
    pareto_table,
    studies_table,
    study_view,
    trial_view,
)
from tuner.client.rest import ApiError
from tuner.domain.config import get_settings
from tuner.domain.errors import StudyNotFoundError, TrialNotFoundError, TunerError

console = make_console()
err = make_console(stderr=True)

StudyArg = Annotated[str, typer.Argument(help="Study name or id.", show_default=False)]
NumberArg = Annotated[int, typer.Argument(min=0, help="Trial number.", show_default=False)]
ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="TUNER_SERVER",
        help="Base URL of a tuner server (default: the local database).",
    ),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="TUNER_TOKEN", help="Bearer token.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (the API's shapes).")]
StateOpt = Annotated[
    list[str] | None, typer.Option("--state", help="Only trials in this state (repeatable).")
]


def _fail(message: str, code: int = ExitCode.USAGE) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _hint(exc: Exception, study: str | None) -> str:
    """What to type next, for the errors a user meets most."""
    code = getattr(exc, "code", "")
    if isinstance(exc, StudyNotFoundError) or code == "STUDY_NOT_FOUND":
        return "; list the studies with `tuner studies`"
    if isinstance(exc, TrialNotFoundError) or code == "TRIAL_NOT_FOUND":
        return f"; list its trials with `tuner trials {study}`" if study else ""
    if code == "UNAUTHENTICATED":
        return "; pass --token (or set TUNER_TOKEN), made with `tuner token create`"
    return ""


@contextmanager
def _source(server: str | None, token: str | None, study: str | None = None) -> Iterator[Source]:
    """The source, with its errors turned into a clear message and their exit code."""
    try:
        with open_source(get_settings(), server, token) as source:
            yield source
    except ApiError as exc:
        raise _fail(f"{exc.detail}{_hint(exc, study)}", exit_code(exc)) from None
    except TunerError as exc:
        raise _fail(f"{exc}{_hint(exc, study)}", exit_code(exc)) from None
    except httpx.TransportError as exc:
        raise _fail(unreachable(str(server), exc), exit_code(exc)) from None
    except httpx.HTTPError as exc:
        raise _fail(f"the server at {server}: {exc}", exit_code(exc)) from None


def _print_json(value: BaseModel | list[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, list):
        document: Any = [v.model_dump(mode="json", by_alias=True) for v in value]
    elif isinstance(value, BaseModel):
        document = value.model_dump(mode="json", by_alias=True)
    else:
        document = value
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def studies(
    state: Annotated[str | None, typer.Option(help="Only studies in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every study: state, progress, best objective, trainer, age."""
    with _source(server, token) as source:
        page = source.studies(state=state, limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    if not page.data:
        console.print(f"no studies in {source.where}; submit one with `tuner submit SPEC`")
        return
    console.print(studies_table(page.data))
    if page.count > offset + len(page.data):
        console.print(f"({page.count - offset - len(page.data)} more; use --offset)", style="dim")


def show(
    study: StudyArg,
    top: Annotated[int, typer.Option(min=1, max=500, help="Leaderboard rows.")] = 10,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """A study: state, progress, best so far, ETA, the top of its leaderboard, its spec."""
    with _source(server, token, study) as source:
        found = source.study(study)
        running = source.trials(study, states=["RUNNING"], limit=500)
        board = source.trials(study, limit=top)
    if as_json:
        _print_json(found)
        return
    rows = {r.number: r for r in [*board.data, *running.data]}
    console.print(study_view(found, list(rows.values())), highlight=False)
    console.print(
        f"trainer {found.trainer}, goal {found.goal} {found.metric}, "
        f"budget {fmt_trial_budget(found)} trials",
        style="dim",
        highlight=False,
    )


def leaderboard(
    study: StudyArg,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    state: StateOpt = None,
    sort: Annotated[
        str | None, typer.Option(help="e.g. -metric:accuracy, param:lr, startedAt.")
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="e.g. 'metric:rmse<0.5', 'param:lr>=0.01' (repeatable)."),
    ] = None,
    watch: Annotated[
        float | None, typer.Option(help="Redraw every SECONDS until the study ends.")
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Trials sorted by objective in the goal's direction (or by --sort), with elapsed time,
    step and the study's ETA."""
    with _source(server, token, study) as source:

        def draw() -> tuple[Any, Any]:
            found = source.study(study)
            page = source.trials(
                study,
                states=state or (),
                sort=sort,
                filters=filters or (),
                limit=limit,
                offset=offset,
            )
            return found, page

        found, page = draw()
        if as_json:
            _print_json(page)
            return
        if watch and console.is_terminal:
            _redraw(lambda: study_view(*draw_rows(draw)), watch, source, study)
            return
        console.print(study_view(found, page.data), highlight=False)
    if page.count > offset + len(page.data):
        console.print(f"({page.count - offset - len(page.data)} more; use --limit)", style="dim")


def draw_rows(draw: Callable[[], tuple[Any, Any]]) -> tuple[Any, Any]:
    found, page = draw()
    return found, page.data


def _redraw(render: Callable[[], Any], interval: float, source: Source, study: str) -> None:
    from rich.live import Live

    def fitted() -> Any:
        return fit(render(), console)

    with Live(fitted(), console=console, refresh_per_second=4) as live:
        while source.study(study).state == "RUNNING":
            time.sleep(interval)
            live.update(fitted())
        live.update(fitted())


def watch(
    study: StudyArg,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Follow a study live until it ends: its leaderboard on a terminal, a line per change
    otherwise. Exits 1 if it ends FAILED or STOPPED."""
    from tuner.cli.watch import watch_study

    try:
        with _source(server, token, study) as source:
            final = watch_study(source, study, console)
    except KeyboardInterrupt:
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    if final not in ("COMPLETED", "RUNNING"):
        raise typer.Exit(ExitCode.FAILED)


def trials(
    study: StudyArg,
    state: StateOpt = None,
    as_json: JsonOpt = False,
    as_csv: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Print CSV (as GET .../trials.csv): a column per param, objective and metric.",
        ),
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Every trial in the order it started, with its failure reason and problems."""
    if as_csv and as_json:
        raise _fail("--csv and --json: choose one")
    if as_csv:
        with _source(server, token, study) as source:
            for chunk in source.trials_csv(study, states=state or (), sort="number"):
                sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        return
    with _source(server, token, study) as source:
        found = source.study(study)
        rows = _all_trials(source, study, state or [])
    if as_json:
        _print_json(rows)
        return
    console.print(leaderboard_table(found, rows), highlight=False)
    for row in rows:
        if row.failure_reason:
            reason = row.failure_reason.replace("\n", "\n    ")
            console.print(
                f"  trial {row.number} {row.state}: {reason}", style="dim", highlight=False
            )
    console.print(f"details of one: `tuner trial {study} N`", style="dim")


def _all_trials(source: Source, study: str, states: list[str]) -> list[Any]:
    rows: list[Any] = []
    while True:
        page = source.trials(study, states=states, sort="number", limit=500, offset=len(rows))
        rows += page.data
        if not page.data or len(rows) >= page.count:
            return rows


def trial(
    study: StudyArg,
    number: NumberArg,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """One trial: params as the trainer received them, every metric per eval step, its
    failure reason, kept checkpoint and exports, the end of its log."""
    with _source(server, token, study) as source:
        found = source.study(study)
        detail = source.trial(study, number)
    if as_json:
        _print_json(detail)
        return
    console.print(trial_view(found, detail), highlight=False)


def logs(
    study: StudyArg,
    number: NumberArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing while the trial runs.")
    ] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """A trial's log (stdout and stderr of its trainer)."""
    with _source(server, token, study) as source:
        offset = 0
        while True:
            running = follow and source.trial(study, number).state == "RUNNING"
            chunk = source.log(study, number, offset=offset)
            offset += len(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            if not running:
                return
            time.sleep(1.0)


def best(
    study: StudyArg,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """The best trial, its best step, and that step's checkpoint and export."""
    with _source(server, token, study) as source:
        found = source.best(study)
    if as_json:
        _print_json(found)
        return
    console.print(best_view(found, source.artifact_root), highlight=False)
    if source.artifact_root is None:
        console.print(f"download it with `tuner pull {study} --to DIR`", style="dim")


def pareto(
    study: StudyArg,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """The Pareto front: trials no other beats on every objective, with their kept artifacts."""
    with _source(server, token, study) as source:
        page = source.pareto(study)
    if as_json:
        _print_json(page)
        return
    console.print(pareto_table(page), highlight=False)
    if page.data:
        console.print(
            f"no member beats another on every objective: pick one, then "
            f"`tuner pull {study} --trial N`",
            style="dim",
            highlight=False,
        )


def stop(
    study: StudyArg,
    trial: Annotated[
        int | None,
        typer.Option(
            "--trial",
            min=0,
            help="Stop only this running trial: it ends PRUNED (counted, not run again) and "
            "the study goes on.",
        ),
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Stop a study: its running trials get SIGTERM (SIGKILL after the grace period); or,
    with --trial N, that one trial."""
    if trial is not None:
        with _source(server, token, study) as source:
            detail = source.stop_trial(study, trial)
        asked = detail.stop_requested_at
        who = f" by {detail.stop_requested_by}" if detail.stop_requested_by else ""
        when = f" at {asked:%Y-%m-%d %H:%M:%S %Z}" if asked else ""
        console.print(
            f"study {study} trial {trial}: stop asked for{who}{when}; it ends PRUNED "
            f"(see `tuner trial {study} {trial}`)",
            highlight=False,
        )
        return
    with _source(server, token, study) as source:
        found = source.stop(study)
    console.print(f"study {found.name}: {found.state}; resume it with `tuner resume {study}`")


def note(
    study: StudyArg,
    text: Annotated[
        str | None,
        typer.Argument(help="The note (markdown); omit it to print the note.", show_default=False),
    ] = None,
    trial: Annotated[
        int | None, typer.Option("--trial", min=0, help="The note of this trial.")
    ] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", metavar="FILE", help="Read the note from FILE ('-': stdin)."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Delete the note.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print, set or clear the note (markdown) of a study, or of one of its trials."""
    given = [name for name, v in (("TEXT", text), ("--file", file), ("--clear", clear)) if v]
    if len(given) > 1:
        raise _fail(f"{' and '.join(given)}: give one of TEXT, --file or --clear")
    if file is not None:
        text = _read_note(file)
    with _source(server, token, study) as source:
        if text is None and not clear:
            found = source.study(study) if trial is None else source.trial(study, trial)
            if found.note is None:
                where = f"trial {trial} of study {study}" if trial is not None else study
                flag = f" --trial {trial}" if trial is not None else ""
                console.print(
                    f"no note on {where}; write one with `tuner note {study}{flag} TEXT`",
                    style="dim",
                    highlight=False,
                )
            else:
                sys.stdout.write(found.note if found.note.endswith("\n") else found.note + "\n")
            return
        saved = source.set_note(study, trial, text or "")
    what = f"study {study} trial {trial}" if trial is not None else f"study {study}"
    done = "note cleared" if not saved.note else f"note saved ({len(saved.note)} characters)"
    console.print(f"{what}: {done}", highlight=False)


def _read_note(file: str) -> str:
    try:
        if file == "-":
            return sys.stdin.read()
        with open(file, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"--file {file}: cannot read it ({exc})") from None


def resume(
    study: StudyArg,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="A larger budget (maxTrials).")
    ] = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Run a stopped, failed or finished study again, optionally with a larger budget."""
    with _source(server, token, study) as source:
        found = source.resume(study, max_trials=max_trials)
    where = "the server's workers" if server else "`tuner worker` or `tuner run`"
    console.print(f"study {found.name}: {found.state}, budget {found.max_trials}; {where} run it")


def delete(
    study: StudyArg,
    delete_artifacts: Annotated[
        bool, typer.Option("--delete-artifacts", help="Also delete its trial dirs and models.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete a study's records (refused while trials run; stop it first)."""
    if not yes and sys.stdin.isatty():
        typer.confirm(f"delete study {study!r}?", abort=True)
    with _source(server, token, study) as source:
        source.delete(study, delete_artifacts=delete_artifacts)
    kept = "" if delete_artifacts else " (its artifacts are kept; --delete-artifacts removes them)"
    console.print(f"study {study} deleted{kept}")


def retry(
    study: StudyArg,
    failed: Annotated[bool, typer.Option("--failed", help="Retry the failed trials.")] = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Enqueue the params of the failed trials as new trials (and extend the budget)."""
    if not failed:
        raise _fail("say what to retry: --failed")
    with _source(server, token, study) as source:
        found = source.retry_failed(study)
    console.print(f"study {found.name}: {found.state_reason}; budget now {found.max_trials}")


def gc(
    study: StudyArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
    keep_best: Annotated[
        int | None,
        typer.Option(
            "--keep-best",
            min=1,
            help="Keep the best K finished trials (by each objective, and the Pareto front, "
            "with several); becomes the study's retention policy. Default: the study's own.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete the kept checkpoint, exports and archives of the finished trials outside the
    best K (their metrics, log and a record stay); running and downloading trials are left."""
    with _source(server, token, study) as source:
        report = source.gc(study, keep_best_trials=keep_best, dry_run=dry_run)
    if as_json:
        _print_json(report)
        return
    console.print(gc_view(report), highlight=False)


COMMANDS: list[Callable[..., None]] = [
    studies,
    show,
    leaderboard,
    watch,
    trials,
    trial,
    logs,
    best,
    pareto,
    stop,
    note,
    resume,
    delete,
    retry,
    gc,
]


def register(app: typer.Typer) -> None:
    for command in COMMANDS:
        app.command()(command)
