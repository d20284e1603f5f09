"""Downloads: the SavedModel and the checkpoint of a best eval step, as streamed `.tar.gz`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import BackendDep, ReadAccess, SessionDep, StoreDep, TrialNumber
from api.routes.studies import ERRORS, _ref
from api.schemas import BestPublic
from api.streaming import tar_gz_stream
from tuner import studies as study_ops
from tuner.artifacts import ArtifactStore, checkpoint_files
from tuner.entities import Checkpoint, Export
from tuner.errors import ArtifactNotFoundError
from tuner.persistence import repository as repo

router = APIRouter(prefix="/studies/{study_id}", tags=["models"], responses=ERRORS)
ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/gzip": {}}, "description": "a .tar.gz archive"}
}


@router.get("/best", response_model=BestPublic, dependencies=[ReadAccess])
def best(study_id: str, backend: BackendDep) -> BestPublic:
    """The best completed trial, its best step, and that step's checkpoint and export."""
    return BestPublic.build(study_ops.best_model(backend, _ref(study_id)))


@router.get(
    "/best/model", response_class=StreamingResponse, responses=ARCHIVE, dependencies=[ReadAccess]
)
def best_model(study_id: str, backend: BackendDep, store: StoreDep) -> StreamingResponse:
    """The SavedModel of the best trial's best step (TF Serving layout: `<version>/...`)."""
    found = study_ops.best_model(backend, _ref(study_id))
    return _export_archive(
        store, found.export, found.other_exports, found.study.name, found.run.number, found.step
    )


@router.get(
    "/best/checkpoint",
    response_class=StreamingResponse,
    responses=ARCHIVE,
    dependencies=[ReadAccess],
)
def best_checkpoint(study_id: str, backend: BackendDep, store: StoreDep) -> StreamingResponse:
    """The kept checkpoint of the best trial's best step."""
    found = study_ops.best_model(backend, _ref(study_id))
    return _checkpoint_archive(store, found.checkpoint, found.study.name, found.run.number)


@router.get(
    "/trials/{number}/model",
    response_class=StreamingResponse,
    responses=ARCHIVE,
    dependencies=[ReadAccess],
)
def trial_model(
    study_id: str, number: TrialNumber, session: SessionDep, store: StoreDep
) -> StreamingResponse:
    """The SavedModel of this trial's best eval step."""
    study = repo.get_study(session, _ref(study_id))
    detail = repo.trial_detail(session, study, number)
    matching = [e for e in detail.exports if e.step == detail.best_step]
    export = matching[-1] if matching else None
    others = [e for e in detail.exports if e is not export]
    return _export_archive(store, export, others, study.name, number, detail.best_step)


@router.get(
    "/trials/{number}/checkpoint",
    response_class=StreamingResponse,
    responses=ARCHIVE,
    dependencies=[ReadAccess],
)
def trial_checkpoint(
    study_id: str, number: TrialNumber, session: SessionDep, store: StoreDep
) -> StreamingResponse:
    """The kept checkpoint of this trial's best eval step."""
    study = repo.get_study(session, _ref(study_id))
    detail = repo.trial_detail(session, study, number)
    kept = next((c for c in detail.checkpoints if c.step == detail.best_step), None)
    return _checkpoint_archive(store, kept, study.name, number)


def _export_archive(
    store: ArtifactStore,
    export: Export | None,
    others: list[Export],
    study: str,
    number: int | None,
    step: int | None,
) -> StreamingResponse:
    if export is None:
        listed = ", ".join(f"{e.exporter}/{e.version} (step {e.step})" for e in others)
        raise ArtifactNotFoundError(
            f"trial {number} has no SavedModel export of its best step {step}"
            + (f"; its exports: {listed}" if listed else "; it exported nothing")
        )
    directory = store.resolve(export.path)
    if not directory.is_dir():
        raise ArtifactNotFoundError(f"the export {export.path} is no longer on disk")
    filename = f"{study}-trial{number}-step{step}-savedmodel.tar.gz"
    return _archive(tar_gz_stream(directory, arcname=export.version), filename)


def _checkpoint_archive(
    store: ArtifactStore, checkpoint: Checkpoint | None, study: str, number: int | None
) -> StreamingResponse:
    if checkpoint is None:
        raise ArtifactNotFoundError(f"trial {number} has no kept checkpoint of its best step")
    prefix = store.resolve(checkpoint.kept_path)
    if not checkpoint_files(prefix):
        raise ArtifactNotFoundError(f"the checkpoint {checkpoint.kept_path} is no longer on disk")
    directory: Path = prefix.parent
    filename = f"{study}-trial{number}-step{checkpoint.step}-checkpoint.tar.gz"
    return _archive(tar_gz_stream(directory, arcname="checkpoint"), filename)


def _archive(chunks: object, filename: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,  # type: ignore[arg-type]
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
