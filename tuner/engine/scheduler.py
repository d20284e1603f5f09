"""Which studies this manager may claim a trial of now, and when a study is over.

A study is claimable here when this manager's registry has its trainer and its machine can
give a trial what it needs, its budget has room, it is not backing off after a failure of the
machine, and a slot is free. Studies take turns (round robin, starting one further at each
tick), so no study starves the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sized
from typing import Any

from tuner.artifacts.infrastructure import artifact_store_problem
from tuner.artifacts.store import ArtifactStore
from tuner.domain.budget import no_progress, no_room, out_of_time
from tuner.domain.entities import Study
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.outcome import RunState
from tuner.engine.store_sync import StoreSync
from tuner.persistence import Database
from tuner.persistence.budget import spent
from tuner.persistence.studies import set_study_state
from tuner.trial.resources import Need, ResourceLedger

logger = logging.getLogger(__name__)

BACKOFF_MAX = 60.0
#: Seconds a manager whose slots all hold trials on a cluster sleeps at most (it wakes as soon
#: as one of their tasks ends), and reads its studies at most once in.
REMOTE_FULL_WAIT = 1.0
#: How a study's reason starts while its trials wait for a cluster that can take them.
WAITING = "waiting: "
#: Seconds between checks of the artifact store's health.
INFRASTRUCTURE_EVERY = 2.0
#: Seconds a study's compute budget is judged again while its trial counts do not change.
BUDGET_EVERY = 1.0


class Scheduler:
    """Slots, resources, back-offs and budgets: what may be claimed here, in which order."""

    def __init__(
        self,
        db: Database,
        registry: TrainerRegistry,
        store: ArtifactStore,
        store_sync: StoreSync,
        resources: ResourceLedger,
        active: Mapping[int, ActiveTrial],
        *,
        slots: int,
        remote: Sized = (),
        refusal: Callable[[Need], str | None] | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.store = store
        self.store_sync = store_sync
        self.resources = resources
        self.active = active
        #: Trials in flight on a cluster (`tuner.engine.ray_executor`): each holds a slot.
        self.remote = remote
        #: Why this manager can never run a trial of such a need (its machine, or its cluster).
        self.refusal = refusal or resources.capacity.refusal
        #: A cluster is all the machines there are: a study it cannot take says why it waits.
        self.shows_waits = refusal is not None
        self.slots = slots
        #: Study id -> (monotonic time before which it is not launched, current back-off).
        self._backoff: dict[int, tuple[float, float]] = {}
        self._unrunnable: set[int] = set()
        self._infra_checked: tuple[float, str | None] = (0.0, None)
        self._rotation = 0
        self._studies_read = 0.0
        #: Study id -> (its counts, when, (why no room, why out of time)) of the last look.
        self._budget_seen: dict[int, tuple[Any, float, tuple[str | None, str | None]]] = {}

    def claimable(
        self, studies: list[Study], counts: Mapping[int, Mapping[str, int]]
    ) -> tuple[list[Study], bool]:
        """The studies to claim trials of now, in this tick's order, and whether any study
        this manager runs has work left."""
        more = False
        eligible: list[Study] = []
        now = time.monotonic()
        for study in studies:
            if not self._runnable_here(study) or self._study_is_over(study, counts[study.id]):
                continue
            more = True
            if self._backoff.get(study.id, (0.0, 0.0))[0] <= now:
                eligible.append(study)
        if not eligible or self.slots_full() or self._infrastructure_problem() is not None:
            return [], more
        start = self._rotation % len(eligible)
        self._rotation += 1
        return eligible[start:] + eligible[:start], more

    def _runnable_here(self, study: Study) -> bool:
        """Whether this manager can ever run the study's trials (said once if not)."""
        why: str | None
        if study.spec.trainer not in self.registry:
            why = f"trainer {study.spec.trainer!r} is not in this manager's registry"
        else:
            why = self.refusal(Need.of(study.spec))
        if why is None:
            self._unrunnable.discard(study.id)
            if self.shows_waits and (study.state_reason or "").startswith(WAITING):
                self._show_wait(study, None)
        elif study.id not in self._unrunnable:
            self._unrunnable.add(study.id)
            logger.warning("study %s: %s; left to others", study.name, why)
            if self.shows_waits:
                self._show_wait(study, f"{WAITING}{why}")
        return why is None

    def _show_wait(self, study: Study, reason: str | None) -> None:
        """A cluster's manager says on the study why its trials wait (the page, the API)."""
        self.db.run(lambda s: set_study_state(s, study.id, "RUNNING", reason))

    def slots_full(self) -> bool:
        """Whether every slot runs a trial. A trial whose process exited and whose artifacts
        upload frees its slot; at most `slots` uploads wait at once."""
        running = len(self.resources.running)
        uploading = len(self.active) - running
        return running + len(self.remote) >= self.slots or uploading >= self.slots

    def remote_slots_full_and_read_lately(self) -> bool:
        """Every slot taken by a trial on a cluster, and the studies read less than
        `REMOTE_FULL_WAIT` ago: no need to read them at every wake-up (each node reads its own
        study's state and stop requests)."""
        if not self.remote or self.active or not self.slots_full():
            return False
        now = time.monotonic()
        if now - self._studies_read < REMOTE_FULL_WAIT:
            return True
        self._studies_read = now
        return False

    def back_off(self, study: Study, why: str) -> None:
        """Claim no trial of the study for a while (doubling, up to `BACKOFF_MAX`)."""
        _, current = self._backoff.get(study.id, (0.0, 0.0))
        delay = min(BACKOFF_MAX, max(1.0, current * 2))
        self._backoff[study.id] = (time.monotonic() + delay, delay)
        logger.warning("study %s: %s; not counted, retrying in %.0f s", study.name, why, delay)

    def _infrastructure_problem(self) -> str | None:
        """Why no trial can be started here now (no space, a read-only or missing artifact
        root, an unreachable object store), checked at most every 2 s; such trials would fail
        without being at fault."""
        checked_at, problem = self._infra_checked
        now = time.monotonic()
        if now - checked_at < INFRASTRUCTURE_EVERY:
            return problem
        problem = artifact_store_problem(self.store.root) or self.store_sync.problem()
        if problem is not None and problem != self._infra_checked[1]:
            logger.warning("not starting trials: %s (retrying)", problem)
        self._infra_checked = (now, problem)
        return problem

    def _study_is_over(self, study: Study, counts: Mapping[str, int]) -> bool:
        """End a study whose budget is spent or whose failures reached the limit."""
        if self._compute_budget_over(study, counts):
            return True
        spec = study.spec
        failed = counts.get("FAILED", 0)
        completed = counts.get("COMPLETED", 0) + counts.get("PRUNED", 0)
        running = counts.get("RUNNING", 0)
        limit = spec.hyperparameters.max_failed_trials
        if limit and failed >= limit:
            self.end_study(study, "FAILED", f"{failed} trials failed (maxFailedTrials={limit})")
            return True
        first = min(3, spec.max_trials)
        if not limit and completed == 0 and failed >= first:
            reason = f"the first {failed} trials all failed (set maxFailedTrials to allow more)"
            self.end_study(study, "FAILED", reason)
            return True
        if completed + failed >= spec.max_trials:
            if not running:  # else no new trials, but not over until those finish
                reason = f"{completed + failed} of {spec.max_trials} trials finished"
                self.end_study(study, "COMPLETED", reason)
            return True
        return False

    def _compute_budget_over(self, study: Study, counts: Mapping[str, int]) -> bool:
        """Claim nothing more of a study whose compute budget has no room for one more trial
        (or that made no progress for too long); end it once its trials are done. Past the
        wall-time budget its running trials here are stopped too."""
        budget = study.spec.budget
        if budget is None:
            return False
        key = tuple(sorted(counts.items()))
        now = time.monotonic()
        seen = self._budget_seen.get(study.id)
        if seen is not None and seen[0] == key and now - seen[1] < BUDGET_EVERY:
            refusal, late = seen[2]
        else:
            used = self.db.run(lambda s: spent(s, study))
            several = study.spec.multi_objective
            refusal = no_room(budget, used) or no_progress(budget, used, several=several)
            late = out_of_time(budget, used)
            self._budget_seen[study.id] = (key, now, (refusal, late))
        if late is not None:
            for trial in self.active.values():
                if trial.study.id == study.id and trial.stop is None:
                    trial.stop_with(RunState.STOPPED, f"stopped: {late}")
            refusal = late
        if refusal is None:
            return False
        if not counts.get("RUNNING", 0):
            self.end_study(study, "COMPLETED", refusal)
        return True

    def end_study(self, study: Study, state: str, reason: str) -> None:
        """Record the study's end; a FAILED study's local trials are stopped."""
        self.db.run(lambda s: set_study_state(s, study.id, state, reason))
        logger.info("study %s %s: %s", study.name, state, reason)
        if state == "FAILED":
            for trial in self.active.values():
                if trial.study.id == study.id:
                    trial.stop_with(RunState.STOPPED, f"study failed: {reason}")
