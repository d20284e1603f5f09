"""A warm trial that failed before its first eval runs again, cold, once.

Whether a failure comes from the warm start (a fork of a parent that imported TensorFlow) can
only be told by trying without it. A trainer whose cold retries get further starts cold on this
worker from then on; one whose cold retry fails the same way failed on its own.
"""

from __future__ import annotations

import shutil

from tuner.engine.active_trial import ActiveTrial
from tuner.engine.fencing import Fencing
from tuner.engine.writes import LeaseWrites
from tuner.outputs.hparams import HPARAMS_DIR, session_files
from tuner.outputs.reader import TrialOutputs
from tuner.persistence.runs import set_pid
from tuner.trial.execution import TrialProcess, describe_exit
from tuner.trial.warm_starts import WarmStarts


class ColdRetries:
    """Runs failed warm trials again cold, and tells the warm starts what that showed."""

    def __init__(self, warm: WarmStarts, writes: LeaseWrites, fencing: Fencing) -> None:
        self.warm = warm
        self.writes = writes
        self.fencing = fencing

    def retry(self, trial: ActiveTrial, code: int) -> bool:
        """Start the trial again cold if its warm start failed before any eval (once)."""
        key = trial.warm_key
        if (
            key is None
            or not trial.process.warm
            or code == 0
            or trial.stop is not None
            or trial.values_read
            or not self.warm.should_retry_cold(key)
        ):
            return False
        trial.warm_failure = f"warm start {describe_exit(code)} before any eval"
        trial.log.warning("%s; running it again cold", trial.warm_failure)
        session = set(session_files(trial.paths.output_dir))  # the HParams session stays
        for entry in trial.paths.output_dir.iterdir():
            if entry.name != HPARAMS_DIR and entry not in session:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        with open(trial.paths.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n--- {trial.warm_failure}; starting it again cold ---\n")
        assert trial.command is not None
        self.fencing.forget(trial.process.pid)
        trial.process = TrialProcess.start(trial.command, trial.paths.log_path)
        self.fencing.watch(trial.process.pid)
        trial.outputs = TrialOutputs(trial.paths.output_dir, trial.spec)
        trial.pending_offsets = {}
        pid = trial.process.pid
        self.writes.write(trial.lease, lambda s: set_pid(s, trial.run_id, pid))
        self.writes.add_problems(
            trial,
            [
                f"{trial.warm_failure}; it was run again with a cold start (see its log). "
                "If the cold start gets further, this trainer starts cold on this worker; "
                "leave 'preload' out of its registry entry to start it cold everywhere"
            ],
        )
        return True

    def worked(self, trial: ActiveTrial) -> None:
        """The cold retry read values: the warm start was at fault."""
        if trial.warm_failure is not None and trial.warm_key is not None:
            self.warm.cold_retry_worked(
                trial.warm_key,
                f"trial {trial.number}'s {trial.warm_failure}, and its cold start did not",
            )

    def judge(self, trial: ActiveTrial, code: int) -> None:
        """A cold retry that also failed before any eval: the trainer's own failure."""
        if trial.warm_failure is None or trial.warm_key is None or trial.values_read:
            return
        if code == 0:
            self.warm.cold_retry_worked(
                trial.warm_key,
                f"trial {trial.number}'s {trial.warm_failure}, and its cold start exited 0",
            )
        else:
            self.warm.cold_retry_failed(trial.warm_key)
