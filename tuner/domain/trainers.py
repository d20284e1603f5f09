"""The server-side trainer registry: the only source of commands the tuner ever runs.

A spec names a trainer; the registry (a YAML file chosen by whoever runs the server) says what
that name runs. What a client sends reaches the command only as arguments to that program (the
spec's fixed `args`, one `--name=value` per hyperparameter, the output-dir flag), each one argv
element; no shell is involved, so nothing a client sends can choose the program.

```yaml
trainers:
  house_prices:
    module: examples.house_prices.task   # run as `python -m MODULE`
    workingDir: .                        # relative to this file
    python: /usr/bin/python3             # default: the tuner's own interpreter
    env: {TF_CPP_MIN_LOG_LEVEL: "2"}
    passEnv: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]   # the server's own, on purpose
    preload: [tensorflow, tensorflow_estimator]   # warm starts (tuner/trial/warm_starts.py)
  legacy:
    command: [/opt/legacy/bin/train, --verbose]
```

A trial's environment is built, not inherited (`tuner.trial.environment`): `passEnv` names the
variables of the server's environment that a trainer may see on purpose; nothing else of it
(no `TUNER_*`, no database URL, no credential) reaches a trainer.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from tuner.domain.errors import TrainerNotFoundError, TrainerRegistryError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: The prefix of the tuner's own settings (`tuner.trial.environment` never passes them).
SERVICE_PREFIX = "TUNER_"


@dataclass(frozen=True)
class Trainer:
    """A registered trainer: what to run, where, with which environment."""

    name: str
    argv: tuple[str, ...]
    working_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    #: The module of a `python -m MODULE` trainer (None for a `command` trainer).
    module: str | None = None
    #: Modules its preloading parent imports once for all trials (empty: cold starts).
    preload: tuple[str, ...] = ()
    #: Variables of the starting process's environment passed to its trials on purpose.
    pass_env: tuple[str, ...] = ()


class _TrainerEntry(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    module: str | None = None
    command: list[str] | None = None
    working_dir: str = "."
    python: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    preload: list[str] = Field(default_factory=list)
    pass_env: list[str] = Field(default_factory=list)

    @field_validator("pass_env")
    @classmethod
    def _variable_names_not_ours(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name.startswith(SERVICE_PREFIX):
                raise ValueError(
                    f"{name} is one of the tuner's own settings, never passed to a trainer "
                    "(give the trainer what it needs under a name of its own in 'env')"
                )
        return names

    @model_validator(mode="after")
    def _one_of_module_or_command(self) -> _TrainerEntry:
        if (self.module is None) == (self.command is None):
            raise ValueError("give exactly one of 'module' or 'command'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        if self.python is not None and self.command is not None:
            raise ValueError("'python' applies only to 'module' trainers")
        if self.preload and self.command is not None:
            raise ValueError("'preload' (warm starts) applies only to 'module' trainers")
        for name in self.preload:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"'preload': {name!r} is not a module name")
        return self


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trainers: dict[str, _TrainerEntry] = Field(default_factory=dict)


class TrainerRegistry:
    """Name → `Trainer`, loaded from a registry file and/or registered in-process."""

    def __init__(self, trainers: Mapping[str, Trainer] | None = None) -> None:
        self._trainers: dict[str, Trainer] = dict(trainers or {})

    @classmethod
    def from_file(cls, path: Path, *, missing_ok: bool = True) -> TrainerRegistry:
        """Load a registry file; a missing file is an empty registry when `missing_ok`."""
        if not path.exists():
            if missing_ok:
                return cls()
            raise TrainerRegistryError(f"{path}: trainer registry file not found")
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            parsed = _RegistryFile.model_validate(document)
        except (OSError, yaml.YAMLError) as exc:
            raise TrainerRegistryError(f"{path}: cannot read the trainer registry: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
                for e in exc.errors(include_url=False)
            )
            raise TrainerRegistryError(f"{path}: invalid trainer registry: {problems}") from None
        base = path.resolve().parent
        return cls(
            {name: _to_trainer(name, entry, base) for name, entry in parsed.trainers.items()}
        )

    def register_module(
        self,
        name: str,
        module: str,
        *,
        working_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        preload: tuple[str, ...] = (),
        pass_env: tuple[str, ...] = (),
    ) -> Trainer:
        """Register a local `python -m MODULE` trainer (the CLI does this for local runs)."""
        trainer = Trainer(
            name=name,
            argv=(sys.executable, "-m", module),
            working_dir=(working_dir or Path.cwd()).resolve(),
            env=dict(env or {}),
            module=module,
            preload=tuple(preload),
            pass_env=tuple(pass_env),
        )
        self._trainers[name] = trainer
        return trainer

    def get(self, name: str) -> Trainer:
        try:
            return self._trainers[name]
        except KeyError:
            raise TrainerNotFoundError(name, list(self._trainers)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._trainers

    def names(self) -> list[str]:
        return sorted(self._trainers)


def _to_trainer(name: str, entry: _TrainerEntry, base: Path) -> Trainer:
    working_dir = (base / entry.working_dir).resolve()
    if entry.module is not None:
        argv: tuple[str, ...] = (entry.python or sys.executable, "-m", entry.module)
    else:
        assert entry.command is not None
        argv = tuple(entry.command)
    return Trainer(
        name=name,
        argv=argv,
        working_dir=working_dir,
        env=dict(entry.env),
        module=entry.module,
        preload=tuple(entry.preload),
        pass_env=tuple(entry.pass_env),
    )
