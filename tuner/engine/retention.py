"""Retention in the background of a study manager: when a trial ends, and every minute, the
studies with a `retention` policy have it applied on a thread of its own, so the manager's
tick only records which studies are due.

A pass deletes, per study, what `tuner gc` would (`tuner.study.retention`); the records it
writes are what make it safe beside other managers and `tuner gc`: a trial is claimed by one of
them, and a deletion cut short (a manager killed) is finished by the next sweep of any manager.
A trial skipped because a download pins it is tried again at the next sweep.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.entities import Study
from tuner.domain.errors import ObjectStoreError, StudyNotFoundError, first_line
from tuner.persistence import is_unavailable
from tuner.persistence import repository as repo
from tuner.study.operations import Backend
from tuner.study.retention import Deleter, apply_retention, finish_unfinished

logger = logging.getLogger(__name__)

#: Seconds between sweeps: running studies with a policy, deletions cut short, skipped trials.
SWEEP_EVERY = 60.0
#: A deletion DELETING for this long was cut short (a live one deletes a trial in seconds).
STALE_AFTER = 120.0
#: Expired pins are kept this long (for a look at what was downloaded), then purged.
PIN_HISTORY = timedelta(hours=1)
#: Seconds a manager that ends its studies waits for the pass in flight.
DRAIN_SECONDS = 30.0


class RetentionPass:
    """Applies retention policies on one background thread, never in the manager's tick."""

    def __init__(
        self,
        backend: Backend,
        settings: Settings,
        *,
        worker_id: str,
        studies: Sequence[str] | None = None,
    ) -> None:
        self.backend = backend
        self.store = ArtifactStore.from_settings(settings)
        self.study_names = list(studies) if studies is not None else None
        self._stop = threading.Event()
        self.deleter = Deleter(
            worker=worker_id,
            trigger="policy",
            pause=settings.retention_pause_seconds,
            should_stop=self._stop.is_set,
            resume_after=STALE_AFTER,
        )
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")
        self._future: Future[None] | None = None
        self._due: set[int] = set()
        #: Studies with a trial skipped (pinned by a download): due again at the next sweep.
        self._retry: set[int] = set()
        self._sweep_due = True
        self._swept_at = time.monotonic()
        self._lock = threading.Lock()

    def trial_ended(self, study: Study) -> None:
        """A trial of `study` ended: other trials may have fallen out of its best K."""
        if study.spec.retention is not None:
            with self._lock:
                self._due.add(study.id)
            self._start()

    def tick(self) -> None:
        """Start a sweep when one is due, and a pass when studies wait (returns at once)."""
        if time.monotonic() - self._swept_at >= SWEEP_EVERY:
            self._swept_at = time.monotonic()
            self._sweep_due = True
        self._start()

    def close(self, *, drain: bool) -> None:
        """Stop: with `drain`, after the pass in flight and the studies due (at most
        `DRAIN_SECONDS`); else at once, between two files (the next pass finishes)."""
        if drain:
            deadline = time.monotonic() + DRAIN_SECONDS
            while time.monotonic() < deadline:
                self._start()
                future = self._future
                if future is None or (future.done() and not self._due):
                    break
                time.sleep(0.05)
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> None:
        with self._lock:
            if self._stop.is_set() or (self._future is not None and not self._future.done()):
                return
            if not self._due and not self._sweep_due:
                return
            self._future = self._pool.submit(self._run)

    def _run(self) -> None:
        if self._sweep_due:
            self._sweep_due = False
            self._isolated("sweep", self._sweep)
        while not self._stop.is_set():
            with self._lock:
                if not self._due:
                    return
                study_id = self._due.pop()
            self._isolated(f"study id {study_id}", functools.partial(self._apply, study_id))

    def _isolated(self, what: str, work: Callable[[], None]) -> None:
        """Run `work`; a failure is logged, and tried again at the next sweep (what it claimed
        is finished then): the manager and the other studies go on."""
        try:
            work()
        except Exception as exc:
            if is_unavailable(exc) or isinstance(exc, ObjectStoreError):
                logger.warning("retention (%s) waits: %s", what, first_line(exc))
            else:
                logger.exception("retention (%s) failed; tried again at the next sweep", what)

    def _sweep(self) -> None:
        finish_unfinished(self.backend, self.store, self.deleter)
        studies = self.backend.db.run(lambda s: repo.running_studies(s, self.study_names))
        with self._lock:
            self._due.update(s.id for s in studies if s.spec.retention is not None)
            self._due.update(self._retry)
            self._retry.clear()
        self.backend.db.run(lambda s: repo.purge_pins(s, repo.now() - PIN_HISTORY))

    def _apply(self, study_id: int) -> None:
        try:
            report = apply_retention(self.backend, self.store, study_id, deleter=self.deleter)
        except StudyNotFoundError:
            return  # deleted meanwhile
        skipped = [t.number for t in report.trials if t.outcome == "skipped"]
        if skipped:
            with self._lock:
                self._retry.add(study_id)
            logger.info(
                "study %s: trial(s) %s skipped by retention for now (a download in flight?)",
                report.study.name,
                ", ".join(map(str, skipped)),
            )
