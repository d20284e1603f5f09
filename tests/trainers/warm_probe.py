"""A trainer that records what its process looks like, then trains like the synthetic one.

Writes `<job-dir>/probe.json` (argv, `__name__`, working dir, environment, session, stdio,
signal dispositions, a NumPy draw) so that a warm and a cold start can be compared, then runs
`examples.synthetic.task` with the remaining flags. `--probe-mode fail-if-forked` exits 3
before writing anything when it runs in a fork of a process that imported
`tests.trainers.warm_probe_state` (a library that refuses to be used across a fork).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import numpy as np

from examples.synthetic import task
from tests.trainers import warm_probe_state

ENV_KEYS = (
    "TF_CONFIG",
    "CLOUD_ML_TRIAL_ID",
    "CLOUD_ML_JOB_ID",
    "CLOUD_ML_HP_METRIC_FILE",
    "AIP_MODEL_DIR",
    "AIP_CHECKPOINT_DIR",
    "AIP_TENSORBOARD_LOG_DIR",
    "PYTHONUNBUFFERED",
    "PROBE_REGISTRY_VALUE",
)


def describe(args: list[str]) -> dict[str, object]:
    stdin = os.fstat(0)
    return {
        "argv": sys.argv[1:],
        "argv0": sys.argv[0],
        "name": __name__,
        "cwd": os.getcwd(),
        "path0": sys.path[0],
        "env": {key: os.environ.get(key) for key in ENV_KEYS},
        "own_session": os.getsid(0) == os.getpid(),
        "own_group": os.getpgrp() == os.getpid(),
        "stdin_is_devnull": stat.S_ISCHR(stdin.st_mode)
        and os.stat(os.devnull).st_rdev == stdin.st_rdev,
        "stdout": os.readlink("/proc/self/fd/1"),
        "stderr": os.readlink("/proc/self/fd/2"),
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "sigint_python": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
        "numpy_draw": float(np.random.rand()),
        "forked_from_importer": os.getpid() != warm_probe_state.IMPORTED_IN,
    }


def main() -> int:
    args = sys.argv[1:]
    mode = "ok"
    for arg in list(args):
        if arg.startswith("--probe-mode="):
            mode = arg.split("=", 1)[1]
            args.remove(arg)
    job_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--job-dir="))
    facts = describe(args)
    if mode == "fail-if-forked" and facts["forked_from_importer"]:
        print("warm_probe_state: used across a fork, refusing", file=sys.stderr, flush=True)
        return 3
    if mode == "raise":
        raise RuntimeError("probe asked to fail")
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / "probe.json").write_text(json.dumps(facts, indent=1))
    print("probe written", flush=True)
    return task.main(args)


if __name__ == "__main__":
    sys.exit(main())
