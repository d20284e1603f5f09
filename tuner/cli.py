"""The `tuner` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live

from tuner import studies as study_ops
from tuner.artifacts import ArtifactStore, copy_for_serving
from tuner.config import Settings, get_settings
from tuner.entities import Study
from tuner.errors import SpecError, StudyNotFoundError, TunerError
from tuner.execution import describe_exit
from tuner.manager import StudyManager
from tuner.persistence import Database
from tuner.persistence import repository as repo
from tuner.spec import StudySpec, load_spec_file
from tuner.studies import Backend
from tuner.trainers import TrainerRegistry
from tuner.view import best_model_text, fmt_value, leaderboard_table, live_view

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

app = typer.Typer(
    help="Hyperparameter tuning for TensorFlow Estimator trainers.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if verbose
        else "%(levelname)s: %(message)s",
    )


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _backend(settings: Settings) -> Backend:
    return Backend.connect(settings.database_url)


def _registry(settings: Settings) -> TrainerRegistry:
    return TrainerRegistry.from_file(settings.trainers_file)


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what the manager does.")
    ] = False,
) -> None:
    _setup_logging(verbose)


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(help="Study spec (YAML or JSON).")],
    name: Annotated[str | None, typer.Option(help="Study name (overrides the spec's).")] = None,
    trainer: Annotated[str | None, typer.Option(help="Registered trainer (overrides).")] = None,
    trainer_module: Annotated[
        str | None,
        typer.Option(help="Register a local `python -m MODULE` trainer for this run."),
    ] = None,
    view: Annotated[bool, typer.Option(help="Live terminal view.")] = True,
) -> None:
    """Run a study to its budget on this machine (resumes it if it exists)."""
    settings = get_settings()
    registry = _registry(settings)
    if trainer_module:
        trainer = trainer or trainer_module.rsplit(".", 1)[0].split(".")[-1]
        registry.register_module(trainer, trainer_module)
    try:
        spec = load_spec_file(spec_file, name=name, trainer=trainer)
        registry.get(spec.trainer)
        backend = _backend(settings)
    except TunerError as exc:
        raise _fail(str(exc)) from None
    try:
        study = _submit_or_resume(backend, spec, registry)
        _run_manager(
            backend, registry, settings, study.name, spec.hyperparameters.max_parallel_trials, view
        )
        with backend.db.session() as session:
            final = repo.get_study(session, study.name)
            rows, _ = repo.leaderboard(session, final, limit=10)
        console.print(leaderboard_table(final, rows, title=f"{final.name}: {final.state}"))
        if final.state_reason:
            console.print(final.state_reason, style="dim")
        try:
            best = study_ops.best_model(backend, final.name)
            console.print(best_model_text(best, str(settings.artifact_root.resolve())))
        except StudyNotFoundError as exc:
            console.print(str(exc), style="yellow")
        if final.state == "FAILED":
            raise typer.Exit(1)
        if final.state != "COMPLETED":
            raise typer.Exit(130)
    except TunerError as exc:
        raise _fail(str(exc)) from None
    finally:
        backend.close()


def _submit_or_resume(backend: Backend, spec: StudySpec, registry: TrainerRegistry) -> Study:
    with backend.db.session() as session:
        existing = repo.find_study(session, spec.name)
    if existing is None:
        return study_ops.submit_study(backend, spec, registry)
    if _search_part(existing.spec) != _search_part(spec):
        raise SpecError(
            [
                (
                    "name",
                    f"a study named {spec.name!r} exists with a different spec; "
                    "choose another name to start a new study",
                )
            ]
        )
    if existing.state != "COMPLETED" or spec.max_trials > existing.spec.max_trials:
        err.print(f"resuming study {spec.name!r} ({existing.state})")
        return study_ops.resume_study(
            backend, spec.name, max_trials=spec.hyperparameters.max_trials
        )
    return existing


def _search_part(spec: StudySpec) -> str:
    document = spec.to_document()
    document["hyperparameters"].pop("maxTrials", None)
    return json.dumps(document, sort_keys=True)


def _run_manager(
    backend: Backend,
    registry: TrainerRegistry,
    settings: Settings,
    study_name: str,
    slots: int,
    view: bool,
) -> None:
    manager = StudyManager(backend, registry, settings, slots=slots, studies=[study_name])
    stop = {"signal": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop["signal"] = signum
        manager.stop_requested()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if view and console.is_terminal:
            with Live(console=console, refresh_per_second=2, transient=False) as live:

                def refresh() -> bool:
                    with backend.db.session() as session:
                        study = repo.get_study(session, study_name)
                        counts = repo.trial_counts(session, study.id)
                        rows, _ = repo.leaderboard(session, study, limit=20)
                    live.update(live_view(study, counts, rows))
                    return bool(stop["signal"])

                manager.run(should_stop=refresh)
        else:
            manager.run(should_stop=lambda: bool(stop["signal"]))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop["signal"]:
        err.print(
            f"interrupted ({signal.Signals(stop['signal']).name}); running trials stopped. "
            "Run the same command again to resume."
        )
        raise typer.Exit(130)


@app.command()
def leaderboard(
    study: Annotated[str, typer.Argument(help="Study name or id.")],
    limit: Annotated[int, typer.Option(min=1)] = 50,
    state: Annotated[str | None, typer.Option(help="Only trials in this state.")] = None,
) -> None:
    """Trials sorted by objective in the goal's direction."""
    settings = get_settings()
    with _session(settings) as session:
        found = repo.get_study(session, study)
        rows, total = repo.leaderboard(session, found, state=state, limit=limit)
        counts = repo.trial_counts(session, found.id)
    console.print(live_view(found, counts, rows))
    if total > len(rows):
        console.print(f"({total - len(rows)} more; use --limit)", style="dim")


@app.command()
def trials(study: Annotated[str, typer.Argument(help="Study name or id.")]) -> None:
    """Every trial in the order it started, with its failure reason."""
    settings = get_settings()
    with _session(settings) as session:
        found = repo.get_study(session, study)
        runs = [r for r in repo.runs(session, found.id) if r.number is not None]
        values = {r.id: repo.objective_value(session, r, found.spec.metric_tag) for r in runs}
    for r in runs:
        exit_text = "" if r.exit_code is None else f" ({describe_exit(r.exit_code)})"
        console.print(
            f"[bold]trial {r.number}[/bold] {r.state}{exit_text}  "
            f"{found.spec.metric_tag}={fmt_value(values[r.id])}  params={r.params}",
            highlight=False,
        )
        if r.failure_reason:
            console.print(
                "  " + r.failure_reason.replace("\n", "\n  "), style="dim", highlight=False
            )
        for problem in r.problems:
            console.print(f"  problem: {problem}", style="yellow", highlight=False)


@app.command()
def best(study: Annotated[str, typer.Argument(help="Study name or id.")]) -> None:
    """The best trial, its best step, and the paths of that step's checkpoint and export."""
    settings = get_settings()
    backend = _connect(settings)
    try:
        found = study_ops.best_model(backend, study)
    except TunerError as exc:
        raise _fail(str(exc)) from None
    finally:
        backend.close()
    console.print(best_model_text(found, str(settings.artifact_root.resolve())), highlight=False)


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name or id.")],
    to: Annotated[Path, typer.Option("--to", help="Destination (TF Serving model base path).")],
    model_name: Annotated[str | None, typer.Option(help="Model dir name (default: study).")] = None,
) -> None:
    """Copy the best step's SavedModel to DIR/<model>/<version>/ for TF Serving."""
    settings = get_settings()
    backend = _connect(settings)
    try:
        found = study_ops.best_model(backend, study)
        if found.export is None:
            raise _fail(str(best_model_text(found, str(settings.artifact_root))))
        store = ArtifactStore(settings.artifact_root)
        target = copy_for_serving(
            store.resolve(found.export.path), to, model_name=model_name or found.study.name
        )
    except TunerError as exc:
        raise _fail(str(exc)) from None
    finally:
        backend.close()
    console.print(f"exported trial {found.run.number} step {found.step} to {target}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the tuner's migrations (and create Optuna's tables)."""
    settings = get_settings()
    try:
        database = Database(settings.database_url)
        database.upgrade()
        Backend.connect(settings.database_url, auto_init=False).close()
    except TunerError as exc:
        raise _fail(str(exc)) from None
    console.print(f"database at revision {database.current_revision()}")


@db_app.command("check")
def db_check() -> None:
    """Exit 1 if the schema is not the one this tuner needs."""
    try:
        Database(get_settings().database_url).check_schema()
    except TunerError as exc:
        raise _fail(str(exc), 1) from None
    console.print("schema is up to date")


def _connect(settings: Settings) -> Backend:
    try:
        return _backend(settings)
    except TunerError as exc:
        raise _fail(str(exc)) from None


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A read-only CLI command's transaction; tuner errors become a clear exit."""
    backend = _connect(settings)
    try:
        with backend.db.session() as session:
            yield session
    except TunerError as exc:
        raise _fail(str(exc)) from None
    finally:
        backend.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
