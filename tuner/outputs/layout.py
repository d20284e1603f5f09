"""Where a trial writes: the estimator's model dir(s) inside a trial's output dir, found by what
an estimator leaves there, and the dirs to read eval events and SavedModel exports from.

A trainer may use the output dir as its model dir, or a folder below it: Google's AI Platform
samples append the trial number from `TF_CONFIG` (`<trial dir>/3/`), Vertex trainers use
`AIP_MODEL_DIR` (`<trial dir>/model/`), others a fixed subfolder. A model dir is recognised by
its `checkpoint` state file, its `eval*/` event dirs and its `export/<exporter>/<version>/`
SavedModels, at most `MAX_DEPTH` levels down and `MAX_DIRS` directories in all, so a trainer that
writes a large tree costs a bounded scan.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from tuner.domain.spec import DEFAULT_EVAL_DIRS, StudySpec
from tuner.outputs.exports import find_exports

__all__ = [
    "MAX_DEPTH",
    "MAX_DIRS",
    "VERTEX_MODEL_DIR",
    "ModelDir",
    "TrialLayout",
    "find_model_dirs",
    "resolve_layout",
]

MAX_DEPTH: Final = 3
MAX_DIRS: Final = 400
#: Where `AIP_MODEL_DIR` points inside a trial dir (Vertex: `<base output dir>/<trial>/model`).
VERTEX_MODEL_DIR: Final = "model"
EVENT_FILE_PREFIX: Final = "events.out.tfevents."
#: Folders that are part of a model dir (or of a SavedModel), never model dirs themselves.
_NOT_MODEL_DIRS: Final = frozenset({"export", "variables", "assets", "assets.extra", "hypertune"})


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A directory that holds an estimator's output, with what showed it."""

    #: Relative to the trial's output dir, POSIX style; "." is the output dir itself.
    path: str
    has_checkpoint_state: bool
    eval_dirs: tuple[str, ...]
    has_exports: bool

    @property
    def evidence(self) -> str:
        parts = []
        if self.has_checkpoint_state:
            parts.append("a checkpoint state file")
        if self.eval_dirs:
            parts.append("eval events in " + ", ".join(self.eval_dirs))
        if self.has_exports:
            parts.append("SavedModel exports")
        return " and ".join(parts)

    @property
    def strength(self) -> int:
        return 2 * bool(self.eval_dirs) + self.has_checkpoint_state + self.has_exports


@dataclass(frozen=True, slots=True)
class TrialLayout:
    """The dirs a trial's outputs are read from, relative to its output dir."""

    #: The model dir in use ("." when nothing was found yet, or when overridden).
    model_dir: str
    eval_patterns: tuple[str, ...]
    export_patterns: tuple[str, ...]
    #: Other candidate model dirs, reported and not read.
    ignored: tuple[ModelDir, ...] = ()
    found: ModelDir | None = None
    #: Whether SavedModels are also looked for anywhere in the trial dir (no `exportDirs`).
    exports_anywhere: bool = True


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _has_event_files(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(e.name.startswith(EVENT_FILE_PREFIX) for e in entries)
    except OSError:
        return False


def _inspect(path: str, rel: str) -> tuple[ModelDir | None, list[tuple[str, str]]]:
    """What `path` shows of a model dir, and its subdirs worth descending into."""
    checkpoint_state = False
    eval_dirs: list[str] = []
    exports = False
    children: list[tuple[str, str]] = []
    try:
        with os.scandir(path) as entries:
            listing = sorted(entries, key=lambda e: e.name)
    except OSError:
        return None, []
    for entry in listing:
        name = entry.name
        if name == "checkpoint" and entry.is_file():
            checkpoint_state = True
        elif not _is_dir(entry) or name.startswith("."):
            continue
        elif name == "eval" or name.startswith("eval_"):
            if _has_event_files(entry.path):
                eval_dirs.append(name)
        elif name == "export":
            exports = bool(find_exports(Path(entry.path).parent, ("export",)))
        elif name not in _NOT_MODEL_DIRS and not name.startswith("temp-"):
            child_rel = name if rel == "." else f"{rel}/{name}"
            children.append((entry.path, child_rel))
    if not (checkpoint_state or eval_dirs or exports):
        return None, children
    return ModelDir(rel, checkpoint_state, tuple(eval_dirs), exports), children


def find_model_dirs(
    output_dir: Path, *, max_depth: int = MAX_DEPTH, max_dirs: int = MAX_DIRS
) -> list[ModelDir]:
    """Every model dir in `output_dir` (itself included), strongest evidence first."""
    found: list[ModelDir] = []
    queue: list[tuple[str, str, int]] = [(str(output_dir), ".", 0)]
    visited = 0
    while queue and visited < max_dirs:
        path, rel, depth = queue.pop(0)
        visited += 1
        model_dir, children = _inspect(path, rel)
        if model_dir is not None:
            found.append(model_dir)
        if depth < max_depth:
            queue += [(child, child_rel, depth + 1) for child, child_rel in children]
    found.sort(key=lambda m: (-m.strength, m.path.count("/") + (m.path != "."), m.path))
    return found


def _under(model_dir: str, pattern: str) -> str:
    return pattern if model_dir == "." else str(PurePosixPath(model_dir) / pattern)


def resolve_layout(spec: StudySpec, candidates: Sequence[ModelDir]) -> TrialLayout:
    """The dirs to read: the spec's explicit `evalDirs`/`exportDirs`, else the best candidate's.

    Only one model dir is read; the others are returned as `ignored`, for the trial's problems.
    """
    chosen = candidates[0] if candidates else None
    model_dir = chosen.path if chosen else "."
    if spec.eval_dirs is not None:
        evals = tuple(spec.eval_dirs)
    else:
        evals = tuple(_under(model_dir, p) for p in DEFAULT_EVAL_DIRS)
    if spec.export_dirs is not None:
        exports = tuple(spec.export_dirs)
    else:
        exports = tuple(dict.fromkeys([_under(model_dir, "export"), VERTEX_MODEL_DIR]))
    overridden = spec.eval_dirs is not None and spec.export_dirs is not None
    ignored = () if overridden or chosen is None else tuple(candidates[1:])
    return TrialLayout(
        model_dir, evals, exports, ignored, chosen, exports_anywhere=spec.export_dirs is None
    )
