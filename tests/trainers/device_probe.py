"""A trainer that records the devices and thread counts it was given, then trains like the
synthetic one (no TensorFlow).

Writes `<job-dir>/devices.json`: `CUDA_VISIBLE_DEVICES`, `TF_NUM_INTRAOP_THREADS` and
`OMP_NUM_THREADS` as Python sees them (`os.environ`) and as a C library does (`getenv`, which is
what CUDA and TensorFlow read: a warm trial must have them in its process environment, not only
in `os.environ`), its pid and wall-clock start; then runs `examples.synthetic.task` with its
flags and adds its end. A variable that is not set is `null`. Its whole environment is kept
too (`environ`).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from pathlib import Path

from examples.synthetic import task

KEYS = ("CUDA_VISIBLE_DEVICES", "TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS")


def _c_getenv(name: str) -> str | None:
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    value: bytes | None = libc.getenv(name.encode())
    return None if value is None else value.decode()


def main() -> int:
    args = sys.argv[1:]
    job_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("--job-dir=")))
    job_dir.mkdir(parents=True, exist_ok=True)
    facts: dict[str, object] = {
        "pid": os.getpid(),
        "env": {key: os.environ.get(key) for key in KEYS},
        "c_env": {key: _c_getenv(key) for key in KEYS},
        "started": time.time(),
        # Everything it was given: a trainer must never see the service's own variables.
        "environ": dict(os.environ),
    }
    record = job_dir / "devices.json"
    record.write_text(json.dumps(facts))
    code = task.main(args)
    facts["ended"] = time.time()
    record.write_text(json.dumps(facts))
    return code


if __name__ == "__main__":
    sys.exit(main())
