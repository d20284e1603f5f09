"""Reading steps out of checkpoint bundles that real TensorFlow wrote, without importing it here.

One child process writes every bundle (an Estimator's checkpoint and export, a Keras SavedModel,
an object-based checkpoint big enough for several index blocks); the tests then read and damage
copies of them.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import pytest

from tuner.outputs.bundle import checkpoint_global_step, read_int_variable, savedmodel_global_step

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf

WRITE_BUNDLES = r"""
import sys
from pathlib import Path
import numpy as np
import tensorflow as tf

root = Path(sys.argv[1])
x = np.arange(8, dtype=np.float32).reshape(-1, 1)
y = 2 * x + 1

def input_fn():
    return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(4)

columns = [tf.feature_column.numeric_column("x")]
estimator = tf.estimator.LinearRegressor(
    columns,
    model_dir=str(root / "estimator"),
    config=tf.estimator.RunConfig(save_checkpoints_steps=7, log_step_count_steps=None),
)
estimator.train(input_fn, max_steps=7)
receiver = tf.estimator.export.build_parsing_serving_input_receiver_fn(
    tf.feature_column.make_parse_example_spec(columns)
)
estimator.export_saved_model(str(root / "export"), receiver)

keras = tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)])
keras.compile("sgd", "mse")
keras.fit(x, y, batch_size=4, epochs=3, verbose=0)  # 2 batches an epoch: 6 optimizer steps
keras.save(str(root / "keras"))

# Object-based names, int64 past 32 bits, and over 256 KiB of keys: several data blocks.
filler = {f"v{i:04d}_" + "x" * 200: tf.Variable(float(i)) for i in range(1500)}
tf.train.Checkpoint(
    global_step=tf.Variable(2**40 + 3, dtype=tf.int64),
    small=tf.Variable(-5, dtype=tf.int32),
    vector=tf.Variable([1, 2, 3], dtype=tf.int32),
    rate=tf.Variable(0.5),
    **filler,
).write(str(root / "object" / "ckpt"))
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    done = subprocess.run(
        [sys.executable, "-c", WRITE_BUNDLES, str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def step7(bundles: Path, tmp_path: Path) -> Path:
    """A copy of the Estimator's `model.ckpt-7`, to damage."""
    for path in (bundles / "estimator").glob("model.ckpt-7.*"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / "model.ckpt-7"


def _index_block(index: bytes) -> tuple[int, int]:
    """The offset and size of the index block, from the footer's second handle."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while index[pos] & 0x80:
            value, pos, shift = value | (index[pos] & 0x7F) << shift, pos + 1, shift + 7
        return value | index[pos] << shift, pos + 1

    pos = len(index) - 48
    for _ in range(2):  # the metaindex handle
        _, pos = varint(pos)
    offset, pos = varint(pos)
    size, _ = varint(pos)
    return offset, size


def test_estimator_checkpoint(bundles: Path) -> None:
    assert checkpoint_global_step(bundles / "estimator" / "model.ckpt-7") == 7
    assert checkpoint_global_step(bundles / "estimator" / "model.ckpt-0") == 0


def test_estimator_export(bundles: Path) -> None:
    (export_dir,) = (bundles / "export").iterdir()
    assert savedmodel_global_step(export_dir) == 7


def test_keras_savedmodel_gives_the_optimizer_iterations(bundles: Path) -> None:
    # Keras 2.15 names it `optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE`; it has no global_step.
    assert savedmodel_global_step(bundles / "keras") == 6


def test_object_checkpoint_over_several_blocks(bundles: Path) -> None:
    prefix = bundles / "object" / "ckpt"
    assert checkpoint_global_step(prefix) == 2**40 + 3
    assert read_int_variable(prefix, ["absent", "small/.ATTRIBUTES/VARIABLE_VALUE"]) == -5
    assert read_int_variable(prefix, ["vector/.ATTRIBUTES/VARIABLE_VALUE"]) is None  # not scalar
    assert read_int_variable(prefix, ["rate/.ATTRIBUTES/VARIABLE_VALUE"]) is None  # a float
    assert read_int_variable(prefix, ["absent"]) is None


def test_missing_files(step7: Path, tmp_path: Path) -> None:
    assert checkpoint_global_step(tmp_path / "nothing-here") is None
    assert savedmodel_global_step(tmp_path) is None
    step7.with_name("model.ckpt-7.data-00000-of-00001").unlink()
    assert checkpoint_global_step(step7) is None


@pytest.mark.parametrize(
    "cut",
    [
        lambda data: b"",
        lambda data: data[:1],
        lambda data: data[:47],
        lambda data: data[:-1],  # the footer's magic number is cut
        lambda data: data[-48:],  # the footer alone: its handles point before the file
    ],
    ids=["empty", "one-byte", "under-a-footer", "last-byte-gone", "footer-only"],
)
def test_truncated_index(step7: Path, cut: Callable[[bytes], bytes]) -> None:
    index = step7.with_name("model.ckpt-7.index")
    index.write_bytes(cut(index.read_bytes()))
    assert checkpoint_global_step(step7) is None


def test_flipped_index_byte_fails_the_block_checksum(step7: Path) -> None:
    index = step7.with_name("model.ckpt-7.index")
    data = bytearray(index.read_bytes())
    data[data.index(b"global_step") + 3] ^= 0x01  # b -> c
    index.write_bytes(bytes(data))
    assert read_int_variable(step7, ["global_step", "glocal_step"]) is None


def test_compressed_block_is_refused(step7: Path) -> None:
    index = step7.with_name("model.ckpt-7.index")
    data = bytearray(index.read_bytes())
    offset, size = _index_block(bytes(data))
    end = offset + size
    assert data[end] == 0  # TensorFlow wrote it uncompressed
    data[end] = 1  # snappy, with a checksum that matches, so only the compression refuses it
    crc = google_crc32c.value(bytes(data[offset : end + 1]))
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    data[end + 1 : end + 5] = struct.pack("<I", masked)
    index.write_bytes(bytes(data))
    assert checkpoint_global_step(step7) is None


def test_flipped_data_byte(step7: Path) -> None:
    shard = step7.with_name("model.ckpt-7.data-00000-of-00001")
    data = bytearray(shard.read_bytes())
    seven = struct.pack("<q", 7)
    assert data.count(seven) == 1
    at = data.index(seven)
    data[at] ^= 0x08  # 7 -> 15: still a plausible step, caught only by the entry's crc32c
    shard.write_bytes(bytes(data))
    assert checkpoint_global_step(step7) is None
    data[at] ^= 0x08
    data[-1] ^= 0xFF  # another variable's bytes: the step itself is still good
    shard.write_bytes(bytes(data))
    assert checkpoint_global_step(step7) == 7


def test_reading_never_imports_tensorflow(bundles: Path) -> None:
    script = (
        "import sys; from pathlib import Path\n"
        "from tuner.outputs.bundle import checkpoint_global_step\n"
        "print(checkpoint_global_step(Path(sys.argv[1])), 'tensorflow' in sys.modules)"
    )
    prefix = bundles / "estimator" / "model.ckpt-7"
    done = subprocess.run(
        [sys.executable, "-c", script, str(prefix)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.stdout.split() == ["7", "False"], done.stderr
