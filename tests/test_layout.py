"""Finding the estimator's model dir inside a trial dir, and what is read from it."""

from __future__ import annotations

from pathlib import Path

from tuner.artifacts.store import checkpoint_prefix_for
from tuner.domain.spec import StudySpec, parse_spec
from tuner.outputs.exports import find_exports
from tuner.outputs.layout import find_model_dirs, resolve_layout
from tuner.outputs.reader import TrialOutputs


def spec(**fields: object) -> StudySpec:
    return parse_spec(
        {
            "name": "s",
            "trainer": "t",
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
            **fields,
        }
    )


def estimator_output(model_dir: Path, *, exporter: str = "latest", version: str = "1700") -> None:
    """What an Estimator leaves in its model dir (file contents do not matter here)."""
    (model_dir / "eval").mkdir(parents=True)
    (model_dir / "eval" / "events.out.tfevents.1.host").write_bytes(b"")
    (model_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-20"\n')
    export = model_dir / "export" / exporter / version
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"")


def test_top_level_model_dir(tmp_path: Path) -> None:
    estimator_output(tmp_path)
    (found,) = find_model_dirs(tmp_path)
    assert (found.path, found.has_checkpoint_state, found.eval_dirs, found.has_exports) == (
        ".",
        True,
        ("eval",),
        True,
    )
    layout = resolve_layout(spec(), [found])
    assert layout.eval_patterns == ("eval", "eval_*")
    assert layout.export_patterns == ("export", "model")


def test_trial_number_subdir_and_fixed_subfolder(tmp_path: Path) -> None:
    estimator_output(tmp_path / "3")
    (found,) = find_model_dirs(tmp_path)
    assert found.path == "3"
    layout = resolve_layout(spec(), [found])
    assert layout.eval_patterns == ("3/eval", "3/eval_*")
    assert layout.export_patterns == ("3/export", "model")
    [export] = find_exports(tmp_path, layout.export_patterns)
    assert (export.exporter, export.version) == ("latest", "1700")

    nested = tmp_path / "n"
    estimator_output(nested / "output" / "model")
    assert [m.path for m in find_model_dirs(nested)] == ["output/model"]


def test_depth_and_size_are_bounded(tmp_path: Path) -> None:
    estimator_output(tmp_path / "a" / "b" / "c" / "d")
    assert find_model_dirs(tmp_path) == []
    assert [m.path for m in find_model_dirs(tmp_path, max_depth=4)] == ["a/b/c/d"]
    for i in range(50):
        (tmp_path / f"wide{i:02d}").mkdir()
    estimator_output(tmp_path / "zz")
    assert find_model_dirs(tmp_path, max_dirs=20) == []


def test_exports_and_eval_dirs_are_not_model_dirs(tmp_path: Path) -> None:
    estimator_output(tmp_path)
    # a SavedModel's variables hold a `checkpoint`-like bundle; eval dirs hold event files
    (tmp_path / "export" / "latest" / "1700" / "variables" / "checkpoint").write_text("")
    (tmp_path / "eval" / "checkpoint").write_text("")
    assert [m.path for m in find_model_dirs(tmp_path)] == ["."]


def test_several_candidates_are_reported_not_merged(tmp_path: Path) -> None:
    estimator_output(tmp_path / "0")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint").write_text("")
    outputs = TrialOutputs(tmp_path, spec())
    result = outputs.poll()
    assert outputs.layout.model_dir == "0"
    assert outputs.events.patterns == ["0/eval", "0/eval_*"]
    (problem,) = result.problems
    assert "several model dirs: reading '0', not 'old'" in problem
    assert "set evalDirs and exportDirs" in problem
    assert outputs.poll(final=True).problems == []  # reported once


def test_explicit_dirs_override_discovery(tmp_path: Path) -> None:
    estimator_output(tmp_path / "3")
    layout = resolve_layout(
        spec(evalDirs=["custom/ev"], exportDirs=["custom/models"]), find_model_dirs(tmp_path)
    )
    assert layout.eval_patterns == ("custom/ev",)
    assert layout.export_patterns == ("custom/models",)
    assert layout.ignored == ()


def test_old_default_eval_dirs_mean_discovery() -> None:
    assert spec(evalDirs=["eval", "eval_*"]).eval_dirs is None
    assert spec(evalDirs=["eval"]).eval_dirs == ["eval"]


def test_saved_models_straight_in_a_dir_and_by_version(tmp_path: Path) -> None:
    keras = tmp_path / "model"
    (keras / "variables").mkdir(parents=True)
    (keras / "saved_model.pb").write_bytes(b"")
    versions = tmp_path / "serving" / "17"
    versions.mkdir(parents=True)
    (versions / "saved_model.pb").write_bytes(b"")
    (tmp_path / "serving" / "temp-18").mkdir()
    (tmp_path / "serving" / "temp-18" / "saved_model.pb").write_bytes(b"")
    found = {(e.exporter, e.version) for e in find_exports(tmp_path, ["model", "serving"])}
    mtime = str(int((keras / "saved_model.pb").stat().st_mtime))
    assert found == {("model", mtime), ("serving", "17")}


def test_checkpoint_prefix_for(tmp_path: Path) -> None:
    model_dir = tmp_path / "3"
    model_dir.mkdir()
    reported = str(model_dir / "ckpt" / "w-20")
    assert checkpoint_prefix_for(tmp_path, 20, reported, model_dir=model_dir) == Path(reported)
    assert checkpoint_prefix_for(tmp_path, 20, "/etc/passwd", model_dir=model_dir) is None
    # without a reported path: the `checkpoint` state file's entry for the step, else the default
    assert checkpoint_prefix_for(tmp_path, 20, None, model_dir=model_dir) == (
        model_dir / "model.ckpt-20"
    )
    (model_dir / "checkpoint").write_text(
        'model_checkpoint_path: "weights-20"\nall_model_checkpoint_paths: "weights-10"\n'
        'all_model_checkpoint_paths: "weights-20"\n'
    )
    assert checkpoint_prefix_for(tmp_path, 20, None, model_dir=model_dir) == (
        model_dir.resolve() / "weights-20"
    )
