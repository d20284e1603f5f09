"""Conditional parameters as the samplers propose them and as the trainer gets them.

Real Optuna storage (SQLite in tmp_path), real `proposals.propose`, trials told by hand as a
manager would. A child parameter (Vertex's `conditionalParameterSpecs`) must be in a trial, and
on the trainer's command line, exactly when its parent's value activates it: the
`two_objectives` trainer refuses `--momentum` with `--optimizer=adam`, so a child passed while
inactive would fail every such trial.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.trainers import two_objectives
from tuner.domain.spec import StudySpec, load_spec_text, parse_spec
from tuner.domain.trainers import Trainer, TrainerRegistry
from tuner.study import sampling
from tuner.study.operations import Backend, submit_study, tell
from tuner.study.proposals import Exhausted, propose
from tuner.trial.execution import build_command

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

REPO = Path(__file__).resolve().parents[1]
ABSENT = None

#: A Vertex job over a finite tree of parameters (int64 fields as strings, as Vertex's JSON
#: has them). `layers` is reverse-log scaled: the sampler's value is not the trainer's.
NESTED_JOB = textwrap.dedent(
    """
    displayName: {name}
    trainer: two_objectives
    seed: 5
    maxTrialCount: "200"
    studySpec:
      algorithm: {algorithm}
      metrics: [{{metricId: rmse, goal: MINIMIZE}}]
      parameters:
      - parameterId: optimizer
        categoricalValueSpec: {{values: [adam, sgd]}}
        conditionalParameterSpecs:
        - parentCategoricalValues: {{values: [sgd]}}
          parameterSpec:
            parameterId: momentum
            discreteValueSpec: {{values: [0, 0.9]}}
        - parentCategoricalValues: {{values: [sgd]}}
          parameterSpec:
            parameterId: nesterov
            categoricalValueSpec: {{values: ["true", "false"]}}
      - parameterId: layers
        integerValueSpec: {{minValue: "1", maxValue: "3"}}
        scaleType: UNIT_REVERSE_LOG_SCALE
        conditionalParameterSpecs:
        - parentIntValues: {{values: ["2", "3"]}}
          parameterSpec:
            parameterId: width
            discreteValueSpec: {{values: [8, 16]}}
            conditionalParameterSpecs:
            - parentDiscreteValues: {{values: [16]}}
              parameterSpec:
                parameterId: dropout
                integerValueSpec: {{minValue: "1", maxValue: "2"}}
    """
)
#: Each parameter's flag values, and for a child: its parent and the parent's flag values that
#: activate it. Written out by hand, apart from the spec, for the brute-force enumeration.
NESTED_VALUES = {
    "optimizer": ["adam", "sgd"],
    "momentum": ["0", "0.9"],
    "nesterov": ["true", "false"],
    "layers": ["1", "2", "3"],
    "width": ["8", "16"],
    "dropout": ["1", "2"],
}
NESTED_RULES = {
    "momentum": ("optimizer", {"sgd"}),
    "nesterov": ("optimizer", {"sgd"}),
    "width": ("layers", {"2", "3"}),
    "dropout": ("width", {"16"}),
}
#: The `two_objectives` trainer's flags: `momentum` only with sgd.
TRAINER_RULES = {"momentum": ("optimizer", {"sgd"})}
SAMPLED_ALGORITHMS = ["ALGORITHM_UNSPECIFIED", "RANDOM_SEARCH", "QMC"]


def brute_force(values: dict[str, list[str]], rules: dict[str, tuple[str, set[str]]]) -> set:
    """Every assignment of flag values (or ABSENT) in which each child is present exactly when
    its parent is present with an activating value."""
    names = list(values)
    found = set()
    for combo in itertools.product(*[[*values[n], ABSENT] for n in names]):
        flags = dict(zip(names, combo, strict=True))
        if respects(flags, rules):
            found.add(frozenset((n, v) for n, v in flags.items() if v is not ABSENT))
    return found


def respects(flags: dict[str, str | None], rules: dict[str, tuple[str, set[str]]]) -> bool:
    for name, value in flags.items():
        if name in rules:
            parent, activating = rules[name]
            active = flags.get(parent) is not ABSENT and flags.get(parent) in activating
        else:
            active = True
        if (value is not ABSENT) != active:
            return False
    return True


def nested_spec(name: str, algorithm: str) -> StudySpec:
    return load_spec_text(NESTED_JOB.format(name=name, algorithm=algorithm))


def trainer_spec(name: str, algorithm: str, trials: int) -> StudySpec:
    """The `two_objectives` trainer's space, with its two objectives."""
    return parse_spec(
        {
            "name": name,
            "trainer": "two_objectives",
            "seed": 3,
            "hyperparameters": {
                "metrics": [
                    {"metricId": "rmse", "goal": "MINIMIZE"},
                    {"metricId": "model_size", "goal": "MINIMIZE"},
                ],
                "algorithm": algorithm,
                "maxTrials": trials,
                "params": [
                    {
                        "parameterName": "learning_rate",
                        "type": "DOUBLE",
                        "minValue": 0.001,
                        "maxValue": 0.1,
                        "scaleType": "UNIT_LOG_SCALE",
                    },
                    {
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
                    },
                    {"parameterName": "units", "type": "INTEGER", "minValue": 2, "maxValue": 16},
                ],
            },
        }
    )


@pytest.fixture
def trainer() -> Trainer:
    registry = TrainerRegistry.from_file(REPO / "tests/trainers/trainers.yaml", missing_ok=False)
    return registry.get("two_objectives")


@pytest.fixture
def sqlite_backend(sqlite_url: str) -> Iterator[Backend]:
    connected = Backend.connect(sqlite_url)
    yield connected
    connected.close()


@pytest.fixture
def submit(sqlite_backend: Backend) -> Callable[[StudySpec], StudySpec]:
    registry = TrainerRegistry.from_file(REPO / "tests/trainers/trainers.yaml", missing_ok=False)

    def submit(spec: StudySpec) -> StudySpec:
        submit_study(sqlite_backend, spec, registry)
        return spec

    return submit


def trainer_flags(
    trainer: Trainer, spec: StudySpec, trial: optuna.trial.BaseTrial, tmp_path: Path
) -> tuple[list[str], dict[str, str]]:
    """The trial's command line, as the launcher builds it, and its `--name=value` flags."""
    command = build_command(
        trainer,
        args=spec.args,
        params=sampling.trainer_values(spec, trial.params),
        output_dir_flag=spec.output_dir_flag,
        output_dir=tmp_path / str(trial.number),
        trial_number=trial.number,
        study_name=spec.name,
    )
    argv = command.argv[len(trainer.argv) :]
    assert argv[-1] == f"--job-dir={tmp_path / str(trial.number)}"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv[:-1])
    assert len(flags) == len(argv) - 1  # no flag given twice
    return argv, flags


def run_study(
    backend: Backend, spec: StudySpec, value: Callable[[dict[str, Any]], Any], limit: int
) -> tuple[list[optuna.trial.Trial], Exhausted | None]:
    """Propose up to `limit` trials, telling each before the next; stop when exhausted."""
    study = backend.optuna_study(spec)
    trials = []
    for ordinal in range(limit):
        trial = propose(backend, spec, ordinal=ordinal)
        if isinstance(trial, Exhausted):
            return trials, trial
        trials.append(trial)
        tell(study, trial.number, value(sampling.trainer_values(spec, trial.params)))
    return trials, None


def nested_value(values: dict[str, Any]) -> float:
    return float(values["layers"]) + float(values.get("momentum", 0.5)) + values.get("dropout", 0)


# -- every sampler ---------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [*SAMPLED_ALGORITHMS, "GRID_SEARCH"])
def test_each_child_is_proposed_exactly_when_its_parent_activates_it(
    sqlite_backend, submit, trainer, tmp_path, algorithm
):
    spec = submit(nested_spec("nested", algorithm))
    trials, exhausted = run_study(sqlite_backend, spec, nested_value, 24)
    assert exhausted is None and len(trials) == 24

    seen = set()
    for trial in trials:
        _, flags = trainer_flags(trainer, spec, trial, tmp_path)
        assert respects(dict(flags), NESTED_RULES), flags
        assert set(flags) <= set(NESTED_VALUES)
        assert all(flags[name] in NESTED_VALUES[name] for name in flags), flags
        # Optuna holds the same params as the trainer gets: an inactive child is not sampled.
        assert set(trial.params) == set(flags)
        params = trial.params
        assert ("momentum" in params) == ("nesterov" in params) == (params["optimizer"] == "sgd")
        # `layers` is reverse-log scaled: the sampler's z is the trainer's 1 + 3 - z.
        assert ("width" in params) == (4 - params["layers"] in (2, 3)), params
        assert ("dropout" in params) == (params.get("width") == 16), params
        active = sampling.active_params(spec, trial.params)
        assert {p.parameter_name for p in active} == set(flags)
        seen.add(frozenset(flags.items()))
    assert len(seen) == len(trials)  # no combination twice
    # Both branches of each parent were taken: the rule above was tested both ways.
    for child in NESTED_RULES:
        assert any(child in dict(s) for s in seen) and any(child not in dict(s) for s in seen)


def test_grid_search_proposes_every_combination_of_the_tree_once_then_is_exhausted(
    sqlite_backend, submit, trainer, tmp_path
):
    expected = brute_force(NESTED_VALUES, NESTED_RULES)
    assert len(expected) == 35  # adam | sgd x 2 x 2 = 5; layers 1 | (2 or 3) x (8 | 16 x 2) = 7
    spec = submit(nested_spec("grid", "GRID_SEARCH"))
    assert spec.hyperparameters.grid_size == len(expected)
    assert spec.max_trials == len(expected)  # maxTrialCount 200, capped by the grid

    trials, exhausted = run_study(sqlite_backend, spec, nested_value, 100)
    proposed = [frozenset(trainer_flags(trainer, spec, t, tmp_path)[1].items()) for t in trials]
    assert len(proposed) == len(set(proposed)) == len(expected)
    assert set(proposed) == expected
    assert exhausted is not None
    assert exhausted.reason == "the search space is exhausted: all 35 combinations have been run"
    stored = sqlite_backend.optuna_study(spec).get_trials(deepcopy=False)
    assert len(stored) == 35  # no duplicate was drawn and failed on the way


# -- what the trainer gets -------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [*SAMPLED_ALGORITHMS, "NSGA_II"])
def test_the_trainer_never_gets_an_inactive_child_flag(
    sqlite_backend, submit, trainer, tmp_path, algorithm
):
    spec = submit(trainer_spec("two", algorithm, trials=16))

    def objectives(values: dict[str, Any]) -> list[float]:
        momentum = values.get("momentum", 0.0)
        rmse = abs(math.log10(values["learning_rate"]) + 2) + (1 - momentum) / 4
        return [rmse, float(two_objectives.model_size(values["units"]))]

    trials, exhausted = run_study(sqlite_backend, spec, objectives, 16)
    assert exhausted is None
    optimizers = []
    for trial in trials:
        argv, flags = trainer_flags(trainer, spec, trial, tmp_path)
        assert respects(dict(flags), TRAINER_RULES), flags
        assert set(flags) == {"learning_rate", "optimizer", "units"} | (
            {"momentum"} if flags["optimizer"] == "sgd" else set()
        )
        # The trainer's own flag check (what it runs first, before TensorFlow) accepts them.
        args = two_objectives.parse_args(argv)
        assert args.optimizer == flags["optimizer"]
        assert (args.momentum is None) == (flags["optimizer"] == "adam")
        optimizers.append(flags["optimizer"])
    assert set(optimizers) == {"adam", "sgd"}
    study = sqlite_backend.optuna_study(spec)
    assert len(study.directions) == 2
    assert study.best_trials  # the Pareto front of the told vectors
