"""What a manager gives each trial besides a slot: GPU ids of its own and a count of CPUs.

A manager started with `--gpus 0,1,2,3` owns those devices. A trial of a study with
`gpusPerTrial: 2` is claimed only while two of them are free; it gets them to itself and sees
only them (`CUDA_VISIBLE_DEVICES=2,3`: TensorFlow takes every GPU it can see). A trial of a
study that needs none sees none (`CUDA_VISIBLE_DEVICES=""`), so a CPU study cannot take the
GPUs of the others. Without `--gpus` the tuner does not manage GPUs: trials see the manager's
own environment, as they always did, and studies that need GPUs are left to other managers.

`cpusPerTrial` is counted against the manager's `--cpus` (default: the CPUs this process may
run on) and sizes the trial's thread pools (`TF_NUM_INTRAOP_THREADS`, `OMP_NUM_THREADS`,
unless the trainer's registry entry sets them). Trials of studies without it are not counted.

What is held is derived from the manager's own table of running trials: the ids of a trial
are free again as soon as it leaves that table, whichever way it ended (it exited, it could
not start, its run was taken over and it was killed, the manager shut down).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuner.trial.environment import ordinary_environment

# Light to import (the command line parses `--gpus` before it loads the manager).
if TYPE_CHECKING:
    from tuner.domain.spec import StudySpec
    from tuner.domain.trainers import Trainer
    from tuner.trial.execution import TrialCommand

__all__ = [
    "GPU_VARIABLE",
    "THREAD_VARIABLES",
    "Capacity",
    "Grant",
    "Need",
    "ResourceLedger",
    "capacity_from_options",
    "gpus_note",
    "parse_cpus",
    "parse_gpus",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

GPU_VARIABLE = "CUDA_VISIBLE_DEVICES"
#: Sized to `ceil(cpusPerTrial)`: TensorFlow's intra-op pool and OpenMP's (oneDNN, BLAS).
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")
#: Float sums of CPU shares (0.1 + 0.2) must not refuse a trial that fits exactly.
_CPU_SLACK = 1e-9


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under `taskset`)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_gpus(text: str | None) -> tuple[int, ...] | None:
    """`--gpus`: None when not given (GPUs not managed), `()` for `none`, else the ids.

    Ids are what `CUDA_VISIBLE_DEVICES` takes: the devices' indexes as `nvidia-smi` lists them.
    """
    if text is None:
        return None
    stripped = text.strip()
    if stripped.lower() in ("", "none"):
        return ()
    ids: list[int] = []
    for part in (p.strip() for p in stripped.split(",")):
        if not part.isascii() or not part.isdigit():
            raise ValueError(
                f"{part!r} is not a GPU id: give non-negative integers separated by commas "
                "(e.g. 0,1,2,3), or 'none'"
            )
        device = int(part)
        if device in ids:
            raise ValueError(f"GPU {device} is listed twice")
        ids.append(device)
    return tuple(ids)


def parse_cpus(value: float | None) -> float:
    """`--cpus`: a number > 0, default the usable CPUs."""
    if value is None:
        return float(usable_cpus())
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a number > 0, got {value:g}")
    return float(value)


@dataclass(frozen=True)
class Need:
    """What each trial of a study asks for."""

    gpus: int = 0
    cpus: float | None = None

    @classmethod
    def of(cls, spec: StudySpec) -> Need:
        return cls(gpus=spec.gpus_per_trial, cpus=spec.cpus_per_trial)

    def base_environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a trial's own variables are added to: this process's ordinary
        variables (`tuner.trial.environment`: never its secrets) plus the thread counts. The
        trainer's registry `env` is applied on top, so it wins; and the same for every trial
        of the study, a warm trainer's preloading parent imports with it too (OpenMP reads its
        thread count when it is loaded, which may be in the parent)."""
        env = ordinary_environment(os.environ if environ is None else environ)
        if self.cpus is not None:
            threads = str(math.ceil(self.cpus))
            env.update(dict.fromkeys(THREAD_VARIABLES, threads))
        return env


@dataclass(frozen=True)
class Grant:
    """What one trial was given."""

    #: Its GPU ids (`()`: none); None where GPUs are not managed.
    gpus: tuple[int, ...] | None
    #: The CPUs it is counted for (0 for a study without `cpusPerTrial`).
    cpus: float = 0.0

    def environment(self) -> dict[str, str]:
        """Its own variables, applied last: on a manager with `--gpus`, the trial sees only
        its devices whatever its registry entry says (else the devices would be shared)."""
        if self.gpus is None:
            return {}
        return {GPU_VARIABLE: ",".join(str(d) for d in self.gpus)}

    def describe(self) -> str:
        """For the trial's start line in the manager's log ("" when there is nothing to say)."""
        parts = []
        if self.gpus is not None:
            parts.append(f"GPUs {','.join(map(str, self.gpus))}" if self.gpus else "no GPU")
        if self.cpus:
            parts.append(_count(self.cpus, "CPU"))
        return ", ".join(parts)


@dataclass(frozen=True)
class Capacity:
    """What a manager gives its trials: GPU ids (None: not managed) and CPUs."""

    gpus: tuple[int, ...] | None = None
    cpus: float = field(default_factory=lambda: float(usable_cpus()))

    def __post_init__(self) -> None:
        if self.gpus is not None and len(set(self.gpus)) != len(self.gpus):
            raise ValueError("a GPU id is listed twice")
        if not math.isfinite(self.cpus) or self.cpus <= 0:
            raise ValueError("cpus must be a number > 0")

    def refusal(self, need: Need) -> str | None:
        """Why trials of that need never run here (None: they can, once enough is free)."""
        have = len(self.gpus or ())
        if need.gpus > have:
            needed = _count(need.gpus, "GPU")
            return f"needs {needed} per trial, this worker has {have} ({self._gpus_option})"
        if need.cpus is not None and need.cpus > self.cpus + _CPU_SLACK:
            needed = _count(need.cpus, "CPU")
            return f"needs {needed} per trial, this worker has {self.cpus:g} (--cpus)"
        return None

    @property
    def _gpus_option(self) -> str:
        if self.gpus is None:
            return "started without --gpus"
        return f"--gpus {','.join(map(str, self.gpus)) or 'none'}"

    def describe(self) -> str:
        """For a manager's start line."""
        if self.gpus is None:
            gpus = "GPUs not managed"
        else:
            gpus = f"GPUs {','.join(map(str, self.gpus))}" if self.gpus else "no GPUs"
        return f"{gpus}, {_count(self.cpus, 'CPU')}"


class ResourceLedger:
    """Which trial holds which GPUs and CPUs of one manager.

    `running` is the manager's live table of its trials (by run id): a grant counts only while
    its run id is in it, so nothing needs releasing by hand.
    """

    def __init__(self, capacity: Capacity, running: Collection[int]) -> None:
        self.capacity = capacity
        self.running = running
        self._grants: dict[int, Grant] = {}
        self._warned_trainers: set[str] = set()

    def held(self) -> dict[int, Grant]:
        """The grants of trials still running."""
        for run_id in [r for r in self._grants if r not in self.running]:
            del self._grants[run_id]
        return dict(self._grants)

    def free_gpus(self) -> list[int]:
        """Free ids, in the order `--gpus` gave them."""
        taken = {d for g in self.held().values() for d in g.gpus or ()}
        return [d for d in self.capacity.gpus or () if d not in taken]

    def free_cpus(self) -> float:
        return self.capacity.cpus - math.fsum(g.cpus for g in self.held().values())

    def fits(self, need: Need) -> bool:
        """Whether a trial of that need can start now."""
        if self.capacity.refusal(need) is not None:
            return False
        if need.gpus > len(self.free_gpus()):
            return False
        return need.cpus is None or need.cpus <= self.free_cpus() + _CPU_SLACK

    def grant(self, run_id: int, need: Need) -> Grant:
        """Give the trial of `run_id` what it needs (`fits` must have said yes)."""
        if not self.fits(need):
            raise RuntimeError(f"run {run_id}: {need} does not fit in what is free")
        gpus = None if self.capacity.gpus is None else tuple(self.free_gpus()[: need.gpus])
        granted = Grant(gpus=gpus, cpus=need.cpus or 0.0)
        self._grants[run_id] = granted
        return granted

    def apply(self, command: TrialCommand, granted: Grant, trainer: Trainer) -> TrialCommand:
        """The trial's command with its grant's variables (a warm trial's fork applies them
        before it runs the module: TensorFlow reads `CUDA_VISIBLE_DEVICES` when it first
        initialises a device, in the trial, not when it is imported)."""
        own = granted.environment()
        if not own:
            return command
        overridden = trainer.env.get(GPU_VARIABLE)
        if (
            overridden not in (None, own[GPU_VARIABLE])
            and trainer.name not in self._warned_trainers
        ):
            self._warned_trainers.add(trainer.name)
            logger.warning(
                "trainer %r: its registry env sets %s=%r; on this worker (--gpus) each trial "
                "sees the GPUs it is given instead",
                trainer.name,
                GPU_VARIABLE,
                overridden,
            )
        return dataclasses.replace(command, env={**command.env, **own})


def _count(number: float, unit: str) -> str:
    return f"{number:g} {unit}" + ("" if number == 1 else "s")


def capacity_from_options(gpus: str | None, cpus: float | None) -> Capacity:
    """The `--gpus` and `--cpus` of `tuner run`, `worker` and `serve` (`ValueError` naming
    the option)."""
    try:
        devices = parse_gpus(gpus)
    except ValueError as exc:
        raise ValueError(f"--gpus: {exc}") from None
    try:
        count = parse_cpus(cpus)
    except ValueError as exc:
        raise ValueError(f"--cpus: {exc}") from None
    return Capacity(gpus=devices, cpus=count)


def gpus_note(capacity: Capacity, environ: Mapping[str, str] | None = None) -> str | None:
    """A warning for a manager given `--gpus` whose own environment restricts the devices:
    the ids are the machine's, and each trial's `CUDA_VISIBLE_DEVICES` replaces it."""
    own = (os.environ if environ is None else environ).get(GPU_VARIABLE)
    if capacity.gpus is None or own is None:
        return None
    return (
        f"{GPU_VARIABLE}={own!r} in this environment is replaced in each trial by the ids it "
        "is given from --gpus (ids as nvidia-smi numbers the devices)"
    )
