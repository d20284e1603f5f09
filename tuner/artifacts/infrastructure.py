"""Failures of the machine rather than of a trainer: they never count against a study.

A full disk, a read-only or vanished artifact root: a trial that fails for these reasons is not
the trainer's fault, so it is STOPPED (run again later) and the manager backs off, instead of
FAILED and burning the study's budget.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

__all__ = ["INFRASTRUCTURE_ERRNOS", "MIN_FREE_BYTES", "artifact_store_problem", "is_infrastructure"]

#: Free space below which the artifact store counts as full (trials are not started).
MIN_FREE_BYTES = 64 * 1024 * 1024
#: Errors of the machine rather than of the trainer: they never count against a study.
INFRASTRUCTURE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EIO}
)


def is_infrastructure(exc: BaseException) -> bool:
    """An OS error of the machine (space, permissions, a vanished dir), not of a trainer."""
    return isinstance(exc, OSError) and exc.errno in INFRASTRUCTURE_ERRNOS


def artifact_store_problem(root: Path) -> str | None:
    """Why trials cannot be written under `root` now, or None."""
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"the artifact root {root} is not writable"
    try:
        free = shutil.disk_usage(probe).free
    except OSError as exc:
        return f"the artifact root {root} cannot be read: {exc.strerror or exc}"
    if free < MIN_FREE_BYTES:
        return f"the artifact store {root} is full ({free // (1024 * 1024)} MiB free)"
    return None
