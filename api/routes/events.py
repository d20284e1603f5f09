"""Server-Sent Events of a study's trials: created, new eval step, state change.

The stream reads the database (not the manager's memory), so it works the same whether trials
run in the server's embedded manager or in `tuner worker` processes elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from api.deps import BackendDep, ReadAccess, SettingsDep
from api.routes.studies import ERRORS, _ref
from api.schemas import finite
from tuner.entities import Study, TrialRun
from tuner.persistence import repository as repo
from tuner.studies import Backend

router = APIRouter(prefix="/studies/{study_id}", tags=["events"], responses=ERRORS)

#: Runs that ended this long before the last poll are looked at again (clock skew, commit lag).
OVERLAP = timedelta(seconds=5)


@router.get(
    "/events",
    dependencies=[ReadAccess],
    responses={200: {"content": {"text/event-stream": {}}, "description": "an event stream"}},
)
async def stream_events(
    study_id: str, request: Request, backend: BackendDep, settings: SettingsDep
) -> EventSourceResponse:
    """`snapshot` first, then `created`, `eval`, `state` and `study` events as they happen.

    The stream ends after the study has finished and its last trial has ended.
    """

    def lookup() -> Study:
        with backend.db.session() as session:
            return repo.get_study(session, _ref(study_id))

    study = await run_in_threadpool(lookup)
    return EventSourceResponse(
        _stream(backend, study, request, settings.events_poll_interval), ping=15
    )


async def _stream(
    backend: Backend, study: Study, request: Request, interval: float
) -> AsyncIterator[dict[str, Any]]:
    feed = _Feed(backend, study)
    yield await run_in_threadpool(feed.snapshot)
    while not await request.is_disconnected():
        await asyncio.sleep(interval)
        events, finished = await run_in_threadpool(feed.poll)
        for event in events:
            yield event
        if finished:
            break


class _Feed:
    """What one client has been told, and what changed since."""

    def __init__(self, backend: Backend, study: Study) -> None:
        self.backend = backend
        self.study = study
        self.states: dict[int, str] = {}
        self.study_state = study.state
        self.last_step_id = 0
        self.since = repo.now()

    def snapshot(self) -> dict[str, Any]:
        with self.backend.db.session() as session:
            self.since = repo.now()
            self.last_step_id = repo.max_eval_step_id(session, self.study.id)
            counts = repo.trial_counts(session, self.study.id)
            running = repo.runs_changed_since(session, self.study.id, self.since)
            rows, _ = repo.leaderboard(session, self.study, limit=1)
        for run in running:
            assert run.number is not None
            self.states[run.number] = run.state
        best = rows[0] if rows and rows[0].objective is not None else None
        data = {
            "study": self.study.name,
            "state": self.study.state,
            "counts": counts,
            "running": sorted(self.states),
            "best": {"number": best.number, "objective": finite(best.objective)} if best else None,
        }
        return _event("snapshot", data)

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        out: list[dict[str, Any]] = []
        with self.backend.db.session() as session:
            polled_at = repo.now()
            study = repo.get_study(session, self.study.id)
            changed = repo.runs_changed_since(session, self.study.id, self.since - OVERLAP)
            steps = repo.eval_steps_after(session, self.study.id, self.last_step_id)
        self.since = polled_at
        tag = study.spec.metric_tag
        ended: list[dict[str, Any]] = []
        for run in changed:
            number = run.number
            assert number is not None
            if number not in self.states:
                data = {"number": number, "params": run.params, "state": "RUNNING"}
                out.append(_event("created", data))
            if self.states.get(number, "RUNNING") != run.state or (
                number not in self.states and run.state != "RUNNING"
            ):
                ended.append(_event("state", _state_data(run)))
            self.states[number] = run.state
        for step_id, number, step in steps:
            self.last_step_id = max(self.last_step_id, step_id)
            data = {
                "number": number,
                "step": step.step,
                "evalName": step.eval_name,
                "objective": finite(step.metrics.get(tag)),
                "metrics": {k: finite(v) for k, v in step.metrics.items()},
            }
            out.append(_event("eval", data, event_id=str(step_id)))
        out.extend(ended)
        finished = False
        if study.state != self.study_state:
            self.study_state = study.state
            out.append(_event("study", {"state": study.state, "reason": study.state_reason}))
        if study.state != "RUNNING" and "RUNNING" not in self.states.values():
            finished = True
            out.append(_event("end", {"state": study.state}))
        return out, finished


def _state_data(run: TrialRun) -> dict[str, Any]:
    return {
        "number": run.number,
        "state": run.state,
        "reason": run.failure_reason,
        "exitCode": run.exit_code,
    }


def _event(kind: str, data: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": kind, "data": json.dumps(data)}
    if event_id is not None:
        event["id"] = event_id
    return event
