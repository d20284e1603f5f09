"""The artifact store: trial dirs, kept checkpoints, SavedModel exports, safe paths.

Layout under the artifact root:
    <study>/trial-<n>/          the trial's output dir (the estimator's model_dir)
    <study>/trial-<n>.log       its stdout and stderr
    <study>/trial-<n>.kept/     copies of its best-step checkpoint, out of the estimator's rotation
Every path stored in the database is relative to the root, and every path resolved from one is
checked to stay inside it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import ArtifactNotFoundError, UnsafePathError

EXPORT_VERSION = re.compile(r"^\d+$")


@dataclass(frozen=True)
class TrialPaths:
    output_dir: Path
    log_path: Path
    kept_dir: Path


@dataclass(frozen=True)
class FoundExport:
    exporter: str
    version: str
    path: Path
    #: When the SavedModel was written (its `saved_model.pb`'s mtime), to match it to an eval.
    written_at: float


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def trial_paths(self, study: str, number: int) -> TrialPaths:
        base = self.resolve(study)
        name = f"trial-{number:04d}"
        return TrialPaths(
            output_dir=base / name, log_path=base / f"{name}.log", kept_dir=base / f"{name}.kept"
        )

    def relative(self, path: Path) -> str:
        return str(self._inside(path.resolve()).relative_to(self.root))

    def resolve(self, relative: str | Path) -> Path:
        """A stored relative path as an absolute one; refuses anything outside the root."""
        candidate = Path(relative)
        if candidate.is_absolute():
            raise UnsafePathError(f"{relative}: must be relative to the artifact store")
        return self._inside((self.root / candidate).resolve())

    def _inside(self, path: Path) -> Path:
        if path != self.root and self.root not in path.parents:
            raise UnsafePathError(f"{path}: outside the artifact store {self.root}")
        return path

    def study_dir(self, study: str) -> Path:
        return self.resolve(study)

    def delete_study(self, study: str) -> None:
        shutil.rmtree(self.study_dir(study), ignore_errors=True)


def checkpoint_files(prefix: Path) -> list[Path]:
    """The files of a checkpoint prefix (`model.ckpt-200.index`, `.data-00000-of-00001`, ...)."""
    parent = prefix.parent
    if not parent.is_dir():
        return []
    stem = prefix.name + "."
    return sorted(p for p in parent.iterdir() if p.name.startswith(stem) and p.is_file())


def keep_checkpoint(prefix: Path, kept_dir: Path) -> Path:
    """Hard-link (or copy) a checkpoint's files into `kept_dir`; return the kept prefix.

    A hard link survives the estimator deleting its own name for the file during rotation, and
    costs no copy. The kept dir also gets a `checkpoint` state file, so TensorFlow's
    `tf.train.latest_checkpoint(kept_dir)` finds it.
    """
    files = checkpoint_files(prefix)
    if not any(f.name.endswith(".index") for f in files):
        raise ArtifactNotFoundError(f"{prefix}: checkpoint files not found (already rotated?)")
    kept_dir.mkdir(parents=True, exist_ok=True)
    for source in files:
        target = kept_dir / source.name
        if target.exists():
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    kept_prefix = kept_dir / prefix.name
    (kept_dir / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
    )
    return kept_prefix


def keep_export(export_dir: Path, kept_dir: Path) -> Path:
    """Hard-link (or copy) a SavedModel directory into `kept_dir/export/<exporter>/<version>`.

    Exporters delete old exports themselves (`exports_to_keep`); the linked copy survives.
    """
    target = kept_dir / "export" / export_dir.parent.name / export_dir.name
    if not export_dir.is_dir():
        raise ArtifactNotFoundError(f"{export_dir}: export not found (already cleaned up?)")
    shutil.copytree(export_dir, target, copy_function=_link_or_copy, dirs_exist_ok=True)
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:
        shutil.copy2(source, target)


def drop_export(kept_export: Path) -> None:
    shutil.rmtree(kept_export, ignore_errors=True)


def drop_checkpoint(kept_prefix: Path) -> None:
    for path in checkpoint_files(kept_prefix):
        path.unlink(missing_ok=True)


def checkpoint_prefix_for(output_dir: Path, step: int, reported: str | None) -> Path:
    """The checkpoint an eval step evaluated: the path the estimator reported, else its default.

    A reported path is only trusted inside the trial's output dir.
    """
    if reported:
        path = Path(reported)
        if not path.is_absolute():
            path = output_dir / path
        resolved = path.resolve()
        out = output_dir.resolve()
        if resolved == out or out in resolved.parents:
            return resolved
    return output_dir.resolve() / f"model.ckpt-{step}"


def find_exports(output_dir: Path) -> list[FoundExport]:
    """Complete SavedModel exports under `<output>/export/<exporter>/<timestamp>/`."""
    export_root = output_dir / "export"
    found: list[FoundExport] = []
    if not export_root.is_dir():
        return found
    for exporter in sorted(p for p in export_root.iterdir() if p.is_dir()):
        for version in sorted(p for p in exporter.iterdir() if p.is_dir()):
            if not EXPORT_VERSION.match(version.name):
                continue  # e.g. temp-<timestamp> while the exporter is still writing
            for name in ("saved_model.pb", "saved_model.pbtxt"):
                model_file = version / name
                if model_file.is_file():
                    written = model_file.stat().st_mtime
                    found.append(FoundExport(exporter.name, version.name, version, written))
                    break
    return found


def copy_for_serving(export_dir: Path, destination: Path, *, model_name: str) -> Path:
    """Copy a SavedModel into TF Serving's layout: `<destination>/<model>/<version>/`."""
    if (
        not (export_dir / "saved_model.pb").is_file()
        and not (export_dir / "saved_model.pbtxt").is_file()
    ):
        raise ArtifactNotFoundError(f"{export_dir}: no saved_model.pb")
    target = destination / model_name / export_dir.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(export_dir, target)
    return target
