"""`tuner serve` and `tuner worker`: the API server with an embedded manager, or a manager alone."""

from __future__ import annotations

import logging
import threading

import uvicorn

from tuner.config import Settings
from tuner.manager import StudyManager
from tuner.studies import Backend
from tuner.trainers import TrainerRegistry

logger = logging.getLogger(__name__)


class ManagerThread:
    """A study manager ticking in a background thread until `stop()`."""

    def __init__(self, manager: StudyManager) -> None:
        self.manager = manager
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="study-manager", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.manager.run(until_done=False, should_stop=self._stop.is_set)
        except Exception:
            logger.exception("the embedded study manager stopped")

    def stop(self) -> None:
        """Stop ticking; running trials are stopped (and re-enqueued) by the manager."""
        self._stop.set()
        self._thread.join()


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    slots: int,
    root_path: str = "",
    log_level: str = "info",
) -> None:
    """Serve the API; with `slots > 0` also run trials here (the embedded default)."""
    from api.main import create_app

    backend = Backend.connect(settings.database_url)
    registry = TrainerRegistry.from_file(settings.trainers_file)
    app = create_app(settings, backend=backend, registry=registry, root_path=root_path)
    manager_thread = None
    if slots > 0:
        manager = StudyManager(backend, registry, settings, slots=slots)
        manager_thread = ManagerThread(manager)
        manager_thread.start()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        root_path=root_path,
        log_level=log_level,
        proxy_headers=True,
        timeout_graceful_shutdown=5,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        if manager_thread is not None:
            manager_thread.stop()
        backend.close()
