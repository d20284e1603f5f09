"""Hyperparameter importances of a study, computed on demand by the server, cached."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import BackendDep, ReadAccess, StudyPath
from api.query_params import FiltersQuery, StatesQuery
from api.routes.studies import ERRORS, _ref
from tuner.public.schemas import ImportancesPublic, ParamImportancePublic
from tuner.study import importance

router = APIRouter(prefix="/studies/{study}", tags=["metrics"], responses=ERRORS)


@router.get("/importances", response_model=ImportancesPublic, dependencies=[ReadAccess])
def get_param_importances(
    study_id: StudyPath,
    backend: BackendDep,
    evaluator: Annotated[
        importance.Evaluator,
        Query(
            description="Optuna's evaluator: PED_ANOVA (the default, Optuna's own), FANOVA or "
            "MEAN_DECREASE_IMPURITY (random forests: these need scikit-learn on the server)."
        ),
    ] = "PED_ANOVA",
    state: StatesQuery = None,
    filters: FiltersQuery = None,
) -> ImportancesPublic:
    """How much each parameter explains the objective, over the COMPLETED trials (of those the
    trial list's `state` and `filter` keep, with them: `trialCount` says how many).

    Evaluated when asked and kept (per state and filter) until the study finishes another
    trial; 409 while fewer than two COMPLETED trials (kept by the filter) have an objective.
    """
    found = importance.param_importances(
        backend, _ref(study_id), evaluator, states=state or (), filters=filters or ()
    )
    return ImportancesPublic(
        study=found.study,
        evaluator=found.evaluator,
        importances=[ParamImportancePublic(param=p, importance=v) for p, v in found.params],
        trial_count=found.trial_count,
        finished_trial_count=found.finished_count,
        computed_at=found.computed_at,
        cached=found.cached,
        filtered=found.filtered,
        matched_count=found.matched_count,
        available_evaluators=list(importance.available_evaluators()),
        unavailable_evaluators={str(k): v for k, v in importance.unavailable_evaluators().items()},
    )
