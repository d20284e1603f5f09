"""From a spec to Optuna: distributions, the sampler, the pruner, and trainer flag values.

The search space is translated here and only here. UNIT_REVERSE_LOG_SCALE has no Optuna
distribution: the sampler works on a log-scaled internal coordinate `z` and the trainer receives
`min + max - z`, which spreads values out near the top of the range as AI Platform does.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from tuner.domain.errors import SpecError
from tuner.domain.spec import (
    Algorithm,
    Goal,
    ParameterSpec,
    ParamType,
    PrunerSpec,
    ScaleType,
    StudySpec,
)


def distribution(param: ParameterSpec) -> BaseDistribution:
    """The Optuna distribution a parameter is sampled from."""
    if param.type is ParamType.CATEGORICAL:
        return CategoricalDistribution(list(param.categorical_values or []))
    if param.type is ParamType.DISCRETE:
        return CategoricalDistribution(param.grid_values())
    assert param.min_value is not None and param.max_value is not None
    log = param.scale in (ScaleType.UNIT_LOG_SCALE, ScaleType.UNIT_REVERSE_LOG_SCALE)
    if param.type is ParamType.INTEGER:
        return IntDistribution(int(param.min_value), int(param.max_value), log=log)
    return FloatDistribution(param.min_value, param.max_value, log=log)


def search_space(spec: StudySpec) -> dict[str, BaseDistribution]:
    """Every parameter's distribution, conditional ones included."""
    return {p.parameter_name: distribution(p) for p in spec.hyperparameters.all_params}


def active_params(spec: StudySpec, sampled: Mapping[str, Any]) -> list[ParameterSpec]:
    """The parameters a trial with these sampler values has: every unconditional one, and each
    conditional one whose parent has a value that activates it (parents first)."""
    out: list[ParameterSpec] = []

    def visit(param: ParameterSpec) -> None:
        out.append(param)
        name = param.parameter_name
        if name in sampled and param.conditional_parameter_specs:
            value = trainer_values(spec, {name: sampled[name]}, only=[param])[name]
            for child in param.children_for(value):
                visit(child)

    for param in spec.hyperparameters.params:
        visit(param)
    return out


def suggest(trial: optuna.trial.Trial, spec: StudySpec) -> dict[str, Any]:
    """Sample a trial's params define-by-run: a conditional parameter only when its parent's
    value activates it (Optuna then records it for this trial alone)."""
    sampled: dict[str, Any] = {}

    def visit(param: ParameterSpec) -> None:
        name = param.parameter_name
        sampled[name] = _suggest_one(trial, name, distribution(param))
        if param.conditional_parameter_specs:
            value = trainer_values(spec, {name: sampled[name]}, only=[param])[name]
            for child in param.children_for(value):
                visit(child)

    for param in spec.hyperparameters.params:
        visit(param)
    return sampled


def _suggest_one(trial: optuna.trial.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def trainer_values(
    spec: StudySpec, sampled: Mapping[str, Any], *, only: list[ParameterSpec] | None = None
) -> dict[str, Any]:
    """The values the trainer receives, from the sampler's internal values."""
    out: dict[str, Any] = {}
    for param in only if only is not None else spec.hyperparameters.all_params:
        name = param.parameter_name
        if name not in sampled:
            continue
        value = sampled[name]
        if param.scale is ScaleType.UNIT_REVERSE_LOG_SCALE and param.type in (
            ParamType.DOUBLE,
            ParamType.INTEGER,
        ):
            assert param.min_value is not None and param.max_value is not None
            value = param.min_value + param.max_value - value
            value = min(max(value, param.min_value), param.max_value)  # float rounding
            if param.type is ParamType.INTEGER:
                value = round(value)
        out[name] = value
    return out


def format_flag_value(value: Any) -> str:
    """One hyperparameter value as the text of its `--name=value` flag."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


#: Algorithms whose Optuna sampler needs an optional package, by import name.
OPTIONAL_PACKAGES = {Algorithm.GP: ("torch", "gp")}


def check_available(spec: StudySpec) -> None:
    """Refuse an algorithm whose sampler cannot run here, before anything runs."""
    needed = OPTIONAL_PACKAGES.get(spec.hyperparameters.algorithm)
    if needed and importlib.util.find_spec(needed[0]) is None:
        raise SpecError(
            [
                (
                    "hyperparameters.algorithm",
                    f"{spec.hyperparameters.algorithm.value} needs the '{needed[0]}' package: "
                    f"pip install 'estimator-tuner[{needed[1]}]'",
                )
            ]
        )


def direction(goal: Goal) -> optuna.study.StudyDirection:
    if goal is Goal.MAXIMIZE:
        return optuna.study.StudyDirection.MAXIMIZE
    return optuna.study.StudyDirection.MINIMIZE


def directions(spec: StudySpec) -> list[optuna.study.StudyDirection]:
    """One direction per objective, in the spec's order."""
    return [direction(objective.goal) for objective in spec.objectives]


#: User attr holding a COMPLETED trial's constraint values (<= 0: met), written before it is
#: told, so that the samplers' `constraints_func` can read it.
CONSTRAINTS_ATTR = "tuner_constraints"


def constraints_func(
    spec: StudySpec,
) -> Callable[[optuna.trial.FrozenTrial], Sequence[float]] | None:
    """Optuna's constraints function for a spec with safety metrics (None without)."""
    count = len(spec.constraints)
    if not count:
        return None

    def read(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
        values = trial.user_attrs.get(CONSTRAINTS_ATTR)
        if isinstance(values, list) and len(values) == count:
            return [float(v) for v in values]
        return [1.0] * count  # never measured (pruned, failed): not known to be feasible

    return read


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The sampler for the spec's `algorithm`, seeded by the spec's `seed`."""
    with warnings.catch_warnings():  # several samplers are marked experimental by Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(spec)


def _make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    hp = spec.hyperparameters
    seed = spec.seed
    algorithm = hp.algorithm
    constraints = constraints_func(spec)
    if algorithm is Algorithm.GRID_SEARCH:
        if hp.has_conditionals:  # a tree of values: `proposals` walks it (GridSampler cannot)
            return optuna.samplers.RandomSampler(seed=seed)
        grid = {p.parameter_name: p.grid_values() for p in hp.params}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if algorithm is Algorithm.NSGA_II:
        return optuna.samplers.NSGAIISampler(
            seed=seed,
            population_size=max(4, min(50, spec.max_trials // 4)),
            constraints_func=constraints,
        )
    if algorithm is Algorithm.RANDOM_SEARCH:
        return optuna.samplers.RandomSampler(seed=seed)
    if algorithm is Algorithm.CMA_ES:
        return optuna.samplers.CmaEsSampler(
            seed=seed, warn_independent_sampling=False, independent_sampler=None
        )
    if algorithm is Algorithm.GP:
        return optuna.samplers.GPSampler(
            seed=seed,
            deterministic_objective=False,
            constraints_func=constraints,
            warn_independent_sampling=False,
        )
    if algorithm is Algorithm.QMC:
        # Scrambling is what makes a QMC sequence depend on the seed.
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=hp.max_parallel_trials > 1,
        n_startup_trials=min(10, max(2, spec.max_trials // 4)),
        constraints_func=constraints,
    )


def make_pruner(pruner: PrunerSpec | None) -> optuna.pruners.BasePruner:
    """The pruner that decides early stopping from reported eval values (none for the rule of
    several objectives, which is the engine's own: `tuner.engine.dominance`)."""
    if pruner is None or pruner.type == "dominated":
        return optuna.pruners.NopPruner()
    if pruner.type in ("median", "percentile"):
        fixed_warmup = 0 if pruner.warmup_steps == "auto" else pruner.warmup_steps
        rule: optuna.pruners.BasePruner
        if pruner.type == "median":
            rule = optuna.pruners.MedianPruner(
                n_startup_trials=pruner.startup_trials,
                n_warmup_steps=fixed_warmup,
                interval_steps=pruner.interval_steps,
            )
        else:
            rule = optuna.pruners.PercentilePruner(
                pruner.percentile,
                n_startup_trials=pruner.startup_trials,
                n_warmup_steps=fixed_warmup,
                interval_steps=pruner.interval_steps,
            )
        return AutoWarmup(rule) if pruner.warmup_steps == "auto" else rule
    if pruner.type == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner.min_resource, reduction_factor=pruner.reduction_factor
        )
    if pruner.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1 if pruner.min_resource == "auto" else pruner.min_resource,
            max_resource=pruner.max_resource,
            reduction_factor=pruner.reduction_factor,
        )
    return optuna.pruners.NopPruner()


class AutoWarmup(optuna.pruners.BasePruner):
    """A pruner that never prunes in the first third of a trial's steps, as measured by the
    longest COMPLETED trial's last reported step (`warmupSteps: auto`).

    The tuner does not know how many steps a trainer runs; its completed trials do. Until one
    has completed nothing is pruned (nor would the median rule, before `startupTrials`).
    """

    FRACTION = 1 / 3

    def __init__(self, rule: optuna.pruners.BasePruner) -> None:
        self.rule = rule

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        longest = max((t.last_step for t in completed if t.last_step is not None), default=None)
        if longest is None or step < longest * self.FRACTION:
            return False
        return self.rule.prune(study, trial)
