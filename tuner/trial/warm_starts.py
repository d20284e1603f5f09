"""Warm trial starts: trials forked from a parent that already imported TensorFlow.

A trainer entry with `preload: [tensorflow, tensorflow_estimator]` gets a preloading parent
(`tuner/trial/zygote.py`) per distinct (Python, working dir, environment, preload list), started by
the manager with that Python and kept while the manager runs. Each trial is a fork of it that
becomes what a cold start would be (see the zygote's docstring); the manager never imports
TensorFlow itself.

Why not `multiprocessing`'s forkserver: it runs the manager's own interpreter with the
manager's environment, one server per process, and its children run `multiprocessing`'s
bootstrap and stay the server's children, so neither the trainer's Python, working dir and
environment, nor a trial session whose exit status the manager reaps, can be had without its
private APIs. The zygote is a few dozen lines of standard library.

The trial is re-parented to the manager, a child subreaper (`PR_SET_CHILD_SUBREAPER`, Linux):
the manager `waitpid`s it for its real exit status, and a parent that dies mid-study takes no
trial with it. Being a subreaper also makes the manager the parent of orphans of its trials;
those in a trial's process group are reaped after the trial (`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.domain.trainers import Trainer
from tuner.trial.execution import TrialCommand, TrialProcess, trial_environment

__all__ = ["WarmStartError", "WarmStarts", "set_child_subreaper"]

logger = logging.getLogger(__name__)

ZYGOTE_SCRIPT = Path(__file__).with_name("zygote.py")
_PR_SET_CHILD_SUBREAPER = 36
#: How long a parent may take to import its modules before trials of it start cold.
READY_TIMEOUT = 180.0
#: How long a fork request may take before the parent is taken for stuck.
FORK_TIMEOUT = 10.0
#: Parents that die or fail to get ready this many times in a row: the trainer starts cold.
MAX_FAILURES = 3
#: Trials whose warm and cold starts both failed before any eval, after which a warm-start
#: failure is taken for the trainer's own and not retried cold any more.
MAX_CONFIRMED_FAILURES = 2


class WarmStartError(Exception):
    """A warm start could not be made; the trial starts cold instead."""


_subreaper = False


def set_child_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (once; False if impossible)."""
    global _subreaper
    if _subreaper:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    _subreaper = True
    return True


def reap_orphans(groups: set[int]) -> None:
    """Reap exited orphans of ended trials (their process groups); forget emptied groups."""
    for pgid in list(groups):
        while True:
            try:
                waited = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                groups.discard(pgid)
                break
            if waited is None:
                break


@dataclass(frozen=True)
class ParentKey:
    """What makes two trainers' preloading parents interchangeable."""

    python: str
    working_dir: str
    env: tuple[tuple[str, str], ...]
    preload: tuple[str, ...]


class PreloadingParent:
    """One zygote process and the manager's end of its control socket."""

    def __init__(self, key: ParentKey, log_path: Path) -> None:
        self.key = key
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.ready_info: dict[str, Any] | None = None
        self.failure: str | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_path, "ab") as log:
                self.popen = subprocess.Popen(
                    [
                        key.python,
                        str(ZYGOTE_SCRIPT),
                        str(theirs.fileno()),
                        ",".join(key.preload),
                    ],
                    cwd=key.working_dir,
                    env=dict(key.env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check(self) -> str:
        """`warming`, `ready` or `failed` (then `failure` says why); never blocks."""
        if self.failure is not None:
            return "failed"
        if self.popen.poll() is not None:
            self._fail(f"the preloading parent exited ({self._exit()}){self._log_hint()}")
            return "failed"
        if self.ready_info is not None:
            return "ready"
        readable, _, _ = select.select([self.sock], [], [], 0)
        if readable:
            message = self._receive()
            if message is None:
                self._fail(f"the preloading parent closed its socket{self._log_hint()}")
                return "failed"
            if not message.get("ready"):
                self._fail(f"preloading failed: {message.get('error')}")
                return "failed"
            self.ready_info = message
            logger.info(
                "warm starts ready for %s: %s imported in %.1f s (pid %d)",
                self.key.working_dir,
                ", ".join(self.key.preload),
                message.get("seconds", 0.0),
                self.pid,
            )
            if message.get("threads", 1) > 1:
                logger.warning(
                    "the preloading parent runs %d Python threads after its imports; a fork "
                    "keeps only one of them",
                    message["threads"],
                )
            return "ready"
        if time.monotonic() - self.started_at > READY_TIMEOUT:
            self._fail(f"preloading took more than {READY_TIMEOUT:.0f} s")
            return "failed"
        return "warming"

    def fork(self, request: dict[str, Any], log_fd: int) -> int:
        """Ask for a trial; its pid (a child of this process once the answer arrives)."""
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], [log_fd])
            readable, _, _ = select.select([self.sock], [], [], FORK_TIMEOUT)
            if not readable:
                raise WarmStartError(f"no answer from the preloading parent in {FORK_TIMEOUT} s")
            message = self._receive()
        except OSError as exc:
            raise WarmStartError(f"the preloading parent is gone ({exc})") from None
        if message is None:
            raise WarmStartError(f"the preloading parent is gone ({self._exit()})")
        if "pid" not in message:
            raise WarmStartError(str(message.get("error", message)))
        return int(message["pid"])

    def _receive(self) -> dict[str, Any] | None:
        data = self.sock.recv(1 << 16)
        if not data:
            return None
        message: dict[str, Any] = json.loads(data)
        return message

    def _fail(self, why: str) -> None:
        self.failure = why
        self.close()

    def _exit(self) -> str:
        code = self.popen.poll()
        if code is None:
            return "still running"
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"

    def _log_hint(self) -> str:
        return f"; see {self.log_path}"

    def close(self) -> None:
        """Close the socket (the parent exits on its own) and reap the parent."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class _TrainerRecord:
    #: Parents that died or failed to get ready, in a row.
    failures: int = 0
    #: Trials that failed warm and then cold too, before any eval.
    confirmed_failures: int = 0
    #: Why this trainer starts cold here (None: it starts warm).
    disabled: str | None = None


class WarmStarts:
    """The manager's preloading parents, by trainer; everything here falls back to cold."""

    def __init__(self, log_dir: Path, *, enabled: bool = True) -> None:
        self.log_dir = log_dir
        self.enabled = enabled
        self._parents: dict[ParentKey, PreloadingParent] = {}
        self._records: dict[ParentKey, _TrainerRecord] = {}
        #: Process groups of ended trials whose orphans may still need reaping.
        self._orphan_groups: set[int] = set()

    def trial_ended(self, pgid: int) -> None:
        """A trial's leader was reaped: what it left in its group is ours to reap (only once
        this process is a subreaper; before, orphans go to init)."""
        if _subreaper:
            self._orphan_groups.add(pgid)

    def reap_orphans(self) -> None:
        """Reap exited orphans of ended trials; forget groups with nothing left."""
        reap_orphans(self._orphan_groups)

    def key(self, trainer: Trainer, base_env: Mapping[str, str] | None = None) -> ParentKey | None:
        """The parent a trainer's trials fork from, or None if it starts cold."""
        if not (self.enabled and trainer.preload and trainer.module):
            return None
        env = trial_environment(trainer, os.environ, base_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return ParentKey(
            python=trainer.argv[0],
            working_dir=str(trainer.working_dir),
            env=tuple(sorted(env.items())),
            preload=tuple(trainer.preload),
        )

    def status(self, key: ParentKey) -> str:
        """`cold` (start it cold), `warming` (wait) or `ready`; starts a parent if needed."""
        record = self._records.setdefault(key, _TrainerRecord())
        if record.disabled is not None:
            return "cold"
        parent = self._parents.get(key)
        if parent is None:
            if not set_child_subreaper():
                self._disable(key, "this system cannot re-parent trials (not Linux)")
                return "cold"
            try:
                parent = PreloadingParent(key, self._log_path(key))
            except (OSError, ValueError) as exc:
                self._failed(key, f"could not start the preloading parent: {exc}")
                return "cold"
            self._parents[key] = parent
        state = parent.check()
        if state == "failed":
            self._parents.pop(key, None)
            self._failed(key, parent.failure or "the preloading parent failed")
            return self.status(key) if record.disabled is None else "cold"
        return state

    def start(
        self, key: ParentKey, trainer: Trainer, command: TrialCommand, log_path: Path
    ) -> TrialProcess:
        """Fork a trial from the key's ready parent (`WarmStartError`: start it cold)."""
        parent = self._parents.get(key)
        if parent is None or parent.check() != "ready":
            raise WarmStartError("the preloading parent is not ready")
        module_args = list(command.argv[len(trainer.argv) :])
        request = {
            "module": trainer.module,
            "args": module_args,
            "env": command.env,
            "cwd": str(command.cwd),
            "title": " ".join(command.argv),
        }
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            pid = parent.fork(request, log_fd)
        except WarmStartError as exc:
            self._parents.pop(key, None)
            parent.close()
            self._failed(key, str(exc))
            raise
        finally:
            os.close(log_fd)
        # Failures count in a row until a trial starts warm (a parent that gets ready and then
        # dies at every fork is given up too).
        self._records.setdefault(key, _TrainerRecord()).failures = 0
        return TrialProcess.adopt(pid)

    def wake_fds(self) -> list[int]:
        """Sockets of parents still importing: readable when one becomes ready."""
        return [
            p.sock.fileno()
            for p in self._parents.values()
            if p.ready_info is None and p.failure is None
        ]

    def should_retry_cold(self, key: ParentKey) -> bool:
        """A warm trial failed before its first eval: run it again cold?

        Yes, until the cold retries of this trainer failed too `MAX_CONFIRMED_FAILURES` times
        (then such failures are the trainer's own, and running them twice only costs).
        """
        record = self._records.setdefault(key, _TrainerRecord())
        return record.disabled is None and record.confirmed_failures < MAX_CONFIRMED_FAILURES

    def cold_retry_failed(self, key: ParentKey) -> None:
        self._records.setdefault(key, _TrainerRecord()).confirmed_failures += 1

    def cold_retry_worked(self, key: ParentKey, why: str) -> None:
        """A trial that failed warm got further cold: this trainer starts cold from now on."""
        self._disable(key, why)

    def note(self, key: ParentKey | None) -> str | None:
        """Why a trainer that asked for warm starts runs cold here, if it does."""
        if key is None:
            return None
        record = self._records.get(key)
        return None if record is None else record.disabled

    def _failed(self, key: ParentKey, why: str) -> None:
        record = self._records.setdefault(key, _TrainerRecord())
        record.failures += 1
        logger.warning("warm starts: %s", why)
        if record.failures >= MAX_FAILURES:
            self._disable(key, f"{why} ({record.failures} times in a row)")

    def _disable(self, key: ParentKey, why: str) -> None:
        record = self._records.setdefault(key, _TrainerRecord())
        if record.disabled is None:
            record.disabled = why
            logger.warning("warm starts off for %s: %s", key.working_dir, why)
        parent = self._parents.pop(key, None)
        if parent is not None:
            parent.close()

    def _log_path(self, key: ParentKey) -> Path:
        name = "-".join(m.replace(".", "_") for m in key.preload)[:60] or "parent"
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
        return self.log_dir / f"{name}-{digest}.log"

    def close(self) -> None:
        for parent in self._parents.values():
            parent.close()
        self._parents.clear()
