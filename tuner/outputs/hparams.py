"""TensorBoard HParams summaries of a study and its trials, written without TensorFlow.

`tensorboard --logdir <artifact root>/<study>` shows each trial's eval curves (run
`trial-<n>/eval`). These summaries add the HParams table, one session per trial:

- `<study dir>/hparams/`: the experiment (`hparams_config`): the search space, with the domains
  of the spec, and the objective as the metric column;
- `<trial dir>/hparams/`: the session start (the values the trainer received) when the trial
  starts, and, when it ends, its objective as the scalar `objective/<metric tag>` at the
  objective's step, then the session end with its status.

TensorBoard takes a session's metric values from the scalars of the session's run (or runs
below it), so the objective is written into the session's own run: that works wherever the
trainer puts its model dir (`trial-<n>/eval`, `trial-<n>/3/eval`, `trial-<n>/model/eval`...),
and it shows what ranks the trial (its best or final eval, per spec), not just the last eval.

The `hparams/` dir holds no `checkpoint`, `eval*/` or `export/`, so `tuner.outputs.layout` never
takes
it for a model dir, and it is not an eval dir. Only the tuner writes there, so appending the end
to the start's file is safe for TensorBoard's loader (which reads the newest file of a run on).

The protos come from the `tensorboard` package; its writers (`EventFileWriter`,
`hparams.summary`) import TensorFlow when it is installed, so the records are framed here.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import google_crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tuner.domain.spec import Goal, ObjectiveMode, ParameterSpec, ParamType, StudySpec

__all__ = [
    "HPARAMS_DIR",
    "STATUS",
    "Objective",
    "experiment_summary",
    "objective_tag",
    "session_end_summary",
    "session_start_summary",
    "write_experiment",
    "write_session_end",
    "write_session_start",
]

#: The subdir (of the study dir and of each trial dir) the summaries are written to.
HPARAMS_DIR: Final = "hparams"
#: Suffix of the event files written here (TensorBoard reads any name holding "tfevents").
FILE_SUFFIX: Final = ".tuner-hparams"
#: A trial's state as an HParams session status. TensorBoard has no "pruned" or "stopped":
#: a pruned trial ended as the tuner meant it to (as an early-stopped Keras run does), a
#: stopped one did not end as planned (its params run again as another trial).
STATUS: Final[Mapping[str, int]] = {
    "COMPLETED": api_pb2.STATUS_SUCCESS,
    "PRUNED": api_pb2.STATUS_SUCCESS,
    "FAILED": api_pb2.STATUS_FAILURE,
    "STOPPED": api_pb2.STATUS_FAILURE,
}
_MASK_DELTA: Final = 0xA282EAD8


@dataclass(frozen=True)
class Objective:
    """A trial's objective: its value and the global step of the eval it comes from."""

    step: int
    value: float
    #: Several objectives: the others' values at the same step, by metric.
    others: Mapping[str, float] = field(default_factory=dict)


def objective_tag(spec: StudySpec) -> str:
    """The scalar tag of the objective in a session's run (and the metric column's tag)."""
    return f"objective/{spec.metric_tag}"


def _domain(param: ParameterSpec) -> summary_v2.Domain:
    if param.type is ParamType.CATEGORICAL:
        return summary_v2.Discrete(list(param.categorical_values or []), dtype=str)
    if param.type is ParamType.DISCRETE:
        return summary_v2.Discrete([float(v) for v in param.discrete_values or []], dtype=float)
    assert param.min_value is not None and param.max_value is not None
    if param.type is ParamType.INTEGER:
        return summary_v2.IntInterval(int(param.min_value), int(param.max_value))
    return summary_v2.RealInterval(float(param.min_value), float(param.max_value))


def _describe(param: ParameterSpec) -> str:
    kind = param.type.value
    if param.type in (ParamType.DOUBLE, ParamType.INTEGER):
        kind = f"{kind}, {param.scale.value}"
    return f"{kind}; the value on the trainer's command line"


def experiment_summary(spec: StudySpec, *, created: float | None = None) -> summary_pb2.Summary:
    """The study's `hparams_config`: its params with the spec's domains, and the objective."""
    hparams = [
        summary_v2.HParam(p.parameter_name, _domain(p), description=_describe(p))
        for p in spec.hyperparameters.all_params
    ]
    which = "best eval" if spec.objective is ObjectiveMode.BEST else "final eval"
    goal = "lower" if spec.goal is Goal.MINIMIZE else "higher"
    metric = summary_v2.Metric(
        objective_tag(spec),
        group="",
        display_name=f"{spec.metric_tag} (objective)",
        description=(
            f"the tuner's objective: the {which} of {spec.metric_tag!r} ({goal} is better); "
            "only COMPLETED trials have one"
        ),
        dataset_type=summary_v2.Metric.VALIDATION,
    )
    others = [
        summary_v2.Metric(
            f"objective/{o.metric}",
            group="",
            display_name=f"{o.metric} (objective {i + 2})",
            description=f"{o.metric!r} at the same eval ({o.goal.value.lower()})",
            dataset_type=summary_v2.Metric.VALIDATION,
        )
        for i, o in enumerate(spec.objectives[1:])
    ]
    return summary_v2.hparams_config_pb(hparams, [metric, *others], time_created_secs=created)


def session_start_summary(
    group: str, params: Mapping[str, Any], start_time: float
) -> summary_pb2.Summary:
    """One trial's session start: the values its trainer received, under its own group name."""
    values = {name: _hparam_value(value) for name, value in params.items()}
    return summary_v2.hparams_pb(values, trial_id=group, start_time_secs=start_time)


def _hparam_value(value: Any) -> bool | float | int | str:
    """A value as HParams accepts it (bool, int, float or str); anything else as its text."""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def session_end_summary(state: str, end_time: float) -> summary_pb2.Summary:
    """One trial's session end, with its state as a status (see `STATUS`)."""
    end = plugin_data_pb2.SessionEndInfo(
        status=STATUS.get(state, api_pb2.STATUS_UNKNOWN), end_time_secs=end_time
    )
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_end_info=end)
        ),
        tensor=metadata.NULL_TENSOR,
    )
    return summary


def _objective_summary(tag: str, value: float) -> summary_pb2.Summary:
    # A float32 scalar tensor, as `tf.summary.scalar` writes: TensorBoard's fast loader (its
    # Rust data server) drops float64 scalars, leaving a series without points.
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag, tensor=tensor, metadata=scalar_metadata.create_summary_metadata("", "")
    )
    return summary


def _masked_crc(data: bytes) -> bytes:
    crc = int(google_crc32c.value(data))
    masked = (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF
    return masked.to_bytes(4, "little")


def _record(event: event_pb2.Event) -> bytes:
    """One TFRecord: length, its masked CRC, the Event proto, its masked CRC."""
    data: bytes = event.SerializeToString()
    header = len(data).to_bytes(8, "little")
    return header + _masked_crc(header) + data + _masked_crc(data)


def _our_files(directory: Path) -> list[Path]:
    """The event files the tuner wrote in `directory`, oldest first."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [directory / n for n in names if "tfevents" in n and n.endswith(FILE_SUFFIX)]


def _new_file(directory: Path, wall_time: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(wall_time):010d}.{socket.gethostname()}{FILE_SUFFIX}"
    return directory / name


def _write(path: Path, events: Sequence[event_pb2.Event], *, new: bool) -> None:
    """Append `events` in one write (a new file starts with its `file_version` event)."""
    data = b""
    if new:
        first = events[0].wall_time if events else time.time()
        data += _record(event_pb2.Event(wall_time=first, file_version="brain.Event:2"))
    data += b"".join(_record(e) for e in events)
    with open(path, "ab") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_experiment(study_dir: Path, spec: StudySpec) -> Path | None:
    """Write the study's experiment summary once; None when one is there already."""
    directory = study_dir / HPARAMS_DIR
    if _our_files(directory):
        return None
    now = time.time()
    path = _new_file(directory, now)
    summary = experiment_summary(spec, created=now)
    _write(path, [event_pb2.Event(wall_time=now, step=0, summary=summary)], new=True)
    return path


def _start_event(group: str, params: Mapping[str, Any], start_time: float) -> event_pb2.Event:
    summary = session_start_summary(group, params, start_time)
    return event_pb2.Event(wall_time=start_time, step=0, summary=summary)


def write_session_start(
    trial_dir: Path, *, group: str, params: Mapping[str, Any], start_time: float
) -> Path:
    """Write a trial's session start (when it starts) into `<trial dir>/hparams/`."""
    path = _new_file(trial_dir / HPARAMS_DIR, start_time)
    _write(path, [_start_event(group, params, start_time)], new=not path.exists())
    return path


def write_session_end(
    trial_dir: Path,
    *,
    group: str,
    params: Mapping[str, Any],
    start_time: float,
    state: str,
    end_time: float,
    tag: str,
    objective: Objective | None,
) -> Path:
    """Append a trial's objective and session end to its session file.

    A trainer that wiped its output dir at start took the session start with it: then a new
    file gets the start again (from `params` and `start_time`) before the end.
    """
    directory = trial_dir / HPARAMS_DIR
    existing = _our_files(directory)
    events: list[event_pb2.Event] = []
    if existing:
        path = existing[-1]
    else:
        path = _new_file(directory, start_time)
        events.append(_start_event(group, params, start_time))
    if objective is not None:
        summary = _objective_summary(tag, objective.value)
        events.append(event_pb2.Event(wall_time=end_time, step=objective.step, summary=summary))
        for metric, value in objective.others.items():
            other = _objective_summary(f"objective/{metric}", value)
            events.append(event_pb2.Event(wall_time=end_time, step=objective.step, summary=other))
    events.append(
        event_pb2.Event(wall_time=end_time, step=0, summary=session_end_summary(state, end_time))
    )
    _write(path, events, new=not existing)
    return path
