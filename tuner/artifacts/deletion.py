"""What retention deletes of a trial, measured before anything goes, and the deleting itself.

A trial's artifacts, for retention, are:
    <study>/trial-<n>.kept/                the best step's checkpoint and exports, kept
    <study>/trial-<n>/<export dirs>        every SavedModel export recorded in its trial dir
    <study>/trial-<n>/<checkpoint files>   the trainer's names of the kept checkpoint's files
                                           (the same data: a kept file is a hard link)
    <study>/.archives/trial-<n>.kept/      the archives built of them for downloads
    <study>/.archives/trial-<n>/
and, in an object store, its `trial-<n>.kept/` and `.archives/trial-<n>.kept/` objects. Its eval
events, its log and the rest of its trial dir stay: its metrics remain readable.

Every path is relative to the artifact root, resolved through `ArtifactStore.resolve`, and
used only when no part of it is a symlink (a link could lead to another trial's files); a tree
is walked without following links. Deleting is idempotent: what is already gone is skipped, so
a deletion cut short is finished by running it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.artifacts.archives import CACHE_DIR
from tuner.artifacts.store import ArtifactStore, checkpoint_files
from tuner.domain.entities import DeletedPath
from tuner.domain.errors import UnsafePathError
from tuner.outputs.layout import EVENT_FILE_PREFIX

logger = logging.getLogger(__name__)

LOCAL = "local"
STORE = "store"


@dataclass(frozen=True)
class TrialArtifacts:
    """What a trial's checkpoint and export rows point at."""

    study: str
    number: int
    #: (kept prefix, source prefix as the estimator named it, stored archive key)
    checkpoints: Sequence[tuple[str, str, str | None]]
    #: (export dir, kept copy, stored archive key), relative to the artifact root
    exports: Sequence[tuple[str, str | None, str | None]]


def plan_deletion(store: ArtifactStore, artifacts: TrialArtifacts) -> list[DeletedPath]:
    """Every path retention would delete of the trial, with its size now (a file's data
    counted once in the plan, whatever its names); paths with nothing there are left out."""
    paths = store.trial_paths(artifacts.study, artifacts.number)
    archives = store.study_dir(artifacts.study) / CACHE_DIR
    kept_inodes = {_inode(f) for f in _files(paths.kept_dir)}
    local: list[tuple[Path, str]] = [(paths.kept_dir, "dir")]
    for export_path, _, _ in artifacts.exports:
        export_dir = _inside(store, export_path, paths.output_dir)
        if export_dir is not None and not _holds_events(export_dir):
            local.append((export_dir, "dir"))
    for _, source, _ in artifacts.checkpoints:
        prefix = _inside(store, source, paths.output_dir)
        if prefix is not None:
            local += [(f, "file") for f in checkpoint_files(prefix) if _inode(f) in kept_inodes]
    local += [(archives / paths.kept_dir.name, "dir"), (archives / paths.output_dir.name, "dir")]

    planned: list[DeletedPath] = []
    seen: set[tuple[int, int]] = set()
    for path, kind in dict.fromkeys(local):
        if not os.path.lexists(path):
            continue
        size = 0
        for file in [path] if kind == "file" else _files(path):
            info = file.lstat()
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                size += info.st_size
        planned.append(DeletedPath(store.relative_literal(path), size, LOCAL, kind))
    if store.remote is not None:
        planned += _plan_in_store(store, artifacts, paths.kept_dir, archives)
    return planned


def _plan_in_store(
    store: ArtifactStore, artifacts: TrialArtifacts, kept_dir: Path, archives: Path
) -> list[DeletedPath]:
    remote = store.remote
    assert remote is not None
    planned: list[DeletedPath] = []
    prefixes = [store.relative_literal(kept_dir), store.relative_literal(archives / kept_dir.name)]
    for prefix in prefixes:
        found = remote.objects(prefix)
        if found:
            planned.append(DeletedPath(prefix + "/", sum(s for _, s in found), STORE, "prefix"))
    keys = [a for _, _, a in artifacts.checkpoints if a] + [a for _, _, a in artifacts.exports if a]
    for key in dict.fromkeys(keys):  # archives outside those prefixes (none, normally)
        covered = any(key.startswith(p + "/") for p in prefixes)
        if covered or not key.startswith(artifacts.study + "/"):
            continue
        size = remote.size(key)
        if size is not None:
            planned.append(DeletedPath(key, size, STORE, "object"))
    return planned


def delete_planned(
    store: ArtifactStore,
    planned: Sequence[DeletedPath],
    *,
    pause: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> bool:
    """Delete every planned path (what is gone already is skipped); False when `should_stop`
    cut it short. `pause` seconds pass after each file or object deleted (a throttle)."""
    for item in planned:
        if item.location == STORE:
            if store.remote is None:
                raise UnsafePathError(f"{item.path}: in an object store, and none is configured")
            keys = (
                [k for k, _ in store.remote.objects(item.path.rstrip("/"))]
                if item.kind == "prefix"
                else [item.path]
            )
            if pause <= 0:
                store.remote.delete_keys(keys)
                continue
            for key in keys:
                store.remote.delete_keys([key])
                if not _paused(pause, should_stop):
                    return False
            continue
        target = _literal(store, item.path)
        if target is None:
            logger.warning("not deleted: %s goes through a symlink or out of the store", item.path)
            continue
        if item.kind == "file":
            target.unlink(missing_ok=True)
            if not _paused(pause, should_stop):
                return False
        elif not _remove_tree(target, pause, should_stop):
            return False
        if should_stop():
            return False
    return True


def _remove_tree(root: Path, pause: float, should_stop: Callable[[], bool]) -> bool:
    """Unlink every file under `root`, then its dirs, never following a link."""
    if not os.path.lexists(root):
        return True
    if root.is_symlink() or not root.is_dir():
        root.unlink(missing_ok=True)
        return True
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in files:
            Path(directory, name).unlink(missing_ok=True)
            if not _paused(pause, should_stop):
                return False
        for name in dirs:
            child = Path(directory, name)
            with contextlib.suppress(FileNotFoundError):
                if child.is_symlink():
                    child.unlink()
                else:
                    child.rmdir()
    with contextlib.suppress(FileNotFoundError):
        root.rmdir()
    return True


def _paused(pause: float, should_stop: Callable[[], bool]) -> bool:
    if pause > 0:
        time.sleep(pause)
    return not should_stop()


def _literal(store: ArtifactStore, relative: str) -> Path | None:
    """The path `relative` names under the root, if no part of it is a symlink."""
    try:
        resolved = store.resolve(relative)
    except UnsafePathError:
        return None
    literal = Path(os.path.normpath(store.root / relative))
    return literal if resolved == literal else None


def _inside(store: ArtifactStore, recorded: str, parent: Path) -> Path | None:
    """A recorded path (relative to the root, or absolute as a trainer reported it) when it
    lies strictly inside `parent` with no symlink on the way."""
    path = Path(recorded)
    if path.is_absolute():
        try:
            path = path.relative_to(store.root)
        except ValueError:
            return None
    literal = _literal(store, str(path))
    if literal is None or literal == parent or parent not in literal.parents:
        return None
    return literal


def _holds_events(directory: Path) -> bool:
    """Whether an event file is under `directory` (an export there is not deleted: the
    trial's metrics stay)."""
    return any(f.name.startswith(EVENT_FILE_PREFIX) for f in _files(directory))


def _files(root: Path) -> Iterator[Path]:
    """Every file (and symlink) under `root`, without following links."""
    if not root.is_dir() or root.is_symlink():
        return
    for directory, dirs, files in os.walk(root):
        for name in files:
            yield Path(directory, name)
        for name in dirs:
            child = Path(directory, name)
            if child.is_symlink():
                yield child


def _inode(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_dev, info.st_ino
