"""A Python client of the tuner's REST API."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import connect_sse

from tuner.errors import TunerError

API_PREFIX = "/api/v1"


class ApiError(TunerError):
    """The server answered with an error status."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        if isinstance(detail, list):
            text = "\n  ".join(
                f"{d.get('loc')}: {d.get('msg')}" if isinstance(d, dict) else str(d) for d in detail
            )
            message = f"HTTP {status}:\n  {text}"
        else:
            message = f"HTTP {status}: {detail}"
        super().__init__(message)


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]


class Client:
    """`Client("http://127.0.0.1:8000", token="tnr_...")`; every method raises `ApiError`."""

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + API_PREFIX, headers=headers, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- studies --------------------------------------------------------------------------------

    def submit(self, spec: str | dict[str, Any]) -> dict[str, Any]:
        """Submit a spec: YAML/JSON text, or a dict."""
        if isinstance(spec, dict):
            response = self._http.post("/studies", json=spec)
        else:
            response = self._http.post(
                "/studies", content=spec.encode(), headers={"Content-Type": "application/yaml"}
            )
        return self._json(response)

    def studies(
        self, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._json(self._http.get("/studies", params=params))

    def study(self, study: str | int) -> dict[str, Any]:
        return self._json(self._http.get(f"/studies/{study}"))

    def trials(
        self, study: str | int, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state:
            params["state"] = state
        return self._json(self._http.get(f"/studies/{study}/trials", params=params))

    def trial(self, study: str | int, number: int) -> dict[str, Any]:
        return self._json(self._http.get(f"/studies/{study}/trials/{number}"))

    def best(self, study: str | int) -> dict[str, Any]:
        return self._json(self._http.get(f"/studies/{study}/best"))

    def stop(self, study: str | int) -> dict[str, Any]:
        return self._json(self._http.post(f"/studies/{study}/stop"))

    def resume(self, study: str | int, *, max_trials: int | None = None) -> dict[str, Any]:
        body = {"maxTrials": max_trials} if max_trials is not None else None
        return self._json(self._http.post(f"/studies/{study}/resume", json=body))

    def retry_failed(self, study: str | int) -> dict[str, Any]:
        return self._json(self._http.post(f"/studies/{study}/retry"))

    def delete(self, study: str | int, *, delete_artifacts: bool = False) -> None:
        params = {"deleteArtifacts": "true" if delete_artifacts else "false"}
        response = self._http.delete(f"/studies/{study}", params=params)
        if response.status_code != 204:
            self._json(response)

    # -- streams --------------------------------------------------------------------------------

    def events(self, study: str | int) -> Iterator[Event]:
        """The study's event stream (snapshot, created, eval, state, study, end)."""
        with connect_sse(
            self._http, "GET", f"/studies/{study}/events", timeout=httpx.Timeout(30, read=None)
        ) as source:
            if source.response.status_code != 200:
                source.response.read()
                self._json(source.response)
            for sse in source.iter_sse():
                yield Event(kind=sse.event, data=json.loads(sse.data) if sse.data else {})
                if sse.event == "end":
                    return

    def download_model(
        self, study: str | int, destination: Path, *, number: int | None = None
    ) -> Path:
        """Download and unpack the best (or trial `number`'s best-step) SavedModel.

        Unpacks to `destination/<version>/` and returns that directory.
        """
        path = (
            f"/studies/{study}/best/model"
            if number is None
            else (f"/studies/{study}/trials/{number}/model")
        )
        return self._download(path, destination)

    def download_checkpoint(
        self, study: str | int, destination: Path, *, number: int | None = None
    ) -> Path:
        path = (
            f"/studies/{study}/best/checkpoint"
            if number is None
            else (f"/studies/{study}/trials/{number}/checkpoint")
        )
        return self._download(path, destination)

    def _download(self, path: str, destination: Path) -> Path:
        destination.mkdir(parents=True, exist_ok=True)
        archive = destination / ".download.tar.gz"
        with self._http.stream("GET", path) as response:
            if response.status_code != 200:
                response.read()
                self._json(response)
            with open(archive, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
                tar.extractall(destination, filter="data")
        finally:
            archive.unlink(missing_ok=True)
        (name,) = top
        return destination / name

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        body: dict[str, Any] = response.json()
        return body
