"""A study's event stream (Server-Sent Events), resumable with `Last-Event-ID`.

Every event carries an `id:`, the study's journal `seq` it brings the client up to. A new
client gets a `snapshot` (whose id is the journal's newest seq when it was taken), then every
event after it; a client that reconnects with `Last-Event-ID: N` gets exactly the events after
N, with no snapshot. See docs/api.md for the event types.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from api.deps import BackendDep, ReadAccess, StudyPath
from api.event_hub import EventHub, StudyStatus
from api.routes.studies import _ref
from tuner.domain.entities import Study
from tuner.persistence import repository as repo
from tuner.public.schemas import finite
from tuner.study.operations import Backend

router = APIRouter(prefix="/studies/{study}", tags=["events"])

#: How long a client waits before reconnecting (the SSE `retry:` field), in milliseconds.
RETRY_MS = 2000
#: Seconds between heartbeat comments on an idle stream (keeps proxies from closing it).
HEARTBEAT_SECONDS = 15


@router.get(
    "/events",
    dependencies=[ReadAccess],
    responses={200: {"content": {"text/event-stream": {}}, "description": "an event stream"}},
)
async def stream_events(
    study_id: StudyPath,
    request: Request,
    backend: BackendDep,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this event id (sent by EventSource on reconnect)."),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="Resume after this event id (for clients that cannot "
            "set headers); `Last-Event-ID` wins.",
        ),
    ] = None,
) -> EventSourceResponse:
    """`snapshot` first, then `created`, `eval`, `state`, `study` as they happen, `end` last.

    The stream ends once the study has finished and its last trial has ended.
    """

    def lookup() -> Study:
        with backend.db.session() as session:
            return repo.get_study(session, _ref(study_id))

    study = await run_in_threadpool(lookup)
    resume = _event_id(last_event_id)
    if resume is None:
        resume = after
    hub: EventHub = request.app.state.event_hub
    return EventSourceResponse(
        _stream(backend, hub, study, resume), ping=HEARTBEAT_SECONDS, send_timeout=30
    )


def _event_id(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit() or len(header.strip()) > 18:
        return None
    return int(header.strip())


async def _stream(
    backend: Backend, hub: EventHub, study: Study, resume: int | None
) -> AsyncIterator[dict[str, Any]]:
    if resume is None:
        seq, data = await run_in_threadpool(snapshot, backend, study)
        yield {**_event("snapshot", data, seq), "retry": RETRY_MS}
    else:
        seq = resume
        yield {"comment": f"resuming after {seq}", "retry": RETRY_MS}
    async for item in hub.follow(study.id, seq):
        if isinstance(item, StudyStatus):
            yield _event("end", {"state": item.state}, seq)
            return
        seq = item.seq
        yield _event(item.kind, item.data, item.seq)


def snapshot(backend: Backend, study: Study) -> tuple[int, dict[str, Any]]:
    """The study now, and the journal seq it is consistent with (no event commits between)."""
    with backend.db.session() as session:
        seq = repo.event_seq(session, study.id, hold=True)
        current = repo.get_study(session, study.id)
        counts = repo.trial_counts(session, study.id)
        running, _ = repo.leaderboard(session, current, state="RUNNING", limit=500)
        rows, _ = repo.leaderboard(session, current, state="COMPLETED", limit=1)
    best = rows[0] if rows and rows[0].objective is not None else None
    return seq, {
        "study": current.name,
        "state": current.state,
        "maxTrials": current.spec.max_trials,
        "counts": counts,
        "running": sorted(r.number for r in running),
        "trials": [
            {
                "number": r.number,
                "state": r.state,
                "params": r.params,
                "objective": finite(r.objective),
                "bestStep": r.best_step,
                "lastStep": r.last_step,
                "startedAt": r.started_at.isoformat(),
            }
            for r in running
        ],
        "best": {"number": best.number, "objective": finite(best.objective)} if best else None,
    }


def _event(kind: str, data: dict[str, Any], seq: int) -> dict[str, Any]:
    return {"event": kind, "data": json.dumps(data), "id": str(seq)}
