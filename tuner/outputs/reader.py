"""Everything a running trial writes that the tuner reads, behind one `poll()`.

A trial reports metrics through two channels: the estimator's eval event files, found in its
model dir wherever that is inside the trial dir (`tuner.outputs.layout`), and the
`cloudml-hypertune` metric file (`tuner.outputs.hypertune`).
This module keeps the layout up to date while the trial runs,
tails both channels, remembers which eval dirs lost records, and, for a trial that ended without
its objective, surveys the whole trial dir to say where the objective (or other tags) really is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final

from tuner.domain.errors import EventFileError
from tuner.domain.spec import MetricSource, StudySpec
from tuner.outputs.events import (
    EVENT_FILE_GLOB,
    TUNER_EVENT_SUFFIX,
    CheckpointPathValue,
    EvalDirWatcher,
    EventFileReader,
    FileProblem,
    ScalarValue,
    parse_event,
)
from tuner.outputs.hypertune import HYPERTUNE_EVAL_NAME, METRIC_FILE, HypertuneWatcher
from tuner.outputs.layout import TrialLayout, find_model_dirs, resolve_layout

__all__ = ["OutputPoll", "TrialOutputs", "describe_missing_objective", "survey_tags"]

#: Seconds between looks for the model dir while none is settled, and after.
RESCAN_EVERY: Final = 1.0
RESCAN_SETTLED_EVERY: Final = 10.0
#: Bounds of the survey of a trial dir that ended without its objective.
SURVEY_MAX_FILES: Final = 200
SURVEY_MAX_BYTES: Final = 8 * 1024 * 1024


@dataclass
class OutputPoll:
    """What one poll found; `changed_offsets` is what needs persisting with `values`."""

    values: list[ScalarValue | CheckpointPathValue] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    changed_offsets: dict[str, int] = field(default_factory=dict)


class TrialOutputs:
    """Tails one trial's eval events and hypertune reports, in the dirs its trainer really uses."""

    def __init__(self, output_dir: Path, spec: StudySpec) -> None:
        self.output_dir = output_dir
        self.spec = spec
        self.layout: TrialLayout = resolve_layout(spec, [])
        self.events = EvalDirWatcher(output_dir, self.layout.eval_patterns)
        self.hypertune = (
            None
            if spec.metric_source is MetricSource.EVENTS
            else HypertuneWatcher(output_dir / METRIC_FILE)
        )
        #: Eval name (relative dir, or "hypertune") -> why some of its records were lost.
        self.damaged: dict[str, str] = {}
        self._next_scan = 0.0
        self._settled = False
        self._reported: set[str] = set()

    def accepts_objective_from(self, eval_name: str) -> bool:
        """Whether the spec's `metricSource` lets this eval name supply the objective."""
        source = self.spec.metric_source
        if source is MetricSource.EVENTS:
            return eval_name != HYPERTUNE_EVAL_NAME
        if source is MetricSource.HYPERTUNE:
            return eval_name == HYPERTUNE_EVAL_NAME
        return True

    def settle(self) -> None:
        """Keep the current model dir from now on (its events supplied the objective)."""
        self._settled = True

    def poll(self, *, final: bool = False) -> OutputPoll:
        """Read what was written since the last poll; with `final`, the trainer has exited."""
        result = OutputPoll()
        self._rescan(result, force=final)
        events = self.events.poll()
        result.values += events.values
        result.changed_offsets.update(events.changed_offsets)
        self._note_damage(events.problems, result)
        if final:
            self._note_damage(self.events.finish(), result)
        if self.hypertune is not None:
            reports = self.hypertune.poll(final=final)
            result.values += reports.values
            for problem in reports.problems:
                self.damaged.setdefault(HYPERTUNE_EVAL_NAME, problem.reason)
                result.problems.append(f"{problem.path}: {problem.reason}")
        return result

    def _note_damage(self, problems: list[FileProblem], result: OutputPoll) -> None:
        for problem in problems:
            try:
                rel = Path(problem.path).relative_to(self.output_dir).as_posix()
            except ValueError:
                rel = problem.path
            eval_name = PurePosixPath(rel).parent.as_posix()
            where = f"{rel}: {problem.reason} (at byte {problem.offset})"
            self.damaged.setdefault(eval_name, where)
            result.problems.append(f"{problem.path}: {problem.reason}")

    def _rescan(self, result: OutputPoll, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now < self._next_scan:
            return
        self._next_scan = now + (RESCAN_SETTLED_EVERY if self._settled else RESCAN_EVERY)
        candidates = find_model_dirs(self.output_dir)
        if self._settled:
            current = self.layout.model_dir
            candidates.sort(key=lambda m: m.path != current)
        layout = resolve_layout(self.spec, candidates)
        if layout.eval_patterns != self.layout.eval_patterns:
            self.events.patterns = layout.eval_patterns
        self.layout = layout
        for other in layout.ignored:
            if other.path in self._reported:
                continue
            self._reported.add(other.path)
            chosen = layout.found.path if layout.found else "."
            result.problems.append(
                f"several model dirs: reading {chosen!r}, not {other.path!r} (which holds "
                f"{other.evidence}); set evalDirs and exportDirs to choose"
            )


def _event_files(output_dir: Path) -> Iterator[Path]:
    count = 0
    for root, dirs, files in os.walk(output_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("variables", "assets"))
        for name in sorted(files):
            if Path(name).match(EVENT_FILE_GLOB) and not name.endswith(TUNER_EVENT_SUFFIX):
                yield Path(root) / name
                count += 1
                if count >= SURVEY_MAX_FILES:
                    return


def survey_tags(output_dir: Path) -> dict[str, set[str]]:
    """Scalar tags in every event file of a trial dir, by dir relative to it (bounded)."""
    found: dict[str, set[str]] = {}
    for path in _event_files(output_dir):
        rel_dir = path.parent.relative_to(output_dir).as_posix()
        tags = found.setdefault(rel_dir, set())
        try:
            if path.stat().st_size > SURVEY_MAX_BYTES:
                continue
            records = EventFileReader(path)._read()[0]
        except OSError:
            continue
        for _, data in records:
            try:
                values = parse_event(data, rel_dir)
            except EventFileError:
                break
            tags.update(v.tag for v in values if isinstance(v, ScalarValue))
    return {d: t for d, t in found.items() if t}


def describe_missing_objective(
    outputs: TrialOutputs, tag: str, hypertune_tags: set[str], read_tags: list[str]
) -> str:
    """Why a trial has no objective, and what to set: the tag elsewhere, or other tags here."""
    layout = outputs.layout
    read = ", ".join(layout.eval_patterns)
    notes = [f"eval dirs read: {read}; tags seen there: {', '.join(read_tags) or 'none'}"]
    elsewhere = survey_tags(outputs.output_dir)
    read_dirs = {
        d for d in elsewhere if any(PurePosixPath(d).match(p) for p in layout.eval_patterns)
    }
    with_tag = sorted(d for d, tags in elsewhere.items() if tag in tags and d not in read_dirs)
    if with_tag:
        notes.append(
            f"{tag!r} is in event files under {', '.join(with_tag)}, which are not read: "
            f"set evalDirs: [{', '.join(with_tag)}]"
        )
    else:
        others = {
            d: sorted(tags) for d, tags in sorted(elsewhere.items()) if d not in read_dirs and tags
        }
        for d, tags in list(others.items())[:5]:
            notes.append(f"event files under {d} hold tags {', '.join(tags[:12])}")
    if outputs.hypertune is not None:
        if hypertune_tags:
            notes.append(f"the hypertune metric file reported {', '.join(sorted(hypertune_tags))}")
        elif outputs.hypertune.reports == 0 and not outputs.hypertune.path.exists():
            notes.append("no hypertune metric file was written")
    if not with_tag and (read_tags or elsewhere or hypertune_tags):
        notes.append(f"set hyperparameterMetricTag to the tag your trainer writes, not {tag!r}")
    return "; ".join(notes)
