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

from tuner.domain.errors import SpecError

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
        if problems:
            raise _FieldProblems(problems)
        return self

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
        """Whether the parameter takes finitely many values (it can be part of a grid)."""
        return self.type is not ParamType.DOUBLE

    def grid_count(self) -> int:
        """How many values a finite parameter takes (without listing them)."""
        if self.type is ParamType.INTEGER:
            assert self.min_value is not None and self.max_value is not None
            return int(self.max_value) - int(self.min_value) + 1
        return len(self.grid_values())

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


class _FieldProblems(ValueError):
    """Raised inside validators to report several sub-field problems at once."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {r}" for f, r in problems))


class PrunerSpec(_Model):
    """How trials are stopped early from their eval values (`earlyStopping`)."""

    type: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
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


class HyperparameterSpec(_Model):
    """AI Platform's `HyperparameterSpec`, field for field."""

    goal: Goal
    hyperparameter_metric_tag: str = Field(min_length=1)
    params: list[ParameterSpec] = Field(min_length=1)
    max_trials: int = Field(default=1, ge=1, le=MAX_TRIALS)
    max_parallel_trials: int = Field(default=1, ge=1, le=MAX_PARALLEL_TRIALS)
    max_failed_trials: int = Field(default=0, ge=0, le=MAX_TRIALS)
    enable_trial_early_stopping: bool = False
    algorithm: Algorithm = Algorithm.ALGORITHM_UNSPECIFIED
    resume_previous_job_id: str | None = None

    @model_validator(mode="after")
    def _check_params(self) -> HyperparameterSpec:
        seen: dict[str, int] = {}
        problems: list[tuple[str, str]] = []
        for i, p in enumerate(self.params):
            if p.parameter_name in seen:
                problems.append(
                    (
                        f"params[{i}].parameterName",
                        f"duplicate of params[{seen[p.parameter_name]}] ({p.parameter_name!r})",
                    )
                )
            seen.setdefault(p.parameter_name, i)
        if self.algorithm is Algorithm.GRID_SEARCH:
            infinite = False
            for i, p in enumerate(self.params):
                if not p.is_finite:
                    infinite = True
                    problems.append(
                        (
                            f"params[{i}].type",
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

    @property
    def grid_size(self) -> int:
        size = 1
        for p in self.params:
            size *= p.grid_count()
        return size


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
        return self.hyperparameters.goal

    @property
    def metric_tag(self) -> str:
        return self.hyperparameters.hyperparameter_metric_tag

    @property
    def pruner(self) -> PrunerSpec | None:
        """The effective pruner: explicit `earlyStopping`, else the default when enabled."""
        if self.early_stopping is not None:
            return None if self.early_stopping.type == "none" else self.early_stopping
        if self.hyperparameters.enable_trial_early_stopping:
            return DEFAULT_PRUNER
        return None

    @property
    def max_trials(self) -> int:
        """The budget, capped by the grid's size under GRID_SEARCH."""
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
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([("", f"not valid YAML or JSON: {where}{exc}")], source=source) from None
    return parse_spec(document, source=source, warnings=warnings, trainers=trainers, **overrides)


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
        if unknown and not any(path == "trainer" for path, _ in problems):
            problems.insert(0, ("trainer", unknown))
        raise SpecError(problems, source=source) from None
    if unknown:
        raise SpecError([("trainer", unknown)], source=source)
    return spec


def _unknown_trainer(name: Any, trainers: Collection[str] | None) -> str | None:
    if trainers is None or not isinstance(name, str) or name in trainers:
        return None
    choices = ", ".join(sorted(trainers)) or "none are registered"
    return f"{name!r} is not a registered trainer (registered: {choices})"


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
        path = _path(loc)
        if base:
            path = f"{base}.{path}" if path and not path.startswith("[") else base + path
        if isinstance(ctx_error, _FieldProblems):
            for field, reason in ctx_error.problems:
                problems.append((f"{path}.{field}" if path else field, reason))
            continue
        problems.append((path, _reason(error)))
    return problems


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _reason(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (check its spelling)"
    if kind == "missing":
        if error["loc"] in (("name",), ("trainer",)):
            return "required (in the spec, or given with the command)"
        return "required"
    if kind == "enum":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"got {error.get('input')!r}, expected one of {expected}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def spec_to_json(spec: StudySpec) -> str:
    """A canonical JSON text of the spec (what is stored)."""
    return json.dumps(spec.to_document(), sort_keys=True)
