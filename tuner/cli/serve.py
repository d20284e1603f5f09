"""`tuner serve` and `tuner worker`: the API server with an embedded manager, or a manager alone."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import uvicorn

from api.timeouts import HeaderDeadlineProtocol
from tuner.domain.config import Settings
from tuner.domain.errors import TunerError
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.manager import StudyManager
from tuner.study.operations import Backend
from tuner.trial.resources import Capacity

logger = logging.getLogger(__name__)

#: Back-off before restarting a crashed manager: doubled after each crash, up to the maximum.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: This many crashes within the window: give up, so that `tuner serve` exits non-zero and its
#: process supervisor (systemd, Kubernetes, compose) restarts it.
MAX_CRASHES = 5
CRASH_WINDOW = 300.0


class ManagerCrashLoopError(TunerError):
    """The embedded study manager kept crashing."""


class ManagerThread:
    """A study manager ticking in a background thread until `stop()`, restarted if it crashes.

    A crash is an exception out of the manager's loop (a database outage is not one: the
    manager rides it out). It is logged, and a new manager starts after the back-off; the
    back-off starts over once a manager has run for `MAX_BACKOFF` seconds.
    """

    def __init__(
        self, make_manager: Callable[[], StudyManager], *, on_give_up: Callable[[], None]
    ) -> None:
        self._make_manager = make_manager
        self._on_give_up = on_give_up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="study-manager", daemon=True)
        self._running = False
        self._crashes: deque[float] = deque()
        self.gave_up = False

    def start(self) -> None:
        self._thread.start()

    def problem(self) -> str | None:
        """Why no manager is running now (None while one runs), for `/readyz`."""
        if self._running:
            return None
        if self.gave_up:
            return (
                f"the embedded study manager crashed {len(self._crashes)} times in "
                f"{CRASH_WINDOW:.0f} s; the server is exiting"
            )
        if self._crashes:
            return "the embedded study manager crashed; it is restarted after a back-off"
        return "the embedded study manager is not running"

    def _run(self) -> None:
        delay = FIRST_BACKOFF
        while not self._stop.is_set():
            started = time.monotonic()
            if self._run_once():
                return
            now = time.monotonic()
            if now - started >= MAX_BACKOFF:
                delay = FIRST_BACKOFF
            self._crashes.append(now)
            while self._crashes[0] < now - CRASH_WINDOW:
                self._crashes.popleft()
            if len(self._crashes) >= MAX_CRASHES:
                logger.critical(
                    "the embedded study manager crashed %d times in %.0f s: giving up",
                    len(self._crashes),
                    CRASH_WINDOW,
                )
                self.gave_up = True
                self._on_give_up()
                return
            logger.warning("restarting the embedded study manager in %.0f s", delay)
            if self._stop.wait(delay):
                return
            delay = min(2 * delay, MAX_BACKOFF)

    def _run_once(self) -> bool:
        """Run one manager; whether it ended because `stop()` asked it to."""
        try:
            manager = self._make_manager()
            self._running = True
            manager.run(until_done=False, should_stop=self._stop.is_set)
        except Exception:
            logger.exception("the embedded study manager crashed")
            return False
        finally:
            self._running = False
        if not self._stop.is_set():
            logger.error("the embedded study manager stopped without being asked to")
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop ticking; running trials are stopped (and re-enqueued) by the manager."""
        self._stop.set()
        self._thread.join()


def _embedded_manager(
    settings: Settings,
    registry: TrainerRegistry,
    slots: int,
    capacity: Capacity | None,
    *,
    on_give_up: Callable[[], None],
) -> tuple[Backend | None, ManagerThread | None]:
    """With `slots > 0`, a manager thread and the backend it alone uses: a pool of its own,
    without the API's pre-ping (see `create_db_engine`)."""
    if slots <= 0:
        return None, None
    backend = Backend.connect(settings.database_url, pre_ping=False)
    thread = ManagerThread(
        lambda: StudyManager(backend, registry, settings, slots=slots, capacity=capacity),
        on_give_up=on_give_up,
    )
    return backend, thread


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    slots: int,
    root_path: str = "",
    log_level: str = "info",
    capacity: Capacity | None = None,
) -> None:
    """Serve the API; with `slots > 0` also run trials here (the embedded default).

    Raises `ManagerCrashLoopError` (after a graceful shutdown) when the embedded manager
    crashed `MAX_CRASHES` times within `CRASH_WINDOW` seconds.
    """
    from api.main import create_app

    backend = Backend.connect(settings.database_url)
    registry = TrainerRegistry.from_file(settings.trainers_file)
    server: uvicorn.Server | None = None

    def give_up() -> None:
        if server is not None:
            server.should_exit = True

    manager_backend, manager_thread = _embedded_manager(
        settings, registry, slots, capacity, on_give_up=give_up
    )
    app = create_app(
        settings,
        backend=backend,
        registry=registry,
        root_path=root_path,
        manager_problem=manager_thread.problem if manager_thread else None,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            root_path=root_path,
            log_level=log_level,
            proxy_headers=True,
            timeout_graceful_shutdown=5,
            # Each request's headers have a deadline (api/timeouts.py); uvicorn has none.
            http=HeaderDeadlineProtocol.with_deadline(settings.header_timeout_seconds),
        )
    )
    try:
        if manager_thread is not None:
            manager_thread.start()
        server.run()
    finally:
        if manager_thread is not None:
            manager_thread.stop()
        if manager_backend is not None:
            manager_backend.close()
        backend.close()
    if manager_thread is not None and manager_thread.gave_up:
        raise ManagerCrashLoopError(
            f"the embedded study manager crashed {MAX_CRASHES} times within "
            f"{CRASH_WINDOW:.0f} s (see the log above); exiting so the server is restarted"
        )
