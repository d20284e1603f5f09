"""What a new user meets at the `tuner` command: whole names and values at 80 columns and in
pipes, exit codes that say what went wrong, `tuner watch` on a local study, and an interrupted
`tuner run` that pauses its study. Real subprocesses, a real terminal (a pty), real signals."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.server import REPO, free_port, start_server
from tuner.client import Client
from tuner.persistence import Database
from tuner.persistence import repository as repo

TUNER = [sys.executable, "-m", "tuner.cli"]
LONG = "synthetic-prices-with-a-rather-long-study-name"
SPEC = """
name: {name}
trainer: synthetic
args: ["--train-steps={steps}", "--eval-every-steps=10", "--step-seconds={pace}"{extra}]
seed: 11
hyperparameters:
  goal: MINIMIZE
  hyperparameterMetricTag: rmse
  maxTrials: {trials}
  maxParallelTrials: 2
  params:
    - {{parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1}}
    - {{parameterName: layers, type: INTEGER, minValue: 1, maxValue: 3}}
    - {{parameterName: optimizer, type: CATEGORICAL, categoricalValues: [adam, sgd]}}
"""
BOX = re.compile("[\u2500-\u257f]")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TUNER_SERVER", "TUNER_TOKEN"):
        env.pop(name, None)
    env.update(
        TUNER_DATABASE_URL=f"sqlite:///{tmp_path / 'tuner.db'}",
        TUNER_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL="0.05",
        TUNER_EVENTS_POLL_INTERVAL="0.1",
        TUNER_STOP_GRACE_SECONDS="3",
        COLUMNS="80",
    )
    env.update(extra)
    return env


def write_spec(
    tmp_path: Path,
    name: str,
    *,
    trials: int = 3,
    steps: int = 20,
    pace: float = 0,
    extra: str = "",
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, trials=trials, steps=steps, pace=pace, extra=extra))
    return path


def tuner(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNER, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def in_terminal(env: dict[str, str], *args: str, columns: int = 80) -> str:
    """What `tuner ARGS` shows on a terminal `columns` wide (a pty), without colours."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [*TUNER, *args],
        env=dict(env, TERM="xterm-256color", COLUMNS=str(columns)),
        cwd=REPO,
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def fmt_params(params: dict[str, object]) -> list[str]:
    """Each param as the CLI writes it (`x=0.5307`)."""
    return [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A finished study with a long name in a local database."""
    tmp = tmp_path_factory.mktemp("papercuts")
    env = env_for(tmp)
    done = tuner(env, "run", str(write_spec(tmp, LONG)), "--no-view")
    assert done.returncode == 0, done.stderr
    return env


def test_piped_tables_keep_every_name_and_value_on_one_line(finished):
    rows = json.loads(tuner(finished, "trials", LONG, "--json").stdout)
    assert len(rows) == 3
    studies = tuner(finished, "studies")
    assert studies.returncode == 0
    (line,) = [line for line in studies.stdout.splitlines() if LONG in line]  # grep finds it
    assert "COMPLETED" in line and "3/3" in line and "rmse=" in line
    for command in (["trials", LONG], ["leaderboard", LONG], ["show", LONG]):
        out = tuner(finished, *command).stdout
        assert not BOX.search(out) and "…" not in out, out
        for row in rows:
            (line,) = [line for line in out.splitlines() if re.match(rf"{row['number']}\s", line)]
            assert ", ".join(fmt_params(row["params"])) in line  # the params, whole, in order
            assert f"{row['objective']:.6g}" in line


def test_tables_at_80_columns_cut_nothing_and_wrap_params_between_params(finished):
    rows = json.loads(tuner(finished, "trials", LONG, "--json").stdout)
    studies = in_terminal(finished, "studies")
    assert LONG in studies and "…" not in studies
    board = in_terminal(finished, "trials", LONG)
    assert "…" not in board
    lines = board.splitlines()
    for row in rows:
        assert f"{row['objective']:.6g}" in board
        for param in fmt_params(row["params"]):  # never split inside `x=0.5307`
            assert any(param in line for line in lines), (param, board)


def test_exit_codes_say_what_went_wrong(finished, tmp_path):
    usage = tuner(finished, "studeis")
    assert usage.returncode == 2 and "No such command" in usage.stderr

    missing = tuner(finished, "show", "no-such-study")
    assert missing.returncode == 3 and "study 'no-such-study' not found" in missing.stderr

    bad = write_spec(tmp_path, "bad")
    bad.write_text(bad.read_text().replace("goal: MINIMIZE", "goal: MINIMISE"))
    invalid = tuner(finished, "run", str(bad), "--no-view")
    assert invalid.returncode == 4 and "goal" in invalid.stderr

    url = f"http://127.0.0.1:{free_port()}"
    down = tuner(finished, "studies", "--server", url)
    assert down.returncode == 5
    message = " ".join(down.stderr.split())
    assert f"cannot reach a tuner server at {url}" in message
    assert "tuner serve" in message and "TUNER_SERVER" in message
    refused = tuner(finished, "submit", str(bad), "--server", url)
    assert refused.returncode == 5 and "`tuner run SPEC`" in " ".join(refused.stderr.split())

    crash = write_spec(tmp_path, "crash", trials=2, extra=', "--crash-at-step=10"')
    failed = tuner(finished, "run", str(crash), "--no-view")
    assert failed.returncode == 1, failed.stderr
    assert "crash: FAILED" in failed.stdout

    helped = tuner(finished, "--help")
    text = " ".join(helped.stdout.split())
    assert "Exit codes:" in text and "4 invalid spec" in text and "5 server or database" in text


def test_watch_follows_a_local_study_without_a_server(tmp_path):
    env = env_for(tmp_path)
    spec = write_spec(tmp_path, "local-watch", trials=3, steps=40, pace=1)
    run = subprocess.Popen(
        [*TUNER, "run", str(spec), "--no-view"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_runs(env, "local-watch", 1)
        watched = tuner(env, "watch", "local-watch", timeout=120)
    finally:
        assert run.wait(timeout=120) == 0
    assert watched.returncode == 0, watched.stderr
    out = watched.stdout
    assert "trial 2 started: x=" in out  # it followed the study as it ran
    assert re.search(r"trial \d step 40: rmse=", out)
    assert "study local-watch ended COMPLETED (3 trials finished)" in out
    assert "3/3 trials finished" in out


def test_watch_through_a_server_counts_the_trials_it_showed(tmp_path):
    server = start_server(f"sqlite:///{tmp_path / 'tuner.db'}", tmp_path, slots=2)
    try:
        with Client(server.url, token=server.write_token) as client:
            client.submit(write_spec(tmp_path, "remote-watch", trials=4, pace=0.3).read_text())
        env = env_for(tmp_path, TUNER_SERVER=server.url, TUNER_TOKEN=server.read_token)
        watched = tuner(env, "watch", "remote-watch", timeout=120)
    finally:
        server.stop()
    assert watched.returncode == 0, watched.stderr
    assert "study remote-watch ended COMPLETED (4 trials finished)" in watched.stdout
    assert "(0 trials finished)" not in watched.stdout
    assert "4/4 trials finished" in watched.stdout


def active_runs(db: Database, name: str) -> tuple[str, list[str]]:
    with db.session() as s:
        study = repo.get_study(s, name)
        return study.state, [r.state for r in repo.runs(s, study.id)]


def wait_for_runs(env: dict[str, str], name: str, count: int) -> None:
    """Until `count` trials of the study run, each with an eval stored."""
    db = Database(env["TUNER_DATABASE_URL"])
    deadline = time.monotonic() + 60
    try:
        while True:
            assert time.monotonic() < deadline, f"{count} trial(s) of {name} never ran"
            try:
                with db.session() as s:
                    runs = repo.active_runs(s)
                    evaluated = [len(repo.eval_steps(s, r.id)) for r in runs]
                if len(runs) >= count and min(evaluated) >= 1:
                    return
            except Exception:  # the database is being created
                pass
            time.sleep(0.2)
    finally:
        db.dispose()


def test_an_interrupted_run_pauses_its_study_until_resumed(tmp_path):
    env = env_for(tmp_path)
    spec = write_spec(tmp_path, "paused", trials=3, steps=100, pace=0.5)
    run = subprocess.Popen(
        [*TUNER, "run", str(spec), "--no-view"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_runs(env, "paused", 2)
    db = Database(env["TUNER_DATABASE_URL"])
    run.send_signal(signal.SIGINT)
    _out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "study 'paused' paused (STOPPED)" in " ".join(err.split())

    state, runs = active_runs(db, "paused")
    assert state == "STOPPED" and runs == ["STOPPED", "STOPPED"]
    shown = tuner(env, "show", "paused")
    reason = " ".join(shown.stdout.split())
    assert "paused: `tuner run` was interrupted (SIGINT)" in reason
    assert "`tuner resume paused`" in reason and "the same `tuner run SPEC`" in reason

    worker = subprocess.Popen(
        [*TUNER, "worker", "--slots", "2"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(4)  # a worker on the same database leaves the paused study alone
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    assert active_runs(db, "paused") == ("STOPPED", ["STOPPED", "STOPPED"])

    resumed = tuner(env, "run", str(spec), "--no-view", timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study 'paused' (STOPPED)" in resumed.stderr
    state, runs = active_runs(db, "paused")
    assert state == "COMPLETED" and runs.count("COMPLETED") == 3
    db.dispose()
