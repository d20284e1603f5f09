"""Where the CLI's study commands read and write: a local database, or a server.

Both answer with the API's public models (the local one through `tuner.study.answers`, which the
server's routes use too), so every command prints the same thing whichever it talks to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from tuner.client.rest import Client, Event
from tuner.domain.config import Settings
from tuner.domain.errors import TunerError
from tuner.public.schemas import (
    BestPublic,
    GcReportPublic,
    NotePublic,
    Page,
    ParetoPage,
    StudyPublic,
    TrialDetailPublic,
    TrialRowPublic,
)


class NoDatabaseError(TunerError):
    """No local database to read (and no server named)."""


class Source(Protocol):
    """What a study command needs; `artifact_root` is None when the artifacts are remote."""

    artifact_root: str | None
    where: str

    def studies(
        self, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[StudyPublic]: ...

    def study(self, ref: str) -> StudyPublic: ...

    def trials(
        self,
        ref: str,
        *,
        states: Sequence[str] = (),
        sort: str | None = None,
        filters: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> Page[TrialRowPublic]: ...

    def trial(self, ref: str, number: int) -> TrialDetailPublic: ...

    def events(self, ref: str) -> Iterator[Event]: ...

    def best(self, ref: str) -> BestPublic: ...

    def pareto(self, ref: str) -> ParetoPage: ...

    def log(self, ref: str, number: int, *, offset: int = 0) -> bytes: ...

    def stop(self, ref: str) -> StudyPublic: ...

    def resume(self, ref: str, *, max_trials: int | None = None) -> StudyPublic: ...

    def retry_failed(self, ref: str) -> StudyPublic: ...

    def delete(self, ref: str, *, delete_artifacts: bool = False) -> None: ...

    def gc(
        self, ref: str, *, keep_best_trials: int | None = None, dry_run: bool = False
    ) -> GcReportPublic: ...

    def set_note(self, ref: str, number: int | None, text: str) -> NotePublic: ...

    def stop_trial(self, ref: str, number: int) -> TrialDetailPublic: ...

    def trials_csv(
        self,
        ref: str,
        *,
        states: Sequence[str] = (),
        sort: str | None = None,
        filters: Sequence[str] = (),
    ) -> Iterator[bytes]: ...


class RemoteSource:
    """A tuner server, through `tuner.client.rest.Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.artifact_root: str | None = None
        self.where = f"the server at {client.base_url}"

    def studies(
        self, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[StudyPublic]:
        return self.client.studies(state=state, limit=limit, offset=offset)

    def study(self, ref: str) -> StudyPublic:
        return self.client.study(ref)

    def trials(
        self,
        ref: str,
        *,
        states: Sequence[str] = (),
        sort: str | None = None,
        filters: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> Page[TrialRowPublic]:
        return self.client.trials(
            ref, state=states, sort=sort, filters=filters, limit=limit, offset=offset
        )

    def trial(self, ref: str, number: int) -> TrialDetailPublic:
        return self.client.trial(ref, number)

    def events(self, ref: str) -> Iterator[Event]:
        return self.client.events(ref)

    def best(self, ref: str) -> BestPublic:
        return self.client.best(ref)

    def pareto(self, ref: str) -> ParetoPage:
        return self.client.pareto(ref)

    def log(self, ref: str, number: int, *, offset: int = 0) -> bytes:
        return self.client.log(ref, number, offset=offset)

    def stop(self, ref: str) -> StudyPublic:
        return self.client.stop(ref)

    def resume(self, ref: str, *, max_trials: int | None = None) -> StudyPublic:
        return self.client.resume(ref, max_trials=max_trials)

    def retry_failed(self, ref: str) -> StudyPublic:
        return self.client.retry_failed(ref)

    def delete(self, ref: str, *, delete_artifacts: bool = False) -> None:
        self.client.delete(ref, delete_artifacts=delete_artifacts)

    def gc(
        self, ref: str, *, keep_best_trials: int | None = None, dry_run: bool = False
    ) -> GcReportPublic:
        return self.client.gc(ref, keep_best_trials=keep_best_trials, dry_run=dry_run)

    def set_note(self, ref: str, number: int | None, text: str) -> NotePublic:
        if number is None:
            return self.client.set_study_note(ref, text)
        return self.client.set_trial_note(ref, number, text)

    def stop_trial(self, ref: str, number: int) -> TrialDetailPublic:
        return self.client.stop_trial(ref, number)

    def trials_csv(
        self,
        ref: str,
        *,
        states: Sequence[str] = (),
        sort: str | None = None,
        filters: Sequence[str] = (),
    ) -> Iterator[bytes]:
        return self.client.trials_csv(ref, state=states, sort=sort, filters=filters)


@contextmanager
def open_source(settings: Settings, server: str | None, token: str | None) -> Iterator[Source]:
    """A server when `server` is given (`--server` / `TUNER_SERVER`), else the local database."""
    if server:
        with Client(server, token=token) as client:
            yield RemoteSource(client)
        return
    from sqlalchemy.engine import make_url

    from tuner.cli.local_source import LocalSource
    from tuner.study.operations import Backend

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise NoDatabaseError(
            f"no database at {url.database}: run a study first (`tuner run SPEC`), set "
            "TUNER_DATABASE_URL, or read a server with --server URL (or TUNER_SERVER)"
        )
    backend = Backend.connect(settings.database_url)
    try:
        yield LocalSource(backend, settings)
    finally:
        backend.close()
