"""Tests of `tuner.study.sampling`: search space, samplers, pruners and trainer flag
values, in memory."""

from __future__ import annotations

import importlib.util
import itertools
import statistics
import textwrap
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.domain.errors import SpecError
from tuner.domain.spec import Goal, PrunerSpec, StudySpec, load_spec_text
from tuner.study.sampling import (
    check_available,
    direction,
    distribution,
    format_flag_value,
    make_pruner,
    make_sampler,
    search_space,
    trainer_values,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def make_spec(
    params_yaml: str,
    *,
    algorithm: str = "ALGORITHM_UNSPECIFIED",
    goal: str = "MINIMIZE",
    max_trials: int = 20,
    parallel: int = 1,
    seed: int | None = None,
) -> StudySpec:
    text = (
        f"goal: {goal}\nhyperparameterMetricTag: loss\nalgorithm: {algorithm}\n"
        f"maxTrials: {max_trials}\nmaxParallelTrials: {parallel}\n"
        "params:\n" + textwrap.indent(textwrap.dedent(params_yaml), "  ")
    )
    return load_spec_text(text, name="s", trainer="t", seed=seed)


def one(param_yaml: str) -> Any:
    """The single ParameterSpec of a one-param spec."""
    return make_spec(f"- {param_yaml}").hyperparameters.params[0]


MIXED = """
- {parameterName: lr, type: DOUBLE, minValue: 0.0001, maxValue: 0.1, scaleType: UNIT_LOG_SCALE}
- {parameterName: dropout, type: DOUBLE, minValue: 0.01, maxValue: 0.9,
   scaleType: UNIT_REVERSE_LOG_SCALE}
- {parameterName: units, type: INTEGER, minValue: 8, maxValue: 256}
- {parameterName: layers, type: DISCRETE, discreteValues: [1, 2, 3, 4]}
- {parameterName: cell, type: CATEGORICAL, categoricalValues: [GRUCell, LSTMCell]}
"""


def run_study(spec: StudySpec, n_trials: int) -> list[dict[str, Any]]:
    """Ask/tell `n_trials` trials in memory; the objective is a deterministic function of params."""
    study = optuna.create_study(sampler=make_sampler(spec), direction=direction(spec.goal))
    space = search_space(spec)
    seen = []
    for _ in range(n_trials):
        trial = study.ask(space)
        values = trainer_values(spec, trial.params)
        score = sum(
            float(v) if isinstance(v, int | float) else float(len(v)) for v in values.values()
        )
        tell(study, trial, score)
        seen.append(dict(trial.params))
    return seen


def tell(study: optuna.Study, trial: optuna.Trial, value: float) -> None:
    """`study.tell`, as the tuner does it outside `optimize()`.

    GridSampler calls `study.stop()` once its grid is exhausted, which Optuna refuses outside
    `optimize()` after storing the result (see `tuner.study.operations.tell`).
    """
    try:
        study.tell(trial, value)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


# ----------------------------------------------------------------------------------------------
# Distributions


@pytest.mark.parametrize(
    ("param_yaml", "expected"),
    [
        (
            "{parameterName: p, type: DOUBLE, minValue: 0.5, maxValue: 2}",
            FloatDistribution(0.5, 2.0, log=False),
        ),
        (
            "{parameterName: p, type: DOUBLE, minValue: 0.5, maxValue: 2, scaleType: NONE}",
            FloatDistribution(0.5, 2.0, log=False),
        ),
        (
            "{parameterName: p, type: DOUBLE, minValue: -3, maxValue: 2, "
            "scaleType: UNIT_LINEAR_SCALE}",
            FloatDistribution(-3.0, 2.0, log=False),
        ),
        (
            "{parameterName: p, type: DOUBLE, minValue: 0.0001, maxValue: 0.1, "
            "scaleType: UNIT_LOG_SCALE}",
            FloatDistribution(0.0001, 0.1, log=True),
        ),
        (
            "{parameterName: p, type: DOUBLE, minValue: 0.0001, maxValue: 0.1, "
            "scaleType: UNIT_REVERSE_LOG_SCALE}",
            FloatDistribution(0.0001, 0.1, log=True),
        ),
        (
            "{parameterName: p, type: INTEGER, minValue: 40, maxValue: 400}",
            IntDistribution(40, 400, log=False),
        ),
        (
            "{parameterName: p, type: INTEGER, minValue: -4, maxValue: 4, "
            "scaleType: UNIT_LINEAR_SCALE}",
            IntDistribution(-4, 4, log=False),
        ),
        (
            "{parameterName: p, type: INTEGER, minValue: 1, maxValue: 1024, "
            "scaleType: UNIT_LOG_SCALE}",
            IntDistribution(1, 1024, log=True),
        ),
        (
            "{parameterName: p, type: INTEGER, minValue: 1, maxValue: 1024, "
            "scaleType: UNIT_REVERSE_LOG_SCALE}",
            IntDistribution(1, 1024, log=True),
        ),
        (
            "{parameterName: p, type: CATEGORICAL, categoricalValues: [BasicLSTMCell, GRUCell]}",
            CategoricalDistribution(["BasicLSTMCell", "GRUCell"]),
        ),
        (
            "{parameterName: p, type: DISCRETE, discreteValues: [1, 2, 3, 4]}",
            CategoricalDistribution([1, 2, 3, 4]),
        ),
        (
            "{parameterName: p, type: DISCRETE, discreteValues: [0.001, 0.5, 2]}",
            CategoricalDistribution([0.001, 0.5, 2]),
        ),
    ],
    ids=[
        "double",
        "double-none",
        "double-linear",
        "double-log",
        "double-reverse-log",
        "int",
        "int-linear",
        "int-log",
        "int-reverse-log",
        "categorical",
        "discrete-int",
        "discrete-float",
    ],
)
def test_distribution(param_yaml: Any, expected: Any) -> None:
    got = distribution(one(param_yaml))
    assert got == expected
    assert type(got) is type(expected)


def test_int_distribution_bounds_are_ints_and_discrete_choices_keep_their_types() -> None:
    int_dist = distribution(one("{parameterName: p, type: INTEGER, minValue: 40, maxValue: 400}"))
    assert isinstance(int_dist, IntDistribution)
    assert (type(int_dist.low), type(int_dist.high)) == (int, int)
    assert int_dist.step == 1

    disc = distribution(one("{parameterName: p, type: DISCRETE, discreteValues: [1, 2.5, 4]}"))
    assert isinstance(disc, CategoricalDistribution)
    assert disc.choices == (1, 2.5, 4)
    assert [type(c) for c in disc.choices] == [int, float, int]


def test_search_space_names_every_param_in_order() -> None:
    space = search_space(make_spec(MIXED))
    assert list(space) == ["lr", "dropout", "units", "layers", "cell"]
    assert space["lr"] == FloatDistribution(0.0001, 0.1, log=True)
    assert space["cell"] == CategoricalDistribution(["GRUCell", "LSTMCell"])


# ----------------------------------------------------------------------------------------------
# Trainer values and flags


def test_trainer_values_reverse_log_maps_z_to_min_plus_max_minus_z() -> None:
    spec = make_spec(
        """
        - {parameterName: d, type: DOUBLE, minValue: 0.01, maxValue: 0.9,
           scaleType: UNIT_REVERSE_LOG_SCALE}
        - {parameterName: i, type: INTEGER, minValue: 1, maxValue: 1000,
           scaleType: UNIT_REVERSE_LOG_SCALE}
        """
    )
    out = trainer_values(spec, {"d": 0.02, "i": 3})
    assert out["d"] == pytest.approx(0.01 + 0.9 - 0.02)
    assert type(out["d"]) is float
    assert out["i"] == 998
    assert type(out["i"]) is int

    # Near the bottom of the internal scale is near the top of the trainer's range.
    out = trainer_values(spec, {"d": 0.0101, "i": 1})
    assert out["d"] == pytest.approx(0.8999)
    assert out["i"] == 1000
    out = trainer_values(spec, {"i": 1000})
    assert out == {"i": 1}


def test_trainer_values_pass_other_scales_through() -> None:
    spec = make_spec(MIXED.replace("UNIT_REVERSE_LOG_SCALE", "UNIT_LINEAR_SCALE"))
    sampled = {"lr": 0.003, "dropout": 0.25, "units": 17, "layers": 3, "cell": "LSTMCell"}
    out = trainer_values(spec, sampled)
    assert out == sampled
    assert type(out["units"]) is int
    assert type(out["layers"]) is int


def test_trainer_values_skip_missing_and_drop_unknown_names() -> None:
    spec = make_spec(MIXED)
    out = trainer_values(spec, {"lr": 0.01, "units": 10, "not_a_param": 5})
    assert out == {"lr": 0.01, "units": 10}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (1.0, "1.0"),
        (2.5e20, "2.5e+20"),
        (0.30000000000000004, "0.30000000000000004"),
        (-0.5, "-0.5"),
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (0, "0"),
        (-7, "-7"),
        ("GRUCell", "GRUCell"),
        ("Basic LSTM cell", "Basic LSTM cell"),
        ("", ""),
    ],
)
def test_format_flag_value(value: Any, text: Any) -> None:
    assert format_flag_value(value) == text


def test_format_flag_value_floats_round_trip_exactly() -> None:
    for value in (0.1, 1 / 3, 1e-4 + 1 - 0.02, 123456.789e-12):
        assert float(format_flag_value(value)) == value


def test_direction() -> None:
    assert direction(Goal.MAXIMIZE) is optuna.study.StudyDirection.MAXIMIZE
    assert direction(Goal.MINIMIZE) is optuna.study.StudyDirection.MINIMIZE


# ----------------------------------------------------------------------------------------------
# Samplers

GRID = """
- {parameterName: units, type: INTEGER, minValue: 1, maxValue: 3}
- {parameterName: layers, type: DISCRETE, discreteValues: [0.5, 1, 2]}
- {parameterName: cell, type: CATEGORICAL, categoricalValues: [GRUCell, LSTMCell]}
"""


@pytest.mark.parametrize(
    ("algorithm", "cls"),
    [
        ("ALGORITHM_UNSPECIFIED", optuna.samplers.TPESampler),
        ("RANDOM_SEARCH", optuna.samplers.RandomSampler),
        ("GRID_SEARCH", optuna.samplers.GridSampler),
        ("CMA_ES", optuna.samplers.CmaEsSampler),
        ("GP", optuna.samplers.GPSampler),
        ("QMC", optuna.samplers.QMCSampler),
    ],
)
def test_make_sampler_class_per_algorithm(algorithm: Any, cls: Any) -> None:
    sampler = make_sampler(make_spec(GRID, algorithm=algorithm, seed=1))
    assert type(sampler) is cls


@pytest.mark.parametrize(("parallel", "liar"), [(1, False), (2, True), (8, True)])
def test_tpe_is_multivariate_with_constant_liar_only_in_parallel(parallel: Any, liar: Any) -> None:
    sampler = make_sampler(make_spec(MIXED, parallel=parallel))
    assert isinstance(sampler, optuna.samplers.TPESampler)
    # Optuna exposes no public accessors for these; the private attributes are what it uses.
    assert sampler._multivariate is True
    assert sampler._group is True
    assert sampler._constant_liar is liar


@pytest.mark.parametrize(("max_trials", "startup"), [(1, 2), (4, 2), (20, 5), (40, 10), (400, 10)])
def test_tpe_startup_trials_scale_with_the_budget(max_trials: int, startup: int) -> None:
    sampler = make_sampler(make_spec(MIXED, max_trials=max_trials))
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == startup


def test_grid_sampler_holds_the_whole_grid() -> None:
    spec = make_spec(GRID, algorithm="GRID_SEARCH")
    sampler = make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.GridSampler)
    assert len(sampler._all_grids) == spec.hyperparameters.grid_size == 18


@pytest.mark.parametrize(
    "algorithm",
    [
        "ALGORITHM_UNSPECIFIED",
        "RANDOM_SEARCH",
        "QMC",
        "CMA_ES",
    ],
)
def test_a_seeded_study_reproduces_its_params(algorithm: Any) -> None:
    def params(seed: int) -> list[dict[str, Any]]:
        return run_study(make_spec(MIXED, algorithm=algorithm, seed=seed), 8)

    first, again, other = params(42), params(42), params(7)
    assert first == again
    # Another seed gives other points, not only at the first (random) trial.
    assert first[0] != other[0]
    assert first[1:] != other[1:]
    for trial in first:
        assert set(trial) == {"lr", "dropout", "units", "layers", "cell"}


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="GP needs the optional 'gp' extra"
)
def test_gp_runs_past_its_startup_trials() -> None:
    spec = make_spec(MIXED, algorithm="GP", seed=3)
    assert len(run_study(spec, 12)) == 12


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_gp_without_torch_is_refused_with_the_install_command() -> None:
    spec = make_spec(MIXED, algorithm="GP", seed=3)
    with pytest.raises(SpecError) as info:
        check_available(spec)
    assert info.value.problems == [
        (
            "hyperparameters.algorithm",
            "GP needs the 'torch' package: pip install 'estimator-tuner[gp]'",
        )
    ]


def test_seeded_studies_without_a_seed_still_run() -> None:
    spec = make_spec(MIXED, algorithm="RANDOM_SEARCH")
    assert spec.seed is None
    assert len(run_study(spec, 3)) == 3


def test_grid_search_visits_every_combination_exactly_once() -> None:
    spec = make_spec(GRID, algorithm="GRID_SEARCH", max_trials=100, seed=5)
    assert spec.max_trials == 18
    visited = run_study(spec, spec.max_trials)
    combos = [(t["units"], t["layers"], t["cell"]) for t in visited]
    assert len(set(combos)) == len(combos) == 18
    expected = set(itertools.product([1, 2, 3], [0.5, 1, 2], ["GRUCell", "LSTMCell"]))
    assert set(combos) == expected
    assert all(type(t["units"]) is int for t in visited)


def _sample_trainer_values(scale: str, ptype: str, lo: str, hi: str, n: int) -> list[Any]:
    spec = make_spec(
        f"- {{parameterName: p, type: {ptype}, minValue: {lo}, maxValue: {hi}, "
        f"scaleType: {scale}}}",
        algorithm="RANDOM_SEARCH",
        max_trials=n,
        seed=0,
    )
    study = optuna.create_study(sampler=make_sampler(spec))
    space = search_space(spec)
    out = []
    for _ in range(n):
        trial = study.ask(space)
        out.append(trainer_values(spec, trial.params)["p"])
        study.tell(trial, 0.0)
    return out


def test_reverse_log_sampling_clusters_near_the_top_of_the_range() -> None:
    values = _sample_trainer_values("UNIT_REVERSE_LOG_SCALE", "DOUBLE", "0.0001", "1", 400)
    assert all(0.0001 <= v <= 1 for v in values)
    assert all(type(v) is float for v in values)
    assert statistics.median(values) > 0.9
    # Log-uniform internal z: P(trainer value > 0.5) = log10(0.5 / 1e-4) / 4, about 0.92.
    assert sum(v > 0.5 for v in values) / len(values) > 0.85
    # ... and yet the whole range is explored, down to the bottom decade.
    assert min(values) < 0.1


def test_log_sampling_clusters_near_the_bottom_of_the_range() -> None:
    values = _sample_trainer_values("UNIT_LOG_SCALE", "DOUBLE", "0.0001", "1", 400)
    assert all(0.0001 <= v <= 1 for v in values)
    assert statistics.median(values) < 0.1


def test_reverse_log_sampling_of_integers() -> None:
    values = _sample_trainer_values("UNIT_REVERSE_LOG_SCALE", "INTEGER", "1", "1000", 300)
    assert all(type(v) is int and 1 <= v <= 1000 for v in values)
    assert statistics.median(values) > 900


def test_sampled_flag_values_are_plain_python_values() -> None:
    spec = make_spec(MIXED, algorithm="RANDOM_SEARCH", seed=9)
    study = optuna.create_study(sampler=make_sampler(spec))
    trial = study.ask(search_space(spec))
    values = trainer_values(spec, trial.params)
    assert [type(values[k]) for k in ("lr", "dropout", "units", "layers", "cell")] == [
        float,
        float,
        int,
        int,
        str,
    ]
    for value in values.values():
        text = format_flag_value(value)
        assert "np." not in text and "(" not in text
    assert float(format_flag_value(values["lr"])) == values["lr"]


@pytest.mark.parametrize(("lo", "hi"), [(0.1, 0.7), (0.0001, 1.0), (0.3, 0.9)])
def test_reverse_log_trainer_value_stays_in_range_at_the_endpoints(lo: Any, hi: Any) -> None:
    spec = make_spec(
        f"- {{parameterName: p, type: DOUBLE, minValue: {lo}, maxValue: {hi}, "
        "scaleType: UNIT_REVERSE_LOG_SCALE}"
    )
    for z in (lo, hi):
        value = trainer_values(spec, {"p": z})["p"]
        assert lo <= value <= hi, f"z={z!r} gave {value!r}, outside [{lo}, {hi}]"


# ----------------------------------------------------------------------------------------------
# Pruners


def test_make_pruner_none_never_prunes() -> None:
    assert type(make_pruner(None)) is optuna.pruners.NopPruner
    assert type(make_pruner(PrunerSpec(type="none"))) is optuna.pruners.NopPruner


def test_make_pruner_median() -> None:
    pruner = make_pruner(PrunerSpec(startup_trials=5, warmup_steps=100, interval_steps=2))
    assert type(pruner) is optuna.pruners.MedianPruner
    assert (pruner._n_startup_trials, pruner._n_warmup_steps, pruner._interval_steps) == (
        5,
        100,
        2,
    )


def test_the_default_pruner_waits_for_a_third_of_the_longest_completed_trial() -> None:
    from tuner.domain.spec import DEFAULT_PRUNER
    from tuner.study.sampling import AutoWarmup

    pruner = make_pruner(DEFAULT_PRUNER)
    assert isinstance(pruner, AutoWarmup)
    study = optuna.create_study(pruner=pruner)
    for good in (0.1, 0.2, 0.3):  # three completed trials of 300 steps
        trial = study.ask()
        for step in range(50, 301, 50):
            trial.report(good, step)
        study.tell(trial, good)
    bad = study.ask()
    bad.report(5.0, 50)
    assert not bad.should_prune()  # step 50 < 300 / 3: too early to judge
    bad.report(5.0, 100)
    assert bad.should_prune()  # from a third of 300 steps on, the median rule applies
    lone = optuna.create_study(pruner=make_pruner(DEFAULT_PRUNER)).ask()
    lone.report(5.0, 1000)
    assert not lone.should_prune()  # nothing has completed: nothing to compare with


def test_make_pruner_percentile() -> None:
    pruner = make_pruner(PrunerSpec(type="percentile", percentile=25.0, startup_trials=1))
    assert type(pruner) is optuna.pruners.PercentilePruner
    assert pruner._percentile == 25.0
    assert pruner._n_startup_trials == 1


@pytest.mark.parametrize(("min_resource", "expected"), [("auto", None), (500, 500)])
def test_make_pruner_successive_halving(min_resource: Any, expected: Any) -> None:
    pruner = make_pruner(
        PrunerSpec(type="successive_halving", min_resource=min_resource, reduction_factor=2)
    )
    assert type(pruner) is optuna.pruners.SuccessiveHalvingPruner
    assert pruner._min_resource == expected  # "auto" is decided by Optuna later
    assert pruner._reduction_factor == 2


@pytest.mark.parametrize(("min_resource", "expected"), [("auto", 1), (200, 200)])
def test_make_pruner_hyperband(min_resource: Any, expected: Any) -> None:
    pruner = make_pruner(
        PrunerSpec(type="hyperband", min_resource=min_resource, max_resource=10_000)
    )
    assert type(pruner) is optuna.pruners.HyperbandPruner
    assert pruner._min_resource == expected
    assert pruner._max_resource == 10_000
    assert pruner._reduction_factor == 3


def test_median_pruner_prunes_a_trial_worse_than_the_finished_ones() -> None:
    spec = load_spec_text(
        "name: s\ntrainer: t\nearlyStopping: {type: median, startupTrials: 1}\n"
        "goal: MAXIMIZE\nhyperparameterMetricTag: accuracy\n"
        "params: [{parameterName: p, type: DOUBLE, minValue: 0, maxValue: 1}]\n"
    )
    study = optuna.create_study(
        sampler=make_sampler(spec), pruner=make_pruner(spec.pruner), direction="maximize"
    )
    good = study.ask(search_space(spec))
    good.report(0.9, step=100)
    study.tell(good, 0.9)

    bad = study.ask(search_space(spec))
    bad.report(0.1, step=100)
    assert bad.should_prune()
    fine = study.ask(search_space(spec))
    fine.report(0.95, step=100)
    assert not fine.should_prune()
