"""Launching and stopping trial processes, by AI Platform's trainer conventions.

A trial runs as `<trainer argv> <fixed args> --name=value ... <output-dir-flag>=<dir>` with
`TF_CONFIG={"task": {"trial": "<n>"}}`, in its own session (so its whole process group can be
signalled and a terminal's Ctrl-C does not reach it), with stdout and stderr in one log file.
No shell is ever involved: each value is one argv element.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuner.domain.trainers import Trainer
from tuner.outputs.hypertune import METRIC_FILE
from tuner.outputs.layout import VERTEX_MODEL_DIR
from tuner.study.sampling import format_flag_value
from tuner.trial.environment import ordinary_environment, passed_environment


@dataclass(frozen=True)
class TrialCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def build_command(
    trainer: Trainer,
    *,
    args: list[str],
    params: Mapping[str, Any],
    output_dir_flag: str,
    output_dir: Path,
    trial_number: int,
    study_name: str = "",
    base_env: Mapping[str, str] | None = None,
) -> TrialCommand:
    """The argv and environment of one trial."""
    argv = [*trainer.argv, *args]
    argv += [f"--{name}={format_flag_value(value)}" for name, value in params.items()]
    argv.append(f"{output_dir_flag}={output_dir}")
    env = trial_environment(trainer, os.environ, base_env)
    env.update(cloud_ml_environment(output_dir, trial_number=trial_number, job_id=study_name))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return TrialCommand(argv=argv, env=env, cwd=trainer.working_dir)


def trial_environment(
    trainer: Trainer, environ: Mapping[str, str], base_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Built, not inherited (`tuner.trial.environment`): `base_env` (default: the ordinary
    variables of `environ`), what the entry passes on purpose, then the entry's `env`."""
    env = dict(ordinary_environment(environ) if base_env is None else base_env)
    env.update(passed_environment(trainer.pass_env, environ))
    env.update(trainer.env)
    return env


def cloud_ml_environment(output_dir: Path, *, trial_number: int, job_id: str) -> dict[str, str]:
    """What AI Platform and Vertex tell a trial through its environment, inside its own dir.

    `cloudml-hypertune` writes to `CLOUD_ML_HP_METRIC_FILE` (default: one file shared by the
    whole machine), so each trial gets its own; the `AIP_*` dirs follow Vertex's layout of a
    tuning trial (`<base output dir>/<trial>/model`, `.../checkpoints`, `.../logs`).
    """
    trial = str(trial_number)
    return {
        "TF_CONFIG": json.dumps({"task": {"trial": trial}}),
        "CLOUD_ML_TRIAL_ID": trial,
        "CLOUD_ML_JOB_ID": job_id,
        "CLOUD_ML_HP_METRIC_FILE": str(output_dir / METRIC_FILE),
        "AIP_MODEL_DIR": str(output_dir / VERTEX_MODEL_DIR),
        "AIP_CHECKPOINT_DIR": str(output_dir / "checkpoints"),
        "AIP_TENSORBOARD_LOG_DIR": str(output_dir / "logs"),
    }


class ChildProcess(Protocol):
    """What a trial's process must answer: `subprocess.Popen`, or an adopted child."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class AdoptedChild:
    """A child this process did not fork itself (a warm trial, re-parented to it as a child
    subreaper): waited for by pid, with the same exit codes as `Popen` (negative: a signal)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                waited, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped elsewhere: its status is lost; it is gone all the same.
                self.returncode = -signal.SIGKILL
                return self.returncode
            if waited:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode


class TrialProcess:
    """A running trial: its own process group, stopped with SIGTERM then SIGKILL."""

    def __init__(self, popen: ChildProcess, *, warm: bool = False) -> None:
        self._popen = popen
        #: Whether it was forked from a preloading parent (`tuner.trial.warm_starts`).
        self.warm = warm
        self.stop_requested_at: float | None = None
        self.killed = False
        self._exit_fd: int | None = None

    @classmethod
    def start(cls, command: TrialCommand, log_path: Path) -> TrialProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=command.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(popen)

    @classmethod
    def adopt(cls, pid: int) -> TrialProcess:
        """A warm trial: a child of this process by re-parenting, not by its own fork."""
        return cls(AdoptedChild(pid), warm=True)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        code = self._popen.poll()
        if code is not None and self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        return code

    def exit_fd(self) -> int | None:
        """A file descriptor that becomes readable when the process exits (Linux pidfd).

        Lets the manager sleep until a trial ends instead of noticing it a poll interval later.
        None where pidfds are not available, or once the process has been reaped.
        """
        if self._exit_fd is None and self._popen.returncode is None:
            pidfd_open = getattr(os, "pidfd_open", None)
            if pidfd_open is not None:
                try:
                    self._exit_fd = pidfd_open(self.pid)
                except OSError:
                    return None
        return self._exit_fd

    def request_stop(self) -> bool:
        """Send SIGTERM to the process group (once); `enforce_stop` kills it after the grace.

        Returns whether the process was still running (a stop was, or had been, requested).
        """
        if self.stop_requested_at is not None:
            return True
        if self.poll() is not None:
            return False
        self.stop_requested_at = time.monotonic()
        signal_group(self.pid, signal.SIGTERM)
        return True

    def enforce_stop(self, grace_seconds: float) -> None:
        """SIGKILL the group if it outlived the grace period after SIGTERM."""
        if self.stop_requested_at is None or self.killed:
            return
        if time.monotonic() - self.stop_requested_at >= grace_seconds:
            signal_group(self.pid, signal.SIGKILL)
            self.killed = True

    def stop(self, grace_seconds: float) -> int:
        """Stop and wait: SIGTERM, then SIGKILL after the grace period; return the exit code."""
        self.request_stop()
        try:
            return self._popen.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            signal_group(self.pid, signal.SIGKILL)
            self.killed = True
            return self._popen.wait()
        finally:
            # Children that ignored SIGTERM but outlived the leader are killed too.
            signal_group(self.pid, signal.SIGKILL)
            self.poll()


def wait_for_exit(processes: list[TrialProcess], timeout: float, also: Sequence[int] = ()) -> None:
    """Sleep up to `timeout` seconds, waking as soon as one of `processes` exits (or one of
    the file descriptors `also` becomes readable)."""
    fds = [fd for fd in (p.exit_fd() for p in processes) if fd is not None] + list(also)
    if not fds:
        time.sleep(timeout)
        return
    select.select(fds, [], [], timeout)


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def process_exists(pid: int) -> bool:
    """Whether a process runs (a zombie, waiting for its parent to reap it, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


def tail_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `count` lines of a log file (reading at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-count:]
