"""Tests of `tuner.domain.spec`: the accepted spec shapes, defaults, and every
refusal as users see it."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tuner.domain.errors import SpecError
from tuner.domain.spec import (
    DEFAULT_PRUNER,
    Algorithm,
    Goal,
    ObjectiveMode,
    ParamType,
    PrunerSpec,
    ScaleType,
    StudySpec,
    load_spec_file,
    load_spec_text,
    parse_spec,
    spec_to_json,
)

# ----------------------------------------------------------------------------------------------
# Helpers

# The classic AI Platform example (census / "hptuning_config.yaml"), as a whole job file.
CENSUS_JOB = textwrap.dedent(
    """
    jobId: census_hptune_1
    trainingInput:
      scaleTier: CUSTOM
      masterType: complex_model_m
      workerType: complex_model_m
      parameterServerType: large_model
      workerCount: 9
      parameterServerCount: 3
      hyperparameters:
        goal: MAXIMIZE
        hyperparameterMetricTag: accuracy
        maxTrials: 4
        maxParallelTrials: 2
        enableTrialEarlyStopping: True
        params:
        - parameterName: hidden1
          type: INTEGER
          minValue: 40
          maxValue: 400
          scaleType: UNIT_LINEAR_SCALE
        - parameterName: numRnnCells
          type: DISCRETE
          discreteValues:
          - 1
          - 2
          - 3
          - 4
        - parameterName: rnnCellType
          type: CATEGORICAL
          categoricalValues:
          - BasicLSTMCell
          - BasicRNNCell
          - GRUCell
          - LSTMCell
          - LayerNormBasicLSTMCell
    """
)

# The AI Platform example with a log-scaled learning rate, random search and a resumed job.
LEARNING_RATE_CONFIG = textwrap.dedent(
    """
    trainingInput:
      hyperparameters:
        goal: MAXIMIZE
        hyperparameterMetricTag: accuracy
        maxTrials: 10
        maxParallelTrials: 2
        maxFailedTrials: 3
        algorithm: RANDOM_SEARCH
        resumePreviousJobId: census_hptune_1
        params:
        - parameterName: learning_rate
          type: DOUBLE
          minValue: 0.0001
          maxValue: 0.1
          scaleType: UNIT_LOG_SCALE
    """
)

# A `projects.jobs.create` request body, as the AI Platform REST reference shows it.
REST_JOB_JSON = json.dumps(
    {
        "jobId": "my_job",
        "labels": {"team": "ml"},
        "trainingInput": {
            "scaleTier": "BASIC",
            "packageUris": ["gs://my-bucket/trainer-0.1.tar.gz"],
            "pythonModule": "trainer.task",
            "region": "us-central1",
            "args": ["--train-files", "gs://my-bucket/train.csv", "--num-epochs", "5"],
            "runtimeVersion": "1.15",
            "pythonVersion": "3.7",
            "jobDir": "gs://my-bucket/job",
            "hyperparameters": {
                "goal": "MINIMIZE",
                "hyperparameterMetricTag": "loss",
                "maxTrials": 6,
                "params": [
                    {
                        "parameterName": "first-layer-size",
                        "type": "INTEGER",
                        "minValue": 50,
                        "maxValue": 500,
                        "scaleType": "UNIT_LINEAR_SCALE",
                    }
                ],
            },
        },
    },
    indent=2,
)

HP = textwrap.dedent(
    """
    goal: MAXIMIZE
    hyperparameterMetricTag: accuracy
    """
)
BAD_NAME = "must be 1-128 letters, digits, '_', '.', '-', starting with a letter or digit"
ONE_PARAM = "params: [{parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 1.0}]\n"
OURS = "name: s\ntrainer: t\n"


def problems_of(text: str, **overrides: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, **overrides)
    return info.value.problems


def bare(params_yaml: str, extra: str = "") -> str:
    """A bare hyperparameters block (name and trainer are not in it)."""
    return HP + extra + "params:\n" + textwrap.indent(textwrap.dedent(params_yaml), "  ")


def with_params(params_yaml: str, extra: str = "") -> str:
    """A flat spec file: our fields + hyperparameter fields at the top level."""
    return OURS + bare(params_yaml, extra)


def nested(params_yaml: str, extra: str = "") -> str:
    """Our fields + a `hyperparameters:` mapping."""
    return OURS + "hyperparameters:\n" + textwrap.indent(bare(params_yaml, extra), "  ")


def job(params_yaml: str, extra: str = "") -> str:
    """A whole AI Platform job file."""
    body = "hyperparameters:\n" + textwrap.indent(bare(params_yaml, extra), "  ")
    return "trainingInput:\n" + textwrap.indent(body, "  ")


LOG_ZERO = """
- {parameterName: a, type: DOUBLE, minValue: 0.1, maxValue: 1}
- {parameterName: b, type: INTEGER, minValue: 1, maxValue: 5}
- {parameterName: c, type: DOUBLE, minValue: 0, maxValue: 1, scaleType: UNIT_LOG_SCALE}
"""


# ----------------------------------------------------------------------------------------------
# The three accepted shapes


def test_whole_job_file_with_job_id_is_accepted_and_named_by_overrides() -> None:
    notes: list[str] = []
    spec = load_spec_text(CENSUS_JOB, name="census", trainer="census-rnn", warnings=notes)

    assert spec.name == "census"
    assert spec.trainer == "census-rnn"
    hp = spec.hyperparameters
    assert hp.goal is Goal.MAXIMIZE
    assert spec.goal is Goal.MAXIMIZE
    assert spec.metric_tag == "accuracy"
    assert hp.max_trials == 4
    assert spec.max_trials == 4
    assert hp.max_parallel_trials == 2
    assert hp.enable_trial_early_stopping is True
    assert hp.algorithm is Algorithm.ALGORITHM_UNSPECIFIED

    hidden1, cells, cell_type = hp.params
    assert (hidden1.parameter_name, hidden1.type) == ("hidden1", ParamType.INTEGER)
    assert (hidden1.min_value, hidden1.max_value) == (40, 400)
    assert hidden1.scale is ScaleType.UNIT_LINEAR_SCALE
    assert (cells.parameter_name, cells.type) == ("numRnnCells", ParamType.DISCRETE)
    assert cells.grid_values() == [1, 2, 3, 4]
    assert all(type(v) is int for v in cells.grid_values())
    assert (cell_type.parameter_name, cell_type.type) == ("rnnCellType", ParamType.CATEGORICAL)
    assert cell_type.categorical_values == [
        "BasicLSTMCell",
        "BasicRNNCell",
        "GRUCell",
        "LSTMCell",
        "LayerNormBasicLSTMCell",
    ]
    # enableTrialEarlyStopping without an explicit earlyStopping: the default pruner.
    assert spec.pruner == DEFAULT_PRUNER

    # Every ignored key is named in a warning; the file is not refused for them.
    text = "\n".join(notes)
    for key in (
        "jobId",
        "trainingInput.scaleTier",
        "trainingInput.masterType",
        "trainingInput.workerType",
        "trainingInput.parameterServerType",
        "trainingInput.workerCount",
        "trainingInput.parameterServerCount",
    ):
        assert key in text
    assert len(notes) == 7


def test_learning_rate_example_with_random_search_and_resume() -> None:
    spec = load_spec_text(LEARNING_RATE_CONFIG, name="lr-study", trainer="census")

    hp = spec.hyperparameters
    assert hp.algorithm is Algorithm.RANDOM_SEARCH
    assert hp.max_trials == 10
    assert hp.max_parallel_trials == 2
    assert hp.max_failed_trials == 3
    assert hp.resume_previous_job_id == "census_hptune_1"
    assert hp.enable_trial_early_stopping is False
    assert spec.pruner is None
    (lr,) = hp.params
    assert lr.parameter_name == "learning_rate"
    assert lr.type is ParamType.DOUBLE
    assert (lr.min_value, lr.max_value) == (0.0001, 0.1)
    assert lr.scale is ScaleType.UNIT_LOG_SCALE


def test_job_file_as_json_keeps_training_input_args() -> None:
    notes: list[str] = []
    spec = load_spec_text(REST_JOB_JSON, name="rest", trainer="census", warnings=notes)

    assert spec.args == ["--train-files", "gs://my-bucket/train.csv", "--num-epochs", "5"]
    assert spec.goal is Goal.MINIMIZE
    assert spec.metric_tag == "loss"
    assert spec.hyperparameters.max_trials == 6
    assert spec.hyperparameters.params[0].parameter_name == "first-layer-size"
    text = "\n".join(notes)
    for key in (
        "jobId",
        "labels",
        "trainingInput.scaleTier",
        "trainingInput.packageUris",
        "trainingInput.pythonModule",
        "trainingInput.region",
        "trainingInput.runtimeVersion",
        "trainingInput.pythonVersion",
        "trainingInput.jobDir",
    ):
        assert key in text
    # `args` was used, not ignored.
    assert "trainingInput.args" not in text


def test_our_fields_with_hyperparameters_mapping() -> None:
    text = textwrap.dedent(
        """
        name: census-1
        trainer: census
        args: [--num-epochs, "5"]
        outputDirFlag: --output_dir
        objective: final
        seed: 7
        evalDirs: [eval_holdout]
        earlyStopping: {type: percentile, percentile: 25, startupTrials: 5}
        hyperparameters:
          goal: MINIMIZE
          hyperparameterMetricTag: loss
          maxTrials: 12
          params:
          - {parameterName: dropout, type: DOUBLE, minValue: 0.1, maxValue: 0.5}
        """
    )
    notes: list[str] = []
    spec = load_spec_text(text, warnings=notes)

    assert notes == []
    assert spec.name == "census-1"
    assert spec.trainer == "census"
    assert spec.args == ["--num-epochs", "5"]
    assert spec.output_dir_flag == "--output_dir"
    assert spec.objective is ObjectiveMode.FINAL
    assert spec.seed == 7
    assert spec.eval_dirs == ["eval_holdout"]
    assert spec.pruner == PrunerSpec(type="percentile", percentile=25, startup_trials=5)
    assert spec.hyperparameters.max_trials == 12


def test_flat_file_with_our_fields_and_hyperparameter_fields_at_top() -> None:
    spec = load_spec_text(
        with_params("- {parameterName: lr, type: DOUBLE, minValue: 1, maxValue: 2}")
    )
    assert spec.name == "s"
    assert spec.trainer == "t"
    assert spec.metric_tag == "accuracy"
    assert [p.parameter_name for p in spec.hyperparameters.params] == ["lr"]


def test_bare_hyperparameters_block_with_name_and_trainer_given_with_the_command() -> None:
    spec = load_spec_text(HP + ONE_PARAM, name="bare", trainer="census")
    assert (spec.name, spec.trainer) == ("bare", "census")
    assert spec.goal is Goal.MAXIMIZE


def test_bare_block_as_json() -> None:
    text = json.dumps(
        {
            "goal": "MAXIMIZE",
            "hyperparameterMetricTag": "auc",
            "params": [
                {"parameterName": "units", "type": "INTEGER", "minValue": 8, "maxValue": 64}
            ],
        }
    )
    spec = load_spec_text(text, name="j", trainer="t")
    assert spec.metric_tag == "auc"
    assert spec.hyperparameters.params[0].grid_values()[:2] == [8, 9]


def test_overrides_replace_file_values_and_none_is_ignored() -> None:
    spec = load_spec_text(
        OURS + HP + ONE_PARAM,
        name=None,
        trainer="other",
        output_dir_flag="--model_dir",
        eval_dirs=["eval_x"],
        seed=3,
    )
    assert spec.name == "s"  # None does not override
    assert spec.trainer == "other"
    assert spec.output_dir_flag == "--model_dir"
    assert spec.eval_dirs == ["eval_x"]
    assert spec.seed == 3


def test_load_spec_file_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hptuning_config.yaml"
    path.write_text(LEARNING_RATE_CONFIG, encoding="utf-8")
    spec = load_spec_file(path, name="f", trainer="t")
    assert spec.hyperparameters.algorithm is Algorithm.RANDOM_SEARCH


def test_load_spec_file_missing_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert info.value.source == str(path)
    [(field, reason)] = info.value.problems
    assert field == ""
    assert reason.startswith("cannot read the file")
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# Types, scales and defaults

VALID_PARAMS = [
    *[
        (t, s, "minValue: 0.5, maxValue: 8" if t == "DOUBLE" else "minValue: 1, maxValue: 8")
        for t in ("DOUBLE", "INTEGER")
        for s in (None, "NONE", "UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE", "UNIT_REVERSE_LOG_SCALE")
    ],
    ("CATEGORICAL", None, "categoricalValues: [relu, tanh]"),
    ("CATEGORICAL", "NONE", "categoricalValues: [relu, tanh]"),
    ("DISCRETE", None, "discreteValues: [0.5, 1, 2]"),
    ("DISCRETE", "NONE", "discreteValues: [0.5, 1, 2]"),
    ("DISCRETE", "UNIT_LINEAR_SCALE", "discreteValues: [0.5, 1, 2]"),
]


@pytest.mark.parametrize(("ptype", "scale", "fields"), VALID_PARAMS)
def test_every_type_and_scale_is_accepted_where_valid(ptype: Any, scale: Any, fields: Any) -> None:
    scale_yaml = f", scaleType: {scale}" if scale else ""
    spec = load_spec_text(
        with_params(f"- {{parameterName: p, type: {ptype}, {fields}{scale_yaml}}}")
    )
    (param,) = spec.hyperparameters.params
    assert param.type is ParamType(ptype)
    assert param.scale_type == (ScaleType(scale) if scale else None)
    expected_scale = ScaleType.UNIT_LINEAR_SCALE if scale in (None, "NONE") else ScaleType(scale)
    assert param.scale is expected_scale


def test_defaults() -> None:
    spec = load_spec_text(HP + ONE_PARAM, name="d", trainer="t")
    hp = spec.hyperparameters
    assert hp.max_trials == 1
    assert hp.max_parallel_trials == 1
    assert hp.max_failed_trials == 0
    assert hp.enable_trial_early_stopping is False
    assert hp.algorithm is Algorithm.ALGORITHM_UNSPECIFIED
    assert hp.resume_previous_job_id is None
    assert spec.max_trials == 1
    assert spec.objective is ObjectiveMode.BEST
    assert spec.output_dir_flag == "--job-dir"
    assert spec.eval_dirs is None  # found in the model dir
    assert spec.export_dirs is None
    assert spec.metric_source == "auto"
    assert spec.skip_checks == []
    assert spec.args == []
    assert spec.seed is None
    assert spec.early_stopping is None
    assert spec.pruner is None


def test_grid_values_of_each_finite_type() -> None:
    spec = load_spec_text(
        with_params(
            """
            - {parameterName: i, type: INTEGER, minValue: -2, maxValue: 2}
            - {parameterName: d, type: DISCRETE, discreteValues: [0.25, 1, 3]}
            - {parameterName: c, type: CATEGORICAL, categoricalValues: [x, y]}
            - {parameterName: f, type: DOUBLE, minValue: 0, maxValue: 1}
            """
        )
    )
    i, d, c, f = spec.hyperparameters.params
    assert i.grid_values() == [-2, -1, 0, 1, 2]
    assert d.grid_values() == [0.25, 1, 3]
    assert [type(v) for v in d.grid_values()] == [float, int, int]
    assert c.grid_values() == ["x", "y"]
    assert [p.is_finite for p in (i, d, c, f)] == [True, True, True, False]
    with pytest.raises(ValueError, match="DOUBLE parameter has no finite grid"):
        f.grid_values()


# ----------------------------------------------------------------------------------------------
# Ignored keys


def test_ignored_job_keys_warn_and_unknown_training_input_keys_are_flagged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "jobId: x\n" + job(
        "- {parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 1}"
    ).replace(
        "trainingInput:\n",
        "trainingInput:\n  scaleTier: BASIC_GPU\n  region: us-central1\n"
        "  masterType: n1-highmem-8\n  fancyNewKey: 1\n",
    )
    notes: list[str] = []
    with caplog.at_level(logging.WARNING, logger="tuner.domain.spec"):
        spec = load_spec_text(text, name="n", trainer="t", warnings=notes, source="job.yaml")

    assert spec.hyperparameters.params[0].parameter_name == "lr"
    assert notes[0] == "jobId: ignored (it does not concern tuning)"
    by_key = {n.split(":")[0]: n for n in notes}
    assert set(by_key) == {
        "jobId",
        "trainingInput.scaleTier",
        "trainingInput.region",
        "trainingInput.masterType",
        "trainingInput.fancyNewKey",
    }
    for key in ("scaleTier", "region", "masterType"):
        assert "ignored" in by_key[f"trainingInput.{key}"]
        assert "not a field the tuner knows" not in by_key[f"trainingInput.{key}"]
    assert "not a field the tuner knows" in by_key["trainingInput.fancyNewKey"]
    # They are logged too, with the file's name.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "job.yaml: trainingInput.fancyNewKey" in logged


def test_warnings_list_is_optional() -> None:
    spec = load_spec_text(CENSUS_JOB, name="n", trainer="t")
    assert spec.name == "n"


# ----------------------------------------------------------------------------------------------
# Refusals, each with its field path


@pytest.mark.parametrize(
    ("shape", "prefix"),
    [
        (bare, ""),
        (with_params, ""),
        (nested, "hyperparameters."),
        (job, "trainingInput.hyperparameters."),
    ],
)
def test_log_scale_refusal_names_the_field_as_written(shape: Any, prefix: Any) -> None:
    assert problems_of(shape(LOG_ZERO), name="n", trainer="t") == [
        (f"{prefix}params[2].minValue", "must be > 0 with UNIT_LOG_SCALE")
    ]


@pytest.mark.parametrize(
    ("shape", "prefix"),
    [(with_params, ""), (nested, "hyperparameters."), (job, "trainingInput.hyperparameters.")],
)
def test_unknown_field_typo(shape: Any, prefix: Any) -> None:
    text = shape("- {parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 1}", "maxTrial: 5\n")
    assert problems_of(text, name="n", trainer="t") == [
        (f"{prefix}maxTrial", "unknown field; did you mean 'maxTrials'?")
    ]


def test_unknown_field_inside_a_param() -> None:
    text = with_params("- {parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 1, scale: x}")
    assert problems_of(text) == [("params[0].scale", "unknown field; did you mean 'scaleType'?")]


REFUSALS = [
    pytest.param(
        "- {parameterName: x, type: DOUBLE}",
        [
            ("params[0].minValue", "required for DOUBLE"),
            ("params[0].maxValue", "required for DOUBLE"),
        ],
        id="double-missing-bounds",
    ),
    pytest.param(
        "- {parameterName: x, type: INTEGER, maxValue: 3}",
        [("params[0].minValue", "required for INTEGER")],
        id="integer-missing-min",
    ),
    pytest.param(
        "- {parameterName: x, type: INTEGER, minValue: 3}",
        [("params[0].maxValue", "required for INTEGER")],
        id="integer-missing-max",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: 2, maxValue: 1}",
        [("params[0].maxValue", "must be > minValue (2)")],
        id="min-above-max",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: 0.5, maxValue: 0.5}",
        [("params[0].maxValue", "must be > minValue (0.5)")],
        id="min-equals-max",
    ),
    pytest.param(
        "- {parameterName: x, type: INTEGER, minValue: 1.5, maxValue: 4.2}",
        [
            ("params[0].minValue", "must be a whole number for INTEGER"),
            ("params[0].maxValue", "must be a whole number for INTEGER"),
        ],
        id="integer-fractional-bounds",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: .nan, maxValue: .inf}",
        [
            ("params[0].minValue", "must be a finite number"),
            ("params[0].maxValue", "must be a finite number"),
        ],
        id="non-finite-bounds",
    ),
    pytest.param(
        "- {parameterName: x, type: INTEGER, minValue: -.inf, maxValue: 3}",
        [("params[0].minValue", "must be a finite number")],
        id="integer-infinite-bound",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: -1, maxValue: 1, "
        "scaleType: UNIT_REVERSE_LOG_SCALE}",
        [("params[0].minValue", "must be > 0 with UNIT_REVERSE_LOG_SCALE")],
        id="reverse-log-nonpositive",
    ),
    pytest.param(
        "- {parameterName: x, type: INTEGER, minValue: 0, maxValue: 9, scaleType: UNIT_LOG_SCALE}",
        [("params[0].minValue", "must be > 0 with UNIT_LOG_SCALE")],
        id="integer-log-zero",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1, categoricalValues: [a], "
        "discreteValues: [1]}",
        [
            ("params[0].categoricalValues", "not allowed with type DOUBLE"),
            ("params[0].discreteValues", "not allowed with type DOUBLE"),
        ],
        id="double-with-lists",
    ),
    pytest.param(
        "- {parameterName: x, type: CATEGORICAL, categoricalValues: []}",
        [("params[0].categoricalValues", "required and non-empty for CATEGORICAL")],
        id="categorical-empty",
    ),
    pytest.param(
        "- {parameterName: x, type: CATEGORICAL}",
        [("params[0].categoricalValues", "required and non-empty for CATEGORICAL")],
        id="categorical-missing",
    ),
    pytest.param(
        "- {parameterName: x, type: CATEGORICAL, categoricalValues: [a, b, a]}",
        [("params[0].categoricalValues", "values must be unique")],
        id="categorical-duplicates",
    ),
    pytest.param(
        "- {parameterName: x, type: CATEGORICAL, categoricalValues: [a], "
        "scaleType: UNIT_LINEAR_SCALE}",
        [("params[0].scaleType", "must be unset for CATEGORICAL")],
        id="categorical-scale",
    ),
    pytest.param(
        "- {parameterName: x, type: CATEGORICAL, categoricalValues: [a], minValue: 1, "
        "maxValue: 2, discreteValues: [1]}",
        [
            ("params[0].minValue", "not allowed with type CATEGORICAL"),
            ("params[0].maxValue", "not allowed with type CATEGORICAL"),
            ("params[0].discreteValues", "not allowed with type CATEGORICAL"),
        ],
        id="categorical-with-bounds",
    ),
    pytest.param(
        "- {parameterName: x, type: DISCRETE, discreteValues: []}",
        [("params[0].discreteValues", "required and non-empty for DISCRETE")],
        id="discrete-empty",
    ),
    pytest.param(
        "- {parameterName: x, type: DISCRETE, discreteValues: [1, 4, 2]}",
        [("params[0].discreteValues", "values must be strictly increasing")],
        id="discrete-not-increasing",
    ),
    pytest.param(
        "- {parameterName: x, type: DISCRETE, discreteValues: [1, 2, 2]}",
        [("params[0].discreteValues", "values must be strictly increasing")],
        id="discrete-repeated",
    ),
    pytest.param(
        "- {parameterName: x, type: DISCRETE, discreteValues: [1, .inf]}",
        [("params[0].discreteValues", "values must be finite numbers")],
        id="discrete-non-finite",
    ),
    pytest.param(
        "- {parameterName: x, type: DISCRETE, discreteValues: [1, 2], minValue: 1, "
        "categoricalValues: [a], scaleType: UNIT_LOG_SCALE}",
        [
            ("params[0].minValue", "not allowed with type DISCRETE"),
            ("params[0].categoricalValues", "not allowed with type DISCRETE"),
            (
                "params[0].scaleType",
                "DISCRETE values are sampled from the list; leave scaleType unset",
            ),
        ],
        id="discrete-with-extras",
    ),
    pytest.param(
        "- {parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}\n"
        "- {parameterName: y, type: DOUBLE, minValue: 0, maxValue: 1}\n"
        "- {parameterName: x, type: INTEGER, minValue: 0, maxValue: 1}",
        [("params[2].parameterName", "duplicate of params[0] ('x')")],
        id="duplicate-name",
    ),
]


@pytest.mark.parametrize(("params_yaml", "expected"), REFUSALS)
def test_param_refusals(params_yaml: Any, expected: Any) -> None:
    assert problems_of(bare(params_yaml), name="n", trainer="t") == expected


@pytest.mark.parametrize(("params_yaml", "expected"), REFUSALS)
def test_param_refusals_in_a_job_file_carry_the_job_path(params_yaml: Any, expected: Any) -> None:
    expected = [(f"trainingInput.hyperparameters.{f}", r) for f, r in expected]
    assert problems_of(job(params_yaml), name="n", trainer="t") == expected


@pytest.mark.parametrize("name", ["learning rate", "-lr", "--lr", "1lr", "lr=1", "", "lr/x"])
def test_bad_parameter_name(name: Any) -> None:
    text = bare(f"- {{parameterName: {json.dumps(name)}, type: DOUBLE, minValue: 0, maxValue: 1}}")
    [(field, reason)] = problems_of(text, name="n", trainer="t")
    assert field == "params[0].parameterName"
    assert reason.startswith("must start with a letter or '_'")
    assert "--flag" in reason


@pytest.mark.parametrize("name", ["lr", "_lr", "learning_rate", "first-layer-size", "opt.lr"])
def test_good_parameter_names(name: Any) -> None:
    spec = load_spec_text(
        bare(f"- {{parameterName: {name}, type: DOUBLE, minValue: 0, maxValue: 1}}"),
        name="n",
        trainer="t",
    )
    assert spec.hyperparameters.params[0].parameter_name == name


@pytest.mark.parametrize(
    ("text", "field", "got", "choices"),
    [
        (
            "goal: MAXIMISE\nhyperparameterMetricTag: a\n" + ONE_PARAM,
            "goal",
            "MAXIMISE",
            ["MAXIMIZE", "MINIMIZE"],
        ),
        (
            HP + "params: [{parameterName: x, type: FLOAT, minValue: 0, maxValue: 1}]",
            "params[0].type",
            "FLOAT",
            ["DOUBLE", "INTEGER", "CATEGORICAL", "DISCRETE"],
        ),
        (
            HP + "params: [{parameterName: x, type: DOUBLE, minValue: 1, maxValue: 2, "
            "scaleType: LOG}]",
            "params[0].scaleType",
            "LOG",
            ["NONE", "UNIT_LINEAR_SCALE", "UNIT_LOG_SCALE", "UNIT_REVERSE_LOG_SCALE"],
        ),
        (
            HP + "algorithm: BAYESIAN\n" + ONE_PARAM,
            "algorithm",
            "BAYESIAN",
            ["ALGORITHM_UNSPECIFIED", "GRID_SEARCH", "RANDOM_SEARCH", "CMA_ES", "GP", "QMC"],
        ),
        (HP + "objective: last\n" + ONE_PARAM, "objective", "last", ["best", "final"]),
        (
            HP + "goal: maximize\n" + ONE_PARAM,
            "goal",
            "maximize",
            ["MAXIMIZE", "MINIMIZE"],
        ),
    ],
    ids=["goal", "type", "scaleType", "algorithm", "objective", "goal-lowercase"],
)
def test_bad_enum_values_list_the_choices(text: Any, field: Any, got: Any, choices: Any) -> None:
    [(path, reason)] = problems_of(text, name="n", trainer="t")
    assert path == field
    assert reason.startswith(f"got {got!r}, expected one of")
    for choice in choices:
        assert repr(choice) in reason


def test_grid_search_with_a_double_is_refused() -> None:
    text = bare(
        """
        - {parameterName: units, type: INTEGER, minValue: 1, maxValue: 4}
        - {parameterName: lr, type: DOUBLE, minValue: 0.1, maxValue: 1}
        """,
        "algorithm: GRID_SEARCH\n",
    )
    [(field, reason)] = problems_of(text, name="n", trainer="t")
    assert field == "params[1].type"
    assert "GRID_SEARCH needs finitely many values" in reason
    assert "use DISCRETE" in reason


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ("maxTrials: 0\n", "maxTrials", "greater than or equal to 1"),
        ("maxTrials: -3\n", "maxTrials", "greater than or equal to 1"),
        ("maxTrials: 2.5\n", "maxTrials", "valid integer"),
        ("maxParallelTrials: 0\n", "maxParallelTrials", "greater than or equal to 1"),
        ("maxFailedTrials: -1\n", "maxFailedTrials", "greater than or equal to 0"),
        ("hyperparameterMetricTag: ''\n", "hyperparameterMetricTag", "at least 1 character"),
        ("params: []\n", "params", "at least 1 item"),
    ],
)
def test_bad_counts_and_lists(extra: Any, field: Any, reason: Any) -> None:
    text = "goal: MAXIMIZE\n" + extra
    if "hyperparameterMetricTag" not in extra:
        text += "hyperparameterMetricTag: acc\n"
    if "params" not in extra:
        text += ONE_PARAM
    problems = problems_of(text, name="n", trainer="t")
    assert len(problems) == 1
    assert problems[0][0] == field
    assert reason in problems[0][1]


def test_missing_goal_tag_and_params() -> None:
    assert problems_of("maxTrials: 3\n", name="n", trainer="t") == [
        ("goal", "required"),
        ("hyperparameterMetricTag", "required"),
        ("params", "required"),
    ]


def test_missing_name_and_trainer_say_they_can_be_given_with_the_command() -> None:
    problems = problems_of(HP + ONE_PARAM)
    assert problems == [
        ("name", "required (in the spec, or given with the command)"),
        ("trainer", "required (in the spec, or given with the command)"),
    ]


def test_job_file_without_name_or_trainer_is_refused_with_the_hint() -> None:
    fields = [f for f, _ in problems_of(CENSUS_JOB)]
    assert fields == ["name", "trainer"]


@pytest.mark.parametrize(
    "name", ["../x", "my study", "", "-x", ".hidden", "a/b", "x" * 129, "naïve", "a\\b"]
)
def test_bad_study_name(name: Any) -> None:
    assert problems_of(HP + ONE_PARAM, name=name, trainer="t") == [("name", BAD_NAME)]


@pytest.mark.parametrize("name", ["a", "9lives", "census-hptune_1.v2", "x" * 128])
def test_good_study_name(name: Any) -> None:
    assert load_spec_text(HP + ONE_PARAM, name=name, trainer="t").name == name


def test_empty_trainer() -> None:
    [(field, reason)] = problems_of(HP + ONE_PARAM, name="n", trainer="")
    assert field == "trainer"
    assert "at least 1 character" in reason


@pytest.mark.parametrize(
    "flag", ["job-dir", "--", "-", "--job dir", "--job-dir=x", "---x", "--/tmp", "—job-dir"]
)
def test_bad_output_dir_flag(flag: Any) -> None:
    assert problems_of(HP + ONE_PARAM, name="n", trainer="t", output_dir_flag=flag) == [
        ("outputDirFlag", "must look like --job-dir or --output_dir")
    ]


@pytest.mark.parametrize("flag", ["--job-dir", "--output_dir", "-o", "--model.dir"])
def test_good_output_dir_flag(flag: Any) -> None:
    spec = load_spec_text(HP + ONE_PARAM, name="n", trainer="t", output_dir_flag=flag)
    assert spec.output_dir_flag == flag


@pytest.mark.parametrize("pattern", ["..", "../eval", "eval/../../x", "/abs/eval", "\\share"])
def test_eval_dirs_must_stay_inside_the_output_dir(pattern: Any) -> None:
    [(field, reason)] = problems_of(
        HP + ONE_PARAM, name="n", trainer="t", eval_dirs=["eval", pattern]
    )
    assert field == "evalDirs"
    assert reason == f"{pattern!r} must be relative to the trial's output dir"


@pytest.mark.parametrize("patterns", [["eval"], ["eval_*", "sub/eval"], ["eval..old"]])
def test_good_eval_dirs(patterns: Any) -> None:
    spec = load_spec_text(HP + ONE_PARAM, name="n", trainer="t", eval_dirs=patterns)
    assert spec.eval_dirs == patterns


def test_empty_eval_dirs() -> None:
    [(field, reason)] = problems_of(OURS + "evalDirs: []\n" + HP + ONE_PARAM)
    assert field == "evalDirs"
    assert "at least 1 item" in reason


def test_bad_early_stopping() -> None:
    text = OURS + "earlyStopping: {type: asha, percentile: 100, reductionFactor: 1}\n"
    problems = dict(problems_of(text + HP + ONE_PARAM))
    assert set(problems) == {
        "earlyStopping.type",
        "earlyStopping.percentile",
        "earlyStopping.reductionFactor",
    }
    assert "'median'" in problems["earlyStopping.type"]
    assert "'hyperband'" in problems["earlyStopping.type"]
    assert "less than 100" in problems["earlyStopping.percentile"]
    assert "greater than or equal to 2" in problems["earlyStopping.reductionFactor"]


def test_wrongly_typed_top_level_fields() -> None:
    text = OURS + "args: --num-epochs\nseed: abc\n" + HP + ONE_PARAM
    problems = dict(problems_of(text))
    assert set(problems) == {"args", "seed"}
    assert "valid list" in problems["args"]
    assert "valid integer" in problems["seed"]


def test_not_yaml() -> None:
    with pytest.raises(SpecError) as info:
        load_spec_text("name: [a\ntrainer: b\n", source="bad.yaml")
    [(field, reason)] = info.value.problems
    assert field == ""
    assert reason.startswith("not valid YAML or JSON: line 2, column")
    assert str(info.value).startswith("bad.yaml: invalid study spec")


def test_truncated_json_is_not_json() -> None:
    [(field, reason)] = problems_of(REST_JOB_JSON[:-40])
    assert field == ""
    assert reason.startswith("not valid YAML or JSON")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "list"), ("", "empty"), ("just words\n", "str"), ("42\n", "int")],
)
def test_not_a_mapping(text: Any, kind: Any) -> None:
    assert problems_of(text) == [("", f"must be a mapping of fields, got {kind}")]


def test_parse_spec_refuses_a_non_mapping_document() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(["goal"], source="api")
    assert info.value.problems == [("", "must be a mapping of fields, got list")]
    assert info.value.source == "api"


def test_training_input_must_be_a_mapping_with_hyperparameters() -> None:
    assert problems_of("trainingInput: [1, 2]\n") == [("trainingInput", "must be a mapping")]
    assert problems_of("trainingInput:\n  scaleTier: BASIC\n") == [
        ("trainingInput.hyperparameters", "required: the tuning config")
    ]
    [(field, reason)] = problems_of("trainingInput:\n  hyperparameters: 5\n", name="n", trainer="t")
    assert field == "trainingInput.hyperparameters"
    assert "valid dictionary" in reason


def test_unknown_top_level_key_of_a_job_file() -> None:
    text = "fooBar: 1\n" + job("- {parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}")
    assert problems_of(text, name="n", trainer="t") == [
        ("fooBar", "unknown field (check its spelling)")
    ]


def test_several_problems_are_reported_together() -> None:
    text = job(
        """
        - {parameterName: hidden1, type: INTEGER, minValue: 40.5, maxValue: 400}
        - {parameterName: lr, type: DOUBLE, minValue: 0, maxValue: 0.1, scaleType: UNIT_LOG_SCALE}
        - {parameterName: cell, type: CATEGORICAL, categoricalValues: []}
        """,
        "maxTrial: 3\n",
    )
    with pytest.raises(SpecError) as info:
        load_spec_text(text, name="../x", trainer="t", source="hptuning_config.yaml")
    problems = info.value.problems
    p = "trainingInput.hyperparameters."
    assert sorted(problems) == sorted(
        [
            (
                "name",
                "must be 1-128 letters, digits, '_', '.', '-', starting with a letter or digit",
            ),
            (f"{p}params[0].minValue", "must be a whole number for INTEGER"),
            (f"{p}params[1].minValue", "must be > 0 with UNIT_LOG_SCALE"),
            (f"{p}params[2].categoricalValues", "required and non-empty for CATEGORICAL"),
            (f"{p}maxTrial", "unknown field; did you mean 'maxTrials'?"),
        ]
    )
    # The message lists every problem, one per line, after the file's name.
    message = str(info.value)
    assert message.startswith("hptuning_config.yaml: invalid study spec\n")
    for field, reason in problems:
        assert f"\n  {field}: {reason}" in message


# ----------------------------------------------------------------------------------------------
# StudySpec behaviour

GRID = """
- {parameterName: units, type: INTEGER, minValue: 1, maxValue: 3}
- {parameterName: cells, type: DISCRETE, discreteValues: [1, 2]}
- {parameterName: cell, type: CATEGORICAL, categoricalValues: [GRU, LSTM]}
"""


@pytest.mark.parametrize(("max_trials", "expected"), [(100, 12), (12, 12), (5, 5), (1, 1)])
def test_max_trials_is_capped_by_the_grid_size(max_trials: Any, expected: Any) -> None:
    spec = load_spec_text(
        bare(GRID, f"algorithm: GRID_SEARCH\nmaxTrials: {max_trials}\n"), name="g", trainer="t"
    )
    assert spec.hyperparameters.grid_size == 12
    assert spec.max_trials == expected
    assert spec.hyperparameters.max_trials == max_trials


def test_max_trials_is_not_capped_without_grid_search() -> None:
    spec = load_spec_text(bare(GRID, "maxTrials: 100\n"), name="g", trainer="t")
    assert spec.max_trials == 100


def _with_pruning(enable: bool, early_stopping: str | None) -> StudySpec:
    extra = f"enableTrialEarlyStopping: {str(enable).lower()}\n"
    if early_stopping is not None:
        extra += f"earlyStopping: {early_stopping}\n"
    return load_spec_text(OURS + extra + HP + ONE_PARAM)


def test_pruner_default_when_early_stopping_is_enabled() -> None:
    pruner = _with_pruning(True, None).pruner
    assert pruner is not None
    assert pruner.type == "median"
    assert pruner == DEFAULT_PRUNER
    assert (pruner.startup_trials, pruner.warmup_steps, pruner.interval_steps) == (3, "auto", 1)
    # An explicit median pruner keeps no warm-up unless asked.
    assert PrunerSpec().warmup_steps == 0


def test_no_pruner_when_early_stopping_is_disabled() -> None:
    assert _with_pruning(False, None).pruner is None


@pytest.mark.parametrize("enable", [True, False])
def test_explicit_early_stopping_wins(enable: Any) -> None:
    spec = _with_pruning(enable, "{type: hyperband, minResource: 100, reductionFactor: 4}")
    assert spec.pruner == PrunerSpec(type="hyperband", min_resource=100, reduction_factor=4)
    spec = _with_pruning(enable, "{type: successive_halving}")
    assert spec.pruner is not None
    assert spec.pruner.type == "successive_halving"
    assert spec.pruner.min_resource == "auto"


@pytest.mark.parametrize("enable", [True, False])
def test_early_stopping_none_turns_pruning_off(enable: Any) -> None:
    assert _with_pruning(enable, "{type: none}").pruner is None


def test_is_better_follows_the_goal() -> None:
    up = load_spec_text(HP + ONE_PARAM, name="n", trainer="t")
    down = load_spec_text(HP.replace("MAXIMIZE", "MINIMIZE") + ONE_PARAM, name="n", trainer="t")
    assert up.is_better(0.9, 0.8)
    assert not up.is_better(0.8, 0.9)
    assert not up.is_better(0.8, 0.8)
    assert down.is_better(0.1, 0.2)
    assert not down.is_better(0.2, 0.1)
    assert not down.is_better(0.2, 0.2)


@pytest.mark.parametrize(
    ("text", "overrides"),
    [
        (CENSUS_JOB, {"name": "census", "trainer": "rnn"}),
        (LEARNING_RATE_CONFIG, {"name": "lr", "trainer": "t", "seed": 5}),
        (REST_JOB_JSON, {"name": "rest", "trainer": "t"}),
        (
            OURS
            + "objective: final\nevalDirs: [ev]\nseed: 11\n"
            + "earlyStopping: {type: percentile, percentile: 30}\n"
            + bare(GRID, "algorithm: RANDOM_SEARCH\nmaxFailedTrials: 2\n")
            + "  - {parameterName: f, type: DOUBLE, minValue: 1e-3, maxValue: 1.0, "
            "scaleType: UNIT_REVERSE_LOG_SCALE}\n",
            {},
        ),
    ],
    ids=["census", "learning-rate", "rest-json", "ours"],
)
def test_to_document_round_trips(text: Any, overrides: Any) -> None:
    spec = load_spec_text(text, **overrides)
    document = spec.to_document()

    # AI Platform's field names, JSON-able, no nulls.
    assert "hyperparameters" in document
    assert "hyperparameterMetricTag" in document["hyperparameters"]
    assert "parameterName" in document["hyperparameters"]["params"][0]
    assert json.loads(json.dumps(document)) == document
    assert None not in document.values()

    again = parse_spec(document)
    assert again == spec
    assert again.to_document() == document
    assert parse_spec(json.loads(spec_to_json(spec))) == spec
    assert spec_to_json(again) == spec_to_json(spec)


# ----------------------------------------------------------------------------------------------
# Known bugs (see the reasons)


def test_study_name_with_trailing_newline_is_refused() -> None:
    text = "name: |\n  census\ntrainer: t\n" + HP + ONE_PARAM
    assert [f for f, _ in problems_of(text)] == ["name"]


def test_parameter_name_with_trailing_newline_is_refused() -> None:
    doc = {
        "name": "n",
        "trainer": "t",
        "goal": "MAXIMIZE",
        "hyperparameterMetricTag": "a",
        "params": [{"parameterName": "lr\n", "type": "DOUBLE", "minValue": 0, "maxValue": 1}],
    }
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert [f for f, _ in info.value.problems] == ["params[0].parameterName"]


def test_output_dir_flag_with_trailing_newline_is_refused() -> None:
    assert [f for f, _ in problems_of(OURS + HP + ONE_PARAM, output_dir_flag="--job-dir\n")] == [
        "outputDirFlag"
    ]


def test_json_indented_with_tabs_is_accepted() -> None:
    text = json.dumps(json.loads(REST_JOB_JSON), indent="\t")
    spec = load_spec_text(text, name="tabs", trainer="t")
    assert spec.metric_tag == "loss"
