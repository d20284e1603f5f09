"""Tests of `tuner.outputs.events` against event files written by real TensorFlow
(in a subprocess)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import google_crc32c
import pytest

from tuner.domain.errors import EventFileError
from tuner.outputs.events import (
    CheckpointPathValue,
    EvalDirWatcher,
    EventFileReader,
    FileProblem,
    ScalarValue,
    parse_event,
)

# Runs once per session: writes every event file the tests need, plus what TF says it wrote.
_GENERATE = textwrap.dedent(
    """
    import json, os, shutil, sys
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    tf.get_logger().setLevel("ERROR")
    out = sys.argv[1]
    expected = {}
    f32 = lambda v: float(np.float32(v))
    V = tf.compat.v1.Summary.Value

    # TF1: simple_value summaries (exact tags), other kinds to skip, checkpoint_path.
    tf1 = []
    with tf.Graph().as_default():
        writer = tf.compat.v1.summary.FileWriter(os.path.join(out, "tf1"))
        def batch(steps):
            for step in steps:
                tags = {"rmse": 1.0 / step, "metrics/rmse": 2.0 / step, "rmse_extra": 10.0 + step}
                values = [V(tag=t, simple_value=v) for t, v in tags.items()]
                values.append(V(tag="hist", histo=tf.compat.v1.HistogramProto(min=0, max=1)))
                values.append(V(tag="vector", tensor=tf.make_tensor_proto([1.0, 2.0])))
                values.append(V(tag="count", tensor=tf.make_tensor_proto(np.int64(7 * step))))
                values.append(V(tag="half", tensor=tf.make_tensor_proto(np.float16(1.5))))
                values.append(V(tag="one", tensor=tf.make_tensor_proto([[0.75]], tf.float64)))
                writer.add_summary(tf.compat.v1.Summary(value=values), step)
                tf1.extend([step, t, f32(v)] for t, v in tags.items())
                tf1.extend([[step, "count", 7.0 * step], [step, "half", 1.5], [step, "one", 0.75]])
            ckpt = summary_pb2.Summary.Value(
                tag="checkpoint_path",
                tensor=tf.make_tensor_proto("/x/model.ckpt-%d" % steps[-1], dtype=tf.string),
            )
            writer.add_summary(summary_pb2.Summary(value=[ckpt]), steps[-1])
            tf1.append([steps[-1], "checkpoint_path", "/x/model.ckpt-%d" % steps[-1]])
        batch([1, 2])
        writer.flush()
        [name] = os.listdir(os.path.join(out, "tf1"))
        shutil.copy(os.path.join(out, "tf1", name), os.path.join(out, "tf1_batch1"))
        expected["tf1_batch1"] = list(tf1)
        batch([3])
        writer.close()
    expected["tf1"] = tf1

    # TF2: tensor summaries (tensor_content), plus histogram/text summaries to skip.
    tf2 = []
    writer = tf.summary.create_file_writer(os.path.join(out, "tf2"))
    with writer.as_default():
        for step in (1, 2, 3):
            tf.summary.scalar("metrics/accuracy", 0.1 * step, step=step)
            tf.summary.write("double", tf.constant(0.1 * step, tf.float64), step=step)
            tf.summary.write("int", tf.constant(3 * step, tf.int32), step=step)
            tf.summary.histogram("weights", [1.0, 2.0, 3.0], step=step)
            tf.summary.text("note", "hello", step=step)
            tf2 += [[step, "metrics/accuracy", f32(0.1 * step)], [step, "double", 0.1 * step]]
            tf2.append([step, "int", 3.0 * step])
    writer.close()
    expected["tf2"] = tf2

    # A real Estimator: training events in model_dir, eval events in eval/ and eval_holdout/.
    def input_fn():
        return tf.data.Dataset.from_tensors(({"x": [1.0, 2.0]}, [2.0, 4.0])).repeat()

    def model_fn(features, labels, mode):
        w = tf.compat.v1.get_variable("w", [], initializer=tf.compat.v1.zeros_initializer())
        pred = features["x"] * w
        loss = tf.reduce_mean(tf.square(pred - labels))
        if mode == tf.estimator.ModeKeys.EVAL:
            rmse = tf.compat.v1.metrics.root_mean_squared_error(labels, pred)
            metric_ops = {"metrics/rmse": rmse}
            return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metric_ops)
        step = tf.compat.v1.train.get_global_step()
        train_op = tf.compat.v1.train.GradientDescentOptimizer(0.05).minimize(loss, step)
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    est = tf.estimator.Estimator(model_fn, model_dir=os.path.join(out, "est"))
    est.train(input_fn, steps=3)
    results = {}
    for name, eval_name in ((None, "eval"), ("holdout", "eval_holdout")):
        r = est.evaluate(input_fn, steps=1, name=name)
        results[eval_name] = {k: (int(v) if k == "global_step" else float(v)) for k, v in r.items()}
    expected["estimator"] = {"results": results, "checkpoint": est.latest_checkpoint()}

    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)
    """
)

Row = list[Any]


@pytest.fixture(scope="session")
def tf_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tfevents")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="session")
def expected(tf_files: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tf_files / "expected.json").read_text())
    return data


def _only_event_file(directory: Path) -> Path:
    [path] = directory.glob("events.out.tfevents.*")
    return path


def _record_ends(data: bytes) -> list[int]:
    """Byte offsets where each complete record ends (framing only, no CRC checks)."""
    ends, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        if pos + 16 + length > len(data):
            break
        pos += 16 + length
        ends.append(pos)
    return ends


def _frame(data: bytes) -> bytes:
    """A TFRecord around `data`, framed independently of the code under test."""

    def masked(b: bytes) -> int:
        crc = int(google_crc32c.value(b))
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(length)) + data + struct.pack("<I", masked(data))


def _rows(values: list[ScalarValue | CheckpointPathValue]) -> list[Row]:
    return [
        [v.step, v.tag, v.value]
        if isinstance(v, ScalarValue)
        else [v.step, "checkpoint_path", v.path]
        for v in values
    ]


def _read_all(path: Path, eval_name: str = "eval") -> list[ScalarValue | CheckpointPathValue]:
    reader = EventFileReader(path)
    values: list[ScalarValue | CheckpointPathValue] = []
    for record in reader.read_records():
        values.extend(parse_event(record, eval_name))
    assert reader.offset == path.stat().st_size
    assert reader.pending_bytes == 0
    return values


def _install(src: Path | bytes, output_dir: Path, rel: str) -> Path:
    dest = output_dir / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src if isinstance(src, bytes) else src.read_bytes())
    return dest


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_tf1_simple_values_have_exact_tags(tf_files: Path, expected: dict[str, Any]) -> None:
    values = _read_all(_only_event_file(tf_files / "tf1"), "eval_x")
    assert _rows(values) == expected["tf1"]
    assert {v.eval_name for v in values} == {"eval_x"}
    assert all(v.wall_time > 1e9 for v in values)
    rmse = [v.value for v in values if isinstance(v, ScalarValue) and v.tag == "rmse"]
    assert rmse == [1.0, 0.5, pytest.approx(1 / 3, rel=1e-6)]
    tags = {v.tag for v in values if isinstance(v, ScalarValue)}
    assert {"hist", "vector"}.isdisjoint(tags)
    ckpts = [v for v in values if isinstance(v, CheckpointPathValue)]
    assert ckpts == [
        CheckpointPathValue("eval_x", 2, ckpts[0].wall_time, "/x/model.ckpt-2"),
        CheckpointPathValue("eval_x", 3, ckpts[1].wall_time, "/x/model.ckpt-3"),
    ]


def test_tf2_tensor_summaries(tf_files: Path, expected: dict[str, Any]) -> None:
    values = _read_all(_only_event_file(tf_files / "tf2"))
    assert _rows(values) == expected["tf2"]
    assert all(isinstance(v, ScalarValue) for v in values)


def test_estimator_eval_dirs(tf_files: Path, expected: dict[str, Any]) -> None:
    est = expected["estimator"]
    output_dir = tf_files / "est"
    assert list(output_dir.glob("events.out.tfevents.*")), "training events expected in the root"
    watcher = EvalDirWatcher(output_dir, ["eval", "eval_*"])
    result = watcher.poll()
    assert result.problems == []
    assert sorted(result.changed_offsets) == sorted(watcher.offsets)
    assert {Path(rel).parent.as_posix() for rel in watcher.offsets} == {"eval", "eval_holdout"}
    for eval_name, metrics in est["results"].items():
        mine = [v for v in result.values if v.eval_name == eval_name]
        scalars = {v.tag: v for v in mine if isinstance(v, ScalarValue)}
        assert {tag: v.value for tag, v in scalars.items()} == {
            "loss": metrics["loss"],
            "metrics/rmse": metrics["metrics/rmse"],
        }
        assert {v.step for v in mine} == {metrics["global_step"]}
        [ckpt] = [v for v in mine if isinstance(v, CheckpointPathValue)]
        assert ckpt.path == est["checkpoint"]
    # Values come in file order: eval/ sorts before eval_holdout/.
    names = [v.eval_name for v in result.values]
    assert names == sorted(names)
    assert watcher.poll().values == []
    assert watcher.finish() == []

    only_eval = EvalDirWatcher(output_dir, ["eval"]).poll()
    assert {v.eval_name for v in only_eval.values} == {"eval"}


def test_incremental_append_by_writer(
    tf_files: Path, expected: dict[str, Any], tmp_path: Path
) -> None:
    full = _only_event_file(tf_files / "tf1")
    rel = f"eval/{full.name}"
    dest = _install(tf_files / "tf1_batch1", tmp_path, rel)
    batch1 = (tf_files / "tf1_batch1").read_bytes()
    assert full.read_bytes().startswith(batch1)

    watcher = EvalDirWatcher(tmp_path, ["eval"])
    first = watcher.poll()
    assert _rows(first.values) == expected["tf1_batch1"]
    assert first.changed_offsets == {rel: len(batch1)}

    dest.write_bytes(full.read_bytes())  # the writer appended its second batch
    second = watcher.poll()
    assert _rows(second.values) == expected["tf1"][len(expected["tf1_batch1"]) :]
    assert {v.step for v in second.values} == {3}
    assert second.changed_offsets == {rel: full.stat().st_size}
    assert watcher.offsets == {rel: full.stat().st_size}

    third = watcher.poll()
    assert third.values == [] and third.changed_offsets == {} and third.problems == []

    resumed = EvalDirWatcher(tmp_path, ["eval"], offsets=watcher.offsets)
    assert resumed.poll().values == []
    assert resumed.offsets == watcher.offsets

    half_resumed = EvalDirWatcher(tmp_path, ["eval"], offsets={rel: len(batch1)})
    assert half_resumed.poll().values == second.values


def test_new_dirs_and_files_are_discovered(tf_files: Path, tmp_path: Path) -> None:
    tf1 = _only_event_file(tf_files / "tf1")
    tf2 = _only_event_file(tf_files / "tf2")
    _install(tf2, tmp_path, "events.out.tfevents.1.root")  # training events: not an eval dir
    _install(tf2, tmp_path, "other/events.out.tfevents.1.x")
    watcher = EvalDirWatcher(tmp_path, ["eval", "eval_*"])
    assert watcher.poll().values == []

    _install(tf1, tmp_path, "eval/events.out.tfevents.1.a")
    assert {v.eval_name for v in watcher.poll().values} == {"eval"}
    _install(tf2, tmp_path, "eval_holdout/events.out.tfevents.1.a")
    _install(tf1, tmp_path, "eval/events.out.tfevents.2.b")  # e.g. a restarted evaluator
    (tmp_path / "eval" / "not-events.txt").write_text("x")
    result = watcher.poll()
    assert sorted(result.changed_offsets) == [
        "eval/events.out.tfevents.2.b",
        "eval_holdout/events.out.tfevents.1.a",
    ]
    names = [v.eval_name for v in result.values]
    assert names[0] == "eval" and names[-1] == "eval_holdout" and names == sorted(names)


def test_appended_byte_by_byte(tf_files: Path, tmp_path: Path) -> None:
    data = _only_event_file(tf_files / "tf2").read_bytes()
    ends = _record_ends(data)
    assert ends[-1] == len(data)
    path = tmp_path / "events.out.tfevents.1.x"
    path.write_bytes(b"")
    reader = EventFileReader(path)
    records: list[bytes] = []
    for size in range(1, len(data) + 1):
        _append(path, data[size - 1 : size])
        records.extend(reader.read_records())
        assert reader.offset == max([0, *(end for end in ends if end <= size)])
        assert reader.pending_bytes == size - reader.offset
    assert records == EventFileReader(_only_event_file(tf_files / "tf2")).read_records()


def test_truncated_file(tf_files: Path, expected: dict[str, Any], tmp_path: Path) -> None:
    data = _only_event_file(tf_files / "tf1").read_bytes()
    rel = "eval/events.out.tfevents.1.x"
    dest = _install(data[:-5], tmp_path, rel)
    last_start = _record_ends(data)[-2]

    reader = EventFileReader(dest)
    assert len(reader.read_records()) == len(_record_ends(data)) - 1
    assert reader.offset == last_start
    assert reader.pending_bytes == len(data) - 5 - last_start > 0

    watcher = EvalDirWatcher(tmp_path, ["eval"])
    result = watcher.poll()
    assert result.problems == []
    assert _rows(result.values) == expected["tf1"][:-1]  # the last record: checkpoint_path
    [problem] = watcher.finish()
    assert problem == FileProblem(
        str(dest),
        last_start,
        f"truncated: {len(data) - 5 - last_start} bytes after the last complete record",
    )

    _append(dest, data[-5:])
    assert _rows(watcher.poll().values) == expected["tf1"][-1:]
    assert watcher.finish() == []


def test_corrupt_record(tf_files: Path, tmp_path: Path) -> None:
    data = bytearray(_only_event_file(tf_files / "tf1").read_bytes())
    ends = _record_ends(bytes(data))
    data[ends[1] + 12 + 3] ^= 0x01  # inside the data of the 3rd record
    bad = _install(bytes(data), tmp_path, "eval/events.out.tfevents.1.bad")
    good_src = _only_event_file(tf_files / "tf2").read_bytes()
    good_ends = _record_ends(good_src)
    good = _install(good_src[: good_ends[3]], tmp_path, "eval/events.out.tfevents.2.good")

    reader = EventFileReader(bad)
    assert len(reader.read_records()) == 2  # the good records before the bad one come first
    with pytest.raises(EventFileError) as info:
        reader.read_records()
    assert (info.value.path, info.value.offset) == (str(bad), ends[1])
    assert info.value.reason == "record data fails its CRC check"
    assert reader.offset == ends[1]
    with pytest.raises(EventFileError):
        EventFileReader(bad, offset=ends[1]).read_records()

    watcher = EvalDirWatcher(tmp_path, ["eval"])
    first = watcher.poll()
    assert first.problems == [FileProblem(str(bad), ends[1], "record data fails its CRC check")]
    assert first.changed_offsets == {
        "eval/events.out.tfevents.1.bad": ends[1],
        "eval/events.out.tfevents.2.good": good_ends[3],
    }
    assert first.values  # from the good file

    _append(good, good_src[good_ends[3] :])
    second = watcher.poll()
    assert second.problems == []  # reported once
    assert second.values and second.changed_offsets == {
        "eval/events.out.tfevents.2.good": len(good_src)
    }
    assert watcher.finish() == []


def test_corrupt_length(tf_files: Path, tmp_path: Path) -> None:
    data = bytearray(_only_event_file(tf_files / "tf1").read_bytes())
    data[0] ^= 0x80
    path = _install(bytes(data), tmp_path, "events.out.tfevents.1.x")
    with pytest.raises(EventFileError, match="length fails its CRC check") as info:
        EventFileReader(path).read_records()
    assert info.value.offset == 0


def test_record_that_is_not_an_event(tf_files: Path, tmp_path: Path) -> None:
    with pytest.raises(EventFileError, match="not an Event proto"):
        parse_event(b"garbage!", "eval")
    good = _only_event_file(tf_files / "tf2").read_bytes()
    path = _install(good + _frame(b"garbage!") + good, tmp_path, "eval/events.out.tfevents.1.x")
    watcher = EvalDirWatcher(tmp_path, ["eval"])
    result = watcher.poll()
    assert result.problems == [FileProblem(str(path), len(good), result.problems[0].reason)]
    assert "not an Event proto" in result.problems[0].reason
    assert len(result.values) == len(_read_all(_only_event_file(tf_files / "tf2")))
    assert watcher.offsets == {"eval/events.out.tfevents.1.x": len(good)}
    assert watcher.poll().problems == []


def test_file_shorter_than_offset(tf_files: Path, tmp_path: Path) -> None:
    path = _install(_only_event_file(tf_files / "tf2"), tmp_path, "events.out.tfevents.1.x")
    with pytest.raises(EventFileError, match="shrank"):
        EventFileReader(path, offset=path.stat().st_size + 1).read_records()


def test_patterns_must_stay_inside_output_dir(tmp_path: Path) -> None:
    for pattern in ("../eval", "/abs", ""):
        with pytest.raises(ValueError):
            EvalDirWatcher(tmp_path, [pattern])


def test_import_does_not_load_tensorflow() -> None:
    code = "import sys, tuner.outputs.events; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
