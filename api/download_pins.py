"""A download holds a pin on the trial it reads while its answer streams, renewed every third
of `TUNER_DOWNLOAD_PIN_SECONDS` on the event loop (the database call in the thread pool), so
that retention, in any process on any machine, leaves the trial's files alone meanwhile. Once
the answer is sent the pin is left to expire: a client cut short resumes within it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from tuner.study import pins
from tuner.study.operations import Backend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinRenewal:
    """Renews one pin while a response is sent."""

    backend: Backend
    pin_id: int
    seconds: float

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            task.cancel()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.seconds / 3)
            try:
                await run_in_threadpool(pins.renew, self.backend, self.pin_id, self.seconds)
            except Exception as exc:  # the database away: the pin lapses at its expiry
                logger.warning("download pin %d not renewed: %s", self.pin_id, exc)


@asynccontextmanager
async def renewing(renewal: PinRenewal | None) -> AsyncIterator[None]:
    """Hold `renewal`'s pin for the block (nothing without one)."""
    if renewal is None:
        yield
        return
    async with renewal.held():
        yield


def pin_run(backend: Backend, run_id: int, *, what: str, seconds: float) -> PinRenewal:
    """Pin a run before its archive is read; 404 (`ArtifactNotFoundError`) with the deletion's
    record when retention deleted it."""
    pin_id = pins.pin_run(
        backend, run_id, what=what, holder=pins.holder_name("api"), seconds=seconds
    )
    return PinRenewal(backend, pin_id, seconds)


def pin_trial(backend: Backend, ref: str | int, number: int, *, seconds: float) -> PinRenewal:
    """`pin_run` for trial `number` of a study."""
    pin_id = pins.pin_trial(backend, ref, number, holder=pins.holder_name("api"), seconds=seconds)
    return PinRenewal(backend, pin_id, seconds)
