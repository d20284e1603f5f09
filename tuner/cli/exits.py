"""The `tuner` command's exit codes: one per kind of failure, so a script can tell a typo from a
missing study, a bad spec, a server that does not answer and a run that failed."""

from __future__ import annotations

import enum

import httpx

from tuner.cli.sources import NoDatabaseError
from tuner.client.rest import ApiError
from tuner.domain.errors import (
    ArtifactNotFoundError,
    ConfigError,
    QueryError,
    SpecError,
    StorageUnavailableError,
    StudyNotFoundError,
    TrainerNotFoundError,
    TrialNotFoundError,
)


class ExitCode(enum.IntEnum):
    OK = 0
    #: A run or study that ended FAILED, or a request refused for its state (a conflict, a
    #: missing permission).
    FAILED = 1
    #: A command line that cannot work (click's own usage errors use it too).
    USAGE = 2
    #: No such study, trial, model, or local database.
    NOT_FOUND = 3
    #: The study spec is malformed or names an unregistered trainer.
    INVALID_SPEC = 4
    #: The server (or the database) does not answer.
    UNREACHABLE = 5
    #: Stopped by SIGINT or SIGTERM before its end (128 + SIGINT, as shells report it).
    INTERRUPTED = 130


#: What `tuner --help` ends with, and the README's list says.
EPILOG = (
    "Exit codes: 0 done; 1 a run or study ended FAILED, or a request was refused; "
    "2 usage error; 3 not found (study, trial, model, database); 4 invalid spec; "
    "5 server or database unreachable; 130 interrupted."
)

#: API error codes by exit code (the server's answers, through the client).
_API_CODES = {
    "SPEC_INVALID": ExitCode.INVALID_SPEC,
    "REQUEST_INVALID": ExitCode.USAGE,
    "STUDY_NOT_FOUND": ExitCode.NOT_FOUND,
    "TRIAL_NOT_FOUND": ExitCode.NOT_FOUND,
    "ARTIFACT_NOT_FOUND": ExitCode.NOT_FOUND,
    "NOT_FOUND": ExitCode.NOT_FOUND,
    "UNAVAILABLE": ExitCode.UNREACHABLE,
}


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code of an error the CLI reports."""
    if isinstance(exc, ApiError):
        return _API_CODES.get(exc.code, ExitCode.FAILED)
    if isinstance(exc, httpx.TransportError | StorageUnavailableError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, SpecError | TrainerNotFoundError):
        return ExitCode.INVALID_SPEC
    if isinstance(
        exc, StudyNotFoundError | TrialNotFoundError | ArtifactNotFoundError | NoDatabaseError
    ):
        return ExitCode.NOT_FOUND
    if isinstance(exc, QueryError | ConfigError):
        return ExitCode.USAGE
    return ExitCode.FAILED


def unreachable(url: str, exc: Exception) -> str:
    """What to say when no server answers at `url`: where, why, and what to do."""
    why = str(exc).strip() or type(exc).__name__
    return (
        f"cannot reach a tuner server at {url} ({why}): start one with `tuner serve`, or name "
        "a running one with --server URL (or TUNER_SERVER)"
    )
