"""The artifact store: trial dirs, kept checkpoints, SavedModel exports, safe paths.

Layout under the artifact root:
    <study>/trial-<n>/          the trial's output dir (the estimator's model_dir)
    <study>/trial-<n>.log       its stdout and stderr
    <study>/trial-<n>.kept/     copies of its best-step checkpoint, out of the estimator's rotation
    <study>/.archives/          downloadable `.tar.gz` of kept artifacts
                                (see `tuner/artifacts/archives.py`)
Every path stored in the database is relative to the root, and every path resolved from one is
checked to stay inside it. With an object store (`remote`), the same relative paths are its
keys: the local root is then this machine's work dir, and what outlives a trial is in the store.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.domain.errors import ArtifactNotFoundError, UnsafePathError
from tuner.outputs.exports import export_names, saved_model_file

if TYPE_CHECKING:
    from tuner.artifacts.object_store import ObjectStore
    from tuner.domain.config import Settings


@dataclass(frozen=True)
class TrialPaths:
    output_dir: Path
    log_path: Path
    kept_dir: Path


class ArtifactStore:
    def __init__(self, root: Path, remote: ObjectStore | None = None) -> None:
        self.root = root.resolve()
        self.remote = remote

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        """The local root, and the object store when the settings name one."""
        url = settings.artifact_url
        return cls(settings.artifact_root, _object_store(url) if url else None)

    def trial_paths(self, study: str, number: int) -> TrialPaths:
        base = self.resolve(study)
        name = f"trial-{number:04d}"
        return TrialPaths(
            output_dir=base / name, log_path=base / f"{name}.log", kept_dir=base / f"{name}.kept"
        )

    def relative(self, path: Path) -> str:
        return str(self._inside(path.resolve()).relative_to(self.root))

    def relative_literal(self, path: Path) -> str:
        """`path` relative to the root as written, symlinks not followed (what a deletion
        records: the name it removes, not where a link leads)."""
        literal = Path(os.path.normpath(path))
        return str(self._inside(literal).relative_to(self.root))

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
        if self.remote is not None:
            self.remote.delete_prefix(self.relative(self.study_dir(study)))


@lru_cache(maxsize=8)
def _object_store(url: str) -> ObjectStore:
    """One client per store URL per process (it holds a connection pool)."""
    from tuner.artifacts.object_store import ObjectStore

    return ObjectStore(url)


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
            try:
                os.link(source, target)
            except FileNotFoundError:
                raise
            except OSError:
                shutil.copy2(source, target)
        except FileNotFoundError:
            # The estimator rotated it away between the listing and the link: this step's
            # checkpoint is gone, as if it had been rotated before (tried again, then given up).
            for partial in kept_dir.glob(f"{prefix.name}.*"):
                partial.unlink(missing_ok=True)
            raise ArtifactNotFoundError(
                f"{prefix}: checkpoint files were rotated away while being kept"
            ) from None
    kept_prefix = kept_dir / prefix.name
    (kept_dir / "checkpoint").write_text(checkpoint_state(prefix.name))
    return kept_prefix


def checkpoint_state(name: str) -> str:
    """The `checkpoint` state file of a dir holding the one checkpoint `name`."""
    return f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'


def keep_export(export_dir: Path, kept_dir: Path) -> Path:
    """Hard-link (or copy) a SavedModel directory into `kept_dir/export/<exporter>/<version>`.

    Exporters delete old exports themselves (`exports_to_keep`); the linked copy survives.
    """
    if not export_dir.is_dir() or saved_model_file(export_dir) is None:
        raise ArtifactNotFoundError(f"{export_dir}: export not found (already cleaned up?)")
    target = kept_dir / "export" / "/".join(export_names(export_dir))
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


def checkpoint_prefix_for(
    output_dir: Path,
    step: int,
    reported: str | None,
    *,
    model_dir: Path | None = None,
    latest_since: float | None = None,
) -> Path | None:
    """The checkpoint an eval step evaluated: the path the estimator reported, else a guess.

    A reported path is only trusted inside the trial's output dir (None if it is outside). The
    guess, when nothing was reported, is the `checkpoint` state file's entry for the step, else
    the estimator's own naming, `<model dir>/model.ckpt-<step>`.
    """
    out = output_dir.resolve()
    if reported:
        path = Path(reported)
        if not path.is_absolute():
            path = (model_dir or output_dir) / path
        resolved = path.resolve()
        return resolved if resolved == out or out in resolved.parents else None
    base = (model_dir or output_dir).resolve()
    for listed in _listed_checkpoints(base):
        if listed.name.rsplit("-", 1)[-1] == str(step):
            return listed
    # The state file lists only the latest (Keras' `ModelCheckpoint`, `save_weights`): a
    # checkpoint of the dir named for the step (`ckpt-2`, `weights-2`) is that step's.
    named = sorted(base.glob(f"*-{step}.index"))
    if len(named) == 1:
        return named[0].with_suffix("")
    # One checkpoint overwritten in place (`ModelCheckpoint("weights")`, "save the best"):
    # when the step is the latest reported, the checkpoint saved since its report is its.
    latest = _latest_checkpoint(base)
    if latest is not None and latest_since is not None and not latest.name[-1:].isdigit():
        try:
            saved = latest.with_name(latest.name + ".index").stat().st_mtime
        except OSError:
            saved = None
        if saved is not None and saved >= latest_since:
            return latest
    return base / f"model.ckpt-{step}"


_STATE_LINE = re.compile(r'^\s*all_model_checkpoint_paths:\s*"(.*)"\s*$')
_LATEST_LINE = re.compile(r'^\s*model_checkpoint_path:\s*"(.*)"\s*$')


def _latest_checkpoint(model_dir: Path) -> Path | None:
    """The checkpoint a `checkpoint` state file names as the latest."""
    try:
        text = (model_dir / "checkpoint").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = _LATEST_LINE.match(line)
        if match:
            path = Path(match.group(1))
            return path if path.is_absolute() else model_dir / path
    return None


def _listed_checkpoints(model_dir: Path) -> list[Path]:
    """The checkpoint prefixes a `checkpoint` state file lists (relative ones under its dir)."""
    try:
        text = (model_dir / "checkpoint").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    listed = []
    for line in text.splitlines():
        match = _STATE_LINE.match(line)
        if match:
            path = Path(match.group(1))
            listed.append(path if path.is_absolute() else model_dir / path)
    return listed


def copy_for_serving(export_dir: Path, destination: Path, *, model_name: str) -> Path:
    """Copy a SavedModel into TF Serving's layout: `<destination>/<model>/<version>/`."""
    if saved_model_file(export_dir) is None:
        raise ArtifactNotFoundError(f"{export_dir}: no saved_model.pb")
    target = destination / model_name / export_names(export_dir)[1]
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(export_dir, target)
    return target
