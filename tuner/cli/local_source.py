"""The local database as a CLI source (see `tuner.cli.sources`): the same functions the server's
routes answer with (`tuner.study.answers`), so local and remote commands print the same."""

from __future__ import annotations

from collections.abc import Sequence

from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.public.schemas import (
    BestPublic,
    GcReportPublic,
    Page,
    ParetoPage,
    StudyPublic,
    TrialDetailPublic,
    TrialRowPublic,
)
from tuner.study import answers as service
from tuner.study import operations as study_ops
from tuner.study.operations import Backend


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
