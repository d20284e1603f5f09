"""A manager's watchdog: its trials die with it, or when it stops renewing their leases.

One small process per manager (`python -m tuner.trial.watchdog`, standard library only), in its own
session, reading commands from a pipe whose other end only the manager holds:

    watch <pgid>        a trial process group to guard
    forget <pgid>       the manager has reaped it
    deadline <seconds>  kill every guarded group if no new deadline comes within this long

When the pipe closes (the manager exited or was killed, on any host) or the deadline passes
(the manager is paused by SIGSTOP, frozen, or could not renew its leases), every guarded group
gets SIGTERM, then SIGKILL after the grace period given on the command line. No trial outlives
its manager's lease. `PR_SET_PDEATHSIG` would cover only death, not a pause, and is tied to the
thread that forked (the embedded manager of `tuner serve` is a thread).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from typing import IO

__all__ = ["Watchdog", "main"]


def _signal(pgids: set[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_all(pgids: set[int], grace: float) -> None:
    _signal(pgids, signal.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end and any(_alive(p) for p in pgids):
        time.sleep(0.05)
    _signal(pgids, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    grace = float(args[0]) if args else 5.0
    guarded: set[int] = set()
    deadline: float | None = None
    stdin = sys.stdin.buffer
    pending = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([stdin], [], [], timeout)
        if not ready:  # the deadline passed without a renewal
            _kill_all(guarded, grace)
            guarded.clear()
            deadline = None
            continue
        chunk = os.read(stdin.fileno(), 4096)
        if not chunk:  # the manager is gone
            _kill_all(guarded, grace)
            return 0
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            command, _, value = line.decode().partition(" ")
            if command == "watch":
                guarded.add(int(value))
            elif command == "forget":
                guarded.discard(int(value))
            elif command == "deadline":
                deadline = time.monotonic() + float(value)


class Watchdog:
    """The manager's end of the pipe; started on first use, restarted if it died."""

    def __init__(self, grace_seconds: float) -> None:
        self._grace = grace_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._guarded: set[int] = set()

    def _pipe(self) -> IO[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tuner.trial.watchdog", str(self._grace)],
                stdin=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
            assert self._process.stdin is not None
            for pgid in self._guarded:
                self._process.stdin.write(f"watch {pgid}\n".encode())
        assert self._process.stdin is not None
        return self._process.stdin

    def _send(self, line: str) -> None:
        try:
            pipe = self._pipe()
            pipe.write(f"{line}\n".encode())
            pipe.flush()
        except (BrokenPipeError, OSError):
            self._process = None  # restarted (with every guarded group) on the next command

    def watch(self, pgid: int) -> None:
        self._guarded.add(pgid)
        self._send(f"watch {pgid}")

    def forget(self, pgid: int) -> None:
        self._guarded.discard(pgid)
        self._send(f"forget {pgid}")

    def renew(self, seconds: float) -> None:
        """Kill the guarded groups unless renewed again within `seconds`."""
        self._send(f"deadline {seconds}")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        """Stop guarding: closes the pipe, so the watchdog kills what is left and exits."""
        if self._process is None:
            return
        try:
            if self._process.stdin is not None:
                self._process.stdin.close()
            self._process.wait(timeout=self._grace + 5)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
        self._process = None


if __name__ == "__main__":
    sys.exit(main())
