"""Vertex AI's `HyperparameterTuningJob` as a spec: translated into the tuner's own fields.

A Vertex job (the REST resource, or the `gcloud ai hp-tuning-jobs create --config` file) is
brought to the AI Platform shape the rest of `tuner.domain.spec` validates: `studySpec.parameters`
become `params` (with `conditionalParameterSpecs` kept), `studySpec.metrics` become `metrics`,
the counts become `maxTrials`, `maxParallelTrials`, `maxFailedTrials`. Every problem found later is
named by its path in the user's file: `VertexPaths` translates the tuner's field paths back
(`params[0].minValue` is `studySpec.parameters[0].doubleValueSpec.minValue`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tuner.domain.errors import SpecError
from tuner.domain.hints import did_you_mean, unknown_field

#: Vertex's value specs, and the AI Platform type each becomes.
VALUE_SPECS = {
    "doubleValueSpec": "DOUBLE",
    "integerValueSpec": "INTEGER",
    "categoricalValueSpec": "CATEGORICAL",
    "discreteValueSpec": "DISCRETE",
}
#: Top-level fields of the job that do not concern tuning here: accepted with a warning.
IGNORED_JOB_FIELDS = frozenset(
    {
        "trialJobSpec",
        "encryptionSpec",
        "labels",
        "satisfiesPzs",
        "satisfiesPzi",
        # Output-only fields of the resource, present in a job read back from Vertex.
        "state",
        "createTime",
        "startTime",
        "endTime",
        "updateTime",
        "trials",
        "error",
    }
)
#: Fields of `studySpec` accepted with a warning: the tuner has no use for them.
IGNORED_STUDY_FIELDS = frozenset({"observationNoise"})
#: `studySpec.studyStoppingConfig` fields and the `budget` field each becomes.
STOPPING_CONFIG = {
    "maxNumTrialsNoProgress": "noProgressTrials",
    "maxDurationNoProgress": "noProgressSeconds",
    "minNumTrials": "minTrials",
}
STOPPING_CONFIG_FIELDS = frozenset(
    {*STOPPING_CONFIG, "maximumRuntimeConstraint", "minimumRuntimeConstraint", "maxNumTrials"}
    | {"shouldStopAsap"}
)
#: Vertex's automated stopping specs: each turns early stopping on.
STOPPING_SPECS = (
    "medianAutomatedStoppingSpec",
    "decayCurveStoppingSpec",
    "convexAutomatedStoppingSpec",
    "convexStopConfig",
)
MEASUREMENT_SELECTION = {
    "BEST_MEASUREMENT": "best",
    "LAST_MEASUREMENT": "final",
    "MEASUREMENT_SELECTION_TYPE_UNSPECIFIED": "best",
}
#: The job's counts and where they go.
COUNTS = {
    "maxTrialCount": "maxTrials",
    "parallelTrialCount": "maxParallelTrials",
    "maxFailedTrialCount": "maxFailedTrials",
}
STUDY_SPEC_FIELDS = frozenset(
    {"metrics", "parameters", "algorithm", "measurementSelectionType", "studyStoppingConfig"}
    | IGNORED_STUDY_FIELDS
    | set(STOPPING_SPECS)
)
PARAM_FIELDS = frozenset(
    {"parameterId", "scaleType", "conditionalParameterSpecs"} | set(VALUE_SPECS)
)
CONDITIONAL_FIELDS = frozenset(
    {"parameterSpec", "parentCategoricalValues", "parentDiscreteValues", "parentIntValues"}
)
#: The job's own top-level fields (beside the tuner's, e.g. `trainer`), for spelling hints.
JOB_FIELDS = frozenset({"studySpec", "displayName", *COUNTS} | IGNORED_JOB_FIELDS)
#: AI Platform's tuning fields, refused beside `studySpec` (naming where Vertex has them).
AI_PLATFORM_KEYS = {
    "hyperparameters": "studySpec (with maxTrialCount, parallelTrialCount beside it)",
    "trainingInput": "studySpec (with maxTrialCount, parallelTrialCount beside it)",
    "goal": "studySpec.metrics[].goal",
    "hyperparameterMetricTag": "studySpec.metrics[].metricId",
    "metrics": "studySpec.metrics",
    "params": "studySpec.parameters",
    "maxTrials": "maxTrialCount",
    "maxParallelTrials": "parallelTrialCount",
    "maxFailedTrials": "maxFailedTrialCount",
    "enableTrialEarlyStopping": "a stopping spec in studySpec (medianAutomatedStoppingSpec)",
    "algorithm": "studySpec.algorithm",
    "resumePreviousJobId": "not available for Vertex jobs (use our own shape)",
}
#: Our top-level keys that a Vertex job may carry beside its own.
OWN_KEYS_NOTE = "name, trainer, args, outputDirFlag, seed and the tuner's other top-level fields"


def is_vertex_job(document: dict[str, Any]) -> bool:
    """Whether a spec document is a Vertex job: it has a `studySpec`."""
    return "studySpec" in document


@dataclass
class VertexPaths:
    """Translates the tuner's field paths into the Vertex job's."""

    #: Internal param path -> (Vertex path, its value spec field).
    params: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Top-level and `hyperparameters` fields -> where the user wrote them.
    fields: dict[str, str] = field(default_factory=dict)

    def translate_text(self, text: str) -> str:
        """A reason with the tuner's paths in it ("duplicate of params[0]") in the user's."""
        return _INTERNAL_PATH.sub(lambda m: self.translate(m.group(0)), text)

    def translate(self, path: str) -> str:
        for internal in sorted(self.params, key=len, reverse=True):
            if path == internal or path.startswith((internal + ".", internal + "[")):
                vertex, value_spec = self.params[internal]
                rest = path[len(internal) :].lstrip(".")
                return _join(vertex, _param_field(rest, value_spec))
        for internal in sorted(self.fields, key=len, reverse=True):
            if path == internal or path.startswith((internal + ".", internal + "[")):
                return self.fields[internal] + path[len(internal) :]
        return path


_INTERNAL_PATH = re.compile(
    r"\b(?:params\[\d+\](?:\.conditionalParameterSpecs\[\d+\]\.parameterSpec)*|metrics\[\d+\])"
)


def _param_field(rest: str, value_spec: str) -> str:
    head, _, tail = rest.partition(".")
    name = re.match(r"^[A-Za-z]*", head)
    key = name.group(0) if name else ""
    suffix = head[len(key) :]
    mapped = {
        "parameterName": "parameterId",
        "minValue": f"{value_spec}.minValue",
        "maxValue": f"{value_spec}.maxValue",
        "categoricalValues": "categoricalValueSpec.values",
        "discreteValues": "discreteValueSpec.values",
        "type": value_spec,
    }.get(key, key)
    return ".".join(part for part in (mapped + suffix, tail) if part)


def _join(base: str, rest: str) -> str:
    if not rest:
        return base
    return base + rest if rest.startswith("[") else f"{base}.{rest}"


def from_vertex(
    document: dict[str, Any], source: str | None, warnings: list[str]
) -> tuple[dict[str, Any], VertexPaths]:
    """The job as the tuner's own document (our fields + `hyperparameters`), and the paths."""
    converter = _Converter(warnings)
    flat = converter.job(dict(document))
    if converter.problems:
        raise SpecError(converter.problems, source=source)
    return flat, converter.paths


class _Converter:
    def __init__(self, warnings: list[str]) -> None:
        self.warnings = warnings
        self.problems: list[tuple[str, str]] = []
        self.paths = VertexPaths()

    def job(self, doc: dict[str, Any]) -> dict[str, Any]:
        study = doc.pop("studySpec")
        for key in sorted(set(doc) & set(AI_PLATFORM_KEYS)):
            vertex = AI_PLATFORM_KEYS[key]
            self.problems.append(
                (key, f"not a field of a Vertex job: the tuning config is {vertex}")
            )
            doc.pop(key)
        if not isinstance(study, dict):
            self.problems.append(("studySpec", "must be a mapping"))
            return doc
        resource_name = doc.get("name")
        if isinstance(resource_name, str) and resource_name.startswith("projects/"):
            doc.pop("name")
            self.warnings.append(
                f"name: {resource_name!r} is Vertex's resource name, ignored (the study is "
                "named by displayName, or by a name given beside it)"
            )
        display = doc.pop("displayName", None)
        if display is not None and "name" not in doc:
            doc["name"] = display
            self.paths.fields["name"] = "displayName"
        for key in sorted(doc):
            if key in IGNORED_JOB_FIELDS:
                self.warnings.append(f"{key}: ignored, it does not concern tuning here")
                value = doc.pop(key)
                if key == "trialJobSpec" and "args" not in doc:
                    args = _trial_job_args(value)
                    if args is not None:
                        doc["args"] = args
                        self.paths.fields["args"] = "trialJobSpec.workerPoolSpecs[0] args"
                        self.warnings.append(
                            "args: taken from trialJobSpec.workerPoolSpecs[0] (the trainer's "
                            "fixed flags)"
                        )
        hp: dict[str, Any] = {}
        for vertex_key, ours in COUNTS.items():
            if vertex_key in doc:
                hp[ours] = _int64(doc.pop(vertex_key))
                self.paths.fields[ours] = vertex_key
        unknown = sorted(set(study) - STUDY_SPEC_FIELDS)
        for key in unknown:
            self.problems.append((f"studySpec.{key}", unknown_field(key, STUDY_SPEC_FIELDS)))
        for key in sorted(set(study) & IGNORED_STUDY_FIELDS):
            self.warnings.append(f"studySpec.{key}: ignored, the tuner does not apply it")
        if "metrics" in study:
            hp["metrics"] = study["metrics"]
        else:
            self.problems.append(("studySpec.metrics", "required: the metrics to optimize"))
        self.paths.fields.update(
            metrics="studySpec.metrics",
            goal="studySpec.metrics",
            hyperparameterMetricTag="studySpec.metrics",
            params="studySpec.parameters",
            algorithm="studySpec.algorithm",
        )
        if "algorithm" in study:
            hp["algorithm"] = study["algorithm"]
        hp["params"] = self.parameters(study.get("parameters"))
        self.measurement(study, doc)
        self.stopping(study, doc, hp)
        if "studyStoppingConfig" in study:
            self.study_stopping(study["studyStoppingConfig"], doc, hp)
        doc["hyperparameters"] = hp
        return doc

    def parameters(self, parameters: Any) -> Any:
        if parameters is None:
            self.problems.append(("studySpec.parameters", "required: the search space"))
            return []
        if not isinstance(parameters, list):
            return parameters  # the model says what is wrong, at the translated path
        return [
            self.parameter(p, f"params[{i}]", f"studySpec.parameters[{i}]")
            for i, p in enumerate(parameters)
        ]

    def parameter(self, param: Any, internal: str, vertex: str) -> Any:
        if not isinstance(param, dict):
            self.problems.append((vertex, "must be a mapping"))
            return param
        for key in sorted(set(param) - PARAM_FIELDS):
            self.problems.append((f"{vertex}.{key}", unknown_field(key, PARAM_FIELDS)))
        specs = [key for key in VALUE_SPECS if key in param]
        if len(specs) != 1:
            self.problems.append(
                (
                    vertex,
                    "needs exactly one of "
                    + ", ".join(VALUE_SPECS)
                    + (f" (got {', '.join(specs)})" if specs else ""),
                )
            )
            return {}
        value_spec = specs[0]
        self.paths.params[internal] = (vertex, value_spec)
        out: dict[str, Any] = {"type": VALUE_SPECS[value_spec]}
        if "parameterId" in param:
            out["parameterName"] = param["parameterId"]
        else:
            self.problems.append((f"{vertex}.parameterId", "required"))
        values = param[value_spec]
        if not isinstance(values, dict):
            self.problems.append((f"{vertex}.{value_spec}", "must be a mapping"))
            return out
        allowed = (
            {"minValue", "maxValue", "defaultValue"}
            if value_spec in ("doubleValueSpec", "integerValueSpec")
            else {"values", "defaultValue"}
        )
        for key in sorted(set(values) - allowed):
            self.problems.append((f"{vertex}.{value_spec}.{key}", unknown_field(key, allowed)))
        if "defaultValue" in values:
            self.warnings.append(
                f"{vertex}.{value_spec}.defaultValue: ignored (the sampler chooses the first "
                "trials; `tuner retry` or a warm start runs chosen values)"
            )
        if value_spec in ("doubleValueSpec", "integerValueSpec"):
            whole = value_spec == "integerValueSpec"
            for key in ("minValue", "maxValue"):
                if key in values:
                    out[key] = _int64(values[key]) if whole else values[key]
        elif value_spec == "categoricalValueSpec":
            if "values" in values:
                out["categoricalValues"] = values["values"]
        elif "values" in values:
            out["discreteValues"] = values["values"]
        scale = param.get("scaleType")
        if scale is not None and scale != "SCALE_TYPE_UNSPECIFIED":
            out["scaleType"] = scale
        children = param.get("conditionalParameterSpecs")
        if children is not None:
            out["conditionalParameterSpecs"] = self.children(children, internal, vertex)
        return out

    def children(self, children: Any, internal: str, vertex: str) -> Any:
        if not isinstance(children, list):
            return children
        out = []
        for i, child in enumerate(children):
            where = f"{vertex}.conditionalParameterSpecs[{i}]"
            inner = f"{internal}.conditionalParameterSpecs[{i}]"
            if not isinstance(child, dict):
                self.problems.append((where, "must be a mapping"))
                continue
            for key in sorted(set(child) - CONDITIONAL_FIELDS):
                self.problems.append((f"{where}.{key}", unknown_field(key, CONDITIONAL_FIELDS)))
            converted = {k: v for k, v in child.items() if k != "parameterSpec"}
            if "parameterSpec" not in child:
                self.problems.append((f"{where}.parameterSpec", "required"))
            else:
                converted["parameterSpec"] = self.parameter(
                    child["parameterSpec"], f"{inner}.parameterSpec", f"{where}.parameterSpec"
                )
            out.append(converted)
        return out

    def measurement(self, study: dict[str, Any], doc: dict[str, Any]) -> None:
        selection = study.get("measurementSelectionType")
        if selection is None:
            return
        mode = MEASUREMENT_SELECTION.get(str(selection))
        if mode is None:
            choices = ", ".join(MEASUREMENT_SELECTION)
            self.problems.append(
                (
                    "studySpec.measurementSelectionType",
                    f"got {selection!r}, expected one of {choices}"
                    + did_you_mean(selection, MEASUREMENT_SELECTION),
                )
            )
        elif "objective" in doc and doc["objective"] != mode:
            self.problems.append(
                (
                    "objective",
                    f"{doc['objective']!r} contradicts studySpec.measurementSelectionType "
                    f"{selection} (which means {mode!r}); give one of them",
                )
            )
        else:
            doc["objective"] = mode
            self.paths.fields["objective"] = "studySpec.measurementSelectionType"

    def study_stopping(self, config: Any, doc: dict[str, Any], hp: dict[str, Any]) -> None:
        """Vertex's `studyStoppingConfig` as our `budget` (and `maxTrials`)."""
        where = "studySpec.studyStoppingConfig"
        if not isinstance(config, dict):
            self.problems.append((where, "must be a mapping"))
            return
        if "budget" in doc:
            self.problems.append(("budget", f"give either budget or {where}, not both"))
            return
        for key in sorted(set(config) - STOPPING_CONFIG_FIELDS):
            self.problems.append((f"{where}.{key}", unknown_field(key, STOPPING_CONFIG_FIELDS)))
        budget: dict[str, Any] = {}
        for vertex_key, ours in STOPPING_CONFIG.items():
            if vertex_key not in config:
                continue
            value = config[vertex_key]
            if vertex_key == "maxDurationNoProgress":
                value = self.duration(value, f"{where}.{vertex_key}")
            budget[ours] = _int64(value)
            self.paths.fields[f"budget.{ours}"] = f"{where}.{vertex_key}"
        runtime = config.get("maximumRuntimeConstraint")
        if runtime is not None:
            if not isinstance(runtime, dict) or set(runtime) - {"maxDuration", "endTime"}:
                self.problems.append(
                    (f"{where}.maximumRuntimeConstraint", "must be {maxDuration: '<n>s'}")
                )
            elif "endTime" in runtime:
                self.problems.append(
                    (
                        f"{where}.maximumRuntimeConstraint.endTime",
                        "not supported: give maxDuration (seconds from the study's creation)",
                    )
                )
            elif "maxDuration" in runtime:
                budget["wallSeconds"] = self.duration(
                    runtime["maxDuration"], f"{where}.maximumRuntimeConstraint.maxDuration"
                )
                self.paths.fields["budget.wallSeconds"] = (
                    f"{where}.maximumRuntimeConstraint.maxDuration"
                )
        if "maxNumTrials" in config:
            count = _int64(config["maxNumTrials"])
            current = hp.get("maxTrials")
            if isinstance(count, int) and isinstance(current, int):
                count = min(count, current)
            hp["maxTrials"] = count
        for key in ("minimumRuntimeConstraint", "shouldStopAsap"):
            if key in config:
                self.warnings.append(f"{where}.{key}: ignored, the tuner does not apply it")
        if budget:
            doc["budget"] = budget
            self.paths.fields.setdefault("budget", where)

    def duration(self, value: Any, where: str) -> Any:
        """A protobuf Duration as JSON writes it ("600s", "1.5s"), in seconds."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value))
        if match is None:
            self.problems.append((where, f"got {value!r}, expected a duration such as '600s'"))
            return None
        return float(match.group(1))

    def stopping(self, study: dict[str, Any], doc: dict[str, Any], hp: dict[str, Any]) -> None:
        given = [key for key in STOPPING_SPECS if key in study]
        if len(given) > 1:
            self.problems.append(
                ("studySpec", f"give at most one stopping spec, got {', '.join(given)}")
            )
            return
        if not given:
            return
        hp["enableTrialEarlyStopping"] = True
        self.paths.fields["enableTrialEarlyStopping"] = f"studySpec.{given[0]}"
        if given[0] == "medianAutomatedStoppingSpec" and "earlyStopping" not in doc:
            multi = isinstance(study.get("metrics"), list) and len(study["metrics"]) > 1
            if not multi:
                doc["earlyStopping"] = {"type": "median", "warmupSteps": "auto"}
            self.paths.fields["earlyStopping"] = "studySpec.medianAutomatedStoppingSpec"
            spec = study[given[0]]
            if isinstance(spec, dict) and spec.get("useElapsedDuration"):
                self.warnings.append(
                    "studySpec.medianAutomatedStoppingSpec.useElapsedDuration: ignored, trials "
                    "are compared at the same global step"
                )
        else:
            self.warnings.append(
                f"studySpec.{given[0]}: the tuner's default early stopping is used instead "
                "(docs/spec.md, Early stopping)"
            )


def _int64(value: Any) -> Any:
    """Vertex writes int64 fields as strings in JSON ("10"): the number, or the value as is."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return value


def _trial_job_args(trial_job_spec: Any) -> list[str] | None:
    """The first worker pool's args (`pythonPackageSpec` or `containerSpec`), if given."""
    if not isinstance(trial_job_spec, dict):
        return None
    pools = trial_job_spec.get("workerPoolSpecs")
    if not isinstance(pools, list) or not pools or not isinstance(pools[0], dict):
        return None
    for key in ("pythonPackageSpec", "containerSpec"):
        spec = pools[0].get(key)
        args = spec.get("args") if isinstance(spec, dict) else None
        if isinstance(args, list) and all(isinstance(arg, str) for arg in args):
            return list(args)
    return None
