"""The FastAPI application: routers under `/api/v1`, OpenAPI at `/docs`.

The app never imports TensorFlow and runs no trial itself; `tuner serve` may run an embedded
study manager beside it (see `tuner/serve.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api import errors
from api.limits import BodySizeLimit, NestingLimit, StripRootPath
from api.routes import events, health, models, studies, trials
from api.routes.health import ManagerProblem
from tuner import __version__
from tuner.config import Settings
from tuner.studies import Backend
from tuner.trainers import TrainerRegistry

API_PREFIX = "/api/v1"


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
        yield
        if owns_backend and app.state.backend is not None:
            app.state.backend.close()

    app = FastAPI(
        title="estimator-tuner",
        version=__version__,
        description="Hyperparameter tuning for TensorFlow Estimator trainers.",
        root_path=root_path,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.registry = registry or TrainerRegistry.from_file(settings.trainers_file)
    app.state.manager_problem = manager_problem
    errors.install(app)
    app.add_middleware(NestingLimit)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if root_path:
        app.add_middleware(StripRootPath, root_path=root_path)

    v1 = APIRouter(prefix=API_PREFIX)
    for module in (studies, trials, models, events):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(health.router)
    return app
