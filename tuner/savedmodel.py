"""Checking a pulled SavedModel: loaded by TensorFlow in a child process.

The CLI process itself never imports TensorFlow; only this check does, in its own process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tuner.errors import TunerError

_CHECK = r"""
import sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
names = sorted(model.signatures)
if not names:
    sys.exit("the SavedModel has no signatures")
for name in names:
    fn = model.signatures[name]
    inputs = fn.structured_input_signature[1]
    print(f"signature {name}:")
    for key, spec in sorted(inputs.items()):
        print(f"  input  {key}: {spec.dtype.name} {spec.shape}")
    for key, spec in sorted(fn.structured_outputs.items()):
        print(f"  output {key}: {spec.dtype.name} {spec.shape}")
"""


def describe_signatures(export_dir: Path, *, timeout: float = 300) -> str:
    """Load a SavedModel and list its signatures; raise `TunerError` if it does not load."""
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, str(export_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise TunerError(f"{export_dir}: the SavedModel does not load:\n{tail}")
    if "serving_default" not in done.stdout:
        raise TunerError(f"{export_dir}: no serving_default signature\n{done.stdout}")
    return done.stdout.rstrip()
