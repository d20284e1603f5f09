"""The study spec: AI Platform's hyperparameter-tuning config plus what a job submission carried.

This is the only module that parses a spec. A spec is validated once, at submission, and the
result (`StudySpec`) is what the rest of the tuner relies on. Every problem is reported with the
field path as it appears in the user's file, e.g. `params[2].minValue: must be > 0 with
UNIT_LOG_SCALE`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import typing
from collections.abc import Collection
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from tuner.domain.errors import SpecError
from tuner.domain.hints import did_you_mean, unknown_field
from tuner.domain.vertex import JOB_FIELDS, VertexPaths, from_vertex, is_vertex_job

logger = logging.getLogger(__name__)

#: Keys of an AI Platform job config that do not concern tuning: accepted and ignored.
IGNORED_JOB_KEYS = frozenset(
    {
        "scaleTier",
        "masterType",
        "masterConfig",
        "workerType",
        "workerConfig",
        "workerCount",
        "parameterServerType",
        "parameterServerConfig",
        "parameterServerCount",
        "evaluatorType",
        "evaluatorConfig",
        "evaluatorCount",
        "packageUris",
        "pythonModule",
        "region",
        "runtimeVersion",
        "pythonVersion",
        "jobDir",
        "network",
        "scheduling",
        "serviceAccount",
        "useChiefInTfConfig",
        "encryptionConfig",
        "enableWebAccess",
    }
)
#: Keys at the top of an AI Platform job file, beside `trainingInput`.
IGNORED_JOB_FILE_KEYS = frozenset({"jobId", "labels", "etag", "predictionInput"})

PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_GRID = 100_000
#: Budgets above these are refused: no study needs them, and they would starve the others.
MAX_TRIALS = 1_000_000
MAX_PARALLEL_TRIALS = 10_000
MAX_SECONDS = 366 * 24 * 3600.0
FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Goal(StrEnum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"


class ParamType(StrEnum):
    DOUBLE = "DOUBLE"
    INTEGER = "INTEGER"
    CATEGORICAL = "CATEGORICAL"
    DISCRETE = "DISCRETE"


class ScaleType(StrEnum):
    NONE = "NONE"
    UNIT_LINEAR_SCALE = "UNIT_LINEAR_SCALE"
    UNIT_LOG_SCALE = "UNIT_LOG_SCALE"
    UNIT_REVERSE_LOG_SCALE = "UNIT_REVERSE_LOG_SCALE"


class Algorithm(StrEnum):
    ALGORITHM_UNSPECIFIED = "ALGORITHM_UNSPECIFIED"
    GRID_SEARCH = "GRID_SEARCH"
    RANDOM_SEARCH = "RANDOM_SEARCH"
    CMA_ES = "CMA_ES"
    GP = "GP"
    QMC = "QMC"
    #: Several objectives only: Optuna's NSGA-II (a genetic algorithm; it needs many trials).
    NSGA_II = "NSGA_II"


#: Algorithms that cannot optimize several objectives at once (Optuna's CMA-ES is
#: single-objective).
SINGLE_OBJECTIVE_ALGORITHMS = frozenset({Algorithm.CMA_ES})
#: Algorithms that need several objectives.
MULTI_OBJECTIVE_ALGORITHMS = frozenset({Algorithm.NSGA_II})


class ObjectiveMode(StrEnum):
    """Which eval value ranks a trial: its best eval step, or its last one."""

    BEST = "best"
    FINAL = "final"


class MetricSource(StrEnum):
    """Where a trial's objective comes from."""

    #: The first channel that delivers the objective tag: an eval dir or the hypertune file.
    AUTO = "auto"
    #: Only the estimator's eval event files.
    EVENTS = "events"
    #: Only the `cloudml-hypertune` metric file (`CLOUD_ML_HP_METRIC_FILE`).
    HYPERTUNE = "hypertune"


class Check(StrEnum):
    """The evidence a trial must give before it may be COMPLETED; each can be skipped."""

    #: An eval whose every metric is exactly 0 evaluated no batch: it is no objective value.
    EMPTY_EVAL = "empty-eval"
    #: Every objective value is at global step 0: the trainer never trained.
    UNTRAINED = "untrained"
    #: The objective's event file lost records (CRC mismatch, junk, truncation).
    DAMAGED_EVENTS = "damaged-events"


#: `evalDirs` of older specs, which meant what an unset `evalDirs` means now.
DEFAULT_EVAL_DIRS = ("eval", "eval_*")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ParameterSpec(_Model):
    """One entry of `params[]`, as AI Platform defines it."""

    parameter_name: str
    type: ParamType
    min_value: float | None = None
    max_value: float | None = None
    scale_type: ScaleType | None = None
    categorical_values: list[str] | None = None
    discrete_values: list[float] | None = None
    #: Parameters sampled (and passed to the trainer) only when this one takes given values.
    conditional_parameter_specs: list[ConditionalParameterSpec] | None = None

    @field_validator("parameter_name")
    @classmethod
    def _name_is_a_flag(cls, value: str) -> str:
        if not PARAM_NAME.fullmatch(value):
            raise ValueError(
                "must start with a letter or '_' and hold only letters, digits, '_', '.', '-' "
                "(it becomes the trainer's --flag)"
            )
        return value

    @model_validator(mode="after")
    def _check_type_fields(self) -> ParameterSpec:
        problems: list[tuple[str, str]] = []
        t = self.type
        if t in (ParamType.DOUBLE, ParamType.INTEGER):
            problems += self._check_range()
            for field in ("categoricalValues", "discreteValues"):
                if getattr(self, _snake(field)) is not None:
                    problems.append((field, f"not allowed with type {t.value}"))
        elif t is ParamType.CATEGORICAL:
            if not self.categorical_values:
                problems.append(("categoricalValues", "required and non-empty for CATEGORICAL"))
            elif any("\x00" in v for v in self.categorical_values):
                problems.append(("categoricalValues", "values must not contain a NUL character"))
            elif len(set(self.categorical_values)) != len(self.categorical_values):
                problems.append(("categoricalValues", "values must be unique"))
            problems += self._forbid("minValue", "maxValue", "discreteValues")
            if self.scale_type not in (None, ScaleType.NONE):
                problems.append(("scaleType", "must be unset for CATEGORICAL"))
        elif t is ParamType.DISCRETE:
            values = self.discrete_values
            if not values:
                problems.append(("discreteValues", "required and non-empty for DISCRETE"))
            else:
                if any(not math.isfinite(v) for v in values):
                    problems.append(("discreteValues", "values must be finite numbers"))
                elif any(b <= a for a, b in itertools.pairwise(values)):
                    problems.append(("discreteValues", "values must be strictly increasing"))
            problems += self._forbid("minValue", "maxValue", "categoricalValues")
            if self.scale_type not in (None, ScaleType.NONE, ScaleType.UNIT_LINEAR_SCALE):
                problems.append(
                    (
                        "scaleType",
                        "DISCRETE values are sampled from the list; leave scaleType unset",
                    )
                )
        problems += self._check_children()
        if problems:
            raise _FieldProblems(problems)
        return self

    def _check_children(self) -> list[tuple[str, str]]:
        """Each child names its parent's values with the field of the parent's type."""
        problems: list[tuple[str, str]] = []
        children = self.conditional_parameter_specs
        if children is None:
            return problems
        if not children:
            return [("conditionalParameterSpecs", "must not be empty when given")]
        if self.type is ParamType.DOUBLE:
            return [
                (
                    "conditionalParameterSpecs",
                    "a DOUBLE parameter cannot be a parent (its values cannot be matched "
                    "exactly); use DISCRETE, INTEGER or CATEGORICAL",
                )
            ]
        wanted = PARENT_FIELDS[self.type]
        for i, child in enumerate(children):
            where = f"conditionalParameterSpecs[{i}]"
            given = child.parent_fields()
            if given != [wanted]:
                problems.append(
                    (
                        where,
                        f"needs exactly one of the parent's values, as {wanted} (the parent "
                        f"is {self.type.value})" + (f"; got {', '.join(given)}" if given else ""),
                    )
                )
                continue
            allowed = self.grid_values() if self.type is not ParamType.INTEGER else None
            for j, value in enumerate(child.parent_values):
                if allowed is not None and value not in allowed:
                    problems.append(
                        (f"{where}.{wanted}.values[{j}]", f"{value!r} is not a value of the parent")
                    )
                elif allowed is None and not (
                    (self.min_value or 0) <= float(value) <= (self.max_value or 0)
                ):
                    problems.append(
                        (
                            f"{where}.{wanted}.values[{j}]",
                            f"{value!r} is outside the parent's range "
                            f"[{_num(self.min_value or 0)}, {_num(self.max_value or 0)}]",
                        )
                    )
        return problems

    def children_for(self, value: Any) -> list[ParameterSpec]:
        """The conditional parameters that are active when this one takes `value`."""
        return [
            child.parameter_spec
            for child in self.conditional_parameter_specs or []
            if child.matches(value)
        ]

    def walk(self) -> list[ParameterSpec]:
        """This parameter and every conditional one below it, parents first."""
        out = [self]
        for child in self.conditional_parameter_specs or []:
            out += child.parameter_spec.walk()
        return out

    def _forbid(self, *fields: str) -> list[tuple[str, str]]:
        return [
            (f, f"not allowed with type {self.type.value}")
            for f in fields
            if getattr(self, _snake(f)) is not None
        ]

    def _check_range(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        lo, hi = self.min_value, self.max_value
        for field, value in (("minValue", lo), ("maxValue", hi)):
            if value is None:
                problems.append((field, f"required for {self.type.value}"))
            elif not math.isfinite(value):
                problems.append((field, "must be a finite number"))
            elif self.type is ParamType.INTEGER and value != int(value):
                problems.append((field, "must be a whole number for INTEGER"))
        if problems or lo is None or hi is None:
            return problems
        if lo >= hi:
            problems.append(("maxValue", f"must be > minValue ({_num(lo)})"))
        elif not math.isfinite(hi - lo):
            problems.append(("maxValue", "the range maxValue - minValue is too wide to sample"))
        scale = self.scale
        if scale in (ScaleType.UNIT_LOG_SCALE, ScaleType.UNIT_REVERSE_LOG_SCALE) and lo <= 0:
            problems.append(("minValue", f"must be > 0 with {scale.value}"))
        return problems

    @property
    def scale(self) -> ScaleType:
        """The scale, with AI Platform's default (linear) applied."""
        if self.scale_type in (None, ScaleType.NONE):
            return ScaleType.UNIT_LINEAR_SCALE
        return self.scale_type

    @property
    def is_finite(self) -> bool:
        """Whether the parameter (with its conditional ones) takes finitely many values."""
        return self.type is not ParamType.DOUBLE and all(
            child.parameter_spec.is_finite for child in self.conditional_parameter_specs or []
        )

    def grid_count(self) -> int:
        """How many combinations a finite parameter and its conditional ones take (without
        listing them): for each of its values, the product of its active children's counts."""
        if self.type is ParamType.INTEGER:
            assert self.min_value is not None and self.max_value is not None
            own = int(self.max_value) - int(self.min_value) + 1
        else:
            own = len(self.grid_values())
        if not self.conditional_parameter_specs:
            return own
        total = 0
        for value in self.grid_values() if own <= MAX_GRID else []:
            total += math.prod(child.grid_count() for child in self.children_for(value))
            if total > MAX_GRID:
                break
        return total if own <= MAX_GRID else own

    def grid_values(self) -> list[Any]:
        """Every value of a finite parameter, in order."""
        if self.type is ParamType.CATEGORICAL:
            return list(self.categorical_values or [])
        if self.type is ParamType.DISCRETE:
            return [_plain_number(v) for v in self.discrete_values or []]
        if self.type is ParamType.INTEGER:
            assert self.min_value is not None and self.max_value is not None
            return list(range(int(self.min_value), int(self.max_value) + 1))
        raise ValueError(f"{self.parameter_name}: a DOUBLE parameter has no finite grid")


class ParentValues(_Model):
    """The parent's values for which a conditional parameter is active."""

    values: list[str | int | float] = Field(min_length=1)


class ConditionalParameterSpec(_Model):
    """Vertex's `ConditionalParameterSpec`: a parameter active for some of its parent's
    values (`parentCategoricalValues`, `parentDiscreteValues` or `parentIntValues`)."""

    parameter_spec: ParameterSpec
    parent_categorical_values: ParentValues | None = None
    parent_discrete_values: ParentValues | None = None
    parent_int_values: ParentValues | None = None

    @field_validator("parent_int_values")
    @classmethod
    def _whole_values(cls, value: ParentValues | None) -> ParentValues | None:
        if value is None:
            return None
        for v in value.values:
            number = _as_number(v)
            if number is None or not float(number).is_integer():
                raise ValueError(f"values must be whole numbers, got {v!r}")
        return ParentValues(values=[int(float(v)) for v in value.values])

    @field_validator("parent_discrete_values")
    @classmethod
    def _number_values(cls, value: ParentValues | None) -> ParentValues | None:
        if value is None:
            return None
        numbers = [_as_number(v) for v in value.values]
        if any(n is None for n in numbers):
            raise ValueError("values must be numbers")
        return ParentValues(values=[_plain_number(float(n)) for n in numbers if n is not None])

    @field_validator("parent_categorical_values")
    @classmethod
    def _text_values(cls, value: ParentValues | None) -> ParentValues | None:
        if value is not None and any(not isinstance(v, str) for v in value.values):
            raise ValueError("values must be strings (the parent's categoricalValues)")
        return value

    def parent_fields(self) -> list[str]:
        return [
            name
            for name, given in (
                ("parentCategoricalValues", self.parent_categorical_values),
                ("parentDiscreteValues", self.parent_discrete_values),
                ("parentIntValues", self.parent_int_values),
            )
            if given is not None
        ]

    @property
    def parent_values(self) -> list[str | int | float]:
        given = (
            self.parent_categorical_values or self.parent_discrete_values or self.parent_int_values
        )
        return list(given.values) if given else []

    def matches(self, value: Any) -> bool:
        """Whether the parent's `value` (as the trainer gets it) activates this parameter."""
        if self.parent_categorical_values is not None:
            return str(value) in self.parent_categorical_values.values
        number = _as_number(value)
        return number is not None and any(float(v) == float(number) for v in self.parent_values)


#: The field a child uses to name its parent's values, by the parent's type.
PARENT_FIELDS = {
    ParamType.CATEGORICAL: "parentCategoricalValues",
    ParamType.DISCRETE: "parentDiscreteValues",
    ParamType.INTEGER: "parentIntValues",
}


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class SafetyConfig(_Model):
    """Vertex's `SafetyMetricConfig`: a metric that must stay on the goal's side of a
    threshold (a constraint, not an objective)."""

    safety_threshold: float = 0.0
    #: Accepted from Vertex; the tuner does not steer the search by it.
    desired_min_safe_trials_fraction: float | None = Field(default=None, ge=0, le=1)

    @field_validator("safety_threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class MetricSpec(_Model):
    """One metric of a study (Vertex's `MetricSpec`): an objective with its goal, or, with
    `safetyConfig`, a constraint that a trial must meet to count as feasible."""

    metric_id: str = Field(min_length=1)
    goal: Goal
    safety_config: SafetyConfig | None = None

    @property
    def is_constraint(self) -> bool:
        return self.safety_config is not None

    def violation(self, value: float) -> float:
        """Optuna's constraint value: <= 0 when `value` is on the goal's side of the
        threshold (feasible), else how far it is over."""
        assert self.safety_config is not None
        threshold = self.safety_config.safety_threshold
        return threshold - value if self.goal is Goal.MAXIMIZE else value - threshold


class _FieldProblems(ValueError):
    """Raised inside validators to report several sub-field problems at once."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))


class PrunerSpec(_Model):
    """How trials are stopped early from their eval values (`earlyStopping`)."""

    type: Literal[
        "median", "percentile", "successive_halving", "hyperband", "dominated", "none"
    ] = "median"
    #: Trials that must finish before anything is pruned (median, percentile).
    startup_trials: int = Field(default=3, ge=0)
    #: Eval steps of a trial below which it is never pruned (median, percentile: global step);
    #: `auto`: a third of the longest COMPLETED trial's last step (the default pruner's).
    warmup_steps: int | Literal["auto"] = 0
    #: Percentile to keep (percentile pruner).
    percentile: float = Field(default=50.0, gt=0, lt=100)
    #: Successive halving / Hyperband: smallest resource (global step) and reduction factor.
    min_resource: int | Literal["auto"] = "auto"
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)
    #: Median, percentile: prune only at the first eval in each window of this many global
    #: steps (every eval is reported; this thins out the decisions).
    interval_steps: int = Field(default=1, ge=1)
    #: Dominated (several objectives): stop a trial whose objectives at a step are dominated
    #: by those of at least this many completed trials at the same step.
    min_dominating: int = Field(default=1, ge=1)

    @field_validator("warmup_steps", "min_resource", "max_resource", mode="before")
    @classmethod
    def _steps_or_auto(cls, value: Any, info: ValidationInfo) -> Any:
        """A number of global steps (at least 0 for a warm-up, 1 for a resource) or `auto`."""
        if value == "auto":
            return value
        least = 0 if info.field_name == "warmup_steps" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"must be a whole number >= {least} (global steps), or 'auto'")
        return value


#: What `enableTrialEarlyStopping: true` means, chosen by `bench/search.py` (docs/spec.md):
#: the median rule, after 3 completed trials, never in the first third of a trial's steps.
DEFAULT_PRUNER: Final = PrunerSpec(type="median", startup_trials=3, warmup_steps="auto")
#: The same with several objectives, chosen by `bench/search.py --task pareto`: stop a trial
#: dominated at a step by 3 completed trials, after 3 completed trials, never in the first
#: third of its steps. Of 1, 2 and 3, 3 lost the least hypervolume and the fewest would-be
#: front members; none matched no early stopping's median hypervolume (docs/benchmarks.md).
DEFAULT_MULTI_OBJECTIVE_PRUNER: Final = PrunerSpec(
    type="dominated", startup_trials=3, warmup_steps="auto", min_dominating=3
)
#: Rules that compare one value: a study with several objectives cannot use them.
SINGLE_VALUE_PRUNERS = frozenset({"median", "percentile", "successive_halving", "hyperband"})


class Objective(BaseModel):
    """One metric a study optimizes, and in which direction."""

    model_config = ConfigDict(frozen=True)

    metric: str
    goal: Goal


class HyperparameterSpec(_Model):
    """AI Platform's `HyperparameterSpec`, field for field, plus several metrics (`metrics`,
    Vertex's `MetricSpec` list) and conditional parameters (`conditionalParameterSpecs`)."""

    #: Several objectives and constraints, instead of `goal` and `hyperparameterMetricTag`.
    metrics: list[MetricSpec] | None = None
    goal: Goal | None = Field(default=None, validate_default=True)
    hyperparameter_metric_tag: str | None = Field(default=None, min_length=1, validate_default=True)
    params: list[ParameterSpec] = Field(min_length=1)
    #: Unset: 1 (AI Platform's default), or no count at all (MAX_TRIALS) when a compute
    #: `budget` bounds the study instead.
    max_trials: int = Field(default=1, ge=1, le=MAX_TRIALS)
    max_parallel_trials: int = Field(default=1, ge=1, le=MAX_PARALLEL_TRIALS)
    max_failed_trials: int = Field(default=0, ge=0, le=MAX_TRIALS)
    enable_trial_early_stopping: bool = False
    algorithm: Algorithm = Algorithm.ALGORITHM_UNSPECIFIED
    resume_previous_job_id: str | None = None

    @field_validator("goal", "hyperparameter_metric_tag", mode="before")
    @classmethod
    def _required_without_metrics(cls, value: Any, info: ValidationInfo) -> Any:
        """Required unless `metrics` lists the objectives (checked here, not after the model,
        so that it is reported with every other problem)."""
        if value is None and "metrics" in info.data and info.data["metrics"] is None:
            raise PydanticCustomError("missing", "Field required")
        return value

    @model_validator(mode="after")
    def _check_metrics(self) -> HyperparameterSpec:
        problems: list[tuple[str, str]] = []
        if self.metrics is not None:
            for field, value in (
                ("goal", self.goal),
                ("hyperparameterMetricTag", self.hyperparameter_metric_tag),
            ):
                if value is not None:
                    problems.append(
                        (field, "not allowed with metrics (give each metric's goal there)")
                    )
            seen: dict[str, int] = {}
            for i, metric in enumerate(self.metrics):
                if metric.metric_id in seen:
                    problems.append(
                        (
                            f"metrics[{i}].metricId",
                            f"duplicate of metrics[{seen[metric.metric_id]}] "
                            f"({metric.metric_id!r})",
                        )
                    )
                seen.setdefault(metric.metric_id, i)
            if not any(not m.is_constraint for m in self.metrics):
                problems.append(
                    ("metrics", "needs at least one objective (a metric without safetyConfig)")
                )
        if problems:
            raise _FieldProblems(problems)
        return self

    @model_validator(mode="after")
    def _check_params(self) -> HyperparameterSpec:
        seen: dict[str, str] = {}
        problems: list[tuple[str, str]] = []
        for path, p in self.params_with_paths():
            if p.parameter_name in seen:
                problems.append(
                    (
                        f"{path}.parameterName",
                        f"duplicate of {seen[p.parameter_name]} ({p.parameter_name!r})",
                    )
                )
            seen.setdefault(p.parameter_name, path)
        algorithm = self.algorithm
        several = self.metrics is not None and len(self.objectives) > 1
        if several and algorithm in SINGLE_OBJECTIVE_ALGORITHMS:
            problems.append(
                (
                    "algorithm",
                    f"{algorithm.value} optimizes one objective; with several use "
                    "ALGORITHM_UNSPECIFIED (TPE), NSGA_II, GP, RANDOM_SEARCH, QMC or GRID_SEARCH",
                )
            )
        if not several and algorithm in MULTI_OBJECTIVE_ALGORITHMS:
            problems.append(
                (
                    "algorithm",
                    f"{algorithm.value} is for several objectives; with one use "
                    "ALGORITHM_UNSPECIFIED (TPE) or another",
                )
            )
        if algorithm is Algorithm.CMA_ES and self.has_conditionals:
            problems.append(
                (
                    "algorithm",
                    "CMA_ES needs one fixed search space; conditional parameters would be "
                    "sampled at random, outside its model (use ALGORITHM_UNSPECIFIED: TPE "
                    "models conditional spaces)",
                )
            )
        if algorithm is Algorithm.GRID_SEARCH:
            infinite = False
            for path, p in self.params_with_paths():
                if p.type is ParamType.DOUBLE:
                    infinite = True
                    problems.append(
                        (
                            f"{path}.type",
                            "GRID_SEARCH needs finitely many values; a DOUBLE makes the grid "
                            "infinite (use DISCRETE with discreteValues)",
                        )
                    )
            if not infinite and not problems and self.grid_size > MAX_GRID:
                problems.append(
                    ("params", f"GRID_SEARCH grid has {self.grid_size} points (limit {MAX_GRID})")
                )
        if problems:
            raise _FieldProblems(problems)
        return self

    def params_with_paths(self) -> list[tuple[str, ParameterSpec]]:
        """Every parameter, conditional ones included, with its path in the spec."""
        out: list[tuple[str, ParameterSpec]] = []

        def visit(path: str, param: ParameterSpec) -> None:
            out.append((path, param))
            for i, child in enumerate(param.conditional_parameter_specs or []):
                visit(f"{path}.conditionalParameterSpecs[{i}].parameterSpec", child.parameter_spec)

        for i, param in enumerate(self.params):
            visit(f"params[{i}]", param)
        return out

    @property
    def all_params(self) -> list[ParameterSpec]:
        """Every parameter, conditional ones included, parents first."""
        return [p for _, p in self.params_with_paths()]

    @property
    def has_conditionals(self) -> bool:
        return any(p.conditional_parameter_specs for p in self.params)

    @property
    def objectives(self) -> list[Objective]:
        """The metrics optimized, in order: the first ranks the leaderboard by default."""
        if self.metrics is None:
            assert self.goal is not None and self.hyperparameter_metric_tag is not None
            return [Objective(metric=self.hyperparameter_metric_tag, goal=self.goal)]
        return [
            Objective(metric=m.metric_id, goal=m.goal) for m in self.metrics if not m.is_constraint
        ]

    @property
    def constraints(self) -> list[MetricSpec]:
        """The safety metrics: a trial that misses a threshold is infeasible."""
        return [m for m in self.metrics or [] if m.is_constraint]

    @property
    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            size *= p.grid_count()
        return size


class BudgetSpec(_Model):
    """How much compute or time a study may spend, beside or instead of `maxTrials`, and when
    it stops for lack of progress (Vertex's `studyStoppingConfig`)."""

    #: Total training steps: the sum of every trial's last global step.
    train_steps: int | None = Field(default=None, ge=1)
    #: Total trial-seconds: each trial from its claim to its recorded end, summed (parallel
    #: ones count each): its trainer's run plus the tuner's start-up and upload.
    trial_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS * 1000)
    #: Wall time from the study's creation.
    wall_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    #: Stop when the last N finished trials brought no better objective (no new front member
    #: with several objectives).
    no_progress_trials: int | None = Field(default=None, ge=1)
    #: Stop when no better objective came for this many seconds.
    no_progress_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    #: The no-progress rules apply only after this many finished trials.
    min_trials: int = Field(default=0, ge=0)

    @property
    def limits_compute(self) -> bool:
        return any(v is not None for v in (self.train_steps, self.trial_seconds, self.wall_seconds))


class RetentionSpec(_Model):
    """Which trials keep their checkpoint and exports once they fall behind the best."""

    #: The best K COMPLETED trials (per objective with several; the Pareto front is always
    #: kept) keep them; the others' are deleted, their metrics, log and a record stay.
    keep_best_trials: int = Field(ge=1)


class StudySpec(_Model):
    """A whole study: the tuning config plus the trainer and how its trials are run."""

    name: str
    trainer: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    output_dir_flag: str = "--job-dir"
    objective: ObjectiveMode = ObjectiveMode.BEST
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    #: Unset: found in the estimator's model dir, wherever it is in the trial dir.
    eval_dirs: list[str] | None = Field(default=None, min_length=1)
    #: Unset: `<model dir>/export` and the Vertex model dir (`AIP_MODEL_DIR`).
    export_dirs: list[str] | None = Field(default=None, min_length=1)
    metric_source: MetricSource = MetricSource.AUTO
    skip_checks: list[Check] = Field(default_factory=list)
    #: A trial running longer is stopped and FAILED (default: the server's
    #: `TUNER_TRIAL_MAX_SECONDS`, else no limit).
    max_trial_duration_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    #: A trial that writes no new metric for this long is stopped and FAILED.
    stall_timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    early_stopping: PrunerSpec | None = None
    #: A compute budget and no-progress stops, beside or instead of `maxTrials`.
    budget: BudgetSpec | None = None
    #: Study-wide retention of kept checkpoints and exports.
    retention: RetentionSpec | None = None
    #: GPUs each trial gets to itself (`CUDA_VISIBLE_DEVICES`, `tuner.trial.resources`); only
    #: workers started with at least as many `--gpus` claim its trials. Left out of the
    #: stored document when 0, so that managers that predate it still read CPU studies.
    gpus_per_trial: int = Field(default=0, exclude_if=lambda value: value == 0)
    #: CPUs each trial is counted for against its worker's `--cpus`; its thread pools are
    #: sized to match (unset: not counted, no thread count set).
    cpus_per_trial: float | None = None
    hyperparameters: HyperparameterSpec

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, value: str) -> str:
        if not STUDY_NAME.fullmatch(value):
            raise ValueError(
                "must be 1-128 letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        if value.isdigit():
            raise ValueError("must not be only digits: study references that are numbers are ids")
        return value

    @field_validator("args")
    @classmethod
    def _args_have_no_nul(cls, value: list[str]) -> list[str]:
        for i, arg in enumerate(value):
            if "\x00" in arg:
                raise ValueError(f"args[{i}] must not contain a NUL character")
        return value

    @field_validator("output_dir_flag")
    @classmethod
    def _flag_is_a_flag(cls, value: str) -> str:
        if not FLAG.fullmatch(value):
            raise ValueError("must look like --job-dir or --output_dir")
        return value

    @field_validator("eval_dirs", "export_dirs")
    @classmethod
    def _dirs_stay_inside(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for pattern in value:
            if not pattern.strip():
                raise ValueError("patterns must not be empty")
            if pattern.startswith(("/", "\\")) or ".." in Path(pattern).parts:
                raise ValueError(f"{pattern!r} must be relative to the trial's output dir")
        return value

    @field_validator("eval_dirs")
    @classmethod
    def _default_eval_dirs_mean_unset(cls, value: list[str] | None) -> list[str] | None:
        # Specs stored before model dirs were found wrote the old default out in full.
        return None if value is not None and tuple(value) == DEFAULT_EVAL_DIRS else value

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _whole_gpus(cls, value: Any) -> Any:
        # Before pydantic's coercion, which would take `true` for 1 and "2" for 2.
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or value < 0:
            raise ValueError("must be a whole number >= 0 (the GPUs each trial gets)")
        return int(value)

    @field_validator("cpus_per_trial", mode="before")
    @classmethod
    def _positive_cpus(cls, value: Any) -> Any:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError("must be a number > 0 (the CPUs each trial is counted for)")
        return value

    @field_validator("skip_checks")
    @classmethod
    def _unique_checks(cls, value: list[Check]) -> list[Check]:
        return list(dict.fromkeys(value))

    @property
    def goal(self) -> Goal:
        """The goal of the first objective (the only one of most studies)."""
        return self.hyperparameters.objectives[0].goal

    @property
    def metric_tag(self) -> str:
        """The first objective's metric: it picks each trial's ranking step and is pruned on."""
        return self.hyperparameters.objectives[0].metric

    @property
    def objectives(self) -> list[Objective]:
        return self.hyperparameters.objectives

    @property
    def constraints(self) -> list[MetricSpec]:
        return self.hyperparameters.constraints

    @property
    def multi_objective(self) -> bool:
        return len(self.hyperparameters.objectives) > 1

    @property
    def ranked_metrics(self) -> list[str]:
        """Every metric a trial's ranking step must have: objectives, then constraints."""
        return [o.metric for o in self.objectives] + [c.metric_id for c in self.constraints]

    @model_validator(mode="before")
    @classmethod
    def _no_trial_count_under_a_compute_budget(cls, data: Any) -> Any:
        """A compute budget without `maxTrials` is not a one-trial study: the count is lifted
        (written out, so the stored document says so)."""
        if not isinstance(data, dict):
            return data
        budget = data.get("budget")
        hp = data.get("hyperparameters")
        if not isinstance(budget, dict) or not isinstance(hp, dict):
            return data
        compute = ("trainSteps", "train_steps", "trialSeconds", "trial_seconds", "wallSeconds")
        if any(budget.get(k) is not None for k in (*compute, "wall_seconds")) and not (
            "maxTrials" in hp or "max_trials" in hp
        ):
            data = {**data, "hyperparameters": {**hp, "maxTrials": MAX_TRIALS}}
        return data

    @model_validator(mode="after")
    def _pruner_fits_objectives(self) -> StudySpec:
        rule = self.early_stopping.type if self.early_stopping else None
        if self.multi_objective and rule in SINGLE_VALUE_PRUNERS:
            raise _FieldProblems(
                [
                    (
                        "earlyStopping.type",
                        f"{rule} compares one value and the study has several objectives: use "
                        "'dominated' (or enableTrialEarlyStopping: true alone)",
                    )
                ]
            )
        if not self.multi_objective and rule == "dominated":
            raise _FieldProblems(
                [("earlyStopping.type", "'dominated' needs several objectives (metrics)")]
            )
        return self

    @property
    def pruner(self) -> PrunerSpec | None:
        """The effective pruner: explicit `earlyStopping`, else the default when enabled."""
        if self.early_stopping is not None:
            return None if self.early_stopping.type == "none" else self.early_stopping
        if self.hyperparameters.enable_trial_early_stopping:
            return DEFAULT_MULTI_OBJECTIVE_PRUNER if self.multi_objective else DEFAULT_PRUNER
        return None

    @property
    def max_trials(self) -> int:
        """The trial budget, capped by the grid's size under GRID_SEARCH."""
        hp = self.hyperparameters
        if hp.algorithm is Algorithm.GRID_SEARCH:
            return min(hp.max_trials, hp.grid_size)
        return hp.max_trials

    def checks(self, check: Check) -> bool:
        """Whether the named completion check applies to this study's trials."""
        return check not in self.skip_checks

    def is_better(self, a: float, b: float) -> bool:
        """Whether objective value `a` beats `b` in the goal's direction."""
        return a > b if self.goal is Goal.MAXIMIZE else a < b

    def to_document(self) -> dict[str, Any]:
        """The spec as a JSON-able dict with AI Platform's field names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


ParameterSpec.model_rebuild()
ConditionalParameterSpec.model_rebuild()


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _plain_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


# ----------------------------------------------------------------------------------------------
# Loading


def load_spec_text(
    text: str,
    *,
    source: str | None = None,
    warnings: list[str] | None = None,
    trainers: Collection[str] | None = None,
    **overrides: Any,
) -> StudySpec:
    """Parse a YAML or JSON spec (YAML is a superset of JSON).

    `overrides` (e.g. `trainer=`, `name=`) fill or replace top-level fields, so the CLI can
    complete an AI Platform file that names neither.
    """
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    try:
        if document is None:
            document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = f"not valid YAML or JSON: {_yaml_problem(exc)}"
        raise SpecError([("", problem)], source=source) from None
    return parse_spec(document, source=source, warnings=warnings, trainers=trainers, **overrides)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error, its place said once: PyYAML's own text repeats each mark
    with a quote of the line under it."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    mark, context_mark = exc.problem_mark, exc.context_mark
    problem = exc.problem or exc.context or "invalid"
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = ""
    if exc.context and exc.problem:
        context = f" ({exc.context}"
        if context_mark is not None and (mark is None or context_mark.line != mark.line):
            context += f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
        context += ")"
    return f"{where}{problem}{context}"


def load_spec_file(path: Path, *, warnings: list[str] | None = None, **overrides: Any) -> StudySpec:
    """Read and parse a spec file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([("", f"cannot read the file: {exc.strerror}")], source=str(path)) from None
    return load_spec_text(text, source=str(path), warnings=warnings, **overrides)


def parse_spec(
    document: Any,
    *,
    source: str | None = None,
    warnings: list[str] | None = None,
    trainers: Collection[str] | None = None,
    **overrides: Any,
) -> StudySpec:
    """Validate a decoded spec document; raise `SpecError` listing every problem.

    Fields that are accepted but ignored are appended to `warnings` (and logged). With
    `trainers` (the registered names), an unknown trainer is one of those problems.
    """
    if not isinstance(document, dict):
        kind = type(document).__name__ if document is not None else "empty"
        raise SpecError([("", f"must be a mapping of fields, got {kind}")], source=source)
    notes: list[str] = []
    vertex_paths: VertexPaths | None = None
    if is_vertex_job(document):
        flat, vertex_paths = from_vertex(document, source, notes)
        prefix = ""
    else:
        flat, prefix = _flatten(document, source, notes)
    for note in notes:
        logger.warning("%s: %s", source or "spec", note)
    if warnings is not None:
        warnings.extend(notes)
    for key, value in overrides.items():
        if value is not None:
            flat[_camel(key)] = value
    unknown = _unknown_trainer(flat.get("trainer"), trainers)
    try:
        spec = StudySpec.model_validate(flat)
    except ValidationError as exc:
        problems = _problems(exc, prefix)
        if vertex_paths is not None:
            problems = [
                (
                    vertex_paths.translate(path),
                    _vertex_hint(path, vertex_paths.translate_text(reason)),
                )
                for path, reason in problems
            ]
        if unknown and not any(path == "trainer" for path, _ in problems):
            problems.insert(0, ("trainer", unknown))
        raise SpecError(problems, source=source) from None
    if unknown:
        raise SpecError([("trainer", unknown)], source=source)
    return spec


def _vertex_hint(path: str, reason: str) -> str:
    """An unknown top-level field of a Vertex job is compared with the job's fields (and
    ours, which may stand beside them), not with AI Platform's."""
    if not reason.startswith("unknown field") or "." in path or "[" in path:
        return reason
    ours = [f.alias or name for name, f in StudySpec.model_fields.items()]
    return unknown_field(path, [*JOB_FIELDS, *ours])


def _unknown_trainer(name: Any, trainers: Collection[str] | None) -> str | None:
    if trainers is None or not isinstance(name, str) or name in trainers:
        return None
    choices = ", ".join(sorted(trainers)) or "none are registered"
    hint = did_you_mean(name, trainers)
    return f"{name!r} is not a registered trainer (registered: {choices}){hint}"


def _flatten(
    document: dict[str, Any], source: str | None, warnings: list[str]
) -> tuple[dict[str, Any], str]:
    """Bring the three accepted shapes to one: our fields + `hyperparameters`.

    Returns the flat document and the path prefix under which the user wrote
    `hyperparameters`, so that errors name the field as it is in their file.
    """
    doc = dict(document)
    if "trainingInput" in doc:
        training = doc.pop("trainingInput")
        if not isinstance(training, dict):
            raise SpecError([("trainingInput", "must be a mapping")], source=source)
        for key in list(doc):
            if key in IGNORED_JOB_FILE_KEYS:
                warnings.append(f"{key}: ignored (it does not concern tuning)")
                doc.pop(key)
        training = dict(training)
        if "args" in training:
            doc.setdefault("args", training.pop("args"))
        if "hyperparameters" not in training:
            raise SpecError(
                [("trainingInput.hyperparameters", "required: the tuning config")], source=source
            )
        doc["hyperparameters"] = training.pop("hyperparameters")
        for key in sorted(training):
            known = "" if key in IGNORED_JOB_KEYS else " (not a field the tuner knows)"
            if key == "masterConfig":
                known = _accelerator_hint(training[key])
            warnings.append(f"trainingInput.{key}: ignored, it does not concern tuning{known}")
        return doc, "trainingInput.hyperparameters"
    if "hyperparameters" in doc:
        return doc, "hyperparameters"
    hp_keys = set(HyperparameterSpec.model_fields) | {
        f.alias for f in HyperparameterSpec.model_fields.values() if f.alias
    }
    block = {k: doc.pop(k) for k in list(doc) if k in hp_keys}
    doc["hyperparameters"] = block
    return doc, ""


def _accelerator_hint(master_config: Any) -> str:
    """What to write instead of AI Platform's `masterConfig.acceleratorConfig.count`."""
    if not isinstance(master_config, dict):
        return ""
    accelerators = master_config.get("acceleratorConfig")
    count = accelerators.get("count") if isinstance(accelerators, dict) else None
    if count is None:
        return ""
    return f" (for {count} GPUs per trial, set gpusPerTrial: {count} beside trainingInput)"


def _camel(key: str) -> str:
    return to_camel(key) if "_" in key else key


def _problems(exc: ValidationError, prefix: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        ctx_error = (error.get("ctx") or {}).get("error")
        if loc and loc[0] == "hyperparameters":
            loc = loc[1:]
            base = _path([prefix] if prefix else [])
        else:
            base = ""
        path = _path(loc, as_written=error["type"] == "extra_forbidden")
        if base:
            path = f"{base}.{path}" if path and not path.startswith("[") else base + path
        if isinstance(ctx_error, _FieldProblems):
            for field, reason in ctx_error.problems:
                problems.append((f"{path}.{field}" if path else field, reason))
            continue
        problems.append((path, _reason(error)))
    return problems


def _path(loc: list[Any], *, as_written: bool = False) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # A field validated from its default is named by its Python name: spell it as
            # the user does.
            out += ("." if out else "") + (str(part) if as_written else _camel(str(part)))
    return out


def _known_fields(loc: list[Any]) -> list[str]:
    """The fields (as written, camelCase) of the model that holds the last key of `loc`; at
    the top of a flat spec, the tuning config's fields too (they are written there)."""
    model: type[BaseModel] | None = StudySpec
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    known = [f.alias or name for name, f in model.model_fields.items()]
    if model is StudySpec:
        known += [f.alias or name for name, f in HyperparameterSpec.model_fields.items()]
        known += ["trainingInput", "studySpec"]
    return known


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, itself or in a list, a tuple or an optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _expected_words(error: Any) -> list[str]:
    """The quoted choices of an enum or literal error (`'MAXIMIZE' or 'MINIMIZE'`)."""
    return re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown_field(str(error["loc"][-1]), _known_fields(list(error["loc"])))
    if kind == "missing":
        if error["loc"] in (("name",), ("trainer",)):
            return "required (in the spec, or given with the command)"
        return "required"
    if kind == "enum":
        expected = (error.get("ctx") or {}).get("expected", "")
        hint = did_you_mean(error.get("input"), _expected_words(error))
        return f"got {error.get('input')!r}, expected one of {expected}{hint}"
    message = str(error["msg"])
    if kind == "literal_error":
        message += did_you_mean(error.get("input"), _expected_words(error))
    return message.removeprefix("Value error, ")


def spec_to_json(spec: StudySpec) -> str:
    """A canonical JSON text of the spec (what is stored)."""
    return json.dumps(spec.to_document(), sort_keys=True)
