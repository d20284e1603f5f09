"""The one error hierarchy of the tuner: every error a user can see derives from `TunerError`."""

from __future__ import annotations

from tuner.domain.hints import did_you_mean


def first_line(exc: BaseException) -> str:
    """An error's first line, for a one-line reason (its type's name if it says nothing)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class TunerError(Exception):
    """Base class of every error the tuner raises on purpose."""


class ConfigError(TunerError):
    """The service's own configuration cannot work (an executor, a cluster, a setting)."""


class SpecError(TunerError):
    """A study spec is malformed; carries one `(field_path, reason)` pair per problem."""

    def __init__(self, problems: list[tuple[str, str]], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{path}: {reason}" if path else reason for path, reason in problems]
        super().__init__(where + "invalid study spec\n  " + "\n  ".join(lines))


class TrainerNotFoundError(TunerError):
    """A spec names a trainer that is not in the server-side registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        choices = ", ".join(sorted(known)) or "none are registered"
        hint = did_you_mean(name, known)
        super().__init__(
            f"trainer: {name!r} is not a registered trainer (registered: {choices}){hint}"
        )


class TrainerRegistryError(TunerError):
    """The trainer registry file is unreadable or malformed."""


class StudyNotFoundError(TunerError):
    """No study has the given name or id."""


class TrialNotFoundError(TunerError):
    """No trial of the study has the given number."""


class TrialStateError(TunerError):
    """The operation does not fit the trial's state (e.g. stopping a trial that has ended)."""


class DuplicateStudyError(TunerError):
    """A study with the same name already exists."""


class StudyStateError(TunerError):
    """The operation does not fit the study's current state (e.g. deleting while trials run)."""


class SchemaOutdatedError(TunerError):
    """The database schema is older (or newer) than this version of the tuner expects."""


class StorageUnavailableError(TunerError):
    """The database could not be reached; the operation may be retried."""


class ObjectStoreError(TunerError):
    """The object store that keeps artifacts refused or failed an operation, after retries."""


class LocalDiskFullError(TunerError):
    """This machine's own disk (where a trial ran and its archives are built) is full: a
    problem of the worker, not of the object store, and not one that retries can mend."""


class EventFileError(TunerError):
    """An event file is corrupt: a record's length or data fails its CRC check."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: corrupt event record at byte {offset}: {reason}")


class ArtifactNotFoundError(TunerError):
    """A checkpoint or export that was asked for does not exist."""


class UnsafePathError(TunerError):
    """A path would reach outside the artifact store."""


class LeaseLostError(TunerError):
    """Another manager took over a trial run: its old manager must stop it and record nothing."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id}: its lease is held by another manager now")


class TrialTakenError(TunerError):
    """Another manager already attached the same Optuna trial to a run of its own."""


class QueryError(TunerError):
    """A request's query (a sort key, a filter) is malformed; one `(parameter, reason)` each."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {r}" if p else r for p, r in problems))


class RangeNotSatisfiableError(TunerError):
    """A download's `Range` lies outside the file."""


class DownloadError(TunerError):
    """A download arrived short, or not as the server hashed it; a short one resumes next time."""


class SeveralObjectivesError(TunerError):
    """A study with several objectives has a Pareto front, not one best trial."""
