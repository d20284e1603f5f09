"""A preloading parent for warm trial starts: import once, fork a trial per request.

Run by the manager with the trainer's own Python, working dir and environment, as a script
(standard library only, so it needs nothing from the tuner's environment):

    python tuner/trial/zygote.py <control fd> <module,module,...>

It imports the listed modules (no device is initialised: importing TensorFlow does not touch
one), says `{"ready": true, ...}` on the control socket (a `SOCK_SEQPACKET` pair, one message
per request), then serves requests: a JSON `{"module", "args", "env", "cwd", "title"}` with the
trial's log file as a passed file descriptor. Each trial is forked twice so that the
intermediate process exits at once and the trial is re-parented to the manager (a child
subreaper): the manager waits for it like any child of its own, with its real exit status,
whatever happens to this process later. The trial then becomes what a cold `python -m MODULE`
would be: its own session and process group, stdin from /dev/null, stdout and stderr to the
log, the trial's environment, argv and working dir, fresh random state, and the module run as
`__main__`; the interpreter's normal shutdown (atexit, non-daemon threads, flushing) ends it.

When the control socket closes (the manager exited), this process exits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

MAX_MESSAGE = 1 << 20
_setproctitle: Any = None


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode())


def _preload(modules: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    for name in modules:
        __import__(name)
    return {
        "ready": True,
        "pid": os.getpid(),
        "preloaded": modules,
        "seconds": round(time.monotonic() - started, 3),
        "threads": threading.active_count(),
    }


def _fork_trial(sock: socket.socket, request: dict[str, Any], log_fd: int) -> dict[str, Any] | None:
    """Fork the trial (returns its request in the trial process, None in this one)."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        os.close(read_end)
        try:
            trial = os.fork()
        except OSError:
            os._exit(1)
        if trial == 0:
            os.close(write_end)
            sock.close()
            _become_trial(request, log_fd)
            return request
        os.write(write_end, str(trial).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read()
    os.waitpid(intermediate, 0)
    os.close(log_fd)
    if not written:
        _send(sock, {"error": "could not fork the trial"})
    else:
        _send(sock, {"pid": int(written)})
    return None


def _become_trial(request: dict[str, Any], log_fd: int) -> None:
    """Turn this fork into what a cold start of the trial would be."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # `random` reseeds itself after a fork; NumPy's legacy global generator does not, and every
    # trial would draw the same numbers as its siblings.
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    if _setproctitle is not None:
        _setproctitle.setproctitle(request["title"])
    # The module runs afresh as `__main__` even if it was preloaded (its imports stay).
    sys.modules.pop(request["module"], None)
    sys.argv = [request["module"], *request["args"]]


def _serve(sock: socket.socket) -> dict[str, Any] | None:
    """Answer fork requests until the socket closes; in a trial, return its request."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
        except InterruptedError:
            continue
        if not data:
            for fd in fds:
                os.close(fd)
            return None
        try:
            request = json.loads(data)
            if len(fds) != 1:
                raise ValueError(f"expected the log file's descriptor, got {len(fds)}")
        except ValueError as exc:
            for fd in fds:
                os.close(fd)
            _send(sock, {"error": f"bad request: {exc}"})
            continue
        try:
            trial = _fork_trial(sock, request, fds[0])
        except OSError as exc:
            _send(sock, {"error": f"could not fork the trial: {exc}"})
            continue
        if trial is not None:
            return trial


def _title_setup() -> Any:
    """`setproctitle`, set up here once: its first call moves the environment to make room
    for longer titles (about 15 ms), which each trial would otherwise pay."""
    try:
        import setproctitle
    except ImportError:  # optional: `ps` then shows this process's command line for trials
        return None
    setproctitle.setproctitle(setproctitle.getproctitle())
    return setproctitle


def main() -> None:
    global _setproctitle
    _setproctitle = _title_setup()
    control_fd = int(sys.argv[1])
    modules = [m for m in sys.argv[2].split(",") if m] if len(sys.argv) > 2 else []
    # As under `python -m`: the working dir first on the path, not this script's dir (whose
    # modules would shadow the trainer's).
    sys.path[0] = os.getcwd()
    sock = socket.socket(fileno=control_fd)
    try:
        ready = _preload(modules)
    except BaseException as exc:
        _send(sock, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        raise SystemExit(1) from None
    _send(sock, ready)
    trial = _serve(sock)
    if trial is None:
        return
    import runpy

    runpy.run_module(trial["module"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
