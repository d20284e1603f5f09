"""The process's Prometheus metrics, defined once in prometheus-client's default registry.

Here, in the lowest layer, so that whichever part counts (the launcher, the ingest path, the
uploader) imports them without reaching up. Each process counts what it does itself: the API
process and its embedded manager (`tuner serve`) are scraped at `GET /metrics`, a `tuner worker`
at its own `--metrics-port` (docs/metrics.md). Trials by state are not counted here: the API
reads them from the database at scrape time (`api/routes/prometheus.py`).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

#: Seconds: from a few milliseconds (a poll tick) to minutes (a database outage's backlog).
LAG_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

TRIAL_CLAIMS: Final = Counter(
    "tuner_trial_claims",
    "Trial runs this process reserved for a study (a slot and a place in its budget).",
)
INGEST_LAG: Final = Histogram(
    "tuner_ingest_lag_seconds",
    "Seconds from an eval step's event wall time to its metrics being stored.",
    buckets=LAG_BUCKETS,
)
PRUNE_LATENCY: Final = Histogram(
    "tuner_prune_decision_seconds",
    "Seconds from an objective value's event wall time to the pruner's decision on it.",
    buckets=LAG_BUCKETS,
)
UPLOAD_BYTES: Final = Counter(
    "tuner_artifact_upload_bytes",
    "Bytes of trial artifacts uploaded to the object store (checkpoints, exports, events, logs).",
)
