"""The event stream as a client reads it off the wire: ids, resumption, late joiners."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import new_pg_database
from tests.server import RunningServer, start_server
from tuner.client.rest import Client

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps={steps}", "--eval-every-steps=10", "--step-seconds={pace}"]
seed: 3
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: {trials}
  maxParallelTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
"""


@dataclass
class Message:
    id: str | None
    event: str
    data: dict[str, object]
    retry: int | None


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    """PostgreSQL: where several connections write one study's events at once."""
    with new_pg_database() as url:
        running = start_server(url, tmp_path_factory.mktemp("events"), slots=2)
        yield running
        running.stop()


def submit(server: RunningServer, name: str, *, trials: int, steps: int, pace: float) -> None:
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name=name, trials=trials, steps=steps, pace=pace))


def read(
    server: RunningServer, study: str, *, last_event_id: str | None = None, stop_after: int = 0
) -> list[Message]:
    """Messages off the raw stream (comments skipped), closing after `stop_after` if given."""
    headers = {"Authorization": f"Bearer {server.read_token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    out: list[Message] = []
    fields: dict[str, str] = {}
    url = f"{server.url}/api/v1/studies/{study}/events"
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "event" in fields or "data" in fields:
                out.append(
                    Message(
                        id=fields.get("id"),
                        event=fields.get("event", "message"),
                        data=json.loads(fields.get("data") or "{}"),
                        retry=int(fields["retry"]) if "retry" in fields else None,
                    )
                )
                if out[-1].event == "end" or (stop_after and len(out) >= stop_after):
                    break
            fields = {}
    return out


def test_every_event_has_an_id_and_a_reconnect_resumes_without_loss_or_repeat(server):
    submit(server, "resumable", trials=4, steps=40, pace=0.05)
    first = read(server, "resumable", stop_after=6)
    assert first[0].event == "snapshot" and first[0].retry is not None
    assert all(m.id is not None and m.id.isdigit() for m in first)
    rest = read(server, "resumable", last_event_id=first[-1].id)
    assert rest[-1].event == "end"
    assert all(m.event != "snapshot" for m in rest)

    everything = read(server, "resumable", last_event_id="0")
    journal = [m for m in everything if m.event != "end"]
    seen = [m for m in first[1:] + rest if m.event != "end"]
    assert [(m.id, m.event, m.data) for m in seen] == [(m.id, m.event, m.data) for m in journal]
    ids = [int(m.id or 0) for m in journal]
    assert ids == list(range(1, len(ids) + 1))  # per study, gapless, in commit order

    kinds = [m.event for m in journal]
    assert kinds.count("created") == 4 and kinds.count("state") == 4
    evals = {(m.data["number"], m.data["step"]) for m in journal if m.event == "eval"}
    assert evals == {(n, s) for n in range(4) for s in (10, 20, 30, 40)}
    for number in range(4):
        mine = [m.event for m in journal if m.data.get("number") == number]
        assert mine[0] == "created" and mine[-1] == "state"


def test_a_late_client_gets_running_trials_in_the_snapshot_not_again_as_created(server):
    submit(server, "late", trials=3, steps=60, pace=0.1)
    deadline = time.monotonic() + 30
    snapshot = read(server, "late", stop_after=1)[0]
    while not snapshot.data["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
        snapshot = read(server, "late", stop_after=1)[0]
    running = set(snapshot.data["running"])  # type: ignore[arg-type]
    assert running and {t["number"] for t in snapshot.data["trials"]} == running  # type: ignore[union-attr]
    after = read(server, "late", last_event_id=snapshot.id)
    created = {m.data["number"] for m in after if m.event == "created"}
    assert not created & running
    assert {m.data["number"] for m in after if m.event == "state"} >= running
    assert after[-1].event == "end"


def test_the_python_client_reconnects_with_last_event_id(server):
    submit(server, "client-side", trials=2, steps=30, pace=0.05)
    with Client(server.url, token=server.read_token) as client:
        events = list(client.events("client-side"))
        assert events[0].kind == "snapshot" and events[-1].kind == "end"
        resumed = list(client.events("client-side", last_event_id="0"))
    ids = [int(e.id or 0) for e in resumed if e.kind != "end"]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert {e.kind for e in resumed} >= {"created", "eval", "state", "end"}


def test_an_unknown_study_stream_is_a_404_in_the_error_shape(server):
    response = httpx.get(
        f"{server.url}/api/v1/studies/nope/events",
        headers={"Authorization": f"Bearer {server.read_token}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "STUDY_NOT_FOUND"
