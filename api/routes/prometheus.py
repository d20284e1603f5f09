"""`GET /metrics`: the process's metrics in Prometheus' text format, and trials by state.

Counters and histograms are what this process did (requests, and with an embedded manager its
claims, ingest lag, prune decisions, uploads: `tuner.domain.telemetry`). Trials by state are
facts of the database, read at scrape time with one grouped query and kept for
`CENSUS_SECONDS`, so that several Prometheus servers (or a short scrape interval) cost one query
a second or two.

Reads need a read token unless `TUNER_METRICS_PUBLIC` (or `TUNER_PUBLIC_READS`) is set: study
names are in the labels, and the endpoint is on the API's port (docs/metrics.md says why).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from api.deps import MetricsAccess
from tuner.persistence.census import trial_census
from tuner.persistence.models import TRIAL_STATES
from tuner.public.schemas import ErrorResponse
from tuner.study.operations import Backend

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

#: Seconds a census of the trials is reused.
CENSUS_SECONDS: Final = 2.0


class TrialCensus(Collector):
    """`tuner_trials{study,state}` (every trial state, 0 included) and `tuner_studies{state}`,
    from the database, cached for `CENSUS_SECONDS`."""

    def __init__(self, backend: Callable[[], Backend], *, seconds: float = CENSUS_SECONDS) -> None:
        self.backend = backend
        self.seconds = seconds
        self._lock = threading.Lock()
        self._rows: list[tuple[str, str, str | None, int]] = []
        self._read_at = -float("inf")
        self._failed = False

    def _census(self) -> tuple[list[tuple[str, str, str | None, int]], bool]:
        with self._lock:
            if time.monotonic() - self._read_at >= self.seconds:
                try:
                    self._rows = self.backend().db.run(trial_census)
                    self._failed = False
                except Exception as exc:  # the scrape still has the rest
                    logger.warning("GET /metrics: trials not counted: %s", exc)
                    self._failed = True
                self._read_at = time.monotonic()
            return self._rows, self._failed

    def collect(self) -> Iterator[Metric]:
        rows, failed = self._census()
        up = GaugeMetricFamily(
            "tuner_database_census_up",
            "1 if the last count of trials from the database succeeded, else 0 (the counts "
            "below are then the last ones read).",
        )
        up.add_metric([], 0.0 if failed else 1.0)
        yield up
        trials = GaugeMetricFamily(
            "tuner_trials", "Trials of each study by state.", labels=["study", "state"]
        )
        studies = GaugeMetricFamily("tuner_studies", "Studies by state.", labels=["state"])
        counts: dict[str, dict[str, int]] = {}
        study_states: dict[str, str] = {}
        for name, study_state, state, n in rows:
            study_states[name] = study_state
            per_state = counts.setdefault(name, dict.fromkeys(TRIAL_STATES, 0))
            if state is not None:
                per_state[state] = per_state.get(state, 0) + n
        for name in sorted(counts):
            for state, n in counts[name].items():
                trials.add_metric([name, state], float(n))
        by_state = dict.fromkeys(("RUNNING", "COMPLETED", "FAILED", "STOPPED"), 0)
        for state in study_states.values():
            by_state[state] = by_state.get(state, 0) + 1
        for state, n in by_state.items():
            studies.add_metric([state], float(n))
        yield trials
        yield studies


def install(app: FastAPI) -> None:
    """Serve `/metrics` on `app`, with a census of the trials in `app`'s own database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrialCensus(lambda: app.state.backend))
    app.state.census_registry = registry
    app.include_router(router)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[MetricsAccess],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."},
        401: {"model": ErrorResponse, "description": "Missing or invalid token"},
        403: {"model": ErrorResponse, "description": "The token's scope does not allow this"},
    },
)
def prometheus_metrics(request: Request) -> Response:
    """Metrics in Prometheus' text format (docs/metrics.md lists them)."""
    census: CollectorRegistry = request.app.state.census_registry
    body = generate_latest(REGISTRY) + generate_latest(census)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
