"""The hypertune metric file, written by the real `cloudml-hypertune` package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.outputs.events import CheckpointPathValue, ScalarValue
from tuner.outputs.hypertune import HypertuneWatcher


@pytest.fixture
def reporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    hypertune = pytest.importorskip("hypertune")
    path = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    return hypertune.HyperTune(), path


def scalars(values) -> list[tuple[int, str, float]]:
    return [(v.step, v.tag, v.value) for v in values if isinstance(v, ScalarValue)]


def test_every_report_once_across_rewrites_and_rotation(reporter) -> None:
    ht, path = reporter
    watcher = HypertuneWatcher(path)
    assert watcher.poll().values == []  # no file yet
    seen: list[tuple[int, str, float]] = []
    for step in range(1, 131):  # the library keeps only the last 100 reports in the file
        ht.report_hyperparameter_tuning_metric("rmse", 1.0 / step, global_step=step * 10)
        if step % 30 == 0 or step == 3:
            seen += scalars(watcher.poll().values)
    seen += scalars(watcher.poll().values)
    assert seen == [(s * 10, "rmse", pytest.approx(1.0 / s)) for s in range(1, 131)]
    line = json.loads(path.read_text().splitlines()[-1])
    assert line["trial"] == "7"


def test_a_file_caught_mid_rewrite_loses_and_doubles_nothing(reporter) -> None:
    ht, path = reporter
    watcher = HypertuneWatcher(path)
    ht.report_hyperparameter_tuning_metric("rmse", 0.5, global_step=10)
    full = path.read_text()
    path.write_text("")  # `open(path, "w")` truncates before writing
    assert watcher.poll().values == []
    path.write_text(full[: len(full) // 2])  # half a line
    assert watcher.poll().values == []
    path.write_text(full)
    assert scalars(watcher.poll().values) == [(10, "rmse", 0.5)]
    assert watcher.poll().values == []


def test_reports_without_a_step_get_their_ordinal_and_checkpoints_are_kept(reporter) -> None:
    ht, path = reporter
    watcher = HypertuneWatcher(path)
    ht.report_hyperparameter_tuning_metric("accuracy", 0.7)
    ht.report_hyperparameter_tuning_metric("accuracy", 0.8, checkpoint_path="/ckpt/w-2")
    values = watcher.poll().values
    assert scalars(values) == [(1, "accuracy", 0.7), (2, "accuracy", 0.8)]
    [checkpoint] = [v for v in values if isinstance(v, CheckpointPathValue)]
    assert (checkpoint.step, checkpoint.path) == (2, "/ckpt/w-2")


def test_a_bad_line_is_a_problem_once_the_trainer_exited(tmp_path: Path) -> None:
    path = tmp_path / "output.metrics"
    path.write_text('{"timestamp": 1.0, "rmse": "0.3", "global_step": "5"}\nnot json\n')
    watcher = HypertuneWatcher(path)
    running = watcher.poll()
    assert scalars(running.values) == [(5, "rmse", 0.3)] and running.problems == []
    (problem,) = watcher.poll(final=True).problems
    assert "not a hypertune report" in problem.reason
