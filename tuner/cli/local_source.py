"""The local database as a CLI source (see `tuner.cli.sources`): the same functions the server's
routes answer with (`tuner.study.answers`), so local and remote commands print the same."""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterator, Sequence

from tuner.artifacts.store import ArtifactStore
from tuner.client.rest import Event
from tuner.domain.config import Settings
from tuner.persistence import repository as repo
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
from tuner.study import answers as service
from tuner.study import operations as study_ops
from tuner.study.operations import Backend
from tuner.study.trials_csv import trials_csv


class LocalSource:
    """The database and artifact root of this machine's settings."""

    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.store = ArtifactStore.from_settings(settings)
        self.artifact_root: str | None = settings.artifact_location
        self.where = f"the local database ({settings.database_url})"

    def studies(
        self, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[StudyPublic]:
        return service.list_studies(self.backend, state=state, limit=limit, offset=offset)

    def study(self, ref: str) -> StudyPublic:
        return service.get_study(self.backend, ref)

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
        return service.list_trials(
            self.backend,
            ref,
            sort=sort,
            states=states,
            filters=filters,
            limit=limit,
            offset=offset,
        )

    def trial(self, ref: str, number: int) -> TrialDetailPublic:
        return service.get_trial(
            self.backend, self.store, ref, number, tail=self.settings.log_tail_lines
        )

    def events(self, ref: str) -> Iterator[Event]:
        """The study's journal from now on, read every `events_poll_interval`, as the server's
        stream gives it (without the snapshot); `end` once the study is not running and none
        of its trials is."""
        with self.backend.db.session() as session:  # now, not at the first event read
            study_id = repo.get_study(session, ref).id
            seq = repo.event_seq(session, study_id)
        return self._follow(study_id, seq)

    def _follow(self, study_id: int, seq: int) -> Iterator[Event]:
        while True:
            with self.backend.db.session() as session:
                news = repo.events_after(session, study_id, seq)
                state = repo.get_study(session, study_id).state
                running = repo.trial_counts(session, study_id).get("RUNNING", 0)
            for event in news:
                seq = event.seq
                yield Event(kind=event.kind, data=event.data, id=str(event.seq))
            if not news and state != "RUNNING" and not running:
                yield Event(kind="end", data={"state": state}, id=str(seq))
                return
            if not news:
                time.sleep(self.settings.events_poll_interval)

    def best(self, ref: str) -> BestPublic:
        return service.get_best(self.backend, ref)

    def pareto(self, ref: str) -> ParetoPage:
        return service.get_pareto(self.backend, ref)

    def log(self, ref: str, number: int, *, offset: int = 0) -> bytes:
        return service.log_file(self.backend, self.store, ref, number).read(offset)

    def stop(self, ref: str) -> StudyPublic:
        return service.overview(self.backend, study_ops.request_stop(self.backend, ref))

    def resume(self, ref: str, *, max_trials: int | None = None) -> StudyPublic:
        study = study_ops.resume_study(self.backend, ref, max_trials=max_trials)
        return service.overview(self.backend, study)

    def retry_failed(self, ref: str) -> StudyPublic:
        return service.overview(self.backend, study_ops.retry_failed(self.backend, ref))

    def delete(self, ref: str, *, delete_artifacts: bool = False) -> None:
        service.delete_study(self.backend, self.store, ref, delete_artifacts=delete_artifacts)

    def gc(
        self, ref: str, *, keep_best_trials: int | None = None, dry_run: bool = False
    ) -> GcReportPublic:
        return service.collect_garbage(
            self.backend,
            self.store,
            self.settings,
            ref,
            keep_best_trials=keep_best_trials,
            dry_run=dry_run,
        )

    def set_note(self, ref: str, number: int | None, text: str) -> NotePublic:
        if number is None:
            return service.set_study_note(self.backend, ref, text)
        return service.set_trial_note(self.backend, ref, number, text)

    def stop_trial(self, ref: str, number: int) -> TrialDetailPublic:
        """Asked from this machine's command line: the request names `user@host`."""
        return service.stop_trial(
            self.backend,
            self.store,
            ref,
            number,
            by=f"{getpass.getuser()}@{socket.gethostname()}",
            tail=self.settings.log_tail_lines,
        )

    def trials_csv(
        self,
        ref: str,
        *,
        states: Sequence[str] = (),
        sort: str | None = None,
        filters: Sequence[str] = (),
    ) -> Iterator[bytes]:
        table = trials_csv(self.backend, ref, sort=sort, states=states, filters=filters)
        return table.chunks()
