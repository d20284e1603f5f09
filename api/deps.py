"""Typed dependencies of the routes: settings, storage, access control.

There is deliberately no session dependency: a `yield` dependency keeps its pooled connection
until the response has been sent, which for a plain `def` route is after response validation
in the thread pool; under load every connection is then held by a request waiting for a
thread while every thread waits for a connection. Routes open short sessions themselves
(`tuner.study.answers`), closed before they return.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.trainers import TrainerRegistry
from tuner.persistence.tokens import allows, identity_of, scope_of
from tuner.study.operations import Backend

bearer = HTTPBearer(auto_error=False, description="A token from `tuner token create`.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def get_registry(request: Request) -> TrainerRegistry:
    registry: TrainerRegistry = request.app.state.registry
    return registry


def get_store(settings: Annotated[Settings, Depends(get_settings)]) -> ArtifactStore:
    return ArtifactStore.from_settings(settings)


SettingsDep = Annotated[Settings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]
RegistryDep = Annotated[TrainerRegistry, Depends(get_registry)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]


StudyPath = Annotated[
    str,
    Path(
        alias="study",
        min_length=1,
        max_length=255,
        description="The study's id (digits only) or its name (never only digits).",
    ),
]
TrialNumber = Annotated[int, Path(ge=0, le=2**31 - 1, description="The trial's number.")]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _check(backend: Backend, credentials: HTTPAuthorizationCredentials | None, needed: str) -> None:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing bearer token: send 'Authorization: Bearer <token>' "
            "(create one with `tuner token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scope = scope_of(backend.db, credentials.credentials)
    if scope is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="invalid or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not allows(scope, needed):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"this token has scope '{scope}'; '{needed}' needed"
        )


def require_read(settings: SettingsDep, backend: BackendDep, credentials: Credentials) -> None:
    if not settings.public_reads:
        _check(backend, credentials, "read")


def require_write(backend: BackendDep, credentials: Credentials) -> None:
    _check(backend, credentials, "write")


def require_metrics_read(
    settings: SettingsDep, backend: BackendDep, credentials: Credentials
) -> None:
    """`GET /metrics`: a read token, unless metrics (or every read) are public."""
    if not (settings.metrics_public or settings.public_reads):
        _check(backend, credentials, "read")


def writer_name(backend: BackendDep, credentials: Credentials) -> str:
    """Check write access, and name who writes: the token's name (`tuner token create
    --name`), for what the write leaves behind (a trial stopped by hand says who asked)."""
    _check(backend, credentials, "write")
    assert credentials is not None
    identity = identity_of(backend.db, credentials.credentials)
    return identity[1] if identity is not None else "a revoked token"


ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
#: Write access, and the writing token's name.
Writer = Annotated[str, Depends(writer_name)]
MetricsAccess = Depends(require_metrics_read)
