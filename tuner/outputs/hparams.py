"""TensorBoard HParams summaries of a study and its trials, written without TensorFlow.

`tensorboard --logdir <artifact root>/<study>` shows each trial's eval curves (run
`trial-<n>/eval`). These summaries add the HParams table, one session per trial:

- `<study dir>/hparams/`: the experiment (`hparams_config`): the search space, with the domains
  of the spec, and the objective as the metric column;
- `<trial dir>/` itself: the session start (the values the trainer received) when the trial
  starts, and, when it ends, its objective as the scalar `objective/<metric tag>` at the
  objective's step, then the session end with its status.

The session's run is the trial dir, the run an Estimator's training summaries are in when the
trial dir is its model dir: the tuner adds no run of its own to a trial, and every run of the
trial (`trial-<n>/eval`, `trial-<n>/3/eval`...) is below the session, which is how TensorBoard
links runs to a session (its HParams dashboard takes metrics from the session's run and the
runs below it; its Time Series run table gives a run the hparams of the session whose name
prefixes it). The objective is written into the session's own run, so the metric column shows
what ranks the trial (its best or final eval, per spec) wherever the model dir is.

TensorBoard's HParams dashboard prints every number with 5 significant digits (`2.0000`) and
has no integer type (tensorboard#1998): values a trainer receives as integers (INTEGER params,
DISCRETE ones of whole numbers) are written as their text, declared as strings listed in
numeric order, so it shows `2`, as on the trainer's command line.

TensorBoard's Python loader reads the files of a run in name order and, once on a file, only
that file and later ones: so the start's file is named to sort before any file of the trainer
(its name's timestamp is 0), and the end goes to a new file named one second after the end,
after every file the trainer wrote. The tuner's own readers of a trainer's outputs leave these
files out (`TUNER_EVENT_SUFFIX`), and they are no evidence of a model dir to
`tuner.outputs.layout`.

The protos come from the `tensorboard` package; its writers (`EventFileWriter`,
`hparams.summary`) import TensorFlow when it is installed, so the records are framed here.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import google_crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from tensorboard.plugins.scalar import metadata as scalar_metadata

from tuner.domain.spec import Goal, ObjectiveMode, ParameterSpec, ParamType, StudySpec
from tuner.outputs.events import TUNER_EVENT_SUFFIX

__all__ = [
    "HPARAMS_DIR",
    "STATUS",
    "Objective",
    "experiment_summary",
    "integer_params",
    "objective_tag",
    "session_end_summary",
    "session_files",
    "session_start_summary",
    "write_experiment",
    "write_session_end",
    "write_session_start",
]

#: The subdir of the study dir the experiment is written to (and of a trial dir, the session
#: of a trial that started before sessions were written into the trial dir itself).
HPARAMS_DIR: Final = "hparams"
#: Suffix of the event files written here (TensorBoard reads any name holding "tfevents").
FILE_SUFFIX: Final = TUNER_EVENT_SUFFIX
#: An INTEGER param with at most this many values has them listed as its domain (TensorBoard
#: shows a checkbox per value); a wider one is a string column without a list.
MAX_LISTED_INTEGERS: Final = 100
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


class _IntegerText(summary_v2.Domain):  # type: ignore[misc]
    """Integers as a string column: their texts listed in numeric order (`summary_v2.Discrete`
    sorts them as strings: 128 before 16), or no list for a range too wide to list."""

    def __init__(self, values: Iterable[float] | None) -> None:
        self.values = None if values is None else [str(int(v)) for v in values]

    @property
    def dtype(self) -> type:
        return str

    def sample_uniform(self, rng: Any = random) -> str:
        raise NotImplementedError("the tuner's samplers pick values, not TensorBoard")

    def update_hparam_info(self, hparam_info: api_pb2.HParamInfo) -> None:
        hparam_info.type = api_pb2.DATA_TYPE_STRING
        if self.values is not None:
            hparam_info.domain_discrete.extend(self.values)


def _is_integer_valued(param: ParameterSpec) -> bool:
    """Whether the trainer receives this param's values as integers."""
    if param.type is ParamType.INTEGER:
        return True
    return param.type is ParamType.DISCRETE and all(
        float(v).is_integer() for v in param.discrete_values or []
    )


def integer_params(spec: StudySpec) -> frozenset[str]:
    """The params whose values are written as text (see the module's docstring)."""
    return frozenset(
        p.parameter_name for p in spec.hyperparameters.all_params if _is_integer_valued(p)
    )


def _domain(param: ParameterSpec) -> summary_v2.Domain:
    if param.type is ParamType.CATEGORICAL:
        return summary_v2.Discrete(list(param.categorical_values or []), dtype=str)
    if _is_integer_valued(param):
        if param.type is ParamType.INTEGER:
            assert param.min_value is not None and param.max_value is not None
            if param.max_value - param.min_value + 1 > MAX_LISTED_INTEGERS:
                return _IntegerText(None)
        return _IntegerText(param.grid_values())
    if param.type is ParamType.DISCRETE:
        return summary_v2.Discrete([float(v) for v in param.discrete_values or []], dtype=float)
    assert param.min_value is not None and param.max_value is not None
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
    spec: StudySpec, group: str, params: Mapping[str, Any], start_time: float
) -> summary_pb2.Summary:
    """One trial's session start: the values its trainer received, under its own group name."""
    integers = integer_params(spec)
    values = {name: _hparam_value(value, name in integers) for name, value in params.items()}
    return summary_v2.hparams_pb(values, trial_id=group, start_time_secs=start_time)


def _hparam_value(value: Any, integer: bool) -> bool | float | str:
    """A value as HParams accepts it (bool, float or str): an integer-valued param's as its
    text (`2`), anything HParams cannot hold as its text."""
    if integer and isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
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
    """The event files the tuner wrote in `directory`, in name order."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = [directory / n for n in names if "tfevents" in n and n.endswith(FILE_SUFFIX)]
    return [p for p in found if p.is_file() and not p.is_symlink()]


def session_files(trial_dir: Path) -> list[Path]:
    """A trial's HParams session files (in the trial dir, or in its `hparams/` subdir for a
    trial that started before sessions were written into the trial dir)."""
    return [*_our_files(trial_dir), *_our_files(trial_dir / HPARAMS_DIR)]


def _session_dir(trial_dir: Path) -> Path:
    """Where a trial's session is: its `hparams/` subdir if only that holds one."""
    legacy = trial_dir / HPARAMS_DIR
    if not _our_files(trial_dir) and _our_files(legacy):
        return legacy
    return trial_dir


def _new_file(directory: Path, label: int) -> Path:
    """A file for the tuner's events; `label` is the timestamp its name sorts by."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{label:010d}.{socket.gethostname()}{FILE_SUFFIX}"
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
    path = _new_file(directory, int(now))
    summary = experiment_summary(spec, created=now)
    _write(path, [event_pb2.Event(wall_time=now, step=0, summary=summary)], new=True)
    return path


def _start_event(
    spec: StudySpec, group: str, params: Mapping[str, Any], start_time: float
) -> event_pb2.Event:
    summary = session_start_summary(spec, group, params, start_time)
    return event_pb2.Event(wall_time=start_time, step=0, summary=summary)


def write_session_start(
    trial_dir: Path,
    *,
    spec: StudySpec,
    group: str,
    params: Mapping[str, Any],
    start_time: float,
) -> Path:
    """Write a trial's session start (when it starts) into the trial dir, in a file whose name
    sorts before the trainer's."""
    path = _new_file(trial_dir, 0)
    _write(path, [_start_event(spec, group, params, start_time)], new=not path.exists())
    return path


def write_session_end(
    trial_dir: Path,
    *,
    spec: StudySpec,
    group: str,
    params: Mapping[str, Any],
    start_time: float,
    state: str,
    end_time: float,
    objective: Objective | None,
) -> Path:
    """Write a trial's objective and session end into a new file of its session's run, named
    to sort after every file the trainer wrote.

    A trainer that wiped its output dir at start took the session start with it: then the
    start is written again (from `params` and `start_time`) before the end.
    """
    directory = _session_dir(trial_dir)
    events: list[event_pb2.Event] = []
    if not _our_files(directory):
        events.append(_start_event(spec, group, params, start_time))
    path = _new_file(directory, int(end_time) + 1)
    tag = objective_tag(spec)
    if objective is not None:
        summary = _objective_summary(tag, objective.value)
        events.append(event_pb2.Event(wall_time=end_time, step=objective.step, summary=summary))
        for metric, value in objective.others.items():
            other = _objective_summary(f"objective/{metric}", value)
            events.append(event_pb2.Event(wall_time=end_time, step=objective.step, summary=other))
    events.append(
        event_pb2.Event(wall_time=end_time, step=0, summary=session_end_summary(state, end_time))
    )
    _write(path, events, new=not path.exists())
    return path
