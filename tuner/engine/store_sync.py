"""What of an ended trial outlives its worker, put in the object store before it is recorded.

With an object-store artifact root a trial runs on the worker's own disk. Its outcome is decided
when its process exits; its keepers (the kept checkpoint, the matched exports, its eval events
and log) then upload on the uploader's threads while the manager goes on. A trial is recorded
(and COMPLETED) only once they are stored and verified; an upload that keeps failing records
it STOPPED (not counted, run again), with its local copy kept.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from pathlib import Path

from tuner.artifacts.object_store import ObjectStoreError
from tuner.artifacts.store import ArtifactStore
from tuner.artifacts.uploads import (
    KeptArtifacts,
    Uploader,
    clean_local_copy,
    upload_session_files,
)
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import LocalDiskFullError
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.outcome import Decision, RunState, Step
from tuner.engine.writes import LeaseWrites
from tuner.persistence import is_unavailable
from tuner.persistence.kept import kept_exports, set_checkpoint_archive, set_export_archive

#: Seconds a shutting-down manager waits for an ended trial's upload before stopping it.
UPLOAD_GRACE = 30.0

#: Called when the machine, not the trainer, failed a trial: its study waits a while.
BackOff = Callable[[Study, str], None]


class StoreSync:
    """The object-store side of a trial's end (a no-op without an object store)."""

    def __init__(
        self,
        uploader: Uploader | None,
        store: ArtifactStore,
        writes: LeaseWrites,
        settings: Settings,
        *,
        back_off: BackOff,
    ) -> None:
        self.uploader = uploader
        self.store = store
        self.writes = writes
        self.settings = settings
        self.back_off = back_off

    def sync_log(self, trial: ActiveTrial) -> None:
        """Upload the running trial's log now and then, so readers elsewhere see it grow."""
        if self.uploader is not None:
            every = self.settings.log_upload_seconds
            self.uploader.sync_log(trial.run_id, trial.paths.log_path, every)

    def problem(self) -> str | None:
        """Why no trial should start now (the object store unreachable), or None."""
        return self.uploader.problem() if self.uploader is not None else None

    def stored(self, trial: ActiveTrial, decide: Callable[[], Decision]) -> bool:
        """Whether the ended trial's artifacts are stored (or there is no object store).

        `decide` decides the outcome first; its values show on the leaderboard during the
        upload.
        """
        if self.uploader is None or Step.STORED in trial.done:
            return True
        decide()
        self.writes.flush(trial)
        try:
            report = self.uploader.poll(trial.run_id, lambda: self._kept_artifacts(trial))
        except LocalDiskFullError as exc:
            # The worker's problem: its local copy goes (the disk would stay full and no trial
            # could start here), the trial runs again, here once space is back or elsewhere.
            self.stop_unstored(
                trial,
                f"the disk of worker {socket.gethostname()} is full ({exc}); its artifacts could "
                "not be prepared for the store; not counted, run again",
            )
            trial.local_copy_kept = False
            trial.disk_full = True
            self.back_off(trial.study, f"this worker's disk is full: {exc}")
            return True
        except ObjectStoreError as exc:
            self.stop_unstored(
                trial,
                f"its artifacts could not be stored in {self.uploader.store.url} ({exc}); not "
                f"counted, run again (its local copy stays in {trial.paths.output_dir} on "
                f"{socket.gethostname()})",
            )
            trial.local_copy_kept = True
            self.back_off(trial.study, f"the object store failed: {exc}")
            return True
        if report is None:
            return False
        run_id = trial.run_id
        if report.checkpoint is not None:
            step, archive = report.checkpoint
            self.writes.later(trial, lambda s: set_checkpoint_archive(s, run_id, step, archive))
        for export_id, stored in report.exports:
            self.writes.later(
                trial,
                functools.partial(set_export_archive, export_id=export_id, archive=stored),
            )
        trial.log.info(
            "%d objects (%.1f MB) stored in %s in %.1f s",
            report.objects,
            report.bytes / 1e6,
            self.uploader.store.url,
            report.seconds,
        )
        trial.done.add(Step.STORED)
        return True

    def stored_before_shutdown(
        self, trial: ActiveTrial, reason: str, decide: Callable[[], Decision]
    ) -> bool:
        """A trial that ended and is uploading gets `UPLOAD_GRACE` seconds to finish it; one
        that does not is recorded STOPPED (not counted, run again), never COMPLETED. False:
        the database is unavailable, nothing can be recorded."""
        if self.uploader is None or trial.exit_code is None or Step.STORED in trial.done:
            return True
        try:
            self.uploader.wait(trial.run_id, UPLOAD_GRACE)
            if self.stored(trial, decide):
                return True
        except Exception as exc:
            if is_unavailable(exc):
                trial.log.error("could not record its end: %s", exc)
                return False
            raise
        self.stop_unstored(trial, f"{reason} while its artifacts were uploading")
        return True

    def stop_unstored(self, trial: ActiveTrial, reason: str) -> None:
        """Record the trial STOPPED (not counted, run again): its artifacts are not stored."""
        decision = trial.decision or Decision(RunState.STOPPED, None)
        trial.decision = decision.unstored(reason)
        trial.done.add(Step.STORED)

    def forget_unstored(self, trial: ActiveTrial) -> None:
        """A trial the manager cannot go on serving is not COMPLETED without its artifacts."""
        if self.uploader is not None and Step.STORED not in trial.done:
            trial.decision = None

    def store_session_end(self, trial: ActiveTrial) -> None:
        """Upload the HParams session's end, written at the trial's end."""
        if self.uploader is None or Step.SESSION_STORED in trial.done:
            return
        try:
            upload_session_files(self.uploader.store, self.store, trial.paths.output_dir)
        except (ObjectStoreError, OSError) as exc:
            trial.log.warning("session end not stored: %s", exc)
        trial.done.add(Step.SESSION_STORED)

    def clean_up(self, trial: ActiveTrial) -> None:
        """Remove the local copy of a recorded trial whose artifacts are stored (or that was
        given up on a full disk: kept, it would keep the disk full)."""
        stored = self.uploader is not None and not trial.local_copy_kept
        if trial.disk_full or (stored and not self.settings.keep_local_copies):
            clean_local_copy(self.store, trial.study.name, trial.number)

    def close(self) -> None:
        if self.uploader is not None:
            self.uploader.close()

    def _kept_artifacts(self, trial: ActiveTrial) -> KeptArtifacts:
        kept = self.writes.db.run(lambda s: kept_exports(s, trial.run_id))
        exports = [(i, self.store.resolve(p), Path(p).name) for i, p in kept]
        return KeptArtifacts(
            study=trial.study.name,
            output_dir=trial.paths.output_dir,
            log_path=trial.paths.log_path,
            checkpoint=(trial.kept.step, trial.kept.kept) if trial.kept else None,
            exports=exports,
            eval_patterns=trial.outputs.layout.eval_patterns,
        )
