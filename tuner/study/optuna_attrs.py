"""The user attrs each Optuna trial carries, so optuna-dashboard shows what our tables know.

Optuna's view of a trial lacks what a user opening the dashboard asks first: where its files
are, what the trainer received (a UNIT_REVERSE_LOG_SCALE param is sampled in an internal space,
so the Optuna param is not the flag the trainer got), and why it ended. Optuna has no STOPPED
state (the dashboard shows a stopped trial as Fail), so `tuner_state` says which it was.

At launch: `trial_dir`, `trial_dir_abs`, `log_path`, `log_path_abs`, `tuner_state=RUNNING` and
one `--<name>` per hyperparameter with the value on the trainer's command line. At the end:
`tuner_state`, `tuner_reason` (failure or stop reason), `exit_code`, `best_step`.

Optuna refuses attrs on a finished trial, so the outcome attrs are written before it is told.
Our tables stay the authority (`docs/architecture.md`); these are copies for viewing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

try:  # Optuna's table models, for one statement per batch of attrs (see `set_attrs`)
    from optuna.storages._rdb import models
except ImportError:  # pragma: no cover - another Optuna: one commit per key
    models = None  # type: ignore[assignment]


from tuner.artifacts.store import ArtifactStore, TrialPaths

_UPSERTS: Final[dict[str, Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

__all__ = [
    "BEST_STEP",
    "EXIT_CODE",
    "LOG_PATH",
    "LOG_PATH_ABS",
    "MAX_REASON_CHARS",
    "REASON",
    "STATE",
    "TRIAL_DIR",
    "TRIAL_DIR_ABS",
    "arg_key",
    "launch_attrs",
    "outcome_attrs",
    "set_attrs",
]

TRIAL_DIR: Final = "trial_dir"
TRIAL_DIR_ABS: Final = "trial_dir_abs"
LOG_PATH: Final = "log_path"
LOG_PATH_ABS: Final = "log_path_abs"
STATE: Final = "tuner_state"
REASON: Final = "tuner_reason"
EXIT_CODE: Final = "exit_code"
BEST_STEP: Final = "best_step"
#: A reason holds the last log lines; the dashboard shows attrs in table cells.
MAX_REASON_CHARS: Final = 4000


def arg_key(name: str) -> str:
    """The attr of a hyperparameter's value as the trainer got it: its flag, `--<name>`."""
    return f"--{name}"


def launch_attrs(
    store: ArtifactStore, paths: TrialPaths, trainer_values: Mapping[str, Any]
) -> dict[str, Any]:
    """What is known when a trial starts: where its files are and what its trainer received."""
    attrs: dict[str, Any] = {
        TRIAL_DIR: store.relative(paths.output_dir),
        TRIAL_DIR_ABS: str(paths.output_dir),
        LOG_PATH: store.relative(paths.log_path),
        LOG_PATH_ABS: str(paths.log_path),
        STATE: "RUNNING",
    }
    attrs.update({arg_key(name): value for name, value in trainer_values.items()})
    return attrs


def outcome_attrs(
    state: str, reason: str | None, *, exit_code: int | None, best_step: int | None
) -> dict[str, Any]:
    """How a trial ended, in our terms (STOPPED included)."""
    attrs: dict[str, Any] = {STATE: state}
    if reason:
        if len(reason) > MAX_REASON_CHARS:
            # The first line says what happened, the last ones are the log's end: keep both.
            half = MAX_REASON_CHARS // 2
            reason = f"{reason[:half]}\n…\n{reason[-half:]}"
        attrs[REASON] = reason
    if exit_code is not None:
        attrs[EXIT_CODE] = exit_code
    if best_step is not None:
        attrs[BEST_STEP] = best_step
    return attrs


def set_attrs(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """Write `attrs` as user attrs of an Optuna trial (which must not be finished yet).

    On an `RDBStorage` over SQLite or PostgreSQL: one transaction, one state check and one
    multi-row upsert into Optuna's own table (through Optuna's own model). Optuna's public
    `set_trial_user_attr` commits once per key, after reading the trial again, and Optuna has
    no call that sets several; a dozen attrs cost a dozen commits per trial. Any other storage
    or database, or an Optuna without those models, gets the public calls.
    """
    if not attrs:
        return
    engine = getattr(storage, "engine", None)
    dialect = engine.dialect.name if engine is not None else None
    if not isinstance(storage, RDBStorage) or models is None or dialect not in _UPSERTS:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    assert engine is not None
    table = models.TrialUserAttributeModel.__table__
    rows = [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
    insert = _UPSERTS[dialect](table).values(rows)
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.trial_id, table.c.key],
        set_={"value_json": insert.excluded.value_json},
    )
    with engine.begin() as connection:
        state = connection.execute(
            select(models.TrialModel.state).where(models.TrialModel.trial_id == trial_id)
        ).scalar_one_or_none()
        if state is None:
            raise KeyError(f"no trial with trial_id {trial_id}")
        storage.check_trial_is_updatable(trial_id, state)
        connection.execute(upsert)
