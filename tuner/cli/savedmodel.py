"""Checking a pulled SavedModel: loaded by TensorFlow in a child process.

The CLI process itself never imports TensorFlow; only this check does, in its own process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tuner.domain.errors import TunerError

_CHECK = r"""
import sys
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

path = sys.argv[1]


def tag_sets():
    proto = saved_model_pb2.SavedModel()
    pb = Path(path, "saved_model.pb")
    if pb.is_file():
        proto.ParseFromString(pb.read_bytes())
    return [list(m.meta_info_def.tags) for m in proto.meta_graphs]


try:
    model = tf.saved_model.load(path)
except Exception as first:  # e.g. no MetaGraph tagged "serve": try the tags it has
    for tags in tag_sets():
        try:
            model = tf.saved_model.load(path, tags=tags)
            print(f"loaded the MetaGraph tagged {','.join(tags)}")
            break
        except Exception:
            continue
    else:
        raise first


def describe(structure, kind, path=""):
    if isinstance(structure, dict):
        for key, value in sorted(structure.items()):
            describe(value, kind, f"{path}.{key}" if path else str(key))
    elif isinstance(structure, (list, tuple)):
        for i, value in enumerate(structure):
            describe(value, kind, f"{path}[{i}]")
    elif hasattr(structure, "dtype"):
        print(f"  {kind} {path or '(value)'}: {structure.dtype.name} {structure.shape}")


names = sorted(model.signatures)
if not names:
    print("no signatures (the model loads; call its functions directly)")
for name in names:
    fn = model.signatures[name]
    args, kwargs = fn.structured_input_signature
    print(f"signature {name}:")
    describe(list(args), "input ")
    describe(kwargs, "input ")
    describe(fn.structured_outputs, "output")
"""


def describe_signatures(export_dir: Path, *, timeout: float = 300) -> str:
    """Load a SavedModel and list every signature with its inputs and outputs.

    Any signature is fine (a canned estimator exported over raw features has only `predict`);
    it raises `TunerError` only if TensorFlow cannot load the model.
    """
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
    return done.stdout.rstrip()
