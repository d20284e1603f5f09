"""Settings of the tuner, read once from the environment (prefix `TUNER_`)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("tuner-data")
DEFAULT_WORK_DIR = DEFAULT_DATA_DIR / "work"
#: URL schemes of an artifact root in object storage (`tuner.artifacts.object_store`).
OBJECT_STORE_SCHEMES: Final = ("s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "memory")


def is_object_store_url(value: str | os.PathLike[str]) -> bool:
    """Whether an artifact root is an object-store URL rather than a local path."""
    text = str(value)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in OBJECT_STORE_SCHEMES


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
        description="Root of every trial's output dir, log and kept checkpoints: a local path "
        "(shared by every process), or an object-store URL (`s3://bucket/prefix`), which is "
        "then `artifact_url` and this becomes `work_dir`.",
    )
    artifact_url: str | None = Field(
        default=None,
        description="The object store that keeps trials' artifacts (set by `artifact_root`).",
    )
    work_dir: Path = Field(
        default=DEFAULT_WORK_DIR,
        description="With an object store: this machine's local dir for the trials it runs, "
        "uploaded at their end.",
    )
    log_upload_seconds: float = Field(
        default=15.0,
        gt=0,
        description="With an object store: seconds between uploads of a running trial's log.",
    )
    upload_give_up_seconds: float = Field(
        default=600.0,
        gt=0,
        description="With an object store: seconds a trial's upload is retried before the "
        "trial is stopped (not counted, run again) with its local copy kept.",
    )
    keep_local_copies: bool = Field(
        default=False,
        description="With an object store: keep a trial's local dir after its upload.",
    )
    download_pin_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A download's pin on a trial's artifacts lasts this long, renewed every "
        "third of it while the download streams; retention does not delete under a pin, so a "
        "download cut short can resume within it.",
    )
    retention_pause_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Seconds retention waits after each file or object it deletes (a "
        "throttle for a large deletion; tests use it to stop one half done).",
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
    metrics_public: bool = Field(
        default=False,
        description="Serve `GET /metrics` without a token (Prometheus on a trusted network).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body the API accepts."
    )
    events_poll_interval: float = Field(
        default=0.5, gt=0, description="Seconds between database checks of an event stream."
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers (else 408).",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Seconds from a request's start to the end of its body (else 408).",
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where a manager runs trials: `local` (its own subprocesses) or `ray` "
        "(tasks on a Ray cluster, `tuner.engine.ray_executor`).",
    )
    ray_address: str | None = Field(
        default=None,
        description="With the Ray executor: the cluster (`HOST:6379`, `ray://HOST:10001`, "
        "`auto`); unset, a manager starts a Ray cluster of its own on this machine.",
    )

    @model_validator(mode="before")
    @classmethod
    def _object_store_root(cls, data: Any) -> Any:
        """`TUNER_ARTIFACT_ROOT=s3://...`: the URL is the store, the work dir the local root."""
        if isinstance(data, dict):
            root = data.get("artifact_root")
            if root is not None and is_object_store_url(root):
                data = {**data, "artifact_url": str(root).rstrip("/")}
                data["artifact_root"] = data.get("work_dir") or DEFAULT_WORK_DIR
        return data

    @property
    def artifact_location(self) -> str:
        """Where artifacts are kept, for people: the store's URL or the local root."""
        return self.artifact_url or str(self.artifact_root.resolve())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` instead."""
    return Settings()
