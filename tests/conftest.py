"""Shared fixtures: a fresh database per test on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tuner.domain.config import Settings
from tuner.domain.trainers import TrainerRegistry
from tuner.study.operations import Backend

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("TUNER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def new_pg_database() -> Iterator[str]:
    """A brand-new PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    name = f"tuner_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_conninfo(PG_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def new_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh database's URL: a SQLite file in `directory`, or a new PostgreSQL database
    (dropped afterwards)."""
    if kind == "postgresql":
        with new_pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{directory / 'tuner.db'}"


@contextmanager
def new_backend(kind: str, directory: Path) -> Iterator[Backend]:
    """A backend connected to a fresh database of `kind` (see `new_database`)."""
    with new_database(kind, directory) as url:
        backend = Backend.connect(url)
        try:
            yield backend
        finally:
            backend.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new PostgreSQL database, dropped after the test."""
    with new_pg_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tuner.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage-dependent test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuner.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        artifact_root=tmp_path / "artifacts",
        trainers_file=REPO / "trainers.yaml",
        poll_interval=0.05,
        stop_grace_seconds=3.0,
    )


@pytest.fixture
def backend(settings: Settings) -> Iterator[Backend]:
    connected = Backend.connect(settings.database_url)
    yield connected
    connected.close()


@pytest.fixture
def registry() -> TrainerRegistry:
    return TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
