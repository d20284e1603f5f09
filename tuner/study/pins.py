"""Pins on a trial's artifacts while they are downloaded or pulled, so that retention does not
delete them meanwhile, whichever process or machine runs it.

A reader pins the trial in the database before it reads a file (`pin_run`), and renews the
pin while it reads (`renew`, or `held` for a synchronous reader); a pin expires on its own, so
a reader that dies holds nothing for long, and one cut short can resume within the expiry. A
pin taken after retention claimed the trial is refused with the deletion's record, which the
caller answers as a 404 that says what deleted it, when and by which policy.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from tuner.domain.errors import ArtifactNotFoundError
from tuner.persistence import repository as repo
from tuner.study.operations import Backend

logger = logging.getLogger(__name__)


def holder_name(kind: str) -> str:
    """Who holds a pin, for messages: `api host:1234`."""
    return f"{kind} {socket.gethostname()}:{os.getpid()}"


def pin_run(backend: Backend, run_id: int, *, what: str, holder: str, seconds: float) -> int:
    """Pin the run's artifacts for `seconds`; its pin id. `ArtifactNotFoundError` when
    retention deleted them (or started to): `what` names them in the message."""
    expires = repo.now() + timedelta(seconds=seconds)
    pin_id, deleted = backend.db.run(
        lambda s: repo.pin_run(s, run_id, holder=holder, expires_at=expires)
    )
    if deleted is not None:
        raise ArtifactNotFoundError(
            f"{what}: its checkpoint and exports were {deleted.describe()}; its metrics and "
            "log remain"
        )
    assert pin_id is not None
    return pin_id


def pin_trial(backend: Backend, ref: str | int, number: int, *, holder: str, seconds: float) -> int:
    """`pin_run` for trial `number` of a study."""
    with backend.db.session() as session:
        study = repo.get_study(session, ref)
        run = repo.get_run_by_number(session, study.id, number)
    what = f"trial {number} of study {study.name!r}"
    return pin_run(backend, run.id, what=what, holder=holder, seconds=seconds)


def renew(backend: Backend, pin_id: int, seconds: float) -> None:
    expires = repo.now() + timedelta(seconds=seconds)
    backend.db.run(lambda s: repo.renew_pin(s, pin_id, expires))


@contextmanager
def held(backend: Backend, pin_id: int, seconds: float) -> Iterator[None]:
    """Renew the pin every third of `seconds` on a thread while the block runs (a failed
    renewal is logged: the pin then lapses at its expiry)."""
    done = threading.Event()

    def renew_until_done() -> None:
        while not done.wait(seconds / 3):
            try:
                renew(backend, pin_id, seconds)
            except Exception as exc:  # the database away for a moment: try again next time
                logger.warning("pin %d not renewed: %s", pin_id, exc)

    thread = threading.Thread(target=renew_until_done, name="pin", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
