"""The FastAPI application: routers under `/api/v1`, OpenAPI at `/docs`.

The app never imports TensorFlow and runs no trial itself; `tuner serve` may run an embedded
study manager beside it (see `tuner/cli/serve.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel

from api import docs, errors
from api.event_hub import EventHub
from api.limits import BodySizeLimit, NestingLimit, StripRootPath
from api.request_metrics import RequestMetrics
from api.routes import (
    events,
    health,
    metrics,
    models,
    prometheus,
    retention,
    studies,
    trials,
    web,
)
from api.routes.health import ManagerProblem
from api.routes.studies import ERRORS
from api.timeouts import BodyDeadline, ClientGone
from tuner import __version__
from tuner.domain.config import Settings
from tuner.domain.trainers import TrainerRegistry
from tuner.study.operations import Backend

API_PREFIX = "/api/v1"

#: The groups of operations in the schema (and in generated clients), in order.
TAGS = [
    {
        "name": "studies",
        "description": "Submit, list, inspect, stop, resume, retry, delete, collect garbage.",
    },
    {"name": "trials", "description": "The leaderboard, one trial in full, its log."},
    {"name": "metrics", "description": "Metric histories across trials, for plotting."},
    {"name": "models", "description": "The best trial, and downloads of its SavedModel."},
    {"name": "events", "description": "A study's live event stream (Server-Sent Events)."},
    {"name": "health", "description": "Liveness and readiness probes."},
]


def operation_id(route: APIRoute) -> str:
    """`createStudy`, `listTrials`, ...: the route function's name, camelCased, so generated
    clients get readable method names (FastAPI's default is `create_study_api_v1_studies_post`)."""
    return to_camel(route.name)


def create_app(
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    registry: TrainerRegistry | None = None,
    root_path: str = "",
    manager_problem: ManagerProblem | None = None,
) -> FastAPI:
    """Build the app; a backend and registry not given are opened from `settings`.

    `manager_problem` tells `/readyz` whether an embedded study manager is running.
    """
    settings = settings or Settings()
    owns_backend = backend is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.backend is None:
            app.state.backend = Backend.connect(settings.database_url)
        app.state.event_hub = EventHub(app.state.backend, settings.events_poll_interval)
        yield
        if owns_backend and app.state.backend is not None:
            app.state.backend.close()

    app = FastAPI(
        title="estimator-tuner",
        version=__version__,
        description="Hyperparameter tuning for TensorFlow Estimator trainers.",
        root_path=root_path,
        lifespan=lifespan,
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.registry = registry or TrainerRegistry.from_file(settings.trainers_file)
    app.state.manager_problem = manager_problem
    errors.install(app)
    app.add_middleware(NestingLimit)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_seconds)
    app.add_middleware(ClientGone)
    app.add_middleware(RequestMetrics)  # inside StripRootPath, whose scope is a copy
    if root_path:
        app.add_middleware(StripRootPath, root_path=root_path)

    docs.install(app)
    v1 = APIRouter(prefix=API_PREFIX, responses=ERRORS)
    for module in (studies, retention, trials, models, events, metrics):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)
    prometheus.install(app)
    web.install(app, API_PREFIX)
    return app
