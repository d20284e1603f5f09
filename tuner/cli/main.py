"""The `tuner` command line."""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live

from tuner.cli import studies as cli_studies
from tuner.cli.exits import EPILOG, ExitCode, exit_code, unreachable
from tuner.cli.output import fit, make_console
from tuner.domain.config import Settings, get_settings
from tuner.domain.errors import SpecError, StudyNotFoundError, TunerError
from tuner.domain.spec import StudySpec, load_spec_file
from tuner.domain.trainers import TrainerRegistry
from tuner.trial.resources import Capacity, Need, capacity_from_options, gpus_note

#: In the work dir: touched by a worker's loop, read by `tuner worker-alive`.
ALIVE_FILE = "worker.alive"

# The database, Optuna and the manager load only for the commands that use them, so a command
# that talks to a server starts quickly.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from tuner.artifacts.store import ArtifactStore
    from tuner.client.downloads import ProgressCallback, ResumeCallback
    from tuner.domain.entities import Export, Study
    from tuner.engine.manager import StudyManager
    from tuner.study.operations import Backend

app = typer.Typer(
    help="Hyperparameter tuning for TensorFlow Estimator trainers.",
    epilog=EPILOG,
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
cli_studies.register(app)

ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="TUNER_SERVER",
        help="Base URL of the tuner server (default: `tuner serve`'s on this machine).",
    ),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", envvar="TUNER_TOKEN", help="Bearer token.")
]

GpusOpt = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        metavar="IDS",
        help="GPU ids this machine gives its trials, e.g. 0,1,2,3 (as nvidia-smi numbers "
        "them), or 'none'. Each trial of a study with gpusPerTrial=N gets N of them to itself "
        '(CUDA_VISIBLE_DEVICES=2,3); other trials see none (CUDA_VISIBLE_DEVICES=""). '
        "Unset: GPUs are not managed (trials see this process's devices) and studies that "
        "need GPUs are left to other workers.",
    ),
]
CpusOpt = Annotated[
    float | None,
    typer.Option(
        "--cpus",
        help="CPUs this machine gives its trials (default: those this process may run on). "
        "Trials of studies with cpusPerTrial are counted against it.",
    ),
]


class ExecutorName(enum.StrEnum):
    local = "local"
    ray = "ray"


ExecutorOpt = Annotated[
    ExecutorName | None,
    typer.Option(
        "--executor",
        envvar="TUNER_EXECUTOR",
        help="Where trials run: 'local' (subprocesses of this process, in its slots) or 'ray' "
        "(tasks on a Ray cluster, which places each one; --slots bounds those in flight).",
        show_default="local",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="TUNER_RAY_ADDRESS",
        metavar="ADDRESS",
        help="With --executor ray: the cluster (HOST:6379, ray://HOST:10001 or auto). "
        "Unset: a Ray cluster of its own on this machine.",
    ),
]

console = make_console()
err = make_console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        if verbose
        else "%(levelname)s: %(message)s",
    )


def _log_trials() -> None:
    """A long-running service logs each trial's start and end (INFO) even without `-v`."""
    tuner_logger = logging.getLogger("tuner")
    if tuner_logger.getEffectiveLevel() > logging.INFO:
        tuner_logger.setLevel(logging.INFO)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))


def _fail(message: str, code: int = ExitCode.USAGE) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _backend(settings: Settings, *, manager: bool = False) -> Backend:
    """`manager=True`: for a study manager (no pool pre-ping, see `create_db_engine`)."""
    from tuner.study.operations import Backend

    return Backend.connect(settings.database_url, pre_ping=not manager)


def _registry(settings: Settings) -> TrainerRegistry:
    return TrainerRegistry.from_file(settings.trainers_file)


def _with_executor(
    settings: Settings, executor: ExecutorName | None, ray_address: str | None
) -> Settings:
    """`--executor` and `--ray-address` over the settings (`TUNER_EXECUTOR`, ...)."""
    update: dict[str, str] = {}
    if executor is not None:
        update["executor"] = executor.value
    if ray_address:
        update["ray_address"] = ray_address
    if ray_address and (executor or ExecutorName(settings.executor)) is not ExecutorName.ray:
        raise _fail("--ray-address needs --executor ray")
    return settings.model_copy(update=update) if update else settings


def _capacity_for(settings: Settings, gpus: str | None, cpus: float | None) -> Capacity:
    """`--gpus`/`--cpus` describe this machine; on Ray, the nodes declare their own."""
    if settings.executor == "ray" and (gpus is not None or cpus is not None):
        raise _fail(
            "--gpus and --cpus count this machine's devices; with --executor ray each Ray node "
            "declares its own (ray start --num-gpus N --num-cpus M)"
        )
    return _capacity(gpus, cpus)


def _capacity(gpus: str | None, cpus: float | None) -> Capacity:
    """`--gpus` and `--cpus`, checked before anything starts (exit 2 naming the option)."""
    try:
        capacity = capacity_from_options(gpus, cpus)
    except ValueError as exc:  # a bad option value: a usage error
        raise _fail(str(exc)) from None
    note = gpus_note(capacity)
    if note is not None:
        err.print(f"warning: {note}", highlight=False)
    return capacity


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
    preload: Annotated[
        list[str] | None,
        typer.Option(
            help="With --trainer-module: modules to import once for all trials (warm starts, "
            "e.g. --preload tensorflow --preload tensorflow_estimator). Repeatable."
        ),
    ] = None,
    view: Annotated[bool, typer.Option(help="Live terminal view.")] = True,
    gpus: GpusOpt = None,
    cpus: CpusOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Run a study to its budget on this machine, or on a Ray cluster (resumes it if it
    exists)."""
    settings = _with_executor(get_settings(), executor, ray_address)
    capacity = _capacity_for(settings, gpus, cpus)
    registry = _registry(settings)
    if trainer_module:
        trainer = trainer or trainer_module.rsplit(".", 1)[0].split(".")[-1]
        registry.register_module(trainer, trainer_module, preload=tuple(preload or ()))
    elif preload:
        raise _fail("--preload needs --trainer-module (a registered trainer sets `preload`)")
    try:
        spec = load_spec_file(spec_file, name=name, trainer=trainer)
        registry.get(spec.trainer)
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    refusal = capacity.refusal(Need.of(spec)) if settings.executor == "local" else None
    if refusal is not None:
        raise _fail(f"study {spec.name!r} cannot run here: it {refusal}")
    try:
        backend = _backend(settings, manager=True)
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    try:
        study = _submit_or_resume(backend, spec, registry)
        _run_manager(
            backend,
            registry,
            settings,
            study.name,
            spec.hyperparameters.max_parallel_trials,
            view,
            capacity,
        )
        _print_outcome(backend, settings, study.id)
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    finally:
        backend.close()


def _print_outcome(backend: Backend, settings: Settings, study_id: int) -> None:
    """The ended study's leaderboard, its reason and its best model; the exit code says how
    it ended (1: FAILED, 130: stopped before its end)."""
    from tuner.cli.view import best_view, leaderboard_table, pareto_table
    from tuner.study import answers as service

    final = service.get_study(backend, study_id)
    rows = service.list_trials(backend, study_id, limit=10).data
    console.print(leaderboard_table(final, rows, title=f"{final.name}: {final.state}"))
    if final.state_reason:
        console.print(final.state_reason, style="dim")
    try:
        if len(final.objectives) > 1:
            console.print(pareto_table(service.get_pareto(backend, final.id)), highlight=False)
            console.print(
                f"several objectives: pick a member, then `tuner pull {final.name} --trial N`",
                style="dim",
            )
        else:
            best = service.get_best(backend, final.id)
            console.print(best_view(best, settings.artifact_location))
    except StudyNotFoundError as exc:
        console.print(str(exc), style="yellow")
    if final.state == "FAILED":
        raise typer.Exit(ExitCode.FAILED)
    if final.state != "COMPLETED":
        raise typer.Exit(ExitCode.INTERRUPTED)


def _submit_or_resume(backend: Backend, spec: StudySpec, registry: TrainerRegistry) -> Study:
    from tuner.persistence import repository as repo
    from tuner.study import operations as study_ops

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
        return study_ops.resume_study(backend, spec.name, max_trials=spec.max_trials)
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
    capacity: Capacity,
) -> None:
    from tuner.cli.view import study_view
    from tuner.engine.manager import StudyManager
    from tuner.study import answers as service

    manager = StudyManager(
        backend, registry, settings, slots=slots, studies=[study_name], capacity=capacity
    )
    with _stop_on_signals(manager) as stop:
        if view and console.is_terminal:
            with Live(console=console, refresh_per_second=2, transient=False) as live:

                def refresh() -> bool:
                    study = service.get_study(backend, study_name)
                    rows = {r.number: r for r in service.list_trials(backend, study_name).data}
                    for row in service.list_trials(backend, study_name, states=["RUNNING"]).data:
                        rows[row.number] = row
                    live.update(fit(study_view(study, list(rows.values())), console))
                    return stop()

                manager.run(should_stop=refresh)
        else:
            manager.run(should_stop=stop)
    if stop.received:
        name = signal.Signals(stop.received).name
        _pause_interrupted(backend, study_name, name)
        err.print(
            f"interrupted ({name}); running trials stopped, study {study_name!r} paused "
            f"(STOPPED). Run the same command again to resume (or `tuner resume {study_name}` "
            "for `tuner serve` or `tuner worker` to run it)."
        )
        raise typer.Exit(ExitCode.INTERRUPTED)


def _pause_interrupted(backend: Backend, study_name: str, signal_name: str) -> None:
    """An interrupted `tuner run` leaves its study STOPPED, saying how to resume it: nothing
    runs it any more, and a later `tuner serve` or `tuner worker` on the same database must not
    pick it up unasked. Its stopped trials were recorded to run again first."""
    from tuner.persistence import repository as repo

    reason = (
        f"paused: `tuner run` was interrupted ({signal_name}); its running trials were "
        "stopped and run again first on resume. Resume it with the same `tuner run SPEC`, or "
        f"`tuner resume {study_name}` for `tuner serve` or `tuner worker` to run it"
    )
    with backend.db.session() as session:
        study = repo.get_study(session, study_name)
        if study.state == "RUNNING":
            repo.set_study_state(session, study.id, "STOPPED", reason)


class _SignalStop:
    """Set by SIGINT/SIGTERM; asks the manager's trials to stop at once."""

    def __init__(self, manager: StudyManager) -> None:
        self.manager = manager
        self.received = 0

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        self.manager.stop_requested()

    def __call__(self) -> bool:
        return bool(self.received)


@contextmanager
def _stop_on_signals(manager: StudyManager) -> Iterator[_SignalStop]:
    """While inside, SIGINT and SIGTERM stop the manager cleanly instead of killing it."""
    stop = _SignalStop(manager)
    previous = {s: signal.signal(s, stop.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name or id.")],
    to: Annotated[Path, typer.Option("--to", help="Destination (TF Serving model base path).")],
    model_name: Annotated[str | None, typer.Option(help="Model dir name (default: study).")] = None,
) -> None:
    """Copy the best step's SavedModel to DIR/<model>/<version>/ for TF Serving."""
    from tuner.artifacts.store import ArtifactStore, copy_for_serving
    from tuner.cli.view import best_view
    from tuner.public.schemas import BestPublic
    from tuner.study import operations as study_ops
    from tuner.study import pins

    settings = get_settings()
    backend = _connect(settings)
    try:
        found = study_ops.best_model(backend, study)
        if found.export is None:
            raise _fail(
                str(best_view(BestPublic.build(found), settings.artifact_location)),
                ExitCode.NOT_FOUND,
            )
        store = ArtifactStore.from_settings(settings)
        name = model_name or found.study.name
        seconds = settings.download_pin_seconds
        pin = pins.pin_run(
            backend,
            found.run.id,
            what=f"the best trial of study {found.study.name!r}",
            holder=pins.holder_name("tuner export"),
            seconds=seconds,
        )
        with pins.held(backend, pin, seconds):  # retention leaves it alone while it is copied
            if store.remote is not None:
                target = _export_from_store(store, found.export, to / name)
            else:
                target = copy_for_serving(store.resolve(found.export.path), to, model_name=name)
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    finally:
        backend.close()
    console.print(f"exported trial {found.run.number} step {found.step} to {target}")


def _export_from_store(store: ArtifactStore, export: Export, destination: Path) -> Path:
    """Download the export's stored archive and unpack it as `<destination>/<version>/`."""
    import shutil
    import tempfile

    from tuner.client.downloads import unpack_archive
    from tuner.domain.errors import ArtifactNotFoundError

    assert store.remote is not None
    if export.archive is None:
        raise ArtifactNotFoundError(
            f"the export {export.path} is not in {store.remote.url} yet (its trial is still "
            "running or uploading, or its upload did not finish)"
        )
    target = destination / export.version
    if target.exists():
        shutil.rmtree(target)
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as temp:
        archive = store.remote.download(export.archive.path, Path(temp) / "model.tar.gz")
        return unpack_archive(archive, destination)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    slots: Annotated[
        int, typer.Option(min=0, help="Local trial slots of the embedded manager (0: API only).")
    ] = 2,
    root_path: Annotated[str, typer.Option(help="Path prefix behind a reverse proxy.")] = "",
    public_reads: Annotated[
        bool | None, typer.Option("--public-reads", help="Serve reads without a token.")
    ] = None,
    gpus: GpusOpt = None,
    cpus: CpusOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Serve the REST API, with an embedded study manager running trials here (or on Ray)."""
    from tuner.cli.serve import serve as run_server

    settings = _with_executor(get_settings(), executor, ray_address)
    capacity = _capacity_for(settings, gpus, cpus)
    if settings.executor == "ray" and slots > 0:
        from tuner.engine.ray_executor import import_ray

        try:
            import_ray()  # said now, not by the manager's thread once the API is up
        except TunerError as exc:
            raise _fail(str(exc), exit_code(exc)) from None
    _log_trials()
    if public_reads is not None:
        settings = settings.model_copy(update={"public_reads": public_reads})
    try:
        run_server(
            settings, host=host, port=port, slots=slots, root_path=root_path, capacity=capacity
        )
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None


@app.command()
def worker(
    slots: Annotated[int, typer.Option(min=1, help="Local trial slots.")] = 1,
    study: Annotated[
        list[str] | None, typer.Option(help="Only these studies (repeatable).")
    ] = None,
    gpus: GpusOpt = None,
    cpus: CpusOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            envvar="TUNER_METRICS_PORT",
            help="Serve this worker's Prometheus metrics (claims, ingest lag, prune decisions, "
            "uploads) at http://HOST:PORT/metrics (docs/metrics.md).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="With --metrics-port: the address to listen on.")
    ] = "0.0.0.0",
) -> None:
    """Run a study manager alone: claim and run trials of every running study.

    A trial is claimed only when its gpusPerTrial (and cpusPerTrial) are free here, or with
    --executor ray, free on the Ray cluster.
    """
    from tuner.engine.manager import StudyManager

    if metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(metrics_port, addr=metrics_host)
        except OSError as exc:
            raise _fail(
                f"--metrics-port: cannot listen on {metrics_host}:{metrics_port}: {exc}"
            ) from None

    settings = _with_executor(get_settings(), executor, ray_address)
    capacity = _capacity_for(settings, gpus, cpus)
    backend = _connect(settings, manager=True)
    try:
        manager = StudyManager(
            backend,
            _registry(settings),
            settings,
            slots=slots,
            studies=study or None,
            capacity=capacity,
        )
    except TunerError as exc:
        backend.close()
        raise _fail(str(exc), exit_code(exc)) from None
    manager.alive_file = settings.work_dir / ALIVE_FILE
    _log_trials()
    err.print(
        f"worker {manager.worker_id}: {slots} slot(s), "
        f"{'trials on Ray' if manager.remote else capacity.describe()}; "
        "Ctrl-C stops its trials",
        highlight=False,
    )
    try:
        with _stop_on_signals(manager) as stop:
            manager.run(until_done=False, should_stop=stop)
    except TunerError as exc:
        raise _fail(f"the worker stopped: {exc}", code=1) from None
    except Exception as exc:  # an error no study or trial could absorb: say so, exit non-zero
        logging.getLogger("tuner.worker").exception("the worker stopped")
        raise _fail(
            f"the worker stopped on an unexpected error ({type(exc).__name__}: "
            f"{(str(exc).strip().splitlines() or [''])[0]}); its "
            "trials were stopped and will run again; a supervisor may restart it",
            code=1,
        ) from None
    finally:
        backend.close()


@app.command("worker-alive")
def worker_alive(
    max_age: Annotated[
        float, typer.Option(min=1, help="Seconds since the worker's loop last turned.")
    ] = 60.0,
) -> None:
    """Exit 0 if a `tuner worker` using this work dir is alive (a container's liveness check)."""
    import time

    settings = get_settings()
    path = settings.work_dir / ALIVE_FILE
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        raise _fail(f"no worker has run here: {path} does not exist", code=1) from None
    if age > max_age:
        raise _fail(f"the worker's loop last turned {age:.0f} s ago ({path})", code=1)
    console.print(f"alive: the worker's loop turned {age:.1f} s ago")


@token_app.command("create")
def token_create(
    scope: Annotated[str, typer.Option(help="read or write (write may also read).")] = "read",
    name: Annotated[str, typer.Option(help="A label for the token.")] = "",
) -> None:
    """Create an API token; it is shown once and only its hash is stored."""
    from tuner.persistence.tokens import SCOPES, create_token

    if scope not in SCOPES:
        raise _fail(f"--scope: must be one of {', '.join(SCOPES)}")
    settings = get_settings()
    backend = _connect(settings)
    try:
        token = create_token(backend.db, scope=scope, name=name)
    finally:
        backend.close()
    print(token)
    err.print(f"{scope} token created; it is shown only now.")


@token_app.command("list")
def token_list() -> None:
    """Tokens (ids, labels, scopes; never the tokens themselves)."""
    from tuner.persistence import repository as repo

    with _session(get_settings()) as session:
        tokens = repo.list_tokens(session)
    for token_id, label, scope, created, revoked in tokens:
        state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
        console.print(f"{token_id}\t{scope}\t{label}\t{created:%Y-%m-%d %H:%M}\t{state}")


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Id from `tuner token list`.")],
) -> None:
    """Revoke a token."""
    from tuner.persistence import repository as repo

    with _session(get_settings()) as session:
        if not repo.revoke_token(session, token_id):
            raise _fail(f"no active token with id {token_id}", ExitCode.NOT_FOUND)
    console.print(f"token {token_id} revoked")


@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(help="Study spec (YAML or JSON).")],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
) -> None:
    """Submit a study to a server."""
    from tuner.client.rest import Client

    try:
        text = spec_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"{spec_file}: {exc.strerror}", ExitCode.INVALID_SPEC) from None
    try:
        with Client(server, token=token) as client:
            study = client.submit(text)
    except (TunerError, httpx_errors()) as exc:
        raise _server_fail(
            server, exc, f"{spec_file}: ", "to run it here without a server: `tuner run SPEC`"
        ) from None
    for warning in study.warnings:
        err.print(f"warning: {warning}")
    named = "" if os.environ.get("TUNER_SERVER") == server else f" --server {server}"
    console.print(
        f"submitted study {study.name} (id {study.id}, {study.state}); "
        f"follow it with `tuner watch {study.name}{named}`"
    )


def _server_fail(server: str, exc: Exception, prefix: str = "", instead: str = "") -> typer.Exit:
    """A client call's error: an unreachable server is named, with what to do."""
    import httpx

    if isinstance(exc, httpx.TransportError):
        message = unreachable(server, exc) + (f"; {instead}" if instead else "")
    else:
        message = f"{prefix}{exc}"
    return _fail(message, exit_code(exc))


@app.command()
def pull(
    study: Annotated[str, typer.Argument(help="Study name or id.")],
    to: Annotated[Path, typer.Option("--to", help="TF Serving model base path.")],
    server: ServerOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    trial: Annotated[int | None, typer.Option(help="This trial's best step, not the best.")] = None,
    export: Annotated[
        str | None,
        typer.Option(
            help="With --trial: this export of the trial, whatever its step (EXPORTER or "
            "EXPORTER/VERSION, as `tuner trial` lists them).",
            metavar="NAME",
        ),
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="Model dir name (default: study).")] = None,
    check: Annotated[bool, typer.Option(help="Load the SavedModel with TensorFlow.")] = True,
) -> None:
    """Download the best SavedModel into DIR/<model>/<version>/ and check that it loads.

    An interrupted download resumes where it stopped when the same pull is run again.
    """
    from tuner.cli.savedmodel import describe_signatures
    from tuner.client.rest import Client

    if export is not None and trial is None:
        raise _fail("--export names an export of one trial: give --trial N too")
    try:
        with Client(server, token=token) as client:
            name = model_name or (client.best(study).study if trial is None else study)
            with _download_progress(str(name)) as (progress, resumed):
                target = client.download_model(
                    study,
                    to / str(name),
                    number=trial,
                    export=export,
                    progress=progress,
                    resumed=resumed,
                )
    except (TunerError, httpx_errors()) as exc:
        raise _server_fail(
            server, exc, instead="a study in the local database: `tuner export STUDY --to DIR`"
        ) from None
    console.print(f"saved model: {target}")
    if check:
        try:
            console.print(describe_signatures(target), highlight=False)
        except TunerError as exc:
            raise _fail(str(exc), exit_code(exc)) from None


@contextmanager
def _download_progress(label: str) -> Iterator[tuple[ProgressCallback, ResumeCallback]]:
    """A progress bar on stderr when it is a terminal (none in logs and pipes); a resumed
    download is said either way."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    def resumed(offset: int) -> None:
        err.print(f"{label}: resumed at {offset} bytes")

    if not err.is_terminal:
        yield (lambda _done, _total: None), resumed
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield progress, resumed


def httpx_errors() -> type[Exception]:
    import httpx

    return httpx.HTTPError


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the tuner's migrations (and create Optuna's tables)."""
    from tuner.persistence import Database
    from tuner.study.operations import Backend

    settings = get_settings()
    try:
        database = Database(settings.database_url)
        database.upgrade()
        Backend.connect(settings.database_url, auto_init=False).close()
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    console.print(f"database at revision {database.current_revision()}")


@db_app.command("check")
def db_check() -> None:
    """Exit 1 if the schema is not the one this tuner needs."""
    from tuner.persistence import Database

    try:
        Database(get_settings().database_url).check_schema()
    except TunerError as exc:
        raise _fail(str(exc), 1) from None
    console.print("schema is up to date")


def _connect(settings: Settings, *, manager: bool = False) -> Backend:
    try:
        return _backend(settings, manager=manager)
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A read-only CLI command's transaction; tuner errors become a clear exit."""
    backend = _connect(settings)
    try:
        with backend.db.session() as session:
            yield session
    except TunerError as exc:
        raise _fail(str(exc), exit_code(exc)) from None
    finally:
        backend.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
