"""One journal reader per watched study, shared by all of that study's event-stream clients.

A hundred browsers watching one study cost one query per poll interval, not a hundred: the
feed polls the study's journal (`tuner_study_events`) while anyone listens, keeps the recent
events in memory, and wakes its clients. The journal is in the database, so this works the same
whether trials run in the server's embedded manager or in `tuner worker` processes elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from fastapi.concurrency import run_in_threadpool

from tuner.domain.entities import StudyEvent
from tuner.domain.errors import StorageUnavailableError, StudyNotFoundError
from tuner.persistence import repository as repo
from tuner.study.operations import Backend

logger = logging.getLogger(__name__)

#: Events a feed keeps in memory for clients that fall behind (older ones are read again).
RECENT = 4096
#: Events read from the journal in one query.
BATCH = 1000


@dataclass(frozen=True)
class StudyStatus:
    state: str
    running: int

    @property
    def finished(self) -> bool:
        """The stream is over: the study is not running, and neither is any of its trials."""
        return self.state != "RUNNING" and self.running == 0


class StudyFeed:
    """The journal of one study as it grows, for every client watching it."""

    def __init__(self, backend: Backend, study_id: int, interval: float) -> None:
        self.backend = backend
        self.study_id = study_id
        self.interval = interval
        self.seq = 0
        self.primed = False
        self.status: StudyStatus | None = None
        self.gone = False
        self.recent: deque[StudyEvent] = deque(maxlen=RECENT)
        self.listeners = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def follow(self, after: int) -> AsyncIterator[StudyEvent | StudyStatus]:
        """Every event after `after`, in order, then the final status once the study is over."""
        self.listeners += 1
        self._start()
        try:
            while True:
                events = await self._events_after(after)
                for event in events:
                    yield event
                    after = event.seq
                if events:
                    continue
                status = self.status
                if self.gone or (status is not None and status.finished and after >= self.seq):
                    if status is not None:
                        yield status
                    return
                async with self._changed:
                    await self._changed.wait_for(partial(self._news_for, after))
        finally:
            self.listeners -= 1

    def _news_for(self, after: int) -> bool:
        return self.seq > after or self.gone or bool(self.status and self.status.finished)

    async def _events_after(self, after: int) -> list[StudyEvent]:
        if after >= self.seq:
            return []
        if self.recent and self.recent[0].seq <= after + 1:
            return self._recent_after(after)
        return await run_in_threadpool(self._read, after)

    def _recent_after(self, after: int) -> list[StudyEvent]:
        """The kept events after `after`, read from the newest end: a client that keeps up costs
        its own few events per wake, not a scan of the whole window."""
        newer: list[StudyEvent] = []
        for event in reversed(self.recent):
            if event.seq <= after:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def _read(self, after: int) -> list[StudyEvent]:
        with self.backend.db.session() as session:
            return repo.events_after(session, self.study_id, after, limit=BATCH)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name=f"study-feed-{self.study_id}")

    async def _poll(self) -> None:
        """Read the journal every interval while anyone listens; wake them on news."""
        while self.listeners > 0 and not self.gone:
            try:
                news, status = await run_in_threadpool(self._read_news)
            except StudyNotFoundError:
                self.gone = True
                news, status = [], None
            except StorageUnavailableError as exc:  # clients keep waiting; heartbeats go on
                logger.warning("study %d feed: %s", self.study_id, exc)
                await asyncio.sleep(self.interval)
                continue
            except Exception:  # e.g. the connection pool's TimeoutError: poll again, or the
                # feed would be over for good while its clients, kept open by the heartbeats,
                # wait for events that never come
                logger.exception("study %d feed: reading the journal failed", self.study_id)
                await asyncio.sleep(self.interval)
                continue
            async with self._changed:
                self.recent.extend(news)
                if news:
                    self.seq = news[-1].seq
                self.status = status or self.status
                self._changed.notify_all()
            if not news or len(news) < BATCH:
                await asyncio.sleep(self.interval)

    def _read_news(self) -> tuple[list[StudyEvent], StudyStatus]:
        """New events and the study's status; the first call starts at the newest event (clients
        that need older ones read them from the journal themselves)."""
        with self.backend.db.session() as session:
            study = repo.get_study(session, self.study_id)
            running = repo.trial_counts(session, self.study_id).get("RUNNING", 0)
            if not self.primed:
                self.seq = repo.event_seq(session, self.study_id)
                self.primed = True
            news = repo.events_after(session, self.study_id, self.seq, limit=BATCH)
        return news, StudyStatus(study.state, running)


class EventHub:
    """The feeds of the studies being watched; a feed is dropped when its last client leaves."""

    def __init__(self, backend: Backend, interval: float) -> None:
        self.backend = backend
        self.interval = interval
        self.feeds: dict[int, StudyFeed] = {}

    async def follow(self, study_id: int, after: int) -> AsyncIterator[StudyEvent | StudyStatus]:
        feed = self.feeds.get(study_id)
        if feed is None or feed.gone:
            feed = self.feeds[study_id] = StudyFeed(self.backend, study_id, self.interval)
        try:
            async for item in feed.follow(after):
                yield item
        finally:
            if feed.listeners == 0 and self.feeds.get(study_id) is feed:
                del self.feeds[study_id]
