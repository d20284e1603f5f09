"""SavedModel exports in a trial dir, wherever and however a trainer wrote them.

An estimator's exporters write `export/<exporter>/<version>/` (a timestamp version, after a
`temp-<ts>` dir is renamed); a Keras trainer may save straight into a dir. Found by their
`saved_model.pb`, without TensorFlow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

EXPORT_VERSION = re.compile(r"^\d+$")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class FoundExport:
    exporter: str
    version: str
    path: Path
    #: When the SavedModel was written (its `saved_model.pb`'s mtime), to match it to an eval.
    written_at: float


def export_names(export_dir: Path) -> tuple[str, str]:
    """(exporter, version) of a SavedModel dir: `<exporter>/<version>/`, or a plain dir whose
    version is its `saved_model.pb`'s write time in seconds."""
    if EXPORT_VERSION.match(export_dir.name):
        return export_dir.parent.name, export_dir.name
    model_file = saved_model_file(export_dir) or export_dir
    return export_dir.name, str(int(model_file.stat().st_mtime))


def saved_model_file(directory: Path) -> Path | None:
    for name in SAVED_MODEL_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _subdirs(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _found(exporter: str, version: str, path: Path, model_file: Path) -> FoundExport | None:
    try:
        written = model_file.stat().st_mtime
    except OSError:
        return None
    return FoundExport(exporter, version, path, written)


def _saved_models_in(root: Path) -> list[FoundExport]:
    """SavedModels at `root` itself, at `root/<version>/` or at `root/<exporter>/<version>/`.

    Exporters write `<version>` dirs named by a timestamp (after a `temp-<ts>` dir is renamed);
    a SavedModel saved straight into a dir (Keras' `model.save(AIP_MODEL_DIR)`) is named by its
    dir, with the write time of its `saved_model.pb` as its version.
    """
    found: list[FoundExport] = []
    direct = saved_model_file(root)
    if direct is not None:
        try:
            exporter, version = export_names(root)
        except OSError:
            return []
        export = _found(exporter, version, root, direct)
        return [export] if export else []
    for child in _subdirs(root):
        model_file = saved_model_file(child)
        if model_file is not None and EXPORT_VERSION.match(child.name):
            export = _found(root.name, child.name, child, model_file)
            if export:
                found.append(export)
            continue
        for version_dir in _subdirs(child):
            if not EXPORT_VERSION.match(version_dir.name):
                continue  # e.g. temp-<timestamp> while the exporter is still writing
            model_file = saved_model_file(version_dir)
            export = (
                _found(child.name, version_dir.name, version_dir, model_file)
                if model_file
                else None
            )
            if export:
                found.append(export)
    return found


def find_exports(
    output_dir: Path, patterns: Sequence[str] = ("export",), *, anywhere: bool = False
) -> list[FoundExport]:
    """Complete SavedModels in the dirs that `patterns` (relative to `output_dir`) match, and
    with `anywhere`, every other SavedModel of the trial dir (`saved_models_anywhere`)."""
    found: dict[Path, FoundExport] = {}
    for pattern in patterns:
        for root in sorted(output_dir.glob(pattern)):
            if root.is_dir():
                for export in _saved_models_in(root):
                    found.setdefault(export.path, export)
    if anywhere:
        for export in saved_models_anywhere(output_dir):
            found.setdefault(export.path, export)
    return list(found.values())


#: How deep and how wide `saved_models_anywhere` looks (a trainer's tree costs a bounded scan).
ANYWHERE_DEPTH = 4
ANYWHERE_DIRS = 400
#: Dirs that are part of a SavedModel or a checkpoint, or the tuner's own: never searched.
_NOT_SEARCHED = frozenset({"variables", "assets", "assets.extra", "hypertune"})


def saved_models_anywhere(
    output_dir: Path, *, max_depth: int = ANYWHERE_DEPTH, max_dirs: int = ANYWHERE_DIRS
) -> list[FoundExport]:
    """Every SavedModel in a trial dir, wherever a trainer saved it: Keras' `model.save` and
    `tf.saved_model.save` into a dir named by a timestamp or a version (`<dir>/20261206143015/`,
    `<dir>/3/`), or straight into a dir (`AIP_MODEL_DIR`), or an exporter's
    `export/<exporter>/<version>/`. A dir named by digits is a version of its parent (the
    exporter); any other is an exporter of its own, versioned by its write time. Hidden dirs
    (the tuner's `.kept/`) and `temp-*` dirs (an exporter still writing) are skipped."""
    found: list[FoundExport] = []
    queue: list[tuple[Path, int]] = [(output_dir, 0)]
    visited = 0
    while queue and visited < max_dirs:
        directory, depth = queue.pop(0)
        visited += 1
        model_file = saved_model_file(directory)  # the trial dir itself: `model.save(job_dir)`
        if model_file is not None:
            try:
                exporter, version = export_names(directory)
            except OSError:
                continue
            export = _found(exporter, version, directory, model_file)
            if export is not None:
                found.append(export)
            continue  # nothing below a SavedModel is another one
        if depth >= max_depth:
            continue
        queue += [
            (child, depth + 1)
            for child in _subdirs(directory)
            if not child.name.startswith((".", "temp-")) and child.name not in _NOT_SEARCHED
        ]
    return found
