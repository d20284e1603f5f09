"""Downloads: the SavedModel and the checkpoint of a best eval step, as `.tar.gz` files.

Each archive is built once per kept artifact (`tuner/artifacts/archives.py`) and served as a
file, with
`Content-Length`, a strong `ETag` (the archive's sha256), `Range`/`If-Range` and `HEAD`, so a
client can show progress and resume. The routes are plain `def`: building waits on the disk.

Each download pins its trial first (`api/download_pins.py`): retention leaves it alone while
it streams, and a trial retention deleted answers 404 saying when, and by which policy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import FileResponse, Response

from api import download_pins
from api.deps import BackendDep, ReadAccess, SettingsDep, StoreDep, StudyPath, TrialNumber
from api.download_pins import PinRenewal
from api.files import Download, StoredDownload, archive_response, stored_archive_response
from api.query_params import FiltersQuery, StatesQuery
from api.routes.studies import ERRORS, _ref
from tuner.artifacts.archives import checkpoint_archive, export_archive
from tuner.artifacts.store import ArtifactStore, checkpoint_files
from tuner.domain.entities import Checkpoint, Export, StoredArchive, Study, TrialDetail
from tuner.domain.errors import ArtifactNotFoundError
from tuner.persistence import repository as repo
from tuner.public.schemas import BestPublic, ErrorResponse, ParetoPage
from tuner.study import answers
from tuner.study import operations as study_ops
from tuner.study.operations import Backend

router = APIRouter(prefix="/studies/{study}", tags=["models"], responses=ERRORS)
_GZIP: dict[str, Any] = {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": _GZIP,
        "description": "The `.tar.gz` archive, with `Content-Length`, `ETag` (its sha256, "
        "quoted) and `Accept-Ranges: bytes`. `HEAD` answers the same headers without the body.",
    },
    206: {
        "content": _GZIP,
        "description": "The byte range asked for with `Range` (`Content-Range` says which).",
    },
    416: {"model": ErrorResponse, "description": "The `Range` lies outside the archive."},
}
RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        description="`bytes=<first>-[<last>]`: only these bytes (206), e.g. to resume.",
    ),
]
IfRangeHeader = Annotated[
    str | None,
    Header(
        alias="If-Range",
        description="The `ETag` the range is of: if the archive has another, the whole of it "
        "is sent (200), not the range.",
    ),
]


@router.get("/best", response_model=BestPublic, dependencies=[ReadAccess])
def get_best(study_id: StudyPath, backend: BackendDep) -> BestPublic:
    """The best completed trial, its best step, and that step's checkpoint and export.

    A study with several objectives has no one best trial: 409 `SEVERAL_OBJECTIVES`, whose
    message lists its Pareto front and how to pick from it (`GET .../pareto`)."""
    return BestPublic.build(study_ops.best_model(backend, _ref(study_id)))


@router.get("/pareto", response_model=ParetoPage, dependencies=[ReadAccess])
def get_pareto(
    study_id: StudyPath,
    backend: BackendDep,
    state: StatesQuery = None,
    filters: FiltersQuery = None,
) -> ParetoPage:
    """The Pareto front: the COMPLETED trials no other feasible trial beats on every
    objective (infeasible ones, missing a safety threshold, never count), best first on the
    first objective; each with every objective and safety metric at its ranking step, and the
    checkpoint and exports kept for that step. A study with one objective answers its best
    trial(s).

    With the trial list's `state` and `filter`, the front of the trials they keep
    (`filtered`: true, `matchedCount` of them): a trial the filter drops is on no front."""
    return answers.get_pareto(backend, _ref(study_id), states=state or (), filters=filters or ())


@router.get(
    "/best/model", response_class=FileResponse, responses=ARCHIVE, dependencies=[ReadAccess]
)
@router.head(
    "/best/model", include_in_schema=False, dependencies=[ReadAccess], name="head_best_model"
)
def download_best_model(
    study_id: StudyPath,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    """The SavedModel of the best trial's best step (TF Serving layout: `<version>/...`)."""
    found = study_ops.best_model(backend, _ref(study_id))
    pin = _pin_best(backend, settings.download_pin_seconds, found.run.id, found.study.name)
    download = _export_download(
        store, found.export, found.other_exports, found.study.name, found.run.number, found.step
    )
    return _respond(download, pin, range_header, if_range)


@router.get(
    "/best/checkpoint", response_class=FileResponse, responses=ARCHIVE, dependencies=[ReadAccess]
)
@router.head(
    "/best/checkpoint",
    include_in_schema=False,
    dependencies=[ReadAccess],
    name="head_best_checkpoint",
)
def download_best_checkpoint(
    study_id: StudyPath,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    """The kept checkpoint of the best trial's best step (under `checkpoint/`)."""
    found = study_ops.best_model(backend, _ref(study_id))
    pin = _pin_best(backend, settings.download_pin_seconds, found.run.id, found.study.name)
    download = _checkpoint_download(store, found.checkpoint, found.study.name, found.run.number)
    return _respond(download, pin, range_header, if_range)


@router.get(
    "/trials/{number}/model",
    response_class=FileResponse,
    responses=ARCHIVE,
    dependencies=[ReadAccess],
)
@router.head(
    "/trials/{number}/model",
    include_in_schema=False,
    dependencies=[ReadAccess],
    name="head_trial_model",
)
def download_trial_model(
    study_id: StudyPath,
    number: TrialNumber,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
    export: Annotated[
        str | None,
        Query(
            description="Another recorded export of the trial, whatever its step: "
            "`<exporter>` (its latest version) or `<exporter>/<version>`, as the trial lists "
            "them."
        ),
    ] = None,
) -> Response:
    """The SavedModel of this trial's best eval step, or the export named by `export`."""
    pin = download_pins.pin_trial(
        backend, _ref(study_id), number, seconds=settings.download_pin_seconds
    )
    study, detail = _trial(backend, study_id, number)
    if export is not None:
        chosen = _named_export(detail.exports, export, study.name, number)
        download = _export_download(store, chosen, [], study.name, number, chosen.step)
        return _respond(download, pin, range_header, if_range)
    matching = [e for e in detail.exports if e.step == detail.best_step]
    best_export = matching[-1] if matching else None
    others = [e for e in detail.exports if e is not best_export]
    download = _export_download(store, best_export, others, study.name, number, detail.best_step)
    return _respond(download, pin, range_header, if_range)


def _named_export(exports: list[Export], name: str, study: str, number: int) -> Export:
    """The export `<exporter>/<version>`, or the latest version of `<exporter>`."""
    exact = [e for e in exports if f"{e.exporter}/{e.version}" == name]
    by_exporter = sorted(
        (e for e in exports if e.exporter == name), key=lambda e: (len(e.version), e.version)
    )
    found = exact or by_exporter
    if not found:
        listed = ", ".join(f"{e.exporter}/{e.version}" for e in exports) or "none"
        raise ArtifactNotFoundError(
            f"trial {number} of study {study!r} has no export {name!r} (its exports: {listed})"
        )
    return found[-1]


@router.get(
    "/trials/{number}/checkpoint",
    response_class=FileResponse,
    responses=ARCHIVE,
    dependencies=[ReadAccess],
)
@router.head(
    "/trials/{number}/checkpoint",
    include_in_schema=False,
    dependencies=[ReadAccess],
    name="head_trial_checkpoint",
)
def download_trial_checkpoint(
    study_id: StudyPath,
    number: TrialNumber,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    """The kept checkpoint of this trial's best eval step (under `checkpoint/`)."""
    pin = download_pins.pin_trial(
        backend, _ref(study_id), number, seconds=settings.download_pin_seconds
    )
    study, detail = _trial(backend, study_id, number)
    kept = next((c for c in detail.checkpoints if c.step == detail.best_step), None)
    download = _checkpoint_download(store, kept, study.name, number)
    return _respond(download, pin, range_header, if_range)


def _trial(backend: Backend, study_id: str, number: int) -> tuple[Study, TrialDetail]:
    """The trial's rows, read in a session closed before any archive is built."""
    with backend.db.session() as session:
        study = repo.get_study(session, _ref(study_id))
        return study, repo.trial_detail(session, study, number)


def _pin_best(backend: Backend, seconds: float, run_id: int, study: str) -> PinRenewal:
    """Pin the best trial read a moment ago (it may have been deleted since, if another
    trial became the best meanwhile: then 404, and asking again finds the new best)."""
    what = f"the best trial of study {study!r}"
    return download_pins.pin_run(backend, run_id, what=what, seconds=seconds)


def _respond(
    download: Download | StoredDownload,
    pin: PinRenewal,
    range_header: str | None,
    if_range: str | None,
) -> Response:
    if isinstance(download, StoredDownload):
        pinned = replace(download, pin=pin)
        return stored_archive_response(pinned, range_header=range_header, if_range=if_range)
    return archive_response(
        replace(download, pin=pin), range_header=range_header, if_range=if_range
    )


def _stored(
    store: ArtifactStore, archive: StoredArchive | None, filename: str, what: str
) -> StoredDownload:
    """The archive a worker uploaded; none until its trial's upload is complete and verified."""
    assert store.remote is not None
    if archive is None:
        raise ArtifactNotFoundError(
            f"{what} is not in the object store yet: its trial is still running or uploading, "
            "or its upload did not finish"
        )
    return StoredDownload(store.remote, archive, filename, what)


def _export_download(
    store: ArtifactStore,
    export: Export | None,
    others: list[Export],
    study: str,
    number: int | None,
    step: int | None,
) -> Download | StoredDownload:
    what = f"the SavedModel of study {study!r} trial {number} step {step}"
    if export is None:
        listed = ", ".join(f"{e.exporter}/{e.version} (step {e.step})" for e in others)
        raise ArtifactNotFoundError(
            f"trial {number} of study {study!r} has no SavedModel export of its best step {step}"
            + (
                f"; its exports: {listed}"
                if listed
                else "; no SavedModel of it was recorded (a `saved_model.pb` anywhere in its "
                "trial dir, or in the spec's exportDirs)"
            )
        )
    filename = f"{study}-trial{number}-step{step}-savedmodel.tar.gz"
    if store.remote is not None:
        return _stored(store, export.archive, filename, what)
    directory = store.resolve(export.path)
    if not directory.is_dir():
        raise ArtifactNotFoundError(f"the export {export.path} is no longer on disk")
    archive = export_archive(store, study, directory, arcname=export.version)
    return Download(archive, filename, what)


def _checkpoint_download(
    store: ArtifactStore, checkpoint: Checkpoint | None, study: str, number: int | None
) -> Download | StoredDownload:
    if checkpoint is None:
        raise ArtifactNotFoundError(
            f"trial {number} of study {study!r} has no kept checkpoint of its best step"
        )
    what = f"the checkpoint of study {study!r} trial {number} step {checkpoint.step}"
    filename = f"{study}-trial{number}-step{checkpoint.step}-checkpoint.tar.gz"
    if store.remote is not None:
        return _stored(store, checkpoint.archive, filename, what)
    prefix = store.resolve(checkpoint.kept_path)
    if not checkpoint_files(prefix):
        raise ArtifactNotFoundError(f"the checkpoint {checkpoint.kept_path} is no longer on disk")
    archive = checkpoint_archive(store, study, prefix)
    return Download(archive, filename, what)
