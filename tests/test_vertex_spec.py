"""Specs in Vertex AI's dialect (`HyperparameterTuningJob`), several metrics and conditional
parameters: what a user's file becomes, and every refusal as the user sees it (the path in
their own file). No TensorFlow, no database."""

from __future__ import annotations

import itertools
import json
import textwrap
from typing import Any

import pytest

from tuner.domain.errors import SpecError
from tuner.domain.spec import (
    DEFAULT_MULTI_OBJECTIVE_PRUNER,
    DEFAULT_PRUNER,
    Algorithm,
    Goal,
    ObjectiveMode,
    ParamType,
    ScaleType,
    load_spec_text,
    parse_spec,
    spec_to_json,
)

# ----------------------------------------------------------------------------------------------
# Helpers

#: A job as `gcloud ai hp-tuning-jobs create --config` takes it, with the tuner's own `trainer`
#: and `seed` beside Vertex's fields: two objectives, a safety metric, a conditional parameter.
PARETO_JOB = textwrap.dedent(
    """
    displayName: houses-pareto
    trainer: two_objectives
    seed: 7
    maxTrialCount: "12"
    parallelTrialCount: 2
    maxFailedTrialCount: "3"
    studySpec:
      metrics:
      - metricId: rmse
        goal: MINIMIZE
      - metricId: model_size
        goal: MINIMIZE
      - metricId: latency_ms
        goal: MINIMIZE
        safetyConfig:
          safetyThreshold: 5.0
          desiredMinSafeTrialsFraction: 0.5
      parameters:
      - parameterId: optimizer
        categoricalValueSpec:
          values: [adam, sgd]
        conditionalParameterSpecs:
        - parentCategoricalValues:
            values: [sgd]
          parameterSpec:
            parameterId: momentum
            doubleValueSpec: {minValue: 0.0, maxValue: 0.9}
      - parameterId: units
        integerValueSpec: {minValue: "4", maxValue: "64"}
        scaleType: UNIT_LOG_SCALE
      - parameterId: learning_rate
        doubleValueSpec: {minValue: 0.001, maxValue: 0.1, defaultValue: 0.01}
        scaleType: UNIT_LOG_SCALE
      algorithm: ALGORITHM_UNSPECIFIED
      measurementSelectionType: LAST_MEASUREMENT
      observationNoise: HIGH
    trialJobSpec:
      workerPoolSpecs:
      - machineSpec: {machineType: n1-standard-4}
        replicaCount: "1"
        pythonPackageSpec:
          executorImageUri: us-docker.pkg.dev/vertex-ai/training/tf-cpu.2-15.py310:latest
          packageUris: [gs://my-bucket/trainer-0.1.tar.gz]
          pythonModule: trainer.task
          args: [--train-steps=40, --eval-every-steps=10]
    encryptionSpec: {kmsKeyName: projects/p/locations/l/keyRings/r/cryptoKeys/k}
    labels: {team: ml}
    """
)

ONE = [{"metricId": "rmse", "goal": "MINIMIZE"}]
TWO = [*ONE, {"metricId": "model_size", "goal": "MINIMIZE"}]
LR = {
    "parameterId": "lr",
    "doubleValueSpec": {"minValue": 0.001, "maxValue": 0.1},
    "scaleType": "UNIT_LOG_SCALE",
}
MOMENTUM = {"parameterId": "momentum", "doubleValueSpec": {"minValue": 0.0, "maxValue": 0.9}}


def optimizer(*parent_values: str, child: dict[str, Any] | None = None) -> dict[str, Any]:
    """A categorical parent whose child (momentum) is active for `parent_values`."""
    return {
        "parameterId": "optimizer",
        "categoricalValueSpec": {"values": ["adam", "sgd"]},
        "conditionalParameterSpecs": [
            {
                "parentCategoricalValues": {"values": list(parent_values or ("sgd",))},
                "parameterSpec": child or MOMENTUM,
            }
        ],
    }


def vertex(
    parameters: list[Any], metrics: list[Any] = ONE, study: dict[str, Any] | None = None, **top
) -> dict[str, Any]:
    """A Vertex job document with our `trainer` beside it."""
    return {
        "displayName": "job",
        "trainer": "t",
        "studySpec": {"metrics": metrics, "parameters": parameters, **(study or {})},
        **top,
    }


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(document)
    return info.value.problems


def brute_force_count(values: dict[str, list[Any]], rules: dict[str, tuple[str, set[Any]]]) -> int:
    """How many assignments of values (or None: absent) have each child present exactly when
    its parent is present with one of the values in `rules` (every other parameter: always)."""
    names = list(values)
    count = 0
    for combo in itertools.product(*[[*values[n], None] for n in names]):
        flags = dict(zip(names, combo, strict=True))
        ok = True
        for name, value in flags.items():
            parent, activating = rules.get(name, (None, set()))
            active = parent is None or (flags[parent] is not None and flags[parent] in activating)
            ok = ok and (value is not None) == active
        count += ok
    return count


# ----------------------------------------------------------------------------------------------
# What a Vertex job becomes


def test_a_vertex_job_with_two_objectives_a_safety_metric_and_a_conditional_parameter() -> None:
    notes: list[str] = []
    spec = load_spec_text(PARETO_JOB, warnings=notes)

    assert (spec.name, spec.trainer, spec.seed) == ("houses-pareto", "two_objectives", 7)
    assert [(o.metric, o.goal) for o in spec.objectives] == [
        ("rmse", Goal.MINIMIZE),
        ("model_size", Goal.MINIMIZE),
    ]
    assert spec.multi_objective and spec.metric_tag == "rmse" and spec.goal is Goal.MINIMIZE
    [safety] = spec.constraints
    assert (safety.metric_id, safety.goal) == ("latency_ms", Goal.MINIMIZE)
    assert safety.safety_config is not None
    assert safety.safety_config.safety_threshold == 5.0
    assert safety.violation(4.0) == -1.0 and safety.violation(6.5) == 1.5  # <= 0: feasible
    assert spec.ranked_metrics == ["rmse", "model_size", "latency_ms"]
    # LAST_MEASUREMENT: a trial is ranked by its last eval, not its best.
    assert spec.objective is ObjectiveMode.FINAL
    # The trainer's fixed flags come from the first worker pool.
    assert spec.args == ["--train-steps=40", "--eval-every-steps=10"]
    hp = spec.hyperparameters
    assert (hp.max_trials, hp.max_parallel_trials, hp.max_failed_trials) == (12, 2, 3)
    assert hp.algorithm is Algorithm.ALGORITHM_UNSPECIFIED
    assert spec.pruner is None  # no stopping spec

    opt, units, lr = hp.params
    assert (opt.parameter_name, opt.type, opt.categorical_values) == (
        "optimizer",
        ParamType.CATEGORICAL,
        ["adam", "sgd"],
    )
    assert [c.parameter_name for c in opt.children_for("sgd")] == ["momentum"]
    assert opt.children_for("adam") == []
    [momentum] = opt.children_for("sgd")
    assert (momentum.type, momentum.min_value, momentum.max_value) == (ParamType.DOUBLE, 0, 0.9)
    assert (units.type, units.min_value, units.max_value, units.scale_type) == (
        ParamType.INTEGER,
        4,
        64,
        ScaleType.UNIT_LOG_SCALE,
    )
    assert lr.parameter_name == "learning_rate" and lr.scale is ScaleType.UNIT_LOG_SCALE
    assert [p.parameter_name for p in hp.all_params] == [
        "optimizer",
        "momentum",
        "units",
        "learning_rate",
    ]
    assert hp.has_conditionals

    # Everything that was accepted but not used is named, by its place in the file.
    assert notes == [
        "encryptionSpec: ignored, it does not concern tuning here",
        "labels: ignored, it does not concern tuning here",
        "trialJobSpec: ignored, it does not concern tuning here",
        "args: taken from trialJobSpec.workerPoolSpecs[0] (the trainer's fixed flags)",
        "studySpec.observationNoise: ignored, the tuner does not apply it",
        "studySpec.parameters[2].doubleValueSpec.defaultValue: ignored (the sampler chooses "
        "the first trials; `tuner retry` or a warm start runs chosen values)",
    ]


def test_the_rest_json_of_a_job_read_back_from_vertex_is_accepted() -> None:
    """`GET .../hyperparameterTuningJobs/ID`: int64 fields as strings, output-only fields, and
    Vertex's resource name, which is not the study's name."""
    document = vertex(
        [optimizer("sgd"), LR],
        name="projects/123/locations/us-central1/hyperparameterTuningJobs/456",
        state="JOB_STATE_SUCCEEDED",
        createTime="2024-05-01T10:00:00Z",
        trials=[{"id": "1", "state": "SUCCEEDED"}],
        maxTrialCount="20",
        parallelTrialCount="4",
        maxFailedTrialCount="0",
    )
    notes: list[str] = []
    spec = load_spec_text(json.dumps(document), warnings=notes)
    assert spec.name == "job"  # displayName
    hp = spec.hyperparameters
    assert (hp.max_trials, hp.max_parallel_trials, hp.max_failed_trials) == (20, 4, 0)
    assert notes[0].startswith(
        "name: 'projects/123/locations/us-central1/hyperparameterTuningJobs/456' is Vertex's "
        "resource name, ignored"
    )
    assert notes[1:] == [
        f"{key}: ignored, it does not concern tuning here"
        for key in ("createTime", "state", "trials")
    ]


def test_a_name_beside_the_display_name_names_the_study() -> None:
    assert parse_spec(vertex([LR], name="mine")).name == "mine"
    assert parse_spec(vertex([LR]), name="given").name == "given"


def test_int64_fields_written_as_strings_are_numbers() -> None:
    spec = parse_spec(
        vertex(
            [
                {
                    "parameterId": "layers",
                    "integerValueSpec": {"minValue": "1", "maxValue": "3"},
                    "conditionalParameterSpecs": [
                        {
                            "parentIntValues": {"values": ["2", 3]},
                            "parameterSpec": {
                                "parameterId": "width",
                                "integerValueSpec": {"minValue": "-8", "maxValue": " 16 "},
                            },
                        }
                    ],
                }
            ],
            maxTrialCount=" 9 ",
            parallelTrialCount="3",
        )
    )
    [layers] = spec.hyperparameters.params
    assert (layers.min_value, layers.max_value) == (1, 3)
    assert [bool(layers.children_for(v)) for v in (1, 2, 3)] == [False, True, True]
    assert [bool(layers.children_for(v)) for v in ("1", "2", "3")] == [False, True, True]
    [width] = layers.children_for(2)
    assert (width.min_value, width.max_value) == (-8, 16)
    assert (spec.hyperparameters.max_trials, spec.hyperparameters.max_parallel_trials) == (9, 3)


@pytest.mark.parametrize(
    ("document", "path", "reason"),
    [
        (
            vertex([LR], maxTrialCount="ten"),
            "maxTrialCount",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            vertex([LR], maxTrialCount="0"),
            "maxTrialCount",
            "Input should be greater than or equal to 1",
        ),
        (
            vertex([{"parameterId": "u", "integerValueSpec": {"minValue": "1.5", "maxValue": 4}}]),
            "studySpec.parameters[0].integerValueSpec.minValue",
            "must be a whole number for INTEGER",
        ),
        (
            vertex(
                [
                    {
                        "parameterId": "u",
                        "integerValueSpec": {"minValue": 1, "maxValue": 4},
                        "conditionalParameterSpecs": [
                            {"parentIntValues": {"values": ["two"]}, "parameterSpec": LR}
                        ],
                    }
                ]
            ),
            "studySpec.parameters[0].conditionalParameterSpecs[0].parentIntValues",
            "values must be whole numbers, got 'two'",
        ),
    ],
    ids=["count-not-a-number", "count-zero", "integer-not-whole", "parent-int-not-a-number"],
)
def test_bad_int64_fields_are_named(document: dict[str, Any], path: str, reason: str) -> None:
    assert problems(document) == [(path, reason)]


@pytest.mark.parametrize(
    ("selection", "mode"),
    [
        ("BEST_MEASUREMENT", ObjectiveMode.BEST),
        ("LAST_MEASUREMENT", ObjectiveMode.FINAL),
        ("MEASUREMENT_SELECTION_TYPE_UNSPECIFIED", ObjectiveMode.BEST),
        (None, ObjectiveMode.BEST),
    ],
)
def test_measurement_selection_picks_the_objective_mode(
    selection: str | None, mode: ObjectiveMode
) -> None:
    study = {} if selection is None else {"measurementSelectionType": selection}
    assert parse_spec(vertex([LR], study=study)).objective is mode


def test_measurement_selection_refusals() -> None:
    assert problems(vertex([LR], study={"measurementSelectionType": "LAST"})) == [
        (
            "studySpec.measurementSelectionType",
            "got 'LAST', expected one of BEST_MEASUREMENT, LAST_MEASUREMENT, "
            "MEASUREMENT_SELECTION_TYPE_UNSPECIFIED",
        )
    ]
    contradicted = vertex([LR], study={"measurementSelectionType": "LAST_MEASUREMENT"})
    contradicted["objective"] = "best"
    assert problems(contradicted) == [
        (
            "objective",
            "'best' contradicts studySpec.measurementSelectionType LAST_MEASUREMENT (which "
            "means 'final'); give one of them",
        )
    ]
    agreeing = vertex([LR], study={"measurementSelectionType": "LAST_MEASUREMENT"})
    agreeing["objective"] = "final"
    assert parse_spec(agreeing).objective is ObjectiveMode.FINAL


def test_stopping_specs_turn_on_the_rule_that_fits_the_objectives() -> None:
    notes: list[str] = []
    one = parse_spec(
        vertex([LR], study={"medianAutomatedStoppingSpec": {"useElapsedDuration": True}}),
        warnings=notes,
    )
    assert one.pruner == DEFAULT_PRUNER
    assert notes == [
        "studySpec.medianAutomatedStoppingSpec.useElapsedDuration: ignored, trials are "
        "compared at the same global step"
    ]
    two = parse_spec(vertex([LR], TWO, study={"medianAutomatedStoppingSpec": {}}))
    assert two.pruner == DEFAULT_MULTI_OBJECTIVE_PRUNER  # median compares one value
    notes.clear()
    decay = parse_spec(vertex([LR], study={"decayCurveStoppingSpec": {}}), warnings=notes)
    assert decay.pruner == DEFAULT_PRUNER
    assert notes == [
        "studySpec.decayCurveStoppingSpec: the tuner's default early stopping is used instead "
        "(docs/spec.md, Early stopping)"
    ]
    assert problems(vertex([LR], study={"decayCurveStoppingSpec": {}, "convexStopConfig": {}})) == [
        (
            "studySpec",
            "give at most one stopping spec, got decayCurveStoppingSpec, convexStopConfig",
        )
    ]


# ----------------------------------------------------------------------------------------------
# Refusals, at the path in the user's file


CMA_ES = {"algorithm": "CMA_ES"}
DOUBLE_PARENT = {
    **LR,
    "conditionalParameterSpecs": [
        {"parentDiscreteValues": {"values": [0.01]}, "parameterSpec": MOMENTUM}
    ],
}
LAYERS = {"parameterId": "layers", "discreteValueSpec": {"values": [1, 2, 4]}}
UNITS = {"parameterId": "units", "integerValueSpec": {"minValue": 1, "maxValue": 4}}


def child_of(parent: dict[str, Any], **condition: Any) -> dict[str, Any]:
    return {**parent, "conditionalParameterSpecs": [{**condition, "parameterSpec": MOMENTUM}]}


REFUSALS = [
    pytest.param(
        vertex([LR], TWO, study=CMA_ES),
        "studySpec.algorithm",
        "CMA_ES optimizes one objective; with several use ALGORITHM_UNSPECIFIED (TPE), "
        "NSGA_II, GP, RANDOM_SEARCH, QMC or GRID_SEARCH",
        id="cma-es-several-objectives",
    ),
    pytest.param(
        vertex([LR, optimizer("sgd")], study=CMA_ES),
        "studySpec.algorithm",
        "CMA_ES needs one fixed search space; conditional parameters would be sampled at "
        "random, outside its model (use ALGORITHM_UNSPECIFIED: TPE models conditional spaces)",
        id="cma-es-conditionals",
    ),
    pytest.param(
        vertex([LR], ONE, study={"algorithm": "NSGA_II"}),
        "studySpec.algorithm",
        "NSGA_II is for several objectives; with one use ALGORITHM_UNSPECIFIED (TPE) or another",
        id="nsga-ii-one-objective",
    ),
    pytest.param(
        vertex([UNITS, DOUBLE_PARENT]),
        "studySpec.parameters[1].conditionalParameterSpecs",
        "a DOUBLE parameter cannot be a parent (its values cannot be matched exactly); use "
        "DISCRETE, INTEGER or CATEGORICAL",
        id="double-parent",
    ),
    pytest.param(
        vertex([LR, optimizer("sgd", "rmsprop")]),
        "studySpec.parameters[1].conditionalParameterSpecs[0].parentCategoricalValues.values[1]",
        "'rmsprop' is not a value of the parent",
        id="categorical-parent-value",
    ),
    pytest.param(
        vertex([child_of(LAYERS, parentDiscreteValues={"values": [2, 3]})]),
        "studySpec.parameters[0].conditionalParameterSpecs[0].parentDiscreteValues.values[1]",
        "3 is not a value of the parent",
        id="discrete-parent-value",
    ),
    pytest.param(
        vertex([child_of(UNITS, parentIntValues={"values": ["5"]})]),
        "studySpec.parameters[0].conditionalParameterSpecs[0].parentIntValues.values[0]",
        "5 is outside the parent's range [1, 4]",
        id="int-parent-value",
    ),
    pytest.param(
        vertex([child_of(UNITS, parentCategoricalValues={"values": ["1"]})]),
        "studySpec.parameters[0].conditionalParameterSpecs[0]",
        "needs exactly one of the parent's values, as parentIntValues (the parent is INTEGER); "
        "got parentCategoricalValues",
        id="parent-values-of-another-type",
    ),
    pytest.param(
        vertex([{**UNITS, "conditionalParameterSpecs": []}]),
        "studySpec.parameters[0].conditionalParameterSpecs",
        "must not be empty when given",
        id="no-children",
    ),
    pytest.param(
        vertex([LR], TWO, earlyStopping={"type": "median"}),
        "earlyStopping.type",
        "median compares one value and the study has several objectives: use 'dominated' "
        "(or enableTrialEarlyStopping: true alone)",
        id="median-several-objectives",
    ),
    pytest.param(
        vertex([LR], TWO, earlyStopping={"type": "hyperband"}),
        "earlyStopping.type",
        "hyperband compares one value and the study has several objectives: use 'dominated' "
        "(or enableTrialEarlyStopping: true alone)",
        id="hyperband-several-objectives",
    ),
    pytest.param(
        vertex([LR], ONE, earlyStopping={"type": "dominated"}),
        "earlyStopping.type",
        "'dominated' needs several objectives (metrics)",
        id="dominated-one-objective",
    ),
    pytest.param(
        vertex(
            [
                LR,
                {
                    "parameterId": "u",
                    "integerValueSpec": {"minValue": 0, "maxValue": 8},
                    "scaleType": "UNIT_LOG_SCALE",
                },
            ]
        ),
        "studySpec.parameters[1].integerValueSpec.minValue",
        "must be > 0 with UNIT_LOG_SCALE",
        id="log-scale-from-zero",
    ),
    pytest.param(
        vertex(
            [
                optimizer(
                    "sgd",
                    child={
                        "parameterId": "decay",
                        "integerValueSpec": {"minValue": "0", "maxValue": "4"},
                        "scaleType": "UNIT_REVERSE_LOG_SCALE",
                    },
                )
            ]
        ),
        "studySpec.parameters[0].conditionalParameterSpecs[0].parameterSpec"
        ".integerValueSpec.minValue",
        "must be > 0 with UNIT_REVERSE_LOG_SCALE",
        id="log-scale-child",
    ),
    pytest.param(
        vertex([optimizer("sgd")], study={"algorithm": "GRID_SEARCH"}),
        "studySpec.parameters[0].conditionalParameterSpecs[0].parameterSpec.doubleValueSpec",
        "GRID_SEARCH needs finitely many values; a DOUBLE makes the grid infinite (use "
        "DISCRETE with discreteValues)",
        id="grid-double-child",
    ),
    pytest.param(
        vertex(
            [
                {
                    "parameterId": "a",
                    "integerValueSpec": {"minValue": 1, "maxValue": 1000},
                    "conditionalParameterSpecs": [
                        {
                            "parentIntValues": {"values": [1]},
                            "parameterSpec": {
                                "parameterId": "b",
                                "integerValueSpec": {"minValue": 1, "maxValue": 1000},
                            },
                        }
                    ],
                },
                {"parameterId": "c", "integerValueSpec": {"minValue": 1, "maxValue": 1000}},
            ],
            study={"algorithm": "GRID_SEARCH"},
        ),
        "studySpec.parameters",
        # a: 999 values without b, 1 with b's 1000; times c's 1000.
        "GRID_SEARCH grid has 1999000 points (limit 100000)",
        id="grid-too-large",
    ),
    pytest.param(
        vertex([LR], [{"metricId": "latency", "goal": "MINIMIZE", "safetyConfig": {}}]),
        "studySpec.metrics",
        "needs at least one objective (a metric without safetyConfig)",
        id="only-a-safety-metric",
    ),
    pytest.param(
        vertex([LR], [{"metricId": "rmse", "goal": "MINIMISE"}]),
        "studySpec.metrics[0].goal",
        "got 'MINIMISE', expected one of 'MAXIMIZE' or 'MINIMIZE'; did you mean 'MINIMIZE'?",
        id="bad-goal",
    ),
    pytest.param(
        vertex(
            [
                {
                    "parameterId": "o",
                    "categoricalValueSpec": {"values": ["a"]},
                    "discreteValueSpec": {"values": [1]},
                }
            ]
        ),
        "studySpec.parameters[0]",
        "needs exactly one of doubleValueSpec, integerValueSpec, categoricalValueSpec, "
        "discreteValueSpec (got categoricalValueSpec, discreteValueSpec)",
        id="two-value-specs",
    ),
    pytest.param(
        vertex([{**UNITS, "conditionalParameterSpecs": [{"parentIntValues": {"values": [1]}}]}]),
        "studySpec.parameters[0].conditionalParameterSpecs[0].parameterSpec",
        "required",
        id="child-without-spec",
    ),
]


@pytest.mark.parametrize(("document", "path", "reason"), REFUSALS)
def test_refusals_name_the_path_in_the_vertex_job(
    document: dict[str, Any], path: str, reason: str
) -> None:
    assert problems(document) == [(path, reason)]
    # And the message a user reads says it in the same words.
    with pytest.raises(SpecError, match="invalid study spec") as info:
        load_spec_text(json.dumps(document), source="job.json")
    assert f"\n  {path}: {reason}" in str(info.value)
    assert str(info.value).startswith("job.json: ")


def test_the_algorithms_that_fit_several_objectives_are_accepted() -> None:
    for algorithm in ("ALGORITHM_UNSPECIFIED", "NSGA_II", "RANDOM_SEARCH", "QMC"):
        spec = parse_spec(vertex([LR, optimizer("sgd")], TWO, study={"algorithm": algorithm}))
        assert spec.hyperparameters.algorithm == algorithm and spec.multi_objective
    assert parse_spec(vertex([LR], ONE, study=CMA_ES)).hyperparameters.algorithm is Algorithm.CMA_ES


def test_unknown_fields_are_named_by_their_path_and_reported_together() -> None:
    document = vertex(
        [
            {
                **optimizer("sgd"),
                "parameterType": "CATEGORICAL",
            },
            {"parameterId": "lr", "doubleValueSpec": {"minValue": 0.1, "maxValue": 1, "step": 0.1}},
        ],
        study={"searchSpace": {}, "metrcs": []},
    )
    child = document["studySpec"]["parameters"][0]["conditionalParameterSpecs"][0]
    child["parent"] = "optimizer"
    child["parameterSpec"] = {**MOMENTUM, "scale": "LINEAR"}
    child["parameterSpec"]["doubleValueSpec"] = {"minValue": 0, "maxValue": 0.9, "mx": 1}
    unknown = "unknown field (check its spelling)"
    assert problems(document) == [
        ("studySpec.metrcs", "unknown field; did you mean 'metrics'?"),
        ("studySpec.searchSpace", unknown),
        ("studySpec.parameters[0].parameterType", "unknown field; did you mean 'parameterId'?"),
        ("studySpec.parameters[0].conditionalParameterSpecs[0].parent", unknown),
        (
            "studySpec.parameters[0].conditionalParameterSpecs[0].parameterSpec.scale",
            "unknown field; did you mean 'scaleType'?",
        ),
        (
            "studySpec.parameters[0].conditionalParameterSpecs[0].parameterSpec.doubleValueSpec.mx",
            unknown,
        ),
        ("studySpec.parameters[1].doubleValueSpec.step", unknown),
    ]


def test_unknown_top_level_fields_of_a_vertex_job_are_named() -> None:
    assert problems(vertex([LR], maxTrialCnt=5)) == [
        ("maxTrialCnt", "unknown field; did you mean 'maxTrialCount'?")
    ]


def test_missing_parts_of_a_vertex_job() -> None:
    assert problems({"studySpec": {"metrics": ONE}}) == [
        ("studySpec.parameters", "required: the search space")
    ]
    assert problems({"studySpec": {"parameters": [LR]}}) == [
        ("studySpec.metrics", "required: the metrics to optimize")
    ]
    assert problems({"studySpec": {"metrics": ONE, "parameters": [LR]}}) == [
        ("name", "required (in the spec, or given with the command)"),
        ("trainer", "required (in the spec, or given with the command)"),
    ]
    assert problems(vertex([{"doubleValueSpec": {"minValue": 0, "maxValue": 1}}])) == [
        ("studySpec.parameters[0].parameterId", "required")
    ]


# ----------------------------------------------------------------------------------------------
# The tuner's own dialect (AI Platform's) with several metrics and conditional parameters


OURS_WITH_METRICS = textwrap.dedent(
    """
    name: ours
    trainer: two_objectives
    hyperparameters:
      metrics:
      - {metricId: rmse, goal: MINIMIZE}
      - {metricId: model_size, goal: MINIMIZE}
      - {metricId: accuracy, goal: MAXIMIZE, safetyConfig: {safetyThreshold: 0.8}}
      maxTrials: 10
      enableTrialEarlyStopping: true
      params:
      - parameterName: optimizer
        type: CATEGORICAL
        categoricalValues: [adam, sgd]
        conditionalParameterSpecs:
        - parentCategoricalValues: {values: [sgd]}
          parameterSpec: {parameterName: momentum, type: DOUBLE, minValue: 0, maxValue: 0.9}
      - {parameterName: units, type: INTEGER, minValue: 2, maxValue: 16}
    """
)


def test_our_dialect_takes_metrics_and_conditional_parameters() -> None:
    notes: list[str] = []
    spec = load_spec_text(OURS_WITH_METRICS, warnings=notes)
    assert notes == []
    assert [(o.metric, o.goal) for o in spec.objectives] == [
        ("rmse", Goal.MINIMIZE),
        ("model_size", Goal.MINIMIZE),
    ]
    [accuracy] = spec.constraints
    assert accuracy.metric_id == "accuracy" and accuracy.goal is Goal.MAXIMIZE
    assert accuracy.violation(0.9) < 0 < accuracy.violation(0.7)  # MAXIMIZE: above is safe
    # enableTrialEarlyStopping alone, with several objectives: the dominance rule.
    assert spec.pruner == DEFAULT_MULTI_OBJECTIVE_PRUNER
    assert spec.objective is ObjectiveMode.BEST
    opt = spec.hyperparameters.params[0]
    assert [p.parameter_name for p in opt.children_for("sgd")] == ["momentum"]
    assert opt.children_for("adam") == []


def test_a_job_file_with_metrics_and_conditionals_keeps_its_args() -> None:
    body = OURS_WITH_METRICS.split("hyperparameters:", 1)[1]
    job = "trainingInput:\n  args: [--train-steps=20]\n  hyperparameters:" + textwrap.indent(
        body, "  "
    )
    spec = load_spec_text(job, name="n", trainer="two_objectives")
    assert spec.args == ["--train-steps=20"]
    assert spec.ranked_metrics == ["rmse", "model_size", "accuracy"]


@pytest.mark.parametrize(
    ("change", "problems_expected"),
    [
        (
            ("minValue: 0, maxValue: 0.9", "minValue: 0, maxValue: 0.9, scaleType: UNIT_LOG_SCALE"),
            [
                (
                    "hyperparameters.params[0].conditionalParameterSpecs[0].parameterSpec.minValue",
                    "must be > 0 with UNIT_LOG_SCALE",
                )
            ],
        ),
        (
            (
                "  maxTrials: 10",
                "  maxTrials: 10\n  goal: MINIMIZE\n  hyperparameterMetricTag: rmse",
            ),
            [
                (
                    "hyperparameters.goal",
                    "not allowed with metrics (give each metric's goal there)",
                ),
                (
                    "hyperparameters.hyperparameterMetricTag",
                    "not allowed with metrics (give each metric's goal there)",
                ),
            ],
        ),
        (
            ("parameterSpec: {parameterName: momentum", "parameterSpec: {parameterId: momentum"),
            [
                (
                    "hyperparameters.params[0].conditionalParameterSpecs[0].parameterSpec"
                    ".parameterName",
                    "required",
                ),
                (
                    "hyperparameters.params[0].conditionalParameterSpecs[0].parameterSpec"
                    ".parameterId",
                    "unknown field; did you mean 'parameterName'?",
                ),
            ],
        ),
        (
            ("{values: [sgd]}", "{values: [sgd, rmsprop]}"),
            [
                (
                    "hyperparameters.params[0].conditionalParameterSpecs[0]"
                    ".parentCategoricalValues.values[1]",
                    "'rmsprop' is not a value of the parent",
                )
            ],
        ),
        (
            ("enableTrialEarlyStopping: true", "algorithm: CMA_ES"),
            [
                (
                    "hyperparameters.algorithm",
                    "CMA_ES optimizes one objective; with several use ALGORITHM_UNSPECIFIED "
                    "(TPE), NSGA_II, GP, RANDOM_SEARCH, QMC or GRID_SEARCH",
                ),
                (
                    "hyperparameters.algorithm",
                    "CMA_ES needs one fixed search space; conditional parameters would be "
                    "sampled at random, outside its model (use ALGORITHM_UNSPECIFIED: TPE "
                    "models conditional spaces)",
                ),
            ],
        ),
        (
            ("name: ours", "name: ours\nearlyStopping: {type: percentile}"),
            [
                (
                    "earlyStopping.type",
                    "percentile compares one value and the study has several objectives: use "
                    "'dominated' (or enableTrialEarlyStopping: true alone)",
                )
            ],
        ),
    ],
    ids=[
        "child-log-scale",
        "goal-with-metrics",
        "child-vertex-name",
        "parent-value",
        "cma-es",
        "pruner",
    ],
)
def test_our_dialect_refusals_carry_its_paths(
    change: tuple[str, str], problems_expected: list[tuple[str, str]]
) -> None:
    old, new = change
    assert old in OURS_WITH_METRICS
    with pytest.raises(SpecError) as info:
        load_spec_text(OURS_WITH_METRICS.replace(old, new))
    assert info.value.problems == problems_expected


# ----------------------------------------------------------------------------------------------
# What is stored


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(load_spec_text(PARETO_JOB).to_document(), id="pareto-job"),
        pytest.param(load_spec_text(OURS_WITH_METRICS).to_document(), id="ours"),
        pytest.param(
            vertex(
                [
                    {
                        "parameterId": "layers",
                        "integerValueSpec": {"minValue": "1", "maxValue": "3"},
                        "scaleType": "UNIT_REVERSE_LOG_SCALE",
                        "conditionalParameterSpecs": [
                            {
                                "parentIntValues": {"values": ["2", "3"]},
                                "parameterSpec": {
                                    **LAYERS,
                                    "parameterId": "width",
                                    "conditionalParameterSpecs": [
                                        {
                                            "parentDiscreteValues": {"values": [4]},
                                            "parameterSpec": {
                                                "parameterId": "cell",
                                                "categoricalValueSpec": {"values": ["gru", "lstm"]},
                                            },
                                        }
                                    ],
                                },
                            }
                        ],
                    }
                ],
                TWO,
                study={"algorithm": "GRID_SEARCH", "medianAutomatedStoppingSpec": {}},
                seed=4,
            ),
            id="nested-grid",
        ),
    ],
)
def test_the_stored_document_parses_back_to_the_same_spec(document: dict[str, Any]) -> None:
    spec = parse_spec(document)
    stored = spec_to_json(spec)
    notes: list[str] = []
    again = parse_spec(json.loads(stored), warnings=notes)
    assert again == spec
    assert spec_to_json(again) == stored
    assert notes == []  # the stored document is the tuner's own dialect: nothing is ignored
    assert "studySpec" not in json.loads(stored)
    # Conditional parameters and metrics survive, in order.
    assert [p.parameter_name for p in again.hyperparameters.all_params] == [
        p.parameter_name for p in spec.hyperparameters.all_params
    ]
    assert again.objectives == spec.objectives and again.constraints == spec.constraints
    assert again.pruner == spec.pruner and again.objective == spec.objective


def test_the_stored_document_of_a_vertex_job_is_in_our_dialect() -> None:
    stored = json.loads(spec_to_json(load_spec_text(PARETO_JOB)))
    hp = stored["hyperparameters"]
    assert hp["params"][0] == {
        "parameterName": "optimizer",
        "type": "CATEGORICAL",
        "categoricalValues": ["adam", "sgd"],
        "conditionalParameterSpecs": [
            {
                "parentCategoricalValues": {"values": ["sgd"]},
                "parameterSpec": {
                    "parameterName": "momentum",
                    "type": "DOUBLE",
                    "minValue": 0.0,
                    "maxValue": 0.9,
                },
            }
        ],
    }
    assert hp["metrics"][2] == {
        "metricId": "latency_ms",
        "goal": "MINIMIZE",
        "safetyConfig": {"safetyThreshold": 5.0, "desiredMinSafeTrialsFraction": 0.5},
    }
    assert (stored["objective"], stored["args"]) == (
        "final",
        ["--train-steps=40", "--eval-every-steps=10"],
    )


# ----------------------------------------------------------------------------------------------
# The size of a grid with conditional parameters


GRID_SPACES = [
    pytest.param(
        [
            {
                "parameterId": "optimizer",
                "categoricalValueSpec": {"values": ["adam", "sgd", "rmsprop"]},
                "conditionalParameterSpecs": [
                    {
                        "parentCategoricalValues": {"values": ["sgd", "rmsprop"]},
                        "parameterSpec": {
                            "parameterId": "momentum",
                            "discreteValueSpec": {"values": [0, 0.5, 0.9]},
                        },
                    },
                    {
                        "parentCategoricalValues": {"values": ["sgd"]},
                        "parameterSpec": {
                            "parameterId": "nesterov",
                            "categoricalValueSpec": {"values": ["true", "false"]},
                        },
                    },
                ],
            },
            {
                "parameterId": "layers",
                "integerValueSpec": {"minValue": "1", "maxValue": "4"},
                "scaleType": "UNIT_REVERSE_LOG_SCALE",
                "conditionalParameterSpecs": [
                    {
                        "parentIntValues": {"values": ["2", "4"]},
                        "parameterSpec": {
                            "parameterId": "width",
                            "discreteValueSpec": {"values": [8, 16, 32]},
                            "conditionalParameterSpecs": [
                                {
                                    "parentDiscreteValues": {"values": [16, 32]},
                                    "parameterSpec": {
                                        "parameterId": "dropout",
                                        "integerValueSpec": {"minValue": 0, "maxValue": 2},
                                    },
                                }
                            ],
                        },
                    },
                ],
            },
            {"parameterId": "batch", "discreteValueSpec": {"values": [32, 64]}},
        ],
        {
            "optimizer": ["adam", "sgd", "rmsprop"],
            "momentum": [0, 0.5, 0.9],
            "nesterov": ["true", "false"],
            "layers": [1, 2, 3, 4],
            "width": [8, 16, 32],
            "dropout": [0, 1, 2],
            "batch": [32, 64],
        },
        {
            "momentum": ("optimizer", {"sgd", "rmsprop"}),
            "nesterov": ("optimizer", {"sgd"}),
            "width": ("layers", {2, 4}),
            "dropout": ("width", {16, 32}),
        },
        id="nested",
    ),
    pytest.param(
        [
            {
                "parameterId": "kind",
                "categoricalValueSpec": {"values": ["linear", "tree", "net"]},
                "conditionalParameterSpecs": [
                    {
                        "parentCategoricalValues": {"values": ["tree"]},
                        "parameterSpec": {
                            "parameterId": "depth",
                            "integerValueSpec": {"minValue": 2, "maxValue": 6},
                        },
                    },
                    {
                        "parentCategoricalValues": {"values": ["tree", "net"]},
                        "parameterSpec": {
                            "parameterId": "width",
                            "integerValueSpec": {"minValue": 1, "maxValue": 3},
                            "conditionalParameterSpecs": [
                                {
                                    "parentIntValues": {"values": [3]},
                                    "parameterSpec": {
                                        "parameterId": "act",
                                        "categoricalValueSpec": {"values": ["relu", "tanh"]},
                                    },
                                }
                            ],
                        },
                    },
                ],
            }
        ],
        {
            "kind": ["linear", "tree", "net"],
            "depth": [2, 3, 4, 5, 6],
            "width": [1, 2, 3],
            "act": ["relu", "tanh"],
        },
        {
            "depth": ("kind", {"tree"}),
            "width": ("kind", {"tree", "net"}),
            "act": ("width", {3}),
        },
        id="siblings",
    ),
]


@pytest.mark.parametrize(("parameters", "values", "rules"), GRID_SPACES)
def test_the_grid_size_of_a_conditional_space_is_the_count_of_its_combinations(
    parameters: list[Any], values: dict[str, list[Any]], rules: dict[str, tuple[str, set[Any]]]
) -> None:
    expected = brute_force_count(values, rules)
    spec = parse_spec(vertex(parameters, study={"algorithm": "GRID_SEARCH"}, maxTrialCount=10_000))
    assert spec.hyperparameters.grid_size == expected
    assert spec.max_trials == expected  # the budget is capped by the grid
    capped = parse_spec(vertex(parameters, study={"algorithm": "GRID_SEARCH"}, maxTrialCount=5))
    assert capped.max_trials == 5


def test_the_brute_force_count_counts() -> None:
    """The reference itself, on spaces counted by hand."""
    assert brute_force_count({"a": [1, 2]}, {}) == 2
    assert brute_force_count({"a": [1, 2], "b": ["x", "y", "z"]}, {"b": ("a", {2})}) == 1 + 3
    nested = {"a": [1, 2], "b": [1, 2], "c": [1, 2, 3]}
    assert brute_force_count(nested, {"b": ("a", {2}), "c": ("b", {1})}) == 1 + (3 + 1)
    # The first space above: optimizer 1 + 3 + 3 x 2 = 10; layers 1 | 3 | (3 with
    # width 8 | 16, 32 x dropout 3 = 7) twice: 1 + 7 + 1 + 7 = 16; batch 2.
    _, values, rules = GRID_SPACES[0].values
    assert brute_force_count(values, rules) == 10 * 16 * 2


# ----------------------------------------------------------------------------------------------
# Known bugs (see the reasons)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            vertex([LR, {**LR}]),
            ("studySpec.parameters[1].parameterId", "duplicate of studySpec.parameters[0] ('lr')"),
        ),
        (
            vertex([optimizer("sgd", child={**LR}), LR]),
            (
                "studySpec.parameters[1].parameterId",
                "duplicate of studySpec.parameters[0].conditionalParameterSpecs[0]"
                ".parameterSpec ('lr')",
            ),
        ),
        (
            vertex([LR], [*ONE, {"metricId": "rmse", "goal": "MAXIMIZE"}]),
            ("studySpec.metrics[1].metricId", "duplicate of studySpec.metrics[0] ('rmse')"),
        ),
    ],
    ids=["parameter", "child-parameter", "metric"],
)
def test_a_duplicate_names_the_first_one_by_its_vertex_path(
    document: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert problems(document) == [expected]


def test_hyperparameters_beside_study_spec_are_not_silently_dropped() -> None:
    document = vertex([LR], hyperparameters={"maxTrials": 7})
    notes: list[str] = []
    try:
        spec = parse_spec(document, warnings=notes)
    except SpecError as exc:
        assert any(path == "hyperparameters" for path, _ in exc.problems), exc.problems
    else:
        assert spec.hyperparameters.max_trials == 7 or any("hyperparameters" in n for n in notes)


def test_an_ai_platform_count_beside_the_vertex_count_is_named_as_written() -> None:
    assert problems(vertex([LR], maxTrialCount=3, maxTrials=5)) == [
        ("maxTrials", "not a field of a Vertex job: the tuning config is maxTrialCount")
    ]
