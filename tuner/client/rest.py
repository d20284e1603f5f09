"""A Python client of the tuner's REST API.

It returns the API's own pydantic models (`tuner.public.schemas`), pages through lists for you
(`iter_studies`, `iter_trials`), retries idempotent calls when the server or the network fails
for a moment, and reconnects the event stream with `Last-Event-ID`, so no event is lost or
repeated across a reconnect.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel

from tuner.client.downloads import ProgressCallback, ResumeCallback, download_archive
from tuner.client.frames import import_pandas, trials_frame
from tuner.domain.errors import TunerError
from tuner.public.schemas import (
    BestPublic,
    GcReportPublic,
    MetricHistoryPublic,
    NotePublic,
    Page,
    ParetoPage,
    StudyPublic,
    TrialDetailPublic,
    TrialRowPublic,
)

if TYPE_CHECKING:
    import pandas

API_PREFIX = "/api/v1"
#: Where a client without a URL (and without `TUNER_SERVER`) looks: `tuner serve`'s default.
DEFAULT_SERVER = "http://127.0.0.1:8000"
#: States a study stays in while its trials run (`wait` returns once it has left them).
ACTIVE_STATES = frozenset({"RUNNING"})
#: Statuses worth retrying an idempotent call on: the server is briefly unable to answer.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
Model = TypeVar("Model", bound=BaseModel)


class ApiError(TunerError):
    """The server answered with an error status; `code` is the API's stable error code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "",
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        # A problem of the whole body (no field) is often the message itself: said once.
        lines = [
            f"{d.get('field')}: {d.get('message')}" if d.get("field") else str(d.get("message"))
            for d in self.details
            if d.get("field") or str(d.get("message")) not in message
        ]
        self.detail = message + "".join(f"\n  {line}" for line in lines)
        super().__init__(f"HTTP {status}{f' {code}' if code else ''}: {self.detail}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            return cls(response.status_code, response.text.strip() or response.reason_phrase)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(response.status_code, str(body))
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        return cls(
            response.status_code,
            str(error.get("message", "")),
            code=str(error.get("code", "")),
            details=details,
        )


@dataclass(frozen=True)
class Event:
    """One event of a study's stream; `id` is what `Last-Event-ID` resumes after."""

    kind: str
    data: dict[str, Any]
    id: str | None = None


class Client:
    """`Client("http://127.0.0.1:8000", token="tnr_...")`; every method raises `ApiError`.

    Without `base_url`, the server is `TUNER_SERVER` (else `http://127.0.0.1:8000`); without
    `token`, `TUNER_TOKEN` (`token=""` sends none), as for the `tuner` command.
    `retries` is how many more times an idempotent call (GET, HEAD, DELETE, stop) is tried
    after a connection error or a 502/503/504, waiting `Retry-After` or a growing back-off.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        base_url = base_url or os.environ.get("TUNER_SERVER") or DEFAULT_SERVER
        if token is None:
            token = os.environ.get("TUNER_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- studies --------------------------------------------------------------------------------

    def submit(self, spec: str | dict[str, Any]) -> StudyPublic:
        """Submit a spec: YAML/JSON text, or a dict. Not retried (it is not idempotent)."""
        if isinstance(spec, dict):
            response = self._http.post("/studies", json=spec)
        else:
            response = self._http.post(
                "/studies", content=spec.encode(), headers={"Content-Type": "application/yaml"}
            )
        return _parse(StudyPublic, response)

    def studies(
        self, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[StudyPublic]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return _parse(Page[StudyPublic], self._get("/studies", params=params))

    def iter_studies(
        self, *, state: str | None = None, page_size: int = 200
    ) -> Iterator[StudyPublic]:
        """Every study (matching `state`), fetched a page at a time."""
        return _pages(lambda offset: self.studies(state=state, limit=page_size, offset=offset))

    def study(self, study: str | int) -> StudyPublic:
        return _parse(StudyPublic, self._get(_study_path(study)))

    def trials(
        self,
        study: str | int,
        *,
        state: str | Sequence[str] | None = None,
        sort: str | None = None,
        filters: Sequence[str] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> Page[TrialRowPublic]:
        """A page of the leaderboard: `sort` e.g. `-metric:accuracy`, `filters` e.g.
        `["param:lr<0.01"]` (see docs/api.md)."""
        params: list[tuple[str, Any]] = [("limit", limit), ("offset", offset)]
        states = [state] if isinstance(state, str) else list(state or [])
        params += [("state", s) for s in states]
        if sort:
            params.append(("sort", sort))
        params += [("filter", f) for f in filters]
        path = f"{_study_path(study)}/trials"
        return _parse(Page[TrialRowPublic], self._get(path, params=params))

    def iter_trials(
        self,
        study: str | int,
        *,
        state: str | Sequence[str] | None = None,
        sort: str | None = None,
        filters: Sequence[str] = (),
        page_size: int = 500,
    ) -> Iterator[TrialRowPublic]:
        """Every trial (matching the filters), a page at a time."""
        return _pages(
            lambda offset: self.trials(
                study, state=state, sort=sort, filters=filters, limit=page_size, offset=offset
            )
        )

    def trial(self, study: str | int, number: int) -> TrialDetailPublic:
        return _parse(TrialDetailPublic, self._get(f"{_study_path(study)}/trials/{number}"))

    def log(self, study: str | int, number: int, *, offset: int = 0) -> bytes:
        """The trial's log from byte `offset` on (what is written so far)."""
        path = f"{_study_path(study)}/trials/{number}/log"
        response = self._get(path, params={"offset": offset} if offset else None)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.content

    def follow_log(
        self, study: str | int, number: int, *, interval: float = 1.0
    ) -> Iterator[bytes]:
        """The trial's log as it grows, until the trial has ended and its log is read."""
        offset = 0
        while True:
            running = self.trial(study, number).state == "RUNNING"
            chunk = self.log(study, number, offset=offset)
            if chunk:
                offset += len(chunk)
                yield chunk
            if not running:
                return
            time.sleep(interval)

    def metric_history(
        self,
        study: str | int,
        tag: str,
        *,
        trials: Sequence[int] = (),
        state: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Page[MetricHistoryPublic]:
        """One metric's values per eval step, for many trials (for plotting)."""
        params: list[tuple[str, Any]] = [("limit", limit), ("offset", offset)]
        params += [("trials", n) for n in trials]
        if state:
            params.append(("state", state))
        path = f"{_study_path(study)}/metrics/{quote(tag, safe='')}/history"
        return _parse(Page[MetricHistoryPublic], self._get(path, params=params))

    def best(self, study: str | int) -> BestPublic:
        return _parse(BestPublic, self._get(f"{_study_path(study)}/best"))

    def wait(
        self, study: str | int, timeout: float | None = None, *, poll: float = 2.0
    ) -> StudyPublic:
        """Wait until the study has finished (it is no longer RUNNING and none of its trials
        is) and return it; after `timeout` seconds, raise `TimeoutError` naming the study and
        where it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            found = self.study(study)
            if found.state not in ACTIVE_STATES and not found.counts.get("RUNNING"):
                return found
            if deadline is not None and time.monotonic() >= deadline:
                finished = sum(n for s, n in found.counts.items() if s != "RUNNING")
                raise TimeoutError(
                    f"study {found.name!r} is still {found.state} after {timeout:g} s "
                    f"({finished} trial(s) ended, {found.counts.get('RUNNING', 0)} running, "
                    f"budget {found.max_trials})"
                )
            left = poll if deadline is None else min(poll, max(0.0, deadline - time.monotonic()))
            time.sleep(left)

    def trials_dataframe(
        self, study: str | int, *, state: str | Sequence[str] | None = None
    ) -> pandas.DataFrame:
        """Every trial (or those in `state`) as a pandas DataFrame, with Optuna's
        `trials_dataframe()` columns: number, value (values_<metric> with several
        objectives), datetime_start, datetime_complete, duration, params_<name>, state, and
        best_step, last_step, failure_reason. Needs pandas (the `dataframe` extra)."""
        import_pandas()  # said before anything is fetched
        found = self.study(study)
        return trials_frame(found, self.iter_trials(study, state=state, sort="number"))

    def pareto(self, study: str | int) -> ParetoPage:
        """The study's Pareto front (its best trial(s) with one objective)."""
        return _parse(ParetoPage, self._get(f"{_study_path(study)}/pareto"))

    def stop(self, study: str | int) -> StudyPublic:
        return _parse(StudyPublic, self._call("POST", f"{_study_path(study)}/stop"))

    def resume(self, study: str | int, *, max_trials: int | None = None) -> StudyPublic:
        body = {"maxTrials": max_trials} if max_trials is not None else None
        response = self._http.post(f"{_study_path(study)}/resume", json=body)
        return _parse(StudyPublic, response)

    def retry_failed(self, study: str | int) -> StudyPublic:
        return _parse(StudyPublic, self._http.post(f"{_study_path(study)}/retry"))

    def gc(
        self, study: str | int, *, keep_best_trials: int | None = None, dry_run: bool = False
    ) -> GcReportPublic:
        """Apply a retention policy now (`keep_best_trials`, saved as the study's unless a dry
        run; else the study's own); with `dry_run`, only say what would go. Not retried."""
        body: dict[str, Any] = {"dryRun": dry_run}
        if keep_best_trials is not None:
            body["keepBestTrials"] = keep_best_trials
        response = self._http.post(f"{_study_path(study)}/gc", json=body, timeout=None)
        return _parse(GcReportPublic, response)

    def delete(self, study: str | int, *, delete_artifacts: bool = False) -> None:
        params = {"deleteArtifacts": "true" if delete_artifacts else "false"}
        response = self._call("DELETE", _study_path(study), params=params)
        if response.status_code != 204:
            raise ApiError.from_response(response)

    # -- notes, stopping one trial, the trial table -------------------------------------------

    def set_study_note(self, study: str | int, note: str) -> NotePublic:
        """Replace the study's note (markdown; "" clears it). Retried: it is idempotent."""
        response = self._call("PUT", f"{_study_path(study)}/note", json={"note": note})
        return _parse(NotePublic, response)

    def set_trial_note(self, study: str | int, number: int, note: str) -> NotePublic:
        """Replace trial `number`'s note (markdown; "" clears it)."""
        path = f"{_study_path(study)}/trials/{number}/note"
        return _parse(NotePublic, self._call("PUT", path, json={"note": note}))

    def stop_trial(self, study: str | int, number: int) -> TrialDetailPublic:
        """Stop one running trial; it ends PRUNED (see docs/api.md). Asking again is harmless."""
        path = f"{_study_path(study)}/trials/{number}/stop"
        return _parse(TrialDetailPublic, self._call("POST", path))

    def trials_csv(
        self,
        study: str | int,
        *,
        state: str | Sequence[str] | None = None,
        sort: str | None = None,
        filters: Sequence[str] = (),
    ) -> Iterator[bytes]:
        """The trials `trials()` would list, every one, as CSV bytes, streamed."""
        params: list[tuple[str, Any]] = []
        states = [state] if isinstance(state, str) else list(state or [])
        params += [("state", s) for s in states]
        if sort:
            params.append(("sort", sort))
        params += [("filter", f) for f in filters]
        path = f"{_study_path(study)}/trials.csv"
        with self._http.stream("GET", path, params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError.from_response(response)
            yield from response.iter_bytes()

    # -- streams --------------------------------------------------------------------------------

    def events(
        self,
        study: str | int,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """The study's event stream (snapshot, created, eval, state, study, end), until `end`.

        A dropped connection is reopened with `Last-Event-ID` (up to `retries` times in a row,
        waiting the server's `retry:` hint), so the events continue where they stopped.
        """
        failures = 0
        wait = self.backoff
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    f"{_study_path(study)}/events",
                    headers=headers,
                    timeout=httpx.Timeout(30, read=60),
                ) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        raise ApiError.from_response(source.response)
                    for sse in source.iter_sse():
                        failures = 0
                        if sse.retry is not None:
                            wait = sse.retry / 1000
                        if not sse.data and sse.event in ("", "message"):
                            continue  # a comment (a heartbeat) or a bare `retry:`
                        if sse.id:
                            last_event_id = sse.id
                        data = json.loads(sse.data) if sse.data else {}
                        yield Event(kind=sse.event, data=data, id=sse.id or None)
                        if sse.event == "end":
                            return
            except ApiError as exc:
                if exc.status not in TRANSIENT_STATUSES or not reconnect:
                    raise
            except (httpx.TransportError, SSEError):
                if not reconnect:
                    raise
            failures += 1
            if failures > self.retries:
                raise ApiError(503, f"the event stream of study {study!r} dropped {failures} times")
            time.sleep(wait)

    # -- downloads ------------------------------------------------------------------------------

    def download_model(
        self,
        study: str | int,
        destination: str | os.PathLike[str],
        *,
        number: int | None = None,
        export: str | None = None,
        progress: ProgressCallback | None = None,
        resumed: ResumeCallback | None = None,
    ) -> Path:
        """Download and unpack the best (or trial `number`'s best-step) SavedModel; with
        `export` (`<exporter>` or `<exporter>/<version>`), that export of trial `number`.

        Unpacks to `destination/<version>/` and returns that directory. An interrupted
        download resumes on the next call with the same destination (see `tuner.client.downloads`).
        """
        if export is not None and number is None:
            raise ValueError("export= names an export of one trial: give number= too")
        path = (
            f"{_study_path(study)}/best/model"
            if number is None
            else f"{_study_path(study)}/trials/{number}/model"
        )
        if export is not None:
            path += f"?export={quote(export, safe='/')}"
        return self._download(path, destination, progress=progress, resumed=resumed)

    def download_checkpoint(
        self,
        study: str | int,
        destination: str | os.PathLike[str],
        *,
        number: int | None = None,
        progress: ProgressCallback | None = None,
        resumed: ResumeCallback | None = None,
    ) -> Path:
        """Download and unpack the kept checkpoint to `destination/checkpoint/`; resumable."""
        path = (
            f"{_study_path(study)}/best/checkpoint"
            if number is None
            else f"{_study_path(study)}/trials/{number}/checkpoint"
        )
        return self._download(path, destination, progress=progress, resumed=resumed)

    def _download(
        self,
        path: str,
        destination: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        resumed: ResumeCallback | None = None,
    ) -> Path:
        return download_archive(
            self._http,
            path,
            Path(destination),
            error=ApiError.from_response,
            progress=progress,
            resumed=resumed,
        )

    # -- transport ------------------------------------------------------------------------------

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._call("GET", path, **kwargs)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An idempotent request, tried again after a transient failure."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(self.backoff * 2**attempt)
                continue
            if response.status_code not in TRANSIENT_STATUSES or last:
                return response
            time.sleep(_retry_after(response, self.backoff * 2**attempt))
        raise AssertionError("unreachable")


def _study_path(study: str | int) -> str:
    return f"/studies/{quote(str(study), safe='')}"


def _parse(model: type[Model], response: httpx.Response) -> Model:
    if response.status_code >= 400:
        raise ApiError.from_response(response)
    return model.model_validate_json(response.content)


def _pages(fetch: Callable[[int], Page[Model]]) -> Iterator[Model]:
    offset = 0
    while True:
        page = fetch(offset)
        yield from page.data
        offset += len(page.data)
        if not page.data or offset >= page.count:
            return


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return min(30.0, max(0.0, float(response.headers.get("Retry-After", default))))
    except ValueError:
        return default
