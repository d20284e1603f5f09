"""Settings of the tuner, read once from the environment (prefix `TUNER_`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("tuner-data")


class Settings(BaseSettings):
    """Where the tuner keeps its state, and how it runs trials.

    Every field can be set as an environment variable, e.g. `TUNER_DATABASE_URL`.
    """

    model_config = SettingsConfigDict(env_prefix="TUNER_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_DATA_DIR / 'tuner.db'}",
        description="SQLAlchemy URL; a SQLite file by default, PostgreSQL at scale.",
    )
    artifact_root: Path = Field(
        default=DEFAULT_DATA_DIR / "artifacts",
        description="Root of every trial's output dir, log and kept checkpoints.",
    )
    trainers_file: Path = Field(
        default=Path("trainers.yaml"), description="Server-side registry of trainers."
    )
    poll_interval: float = Field(default=0.25, gt=0, description="Seconds between manager ticks.")
    stop_grace_seconds: float = Field(
        default=10.0, ge=0, description="Seconds between SIGTERM and SIGKILL of a trial."
    )
    heartbeat_timeout: float = Field(
        default=60.0, gt=0, description="A running trial whose heartbeat is older is taken over."
    )
    trial_max_seconds: float | None = Field(
        default=None, gt=0, description="Default per-trial deadline (a spec's own wins)."
    )
    warm_starts: bool = Field(
        default=True,
        description="Fork trials of trainers with `preload` from a preloading parent.",
    )
    log_tail_lines: int = Field(default=20, ge=1, description="Log lines kept in a failure reason.")
    public_reads: bool = Field(
        default=False, description="Serve GET endpoints without a token (writes still need one)."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body the API accepts."
    )
    events_poll_interval: float = Field(
        default=0.5, gt=0, description="Seconds between database checks of an event stream."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` instead."""
    return Settings()
