"""A short "trainer" with a few eval steps, for `bench/scale.py`.

Like `bench/trivial_trainer.py` (whose hand-encoded events it writes: no TensorFlow, no
protobuf, so it starts in a few tens of milliseconds), but it lasts a while: `--evals` eval
events of `rmse = f(x)` at steps 1..evals, each after a sleep of `--eval-seconds`, so that a
trial holds its slot for a known time without using the CPU, and the manager ingests evals
while it runs. Last, it writes `DIR/trainer-times.txt` with the wall times at which its code
began and ended (`time.time()`), which `bench/scale.py` compares with the database's timestamps
to tell when a slot became free (the process exits right after).

    python -m bench.steps_trainer --job-dir=/tmp/s1 --x=0.2 --evals=4 --eval-seconds=0.125
"""

from __future__ import annotations

import os
import sys
import time

from bench.trivial_trainer import (
    encode_file_version_event,
    encode_scalar_event,
    frame,
    objective,
    parse_flags,
)

TIMES_FILE = "trainer-times.txt"


def main(argv: list[str]) -> int:
    began = time.time()
    flags = parse_flags(argv)
    job_dir = flags.get("job-dir")
    if not job_dir:
        print("usage: steps_trainer.py --job-dir=DIR [--x=F] [--evals=N] [--eval-seconds=S]")
        return 2
    x = float(flags.get("x", "0"))
    evals = int(flags.get("evals", "4"))
    eval_seconds = float(flags.get("eval-seconds", "0.125"))
    eval_dir = os.path.join(job_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    name = f"events.out.tfevents.{began:.0f}.{os.uname().nodename}.{os.getpid()}"
    with open(os.path.join(eval_dir, name), "wb") as handle:
        handle.write(frame(encode_file_version_event(began)))
        handle.flush()
        for step in range(1, evals + 1):
            time.sleep(eval_seconds)
            # The curve reaches f(x) at the last eval, so the objective is the trivial one's.
            value = objective(x) + 0.1 * (evals - step) / evals
            handle.write(frame(encode_scalar_event(time.time(), step, "rmse", value)))
            handle.flush()
    with open(os.path.join(job_dir, TIMES_FILE), "w", encoding="utf-8") as handle:
        handle.write(f"{began!r} {time.time()!r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
