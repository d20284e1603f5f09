"""The Python client against a real server running real studies: the example of docs/api.md
runs as written, the environment names the server and the token, paths may be strings,
`wait` and `trials_dataframe` answer what a user reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.client import ApiError, Client

SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps=20", "--eval-every-steps=10", "--export", "--step-seconds={pace}"]
seed: 3
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: {trials}
  maxParallelTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
    - {{parameterName: layers, type: INTEGER, minValue: 1, maxValue: 3}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("client")
    running = start_server(f"sqlite:///{tmp / 'tuner.db'}", tmp, slots=2)
    yield running
    running.stop()


def documented_example() -> str:
    """The first Python block of docs/api.md's "The Python client" section."""
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## The Python client", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/api.md: the Python client section has no example"
    return match.group(1)


def test_the_documented_example_runs_as_written(server, tmp_path):
    env = dict(os.environ, TUNER_SERVER=server.url, TUNER_TOKEN=server.write_token)
    done = subprocess.run(
        [sys.executable, "-c", documented_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "client-example: COMPLETED, {'COMPLETED': 4}" in done.stdout
    assert re.search(r"best rmse \d\.\d{4} \(trial \d\)", done.stdout)
    assert "params_optimizer" in done.stdout and re.search(r"\b(adam|sgd)\b", done.stdout)
    (version,) = (tmp_path / "models").iterdir()
    assert f"best model: models/{version.name}" in done.stdout
    assert (version / "saved_model.pb").read_text() == "step 20\n"


def test_the_environment_names_the_server_and_the_token(server, monkeypatch):
    monkeypatch.setenv("TUNER_SERVER", server.url)
    monkeypatch.setenv("TUNER_TOKEN", server.read_token)
    with Client() as client:
        assert client.base_url == server.url
        assert client.studies().count >= 0
    with Client(token="") as client, pytest.raises(ApiError) as refused:
        client.studies()
    assert refused.value.status == 401
    monkeypatch.delenv("TUNER_SERVER")
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8000"


def test_paths_may_be_strings_or_path_likes(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name="paths", trials=2, pace=0))
        client.wait("paths", timeout=120, poll=0.2)
        as_str = client.download_model("paths", "by-str")
        as_path = client.download_model("paths", tmp_path / "by-path")
        checkpoint = client.download_checkpoint("paths", "checkpoint-by-str")
    assert as_str == Path("by-str") / as_str.name and (as_str / "saved_model.pb").is_file()
    assert (as_path / "saved_model.pb").read_bytes() == (as_str / "saved_model.pb").read_bytes()
    assert any(checkpoint.rglob("*.index"))


def test_wait_returns_the_finished_study_or_says_where_it_is(server):
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name="slow", trials=2, pace=3))
        started = time.monotonic()
        with pytest.raises(TimeoutError) as waited:
            client.wait("slow", timeout=1, poll=0.2)
        assert time.monotonic() - started < 5
        message = str(waited.value)
        assert "study 'slow' is still RUNNING after 1 s" in message and "running" in message
        client.stop("slow")
        stopped = client.wait("slow", timeout=60, poll=0.2)
    assert stopped.state == "STOPPED" and not stopped.counts.get("RUNNING")


def test_trials_dataframe_has_optunas_columns(server):
    with Client(server.url, token=server.write_token) as client:
        client.submit(SPEC.format(name="frame", trials=3, pace=0))
        client.wait("frame", timeout=120, poll=0.2)
        frame = client.trials_dataframe("frame")
        rows = {row.number: row for row in client.iter_trials("frame")}
    assert list(frame.columns) == [
        "number",
        "value",
        "datetime_start",
        "datetime_complete",
        "duration",
        "params_layers",
        "params_x",
        "best_step",
        "last_step",
        "failure_reason",
        "state",
    ]
    assert list(frame["number"]) == [0, 1, 2]
    assert set(frame["state"]) == {"COMPLETED"}
    for record in frame.itertuples():
        row = rows[record.number]
        assert record.value == row.objective and record.params_x == row.params["x"]
        assert record.params_layers == row.params["layers"]
        assert record.duration.total_seconds() > 0
    assert str(frame["datetime_start"].dt.tz) == "UTC"


def test_without_pandas_the_error_says_what_to_install(server):
    script = (
        "import sys\n"
        "sys.modules['pandas'] = None  # as if it were not installed\n"
        "from tuner.client import Client\n"
        f"with Client({server.url!r}, token={server.read_token!r}) as client:\n"
        "    client.trials_dataframe('frame')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "ImportError: trials_dataframe() needs pandas" in done.stderr
    assert "pip install 'estimator-tuner[dataframe]'" in done.stderr
