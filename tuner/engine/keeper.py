"""Keep the best step's checkpoint and exports of a running trial, out of the estimator's reach.

An estimator rotates its checkpoints (`keep_checkpoint_max`) and its exporters prune old
SavedModels; the best eval step's checkpoint and exports are hard-linked into the trial's
`.kept/` dir as soon as that step is the best, and the copies of former best steps dropped.
"""

from __future__ import annotations

from typing import Any

from tuner.artifacts.store import (
    ArtifactStore,
    checkpoint_prefix_for,
    drop_checkpoint,
    drop_export,
    keep_checkpoint,
    keep_export,
)
from tuner.domain.errors import ArtifactNotFoundError
from tuner.engine.active_trial import ActiveTrial, KeptCheckpoint
from tuner.engine.writes import LeaseWrites
from tuner.outputs.bundle import savedmodel_global_step
from tuner.outputs.exports import find_exports, saved_model_file
from tuner.persistence.kept import (
    add_checkpoint,
    add_export,
    exports_to_keep,
    known_exports,
    match_exports_by_step,
    remove_checkpoints_except,
    set_export_kept,
    tie_export_by_time,
    unevaluated_exports,
)


class Keeper:
    """Keeps one trial's best checkpoint and exports, at every poll."""

    def __init__(self, store: ArtifactStore, writes: LeaseWrites) -> None:
        self.store = store
        self.writes = writes

    def keep_best_checkpoint(self, trial: ActiveTrial) -> None:
        """Protect the best step's checkpoint from the estimator's rotation.

        The eval's `checkpoint_path` summary names the checkpoint; it may be read a poll after
        the metrics, so until then the estimator's own naming of the step's checkpoint is kept,
        and replaced if the summary names another. A checkpoint not found yet is tried again.
        """
        best = trial.best
        if best is None:
            return
        reported = trial.reported_checkpoints.get((best.eval_name, best.step))
        reported = reported or best.checkpoint_path
        kept = trial.kept
        if kept is not None and kept.step == best.step and (kept.confirmed or reported is None):
            return
        model_dir = trial.paths.output_dir / trial.outputs.layout.model_dir
        latest = trial.last is not None and trial.last.step == best.step
        prefix = checkpoint_prefix_for(
            trial.paths.output_dir,
            best.step,
            reported,
            model_dir=model_dir,
            latest_since=best.wall_time if latest else None,
        )
        if prefix is None:
            trial.checkpoint_miss = f"its checkpoint_path {reported!r} is outside the trial dir"
            return
        if kept is not None and kept.step == best.step and kept.source == prefix:
            kept.confirmed = True
            return
        if kept is not None and kept.step == best.step:
            drop_checkpoint(kept.kept)  # a guess that the step's summary contradicts
            trial.kept = None
        try:
            kept_prefix = keep_checkpoint(prefix, trial.paths.kept_dir)
        except ArtifactNotFoundError as exc:
            trial.checkpoint_miss = str(exc)
            return
        relative = self.store.relative(kept_prefix)

        def record(session: Any) -> list[Any]:
            add_checkpoint(
                session, trial.run_id, step=best.step, source_path=str(prefix), kept_path=relative
            )
            return remove_checkpoints_except(session, trial.run_id, best.step)

        for old in self.writes.write(trial.lease, record):
            drop_checkpoint(self.store.resolve(old.kept_path))
        trial.kept = KeptCheckpoint(best.step, prefix, kept_prefix, confirmed=reported is not None)
        trial.checkpoint_miss = None

    def keep_best_export(self, trial: ActiveTrial) -> None:
        """Keep a linked copy of the best step's export; drop copies of former best steps."""
        best_id = trial.best.eval_step_id if trial.best else None
        keep, drop = self.writes.write(
            trial.lease, lambda s: exports_to_keep(s, trial.run_id, best_id)
        )
        for export_id, path in keep:
            try:
                kept = keep_export(self.store.resolve(path), trial.paths.kept_dir)
            except ArtifactNotFoundError as exc:
                self.writes.add_problems(trial, [str(exc)])
                continue
            self._set_export_kept(trial, export_id, self.store.relative(kept))
        for export_id, kept_path in drop:
            self._set_export_kept(trial, export_id, None)
            drop_export(self.store.resolve(kept_path))

    def _set_export_kept(self, trial: ActiveTrial, export_id: int, kept_path: str | None) -> None:
        self.writes.write(trial.lease, lambda s: set_export_kept(s, export_id, kept_path))

    def record_exports(self, trial: ActiveTrial, polled_at: float) -> bool:
        """Record new exports; one written after the event poll waits for the next tick, so
        that the eval step it belongs to has been read first."""
        layout = trial.outputs.layout
        found = [
            e
            for e in find_exports(
                trial.paths.output_dir, layout.export_patterns, anywhere=layout.exports_anywhere
            )
            if e.written_at < polled_at
        ]
        if not found:
            return False
        known = self.writes.db.run(lambda s: known_exports(s, trial.run_id))  # a read
        new = [e for e in found if (e.exporter, e.version) not in known]
        if not new:
            return False

        steps = {export.path: savedmodel_global_step(export.path) for export in new}

        def record(session: Any) -> None:
            for export in new:
                add_export(
                    session,
                    trial.run_id,
                    exporter=export.exporter,
                    version=export.version,
                    path=self.store.relative(export.path),
                    wall_time=export.written_at,
                    global_step=steps[export.path],
                    eval_name=trial.objective_dir,
                )

        self.writes.write(trial.lease, record)
        return True

    def tie_unevaluated_exports(self, trial: ActiveTrial) -> bool:
        """At the trial's end, tie by write time each export whose global step was never
        evaluated: the trainer's steps are not global steps (a Keras trainer reporting epochs
        through hypertune while its optimizer counts iterations). Said on the trial."""
        pending = self.writes.db.run(lambda s: unevaluated_exports(s, trial.run_id))
        tied = False
        for export_id, exporter, version, path, global_step in pending:
            model_file = saved_model_file(self.store.resolve(path))
            if model_file is None:
                continue
            written = model_file.stat().st_mtime
            step = self.writes.write(
                trial.lease,
                lambda s, i=export_id, w=written: tie_export_by_time(  # type: ignore[misc]
                    s, i, trial.run_id, w, trial.objective_dir
                ),
            )
            if step is None:
                continue
            tied = True
            self.writes.add_problems(
                trial,
                [
                    f"export {exporter}/{version}: tied to step {step} by its write time (the "
                    f"step reported just before it was saved); its variables hold global step "
                    f"{global_step}, which no eval reported: this trainer's steps are not "
                    "global steps (epochs?)"
                ],
            )
        return tied

    def match_exports(self, trial: ActiveTrial) -> bool:
        """Tie exports to the eval steps their global step names; whether any was matched."""
        return bool(
            self.writes.write(
                trial.lease,
                lambda s: match_exports_by_step(s, trial.run_id, trial.objective_dir),
            )
        )
