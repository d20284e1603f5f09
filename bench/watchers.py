"""The study event stream (Server-Sent Events) with 100 watchers, against 100 polling clients.

**What.** A fresh PostgreSQL database; `tuner serve --slots 0` (the API alone, so its CPU is
the API's) and one `tuner worker --slots 2` process that runs the trials. Each has its own
`application_name` in its database URL (`watchers-api`, `watchers-worker`; this script's own
sessions are `watchers-bench`), which is how pg_stat_activity tells their sessions apart. One
study of the synthetic trainer (`examples.synthetic.task --train-steps=200
--eval-every-steps=10 --step-seconds=0.2`: 20 evals 0.2 s apart, about 5 s a trial;
maxParallelTrials 2, maxTrials 1000) keeps 8-10 events a second (nearly all `eval`) flowing
into the study's journal for the whole run. The server reads the journal every
`TUNER_EVENTS_POLL_INTERVAL` (0.5 s, the default, unless `--events-poll-interval`); the worker
ingests the trainers' event files every `TUNER_POLL_INTERVAL` (0.25 s, the default, unless
`--manager-poll-interval`). Tokens are made with `tuner.persistence.tokens.create_token`, as
tests/server.py
does; every request carries the read token.

Phases, one after the other in the same run, each measured for `--seconds` (default 20) once
its clients are connected (the connection burst is not in the window; its wall time and the
server's CPU during it are printed):

0. idle: no client (what the server costs by itself);
1. 1 watcher of `GET /api/v1/studies/{study}/events`;
2. `--watchers` (100) watchers of the same stream, from one asyncio loop (httpx.AsyncClient
   streams, the SSE lines parsed here);
3a. `--watchers` / 10 clients polling `GET /api/v1/studies/{study}/trials?limit=50` every
   `--poll-every` (0.5 s): the server's CPU for one answer, at a rate it can serve;
3. the baseline without the stream: `--watchers` such pollers, what as many dashboards
   without SSE do. Each poller is one keep-alive HTTP/1.1 connection (a minimal client, see
   `Connection`) that sends its next request `--poll-every` after the previous one was sent, or
   at once when the answer came later; their start times are spread over the interval;
4. with `--mixed`: `--watchers` watchers while `--watchers` pollers poll.

After a polling phase the script waits until the server answers within a second again.

**Measured**, over each window:

- server CPU: utime+stime of the `tuner serve` process (/proc/<pid>/stat, which sums all its
  threads) per wall second; its RSS (the largest of the samples, every 0.25 s);
- database: the server's sessions in pg_stat_activity (every 0.25 s): held (max) and busy
  (mean of the samples, state not `idle`); the CPU of those PostgreSQL backends per wall second
  (/proc of each backend's pid; a backend that ended inside the window is missed);
- SSE: every client must receive exactly the journal seqs S0+1..S1 (the study's event_seq at
  the window's start and end), once each, in order, with the data the journal holds: `missed`,
  `repeated`, `out of order`, `differ` (goal 0). For every `eval` event among them, the delivery
  latency = receive time - the event's `wallTime` (when the trainer wrote the value), over
  every client: p50/p95/max, split into ingest (the journal row's `created_at` - wallTime: the
  worker's poll and its transaction) and fan-out (receive time - created_at: the feed's poll,
  its read, the send); `spread` is, per event, the last client's receive time minus the
  first's;
- polling: answers per second (against the offered rate), the server's CPU per answer,
  requests sent in the window that failed, request latency p50/p95/max, and the delay of an
  eval as a polling dashboard sees it: the first answer in which the trial's `lastStep` has
  reached the eval's step, minus its wallTime (evals written inside the window; comparable
  with the SSE delivery latency; the (client, eval) pairs never shown are counted apart);
- the CPU of this process (the clients) and the 1-minute load average at the window's end.

The clients run in this process, on the same machine as the server and PostgreSQL: receive
times include their own scheduling, which is why their CPU is printed. The distinct errors in
the server's and the worker's logs are listed at the end. The processes and the database are
removed at the end (also on Ctrl-C) unless `--keep`. Exit code 0 when every SSE client
received every event once and each feed stopped once its clients had left, else 1.

    python bench/watchers.py                      # ~3 min
    python bench/watchers.py --mixed              # ~4 min
    python bench/watchers.py --seconds 30 --watchers 200 --json /tmp/watchers.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

from tuner.persistence import Database
from tuner.persistence.tokens import create_token

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "TUNER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
STUDY = "watched"
TRAINER_MODULE = b"examples.synthetic.task"
TRAINER_ARGS = ["--train-steps=200", "--eval-every-steps=10", "--step-seconds=0.2"]
API_APP, WORKER_APP, BENCH_APP = "watchers-api", "watchers-worker", "watchers-bench"
SAMPLE_EVERY = 0.25
#: Seconds between the clients' connection and the window (the feed is primed, the burst over).
SETTLE = 2.0
#: Seconds the clients stay after the window, for the events committed at its end.
GRACE = 10.0
#: The same with pollers beside them, which can hold the server up for the pool's 30 s timeout.
MIXED_GRACE = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

SPEC = {
    "name": STUDY,
    "trainer": "synthetic",
    "seed": 5,
    "args": TRAINER_ARGS,
    "hyperparameters": {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": 1000,
        "maxParallelTrials": 2,
        "params": [
            {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "sgd"],
            },
        ],
    },
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank (q in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- the database --------------------------------------------------------------------------------


def conninfo(url: str) -> str:
    """A libpq URL (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_app(url: str, app: str) -> str:
    """The URL with `application_name`, which names its sessions in pg_stat_activity."""
    named = make_url(url).update_query_dict({"application_name": app})
    return named.render_as_string(hide_password=False)


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database: (its name, its SQLAlchemy URL)."""
    name = f"tuner_watchers_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return name, url.render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class JournalEvent:
    kind: str
    data: dict[str, Any]
    created: float  # the row's created_at, epoch seconds


class Journal:
    """This script's own reads of the study's journal (a session named `watchers-bench`)."""

    def __init__(self, url: str, study: str) -> None:
        self.conn = psycopg.connect(conninfo(with_app(url, BENCH_APP)), autocommit=True)
        row = self.conn.execute("SELECT id FROM tuner_studies WHERE name = %s", (study,)).fetchone()
        if row is None:
            raise RuntimeError(f"study {study!r} not found")
        self.study_id = int(row[0])

    def seq(self) -> int:
        row = self.conn.execute(
            "SELECT event_seq FROM tuner_studies WHERE id = %s", (self.study_id,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def events(self, after: int, upto: int) -> dict[int, JournalEvent]:
        rows = self.conn.execute(
            "SELECT seq, kind, data_json, extract(epoch FROM created_at) "
            "FROM tuner_study_events WHERE study_id = %s AND seq > %s AND seq <= %s",
            (self.study_id, after, upto),
        ).fetchall()
        return {int(r[0]): JournalEvent(str(r[1]), json.loads(r[2]), float(r[3])) for r in rows}

    def evals(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM tuner_study_events WHERE study_id = %s AND kind = 'eval'",
            (self.study_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    def sessions(self, db_name: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = %s "
            "GROUP BY application_name",
            (db_name,),
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def queries_since(self, db_name: str, app: str, since: float) -> int:
        """Sessions of `app` whose last statement started after `since` (epoch seconds)."""
        row = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s "
            "AND query_start > to_timestamp(%s)",
            (db_name, app, since),
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


# -- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_leftover_trainers(workdir: Path) -> int:
    """SIGKILL the trainers of this run (their argv names its temp dir) still alive."""
    needle = os.fsencode(str(workdir)) + b"/"
    killed = 0
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if TRAINER_MODULE in cmdline and needle in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
    return killed


# -- sampling a window ---------------------------------------------------------------------------


@dataclass
class Usage:
    seconds: float
    server_cpu: float  # CPU seconds per wall second
    server_rss_mb: float  # max of the samples
    sessions_held: int  # max of the samples
    sessions_busy: float  # mean of the samples
    pg_cpu: float  # the server's PostgreSQL backends, CPU seconds per wall second
    client_cpu: float  # this process
    load1: float
    worker_sessions: int  # max of the samples, for reference


class Sampler:
    """Samples the server's RSS and its database sessions in a thread while a window is open."""

    def __init__(self, url: str, db_name: str, server_pid: int) -> None:
        self.conn = psycopg.connect(conninfo(with_app(url, BENCH_APP)), autocommit=True)
        self.db_name = db_name
        self.pid = server_pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset()

    def _reset(self) -> None:
        self.rss: list[int] = []
        self.held: list[int] = []
        self.busy: list[int] = []
        self.worker: list[int] = []
        self.backends: dict[int, list[float]] = {}  # pid -> [first cpu, last cpu]
        self.samples = 0

    def _sample(self) -> None:
        rows = self.conn.execute(
            "SELECT pid, application_name, state FROM pg_stat_activity WHERE datname = %s",
            (self.db_name,),
        ).fetchall()
        api = [(int(pid), state) for pid, app, state in rows if app == API_APP]
        self.held.append(len(api))
        self.busy.append(sum(state not in (None, "idle") for _, state in api))
        self.worker.append(sum(app == WORKER_APP for _, app, _ in rows))
        for pid, _ in api:
            try:
                cpu = cpu_seconds(pid)
            except OSError:
                continue
            # a backend first seen after the first sample started inside the window
            first = cpu if self.samples == 0 else 0.0
            self.backends.setdefault(pid, [first, cpu])[1] = cpu
        with contextlib.suppress(OSError):
            self.rss.append(rss_bytes(self.pid))
        self.samples += 1

    def _run(self) -> None:
        while True:
            with contextlib.suppress(psycopg.Error):
                self._sample()
            if self._stop.wait(SAMPLE_EVERY):
                return

    def start(self) -> None:
        self._reset()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(psycopg.Error):
            self._sample()  # the backends' CPU at the window's end

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.close()


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    db_name: str
    url: str
    base_url: str = ""
    read_token: str = ""
    server: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    journal: Journal | None = None
    sampler: Sampler | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_token}"}

    async def measure(self) -> tuple[Usage, int, int, float, float]:
        """Open a window of `--seconds`: (usage, journal seq at start and end, wall start, end)."""
        assert self.journal is not None and self.sampler is not None and self.server is not None
        pid = self.server.pid
        self.sampler.start()
        s0, c0, own0 = self.journal.seq(), cpu_seconds(pid), self_cpu()
        t0, w0 = time.monotonic(), time.time()
        await asyncio.sleep(self.args.seconds)
        s1, c1, own1 = self.journal.seq(), cpu_seconds(pid), self_cpu()
        t1, w1 = time.monotonic(), time.time()
        await asyncio.to_thread(self.sampler.stop)
        sampler = self.sampler
        wall = t1 - t0
        pg = sum(last - first for first, last in sampler.backends.values())
        usage = Usage(
            seconds=wall,
            server_cpu=(c1 - c0) / wall,
            server_rss_mb=max(sampler.rss, default=0) / 2**20,
            sessions_held=max(sampler.held, default=0),
            sessions_busy=sum(sampler.busy) / max(1, len(sampler.busy)),
            pg_cpu=pg / wall,
            client_cpu=(own1 - own0) / wall,
            load1=os.getloadavg()[0],
            worker_sessions=max(sampler.worker, default=0),
        )
        return usage, s0, s1, w0, w1


# -- SSE watchers --------------------------------------------------------------------------------


@dataclass
class Watcher:
    snapshot_id: int | None = None
    #: (seq, kind, receive time, data as sent)
    events: list[tuple[int, str, float, str]] = field(default_factory=list)
    last_id: int = -1
    error: str | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)


async def watch(client: httpx.AsyncClient, path: str, headers: dict[str, str], w: Watcher) -> None:
    """Read the stream until cancelled; messages are kept raw (parsed after the window)."""
    try:
        async with client.stream("GET", path, headers=headers) as response:
            if response.status_code != 200:
                w.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    if line[0] != ":":  # a comment (heartbeat, resume note)
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value[:1] == " " else value
                    continue
                if not fields:
                    continue
                received = time.time()
                kind = fields.get("event", "message")
                seq = int(fields.get("id") or -1)
                if kind == "snapshot":
                    w.snapshot_id = seq
                    w.connected.set()
                else:
                    w.events.append((seq, kind, received, fields.get("data", "")))
                w.last_id = seq
                fields = {}
            w.error = "the stream ended"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        w.error = f"{type(exc).__name__}: {exc}"
    finally:
        w.connected.set()


@dataclass
class SseResult:
    phase: str
    clients: int
    usage: Usage
    connect_seconds: float
    events: int  # in the window (S0, S1]
    evals: int
    per_client_min: int
    per_client_max: int
    missed: int
    repeated: int
    out_of_order: int
    differ: int
    errors: list[str]
    latency: list[float] = field(repr=False)
    ingest: list[float] = field(repr=False)
    fanout: list[float] = field(repr=False)
    spread: list[float] = field(repr=False)
    #: the server's statements in `quiet_seconds` after its clients left (the feed stopped: 0)
    queries_after_close: int = -1
    quiet_seconds: float = 0.0
    connect_cpu: float = 0.0  # the server's CPU seconds from the first request to the last snapshot


def client_limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)


async def start_watchers(
    bench: Bench, client: httpx.AsyncClient, path: str, n: int
) -> tuple[list[Watcher], list[asyncio.Task[None]], float, float]:
    """`n` watchers, once each has its snapshot: (them, their tasks, wall and server CPU
    seconds from the first request to the last snapshot)."""
    assert bench.server is not None
    watchers = [Watcher() for _ in range(n)]
    started, cpu_before = time.monotonic(), cpu_seconds(bench.server.pid)
    tasks = [asyncio.create_task(watch(client, path, bench.headers, w)) for w in watchers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.connected.wait() for w in watchers)), 120)
        failed = [w.error for w in watchers if w.error]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} watchers failed: {failed[0]}")
    except BaseException:
        await stop_tasks(tasks)
        raise
    connect_seconds = time.monotonic() - started
    connect_cpu = cpu_seconds(bench.server.pid) - cpu_before
    log(f"  {n} watcher(s) connected in {connect_seconds:.2f} s")
    return watchers, tasks, connect_seconds, connect_cpu


async def wait_for_watchers(watchers: list[Watcher], seq: int, limit: float) -> None:
    """Until every watcher has received event `seq` (or has failed), at most `limit` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(
        w.last_id < seq and w.error is None for w in watchers
    ):
        await asyncio.sleep(0.1)


async def sse_phase(bench: Bench, phase: str, n: int) -> SseResult:
    assert bench.journal is not None
    path = f"/api/v1/studies/{STUDY}/events"
    timeout = httpx.Timeout(60.0, connect=30.0)
    async with httpx.AsyncClient(
        base_url=bench.base_url, limits=client_limits(n), timeout=timeout
    ) as client:
        watchers, tasks, connect_seconds, connect_cpu = await start_watchers(bench, client, path, n)
        try:
            await asyncio.sleep(SETTLE)
            usage, s0, s1, _, _ = await bench.measure()
            await wait_for_watchers(watchers, s1, GRACE)
        finally:
            await stop_tasks(tasks)
    journal = bench.journal.events(s0, s1)
    result = analyse_sse(phase, watchers, journal, s0, s1, usage, connect_seconds)
    result.connect_cpu = connect_cpu
    # Once its last client has gone, the feed stops reading the journal: nothing else asks the
    # server anything now, so any statement of its sessions after that is a feed left polling.
    interval = bench.args.events_poll_interval
    await asyncio.sleep(2 * interval + 1.0)
    mark = time.time()
    await asyncio.sleep(4 * interval + 1.0)
    result.queries_after_close = bench.journal.queries_since(bench.db_name, API_APP, mark)
    result.quiet_seconds = time.time() - mark
    return result


def analyse_sse(
    phase: str,
    watchers: list[Watcher],
    journal: dict[int, JournalEvent],
    s0: int,
    s1: int,
    usage: Usage,
    connect_seconds: float,
) -> SseResult:
    expected = range(s0 + 1, s1 + 1)
    missed = repeated = out_of_order = differ = 0
    counts: list[int] = []
    latency: list[float] = []
    fanout: list[float] = []
    received_at: defaultdict[int, list[float]] = defaultdict(list)
    errors = [w.error for w in watchers if w.error and w.error != "the stream ended"]
    errors += [w.error for w in watchers if w.error == "the stream ended"]
    for w in watchers:
        ids = [e[0] for e in w.events]
        out_of_order += sum(b <= a for a, b in itertools.pairwise(ids))
        if w.snapshot_id is not None and w.snapshot_id > s0:
            missed += w.snapshot_id - s0  # cannot happen: connected before the window
        inside = [e for e in w.events if s0 < e[0] <= s1]
        seen = Counter(e[0] for e in inside)
        missed += sum(seq not in seen for seq in expected)
        repeated += sum(c - 1 for c in seen.values())
        counts.append(len(seen))
        for seq, kind, received, data in inside:
            want = journal.get(seq)
            parsed = json.loads(data) if data else None
            if want is None or want.kind != kind or want.data != parsed:
                differ += 1
                continue
            if kind == "eval":
                wall = float(want.data["wallTime"])
                latency.append(received - wall)
                fanout.append(received - want.created)
                received_at[seq].append(received)
    evals = [e for e in journal.values() if e.kind == "eval"]
    ingest = [e.created - float(e.data["wallTime"]) for e in evals]
    spread = [max(t) - min(t) for t in received_at.values() if len(t) > 1]
    return SseResult(
        phase=phase,
        clients=len(watchers),
        usage=usage,
        connect_seconds=connect_seconds,
        events=len(expected),
        evals=len(evals),
        per_client_min=min(counts, default=0),
        per_client_max=max(counts, default=0),
        missed=missed,
        repeated=repeated,
        out_of_order=out_of_order,
        differ=differ,
        errors=errors,
        latency=latency,
        ingest=ingest,
        fanout=fanout,
        spread=spread,
    )


# -- the polling baseline ------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, as a browser tab has: a request, its answer, repeat.

    (A shared httpx.AsyncClient costs about 4 ms of this process's CPU per request with 10
    clients and several times that with 100 in flight: it, not the server, would set the pace.)
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        try:
            self.writer.write(f"GET {target} HTTP/1.1\r\n".encode() + self.head)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = None
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length is None:
                raise ConnectionError("an answer without Content-Length")
            body = await self.reader.readexactly(length)
            if b"connection: close" in head.lower():
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Poller:
    #: (sent, received, {trial number: lastStep}) of every answer
    answers: list[tuple[float, float, dict[int, int | None]]] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None


async def poll(conn: Connection, target: str, p: Poller, every: float, offset: float) -> None:
    await asyncio.sleep(offset)
    next_at = time.monotonic()
    try:
        while True:
            sent = time.time()
            try:
                status, body = await conn.get(target)
                received = time.time()
                if status == 200:
                    rows = json.loads(body)["data"]
                    p.answers.append((sent, received, {r["number"]: r["lastStep"] for r in rows}))
                else:
                    p.errors += 1
                    p.first_error = p.first_error or f"HTTP {status}: {body[:120]!r}"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                p.errors += 1
                p.first_error = p.first_error or f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(every)
            next_at += every
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:  # behind: the next request goes at once, and the schedule restarts from now
                next_at = time.monotonic()
    finally:
        conn.close()


@dataclass
class PollResult:
    phase: str
    clients: int
    usage: Usage
    requests_per_second: float
    errors: int  # requests sent in the window that failed (HTTP 5xx, a dropped connection)
    first_error: str | None
    evals: int
    unseen: int  # (poller, eval) pairs never shown by the end of the grace
    request_latency: list[float] = field(repr=False)
    delay: list[float] = field(repr=False)

    @property
    def cpu_per_request(self) -> float:
        answered = self.requests_per_second * self.usage.seconds
        return self.usage.server_cpu * self.usage.seconds / answered if answered else math.nan


def start_pollers(bench: Bench, n: int) -> tuple[list[Poller], list[asyncio.Task[None]]]:
    host, port = bench.base_url.removeprefix("http://").rsplit(":", 1)
    target = f"/api/v1/studies/{STUDY}/trials?limit=50"
    every = bench.args.poll_every
    pollers = [Poller() for _ in range(n)]
    tasks = [
        asyncio.create_task(
            poll(Connection(host, int(port), bench.read_token), target, p, every, every * i / n)
        )
        for i, p in enumerate(pollers)
    ]
    return pollers, tasks


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def poll_phase(bench: Bench, phase: str, n: int) -> PollResult:
    every = bench.args.poll_every
    pollers, tasks = start_pollers(bench, n)
    try:
        await asyncio.sleep(SETTLE + every)
        errors_before = sum(p.errors for p in pollers)
        usage, s0, _, w0, w1 = await bench.measure()
        errors = sum(p.errors for p in pollers) - errors_before
        await asyncio.sleep(3 * every + 1.0)  # the answers that show the window's last evals
    finally:
        await stop_tasks(tasks)
    result = analyse_polls(bench, phase, pollers, usage, s0, w0, w1, errors)
    await wait_until_responsive(bench)
    return result


def analyse_polls(
    bench: Bench,
    phase: str,
    pollers: list[Poller],
    usage: Usage,
    s0: int,
    w0: float,
    w1: float,
    errors: int,
) -> PollResult:
    assert bench.journal is not None
    # evals written inside the window (their journal rows may come a little later)
    journal = bench.journal.events(max(0, s0 - 200), bench.journal.seq())
    walls: dict[tuple[int, int], float] = {}
    for e in journal.values():
        if e.kind == "eval":
            key = (int(e.data["number"]), int(e.data["step"]))
            walls[key] = min(walls.get(key, math.inf), float(e.data["wallTime"]))
    window = {k: wall for k, wall in walls.items() if w0 <= wall <= w1}
    by_trial: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
    for (number, step), wall in window.items():
        by_trial[number].append((step, wall))
    latency: list[float] = []
    delay: list[float] = []
    unseen = 0
    for p in pollers:
        latency += [got - sent for sent, got, _ in p.answers if w0 <= sent <= w1]
        for number, evals in by_trial.items():
            shown = [(got, rows.get(number)) for _, got, rows in p.answers]
            for step, wall in evals:
                first = next(
                    (got for got, last in shown if last is not None and last >= step), None
                )
                if first is None:
                    unseen += 1
                else:
                    delay.append(first - wall)
    return PollResult(
        phase=phase,
        clients=len(pollers),
        usage=usage,
        requests_per_second=len(latency) / usage.seconds,
        errors=errors,
        first_error=next((p.first_error for p in pollers if p.first_error), None),
        evals=len(window),
        unseen=unseen,
        request_latency=latency,
        delay=delay,
    )


async def wait_until_responsive(bench: Bench, limit: float = 120.0) -> None:
    """After a phase that overloaded the server: wait until it answers within a second again."""
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(base_url=bench.base_url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            with contextlib.suppress(httpx.HTTPError):
                answer = await client.get(f"/api/v1/studies/{STUDY}", headers=bench.headers)
                if answer.status_code == 200 and time.monotonic() - started < 1.0:
                    return
            await asyncio.sleep(1.0)
    log(f"!! the server was still slow {limit:.0f} s after the phase")


async def mixed_phase(bench: Bench, phase: str, n: int) -> tuple[SseResult, PollResult]:
    """`n` SSE watchers while `n` clients poll the trial list."""
    assert bench.journal is not None
    path = f"/api/v1/studies/{STUDY}/events"
    timeout = httpx.Timeout(120.0, connect=60.0)
    async with httpx.AsyncClient(
        base_url=bench.base_url, limits=client_limits(n), timeout=timeout
    ) as client:
        watchers, tasks, connect_seconds, connect_cpu = await start_watchers(bench, client, path, n)
        pollers: list[Poller] = []
        poll_tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.sleep(SETTLE)
            pollers, poll_tasks = start_pollers(bench, n)
            await asyncio.sleep(SETTLE + bench.args.poll_every)
            errors_before = sum(p.errors for p in pollers)
            usage, s0, s1, w0, w1 = await bench.measure()
            errors = sum(p.errors for p in pollers) - errors_before
            await asyncio.sleep(3 * bench.args.poll_every + 1.0)
            await stop_tasks(poll_tasks)
            await wait_for_watchers(watchers, s1, MIXED_GRACE)
        finally:
            await stop_tasks(poll_tasks + tasks)
    polled = analyse_polls(bench, phase, pollers, usage, s0, w0, w1, errors)
    journal = bench.journal.events(s0, s1)
    watched = analyse_sse(phase, watchers, journal, s0, s1, usage, connect_seconds)
    watched.connect_cpu = connect_cpu
    await wait_until_responsive(bench)
    return watched, polled


async def idle_phase(bench: Bench) -> Usage:
    usage, *_ = await bench.measure()
    return usage


# -- the report ----------------------------------------------------------------------------------


def fmt(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "-"
    return " / ".join(
        f"{q * scale:.{digits}f}"
        for q in (percentile(values, 0.5), percentile(values, 0.95), max(values))
    )


def num(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


@dataclass
class Results:
    load_before: tuple[float, float, float]
    idle: Usage
    sse: list[SseResult]  # 1 watcher, n watchers[, n watchers beside n pollers]
    polls: list[PollResult]  # n / 10 pollers, n pollers[, n pollers beside n watchers]


def report(bench: Bench, res: Results) -> bool:
    args = bench.args
    print()
    print(
        f"event stream, {args.watchers} watchers: {args.seconds:g} s per phase; "
        f"TUNER_EVENTS_POLL_INTERVAL={args.events_poll_interval:g}, worker "
        f"TUNER_POLL_INTERVAL={args.manager_poll_interval:g}, polling every "
        f"{args.poll_every:g} s; {os.cpu_count()} CPUs; load average before "
        + " / ".join(f"{x:.2f}" for x in res.load_before)
    )
    print()
    print(
        "| phase | server CPU (s/s) | server RSS (MB) | server DB sessions: held max / busy "
        "mean | their PostgreSQL CPU (s/s) | clients' CPU (s/s) | load (1 min) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows: list[tuple[str, Usage]] = [("idle: no client", res.idle)]
    rows += [(f"{r.clients} SSE watcher(s)", r.usage) for r in res.sse[:2]]
    rows += [(f"{r.clients} poller(s)", r.usage) for r in res.polls[:2]]
    if len(res.sse) > 2:
        mixed = res.sse[2]
        rows.append((f"{mixed.clients} SSE watchers + {res.polls[2].clients} pollers", mixed.usage))
    for name, u in rows:
        print(
            f"| {name} | {u.server_cpu:.3f} | {u.server_rss_mb:.0f} | {u.sessions_held} / "
            f"{u.sessions_busy:.2f} | {u.pg_cpu:.3f} | {u.client_cpu:.3f} | {u.load1:.2f} |"
        )
    print()
    print(
        "| SSE | connect: wall / server CPU (s) | events in window (evals) | per client "
        "min-max | missed / repeated / out of order / differ | eval latency p50 / p95 / max (s) "
        "| ingest p50 / p95 (s) | fan-out p50 / p95 (s) | spread p95 (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(res.sse):
        name = f"{r.clients} watcher(s)" + (" + pollers" if i == 2 else "")
        print(
            f"| {name} | {r.connect_seconds:.2f} / {r.connect_cpu:.2f} | "
            f"{r.events} ({r.evals}) | "
            f"{r.per_client_min}-{r.per_client_max} | {r.missed} / {r.repeated} / "
            f"{r.out_of_order} / {r.differ} | {fmt(r.latency)} | "
            f"{num(percentile(r.ingest, 0.5))} / {num(percentile(r.ingest, 0.95))} | "
            f"{num(percentile(r.fanout, 0.5))} / {num(percentile(r.fanout, 0.95))} | "
            f"{num(percentile(r.spread, 0.95), 3)} |"
        )
    print()
    print(
        f"| polling (GET trials?limit=50 every {args.poll_every:g} s) | requests/s (offered) | "
        "server CPU per answer (ms) | errors | request latency p50 / p95 / max (s) | evals in "
        "window | eval delay, first answer showing it, p50 / p95 / max (s) | (client, eval) "
        "unseen |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, p in enumerate(res.polls):
        name = f"{p.clients} poller(s)" + (" + SSE watchers" if i == 2 else "")
        print(
            f"| {name} | {p.requests_per_second:.1f} ({p.clients / args.poll_every:.0f}) | "
            f"{num(p.cpu_per_request * 1000, 1)} | {p.errors} | {fmt(p.request_latency)} | "
            f"{p.evals} | {fmt(p.delay)}{' (the seen ones)' if p.unseen else ''} | "
            f"{p.unseen} of {p.clients * p.evals} |"
        )
    errors = [f"{p.clients} pollers: {p.first_error}" for p in res.polls if p.first_error]
    for line in errors:
        print(f"first polling error, {line}")
    one, many = res.sse[0], res.sse[1]
    few, polled = res.polls[0], res.polls[1]
    extra = (many.usage.server_cpu - one.usage.server_cpu) / max(1, many.clients - one.clients)
    demand = polled.clients / args.poll_every * few.cpu_per_request
    print()
    print(
        f"CPU({many.clients} SSE) / CPU({one.clients} SSE) = "
        f"{ratio(many.usage.server_cpu, one.usage.server_cpu)}; "
        f"each extra watcher {extra * 1000:.2f} ms of CPU per second"
    )
    print(
        f"CPU({polled.clients} pollers) / CPU({many.clients} SSE) = "
        f"{ratio(polled.usage.server_cpu, many.usage.server_cpu)} as measured (server), "
        f"{ratio(polled.usage.pg_cpu, many.usage.pg_cpu)} (its PostgreSQL backends); "
        f"offered {polled.clients / args.poll_every:.0f} requests/s x "
        f"{few.cpu_per_request * 1000:.1f} ms (the CPU per answer with {few.clients} pollers) = "
        f"{demand:.2f} CPU s/s, {ratio(demand, many.usage.server_cpu)} x CPU({many.clients} SSE)"
    )
    print(
        f"eval latency p95 ({many.clients} vs {one.clients}) = "
        f"{percentile(many.latency, 0.95):.2f} / {percentile(one.latency, 0.95):.2f} s = "
        f"{ratio(percentile(many.latency, 0.95), percentile(one.latency, 0.95))}"
    )
    ok = True
    for r in res.sse:
        if r.missed or r.repeated or r.out_of_order or r.differ or r.errors:
            ok = False
            print(
                f"!! {r.clients} watcher(s): missed {r.missed}, repeated {r.repeated}, "
                f"out of order {r.out_of_order}, differ {r.differ}, errors {r.errors[:3]}"
            )
        if r.queries_after_close > 0:
            ok = False
            print(
                f"!! {r.clients} watcher(s): the server ran {r.queries_after_close} statements "
                f"in the {r.quiet_seconds:.1f} s after its last client left"
            )
    if ok:
        print(
            "every SSE client received every event of its window once, in order; after each "
            "SSE phase the server ran no statement once its clients had left (the feed stopped)"
        )
    if args.json:
        dump = {
            "args": {k: v for k, v in vars(args).items() if k != "json"},
            "load_before": res.load_before,
            "idle": asdict(res.idle),
            "sse": [asdict(r) for r in res.sse],
            "polling": [asdict(p) for p in res.polls],
        }
        Path(args.json).write_text(json.dumps(dump, indent=1, default=str))
    return ok


def log_findings(workdir: Path) -> list[str]:
    """The distinct errors and warnings in the server's and the worker's logs, counted."""
    found: Counter[str] = Counter()
    error = re.compile(r"^[\w.]+(Error|Exception|Timeout)\b")
    for path in sorted(workdir.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            text = line.strip()
            if (
                error.match(text)
                or text.startswith(("ERROR:", "WARNING:", "CRITICAL:"))
                or any(w in text for w in (" ERROR ", " WARNING ", " CRITICAL "))
            ):
                text = re.sub(r"^\d{4}-\d\d-\d\d [\d:,]+ ", "", text)
                found[f"{path.name}: {text[:160]}"] += 1
    return [f"{n} x {line}" for line, n in found.most_common()]


# -- main ----------------------------------------------------------------------------------------


def start(bench: Bench) -> None:
    args = bench.args
    db = Database(bench.url)
    db.prepare()
    write_token = create_token(db, scope="write", name="bench")
    bench.read_token = create_token(db, scope="read", name="bench")
    db.dispose()
    env = dict(os.environ)
    env.update(
        TUNER_ARTIFACT_ROOT=str(bench.workdir / "artifacts"),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
        TUNER_POLL_INTERVAL=str(args.manager_poll_interval),
        TUNER_STOP_GRACE_SECONDS="2",
        TUNER_EVENTS_POLL_INTERVAL=str(args.events_poll_interval),
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    bench.base_url = f"http://127.0.0.1:{port}"
    server_env = {**env, "TUNER_DATABASE_URL": with_app(bench.url, API_APP)}
    with open(bench.workdir / "server.log", "wb") as out:
        bench.server = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "serve", "--slots", "0", "--port", str(port)],
            cwd=REPO,
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this script, which stops it
        )
    deadline = time.monotonic() + 60
    while True:
        if bench.server.poll() is not None:
            raise RuntimeError(
                f"tuner serve exited: {(bench.workdir / 'server.log').read_text()[-2000:]}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{bench.base_url}/readyz", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("tuner serve did not become ready within 60 s")
        time.sleep(0.2)
    answer = httpx.post(
        f"{bench.base_url}/api/v1/studies",
        json=SPEC,
        headers={"Authorization": f"Bearer {write_token}"},
        timeout=30,
    )
    if answer.status_code != 201 and answer.status_code != 200:
        raise RuntimeError(f"submit: HTTP {answer.status_code}: {answer.text[:500]}")
    worker_env = {**env, "TUNER_DATABASE_URL": with_app(bench.url, WORKER_APP)}
    with open(bench.workdir / "worker.log", "wb") as out:
        bench.worker = subprocess.Popen(
            [sys.executable, "-m", "tuner.cli", "worker", "--slots", "2"],
            cwd=REPO,
            env=worker_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    bench.journal = Journal(bench.url, STUDY)
    bench.sampler = Sampler(bench.url, bench.db_name, bench.server.pid)
    deadline = time.monotonic() + 90
    while bench.journal.evals() < 10:
        if bench.worker.poll() is not None:
            raise RuntimeError(
                f"tuner worker exited: {(bench.workdir / 'worker.log').read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError("no eval event in the journal after 90 s")
        time.sleep(0.5)
    sessions = bench.journal.sessions(bench.db_name)
    log(f"evals are flowing; sessions by application_name: {sessions}")
    if API_APP not in sessions or WORKER_APP not in sessions:
        raise RuntimeError(f"cannot tell the server's sessions from the worker's: {sessions}")


async def run_phases(bench: Bench, load_before: tuple[float, float, float]) -> Results:
    n, every = bench.args.watchers, bench.args.poll_every
    log(f"phase 0: idle, {bench.args.seconds:g} s")
    idle = await idle_phase(bench)
    log("phase 1: 1 SSE watcher")
    one = await sse_phase(bench, "1", 1)
    log(f"phase 2: {n} SSE watchers")
    many = await sse_phase(bench, "2", n)
    log(f"phase 3a: {max(1, n // 10)} pollers every {every:g} s (the CPU of one answer)")
    few = await poll_phase(bench, "3a", max(1, n // 10))
    log(f"phase 3: {n} pollers every {every:g} s")
    polled = await poll_phase(bench, "3", n)
    res = Results(load_before, idle, [one, many], [few, polled])
    if bench.args.mixed:
        log(f"phase 4: {n} SSE watchers while {n} pollers poll")
        watched, polled_too = await mixed_phase(bench, "4", n)
        res.sse.append(watched)
        res.polls.append(polled_too)
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each window")
    parser.add_argument("--watchers", type=int, default=100, help="clients of phases 2 and 3")
    parser.add_argument("--poll-every", type=float, default=0.5, help="the pollers' interval")
    parser.add_argument(
        "--events-poll-interval",
        type=float,
        default=0.5,
        help="TUNER_EVENTS_POLL_INTERVAL of the server (0.5: the default)",
    )
    parser.add_argument(
        "--manager-poll-interval",
        type=float,
        default=0.25,
        help="TUNER_POLL_INTERVAL of the worker (0.25: the default)",
    )
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="add phase 4: the watchers and the pollers at the same time",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the database and temp dir")
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.watchers < 2 or args.poll_every <= 0:
        parser.error("--seconds and --poll-every must be > 0, --watchers >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="tuner-watchers-"))
    db_name, url = create_database(args.pg_admin_url)
    log(f"temp dir {workdir}, database {db_name}")
    bench = Bench(args, workdir, db_name, url)
    ok = False
    try:
        start(bench)
        results = asyncio.run(run_phases(bench, load_before))
        ok = report(bench, results)
        findings = log_findings(workdir)
        if findings:
            print("log lines to look at:")
            for line in findings[:20]:
                print(f"  {line}")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut this short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for closable in (bench.sampler, bench.journal):
            if closable is not None:
                closable.close()
        stop_process(bench.worker)
        stop_process(bench.server)
        if kill_leftover_trainers(workdir):
            log("killed trainers that outlived the worker")
        if args.keep:
            log(f"kept: temp dir {workdir}, database {url}")
        else:
            drop_database(args.pg_admin_url, db_name)
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
