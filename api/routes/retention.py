"""Retention on demand: `POST /studies/{study}/gc` applies a policy to a study now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from api.deps import BackendDep, SettingsDep, StoreDep, StudyPath, WriteAccess
from api.routes.studies import ERRORS, _ref
from tuner.public.schemas import GcReportPublic, GcRequest
from tuner.study import answers as service

router = APIRouter(prefix="/studies/{study}", tags=["studies"], responses=ERRORS)


@router.post("/gc", response_model=GcReportPublic, dependencies=[WriteAccess])
def collect_garbage(
    study_id: StudyPath,
    backend: BackendDep,
    store: StoreDep,
    settings: SettingsDep,
    request: Annotated[GcRequest | None, Body()] = None,
) -> GcReportPublic:
    """Delete the kept checkpoint, exports and archives of the finished trials outside the
    best `keepBestTrials` (by each objective, the Pareto front kept, with several), locally
    and in the object store; their metrics, log and a record of what went stay (the trial's
    `deleted`). Running trials and trials a download pins are never deleted.

    `keepBestTrials` given (not with `dryRun`) becomes the study's policy; unset, the
    study's own `retention` applies (422 without one). `dryRun` reports per trial what would
    go and the bytes a real pass frees, deleting nothing. A deletion cut short earlier is
    finished first. Plain `def`: deleting waits on the disk and the store."""
    request = request or GcRequest()
    return service.collect_garbage(
        backend,
        store,
        settings,
        _ref(study_id),
        keep_best_trials=request.keep_best_trials,
        dry_run=request.dry_run,
    )
