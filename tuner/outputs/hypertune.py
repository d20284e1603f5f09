"""Reading the metric file that `cloudml-hypertune` writes, as Vertex and AI Platform read it.

`hypertune.HyperTune().report_hyperparameter_tuning_metric(tag, value, global_step)` appends one
JSON object per report to a queue of the last 100 and rewrites `$CLOUD_ML_HP_METRIC_FILE` whole
with it, one line per report, e.g.

    {"checkpoint_path": "", "global_step": "200", "rmse": "0.52", "timestamp": 1.7e9, "trial": "3"}

Because the file is rewritten (and may be read empty or half-written), a report is identified by
its timestamp: each poll takes the complete lines newer than the newest one already taken, so no
value is lost or read twice. A report without a global step (the library writes "0") gets the
ordinal of the report, so successive epochs stay apart.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tuner.outputs.events import CheckpointPathValue, FileProblem, ScalarValue

__all__ = ["HYPERTUNE_EVAL_NAME", "METRIC_FILE", "HypertunePoll", "HypertuneWatcher"]

#: The eval name under which reported values are stored, beside the eval dirs' names.
HYPERTUNE_EVAL_NAME: Final = "hypertune"
#: Where a trial's metric file goes, relative to its output dir.
METRIC_FILE: Final = "hypertune/output.metrics"
_RESERVED: Final = frozenset({"timestamp", "trial", "global_step", "checkpoint_path"})


@dataclass
class HypertunePoll:
    values: list[ScalarValue | CheckpointPathValue] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)


class HypertuneWatcher:
    """Takes the new reports from one trial's metric file at each poll."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._newest = -math.inf
        self._reports = 0
        self._bad_lines: set[str] = set()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def reports(self) -> int:
        """How many reports were taken so far."""
        return self._reports

    def poll(self, *, final: bool = False) -> HypertunePoll:
        """The reports written since the last poll. With `final` (the trainer has exited), a line
        that is not a valid report is a problem; while it runs it may be a write in progress."""
        result = HypertunePoll()
        try:
            text = self._path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return result
        except OSError as exc:
            reason = f"cannot read the hypertune metric file: {exc.strerror or exc}"
            result.problems.append(FileProblem(str(self._path), 0, reason))
            return result
        lines = text.split("\n")
        complete, tail = lines[:-1], lines[-1]
        if final and tail.strip():
            complete.append(tail)
        reports: list[tuple[float, dict[str, Any]]] = []
        for line in complete:
            if not line.strip():
                continue
            report = _parse(line)
            if report is None:
                if final and line not in self._bad_lines:
                    self._bad_lines.add(line)
                    reason = f"not a hypertune report: {line[:120]!r}"
                    result.problems.append(FileProblem(str(self._path), 0, reason))
                continue
            reports.append((report["timestamp"], report))
        for timestamp, report in sorted(reports, key=lambda r: r[0]):
            if timestamp <= self._newest:
                continue
            self._newest = timestamp
            self._reports += 1
            result.values += self._values(report, timestamp)
        return result

    def _values(self, report: dict[str, Any], wall_time: float) -> list[Any]:
        step = _int(report.get("global_step")) or self._reports
        values: list[ScalarValue | CheckpointPathValue] = []
        for tag, raw in sorted(report.items()):
            if tag in _RESERVED:
                continue
            value = _float(raw)
            if value is not None:
                values.append(ScalarValue(HYPERTUNE_EVAL_NAME, step, wall_time, tag, value))
        checkpoint = report.get("checkpoint_path")
        if isinstance(checkpoint, str) and checkpoint:
            values.append(CheckpointPathValue(HYPERTUNE_EVAL_NAME, step, wall_time, checkpoint))
        return values


def _parse(line: str) -> dict[str, Any] | None:
    try:
        report = json.loads(line)
    except ValueError:
        return None
    if not isinstance(report, dict):
        return None
    timestamp = _float(report.get("timestamp"))
    if timestamp is None or not math.isfinite(timestamp):
        return None
    report["timestamp"] = timestamp
    return report


def _float(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return None


def _int(raw: Any) -> int | None:
    value = _float(raw)
    if value is None or not math.isfinite(value) or value < 0:
        return None
    return int(value)
