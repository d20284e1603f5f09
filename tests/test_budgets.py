"""Compute budgets and no-progress stops, through `tuner run` on the embedded default.

Real studies of the synthetic trainer (`examples/synthetic/task.py`: real event files, no
TensorFlow), real subprocesses; the assertions are on what a user reads: the study's state and
reason, its trials, `tuner show` and the API's `budget`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tuner.domain.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]


def spec(name: str, budget: dict[str, Any], **hyper: Any) -> dict[str, Any]:
    return {
        "name": name,
        "trainer": "synthetic",
        "args": ["--train-steps=100", "--eval-every-steps=50"],
        "seed": 4,
        "budget": budget,
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "algorithm": "RANDOM_SEARCH",
            "maxParallelTrials": 1,
            "params": [{"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1}],
            **hyper,
        },
    }


def tuner(
    tmp_path: Path, *args: str, timeout: float = 300, trainers: Path = REPO / "trainers.yaml"
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TUNER_DATABASE_URL": f"sqlite:///{tmp_path / 'tuner.db'}",
        "TUNER_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TUNER_TRAINERS_FILE": str(trainers),
        "TUNER_POLL_INTERVAL": "0.05",
        "TUNER_STOP_GRACE_SECONDS": "2",
    }
    env.pop("TUNER_SERVER", None)
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def run(tmp_path: Path, document: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = tmp_path / f"{document['name']}.json"
    path.write_text(json.dumps(document))
    done = tuner(tmp_path, "run", str(path), "--no-view")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = tuner(tmp_path, "show", document["name"], "--json")
    listed = tuner(tmp_path, "trials", document["name"], "--json")
    rows = json.loads(listed.stdout)
    return json.loads(shown.stdout), rows["data"] if isinstance(rows, dict) else rows


def test_a_step_budget_ends_the_study_when_one_more_trial_would_not_fit(tmp_path):
    study, trials = run(tmp_path, spec("steps", {"trainSteps": 350}))
    assert study["state"] == "COMPLETED"
    # each trial trains 100 steps: after 3 (300 spent) one more would pass 350
    assert study["stateReason"] == (
        "compute budget spent: 300 of 350 steps, and a trial costs about 100 steps"
    )
    assert len(trials) == 3 and {t["lastStep"] for t in trials} == {100}
    assert study["maxTrials"] == 1_000_000, "no trial count: the budget bounds the study"
    (measure,) = study["budget"]["measures"]
    assert measure == {"measure": "trainSteps", "used": 300.0, "limit": 350.0}
    shown = tuner(tmp_path, "show", "steps")
    assert "compute 300/350 steps (86%)" in shown.stdout


def test_no_progress_stops_after_n_trials_without_a_better_objective(tmp_path):
    study, trials = run(
        tmp_path, spec("stale", {"noProgressTrials": 2, "minTrials": 3}, maxTrials=40)
    )
    assert study["state"] == "COMPLETED"
    assert study["stateReason"] == "no progress: a better objective in none of the last 2 trials"
    assert 3 <= len(trials) < 40
    ended = sorted(trials, key=lambda t: t["endedAt"])
    best_before = min(t["objective"] for t in ended[:-2])
    assert all(t["objective"] >= best_before for t in ended[-2:])
    assert study["budget"]["trialsSinceProgress"] == 2


def test_past_the_wall_time_budget_running_trials_stop(tmp_path):
    slow = spec("wall", {"wallSeconds": 4}, maxTrials=5)
    slow["args"] = ["--train-steps=100", "--eval-every-steps=10", "--step-seconds=0.5"]
    study, trials = run(tmp_path, slow)
    assert study["state"] == "COMPLETED"
    assert study["stateReason"].startswith("wall-time budget spent: ")
    assert [t["state"] for t in trials] == ["STOPPED"]
    assert "wall-time budget spent" in (trials[0]["failureReason"] or "")


def test_a_trial_seconds_budget_counts_each_trainer_from_its_start_to_its_exit(tmp_path):
    timed = spec("seconds", {"trialSeconds": 3.5})
    # 2 evals after 0.5 s each a trial: about 1-1.5 s of trainer each, Python's start included
    timed["args"] = ["--train-steps=20", "--eval-every-steps=10", "--step-seconds=0.5"]
    study, trials = run(tmp_path, timed)
    assert study["state"] == "COMPLETED"
    assert study["stateReason"].startswith("compute budget spent: "), study["stateReason"]
    (measure,) = study["budget"]["measures"]
    assert measure["measure"] == "trialSeconds" and measure["limit"] == 3.5
    used = measure["used"]
    # The runs from their claim to their recorded end (what the budget counted before): the
    # trainers' own seconds are less, and at least their sleeps.
    claimed = sum(t["durationSeconds"] for t in trials)
    assert len(trials) >= 2
    assert 0.9 * len(trials) <= used < claimed, (used, claimed, len(trials))
    assert used <= 3.5 + used / len(trials) * 1.5  # at most about one trial over


def test_vertex_study_stopping_config_becomes_the_budget():
    parsed = parse_spec(
        {
            "displayName": "stopping",
            "trainer": "synthetic",
            "studySpec": {
                "metrics": [{"metricId": "rmse", "goal": "MINIMIZE"}],
                "parameters": [
                    {"parameterId": "x", "doubleValueSpec": {"minValue": 0, "maxValue": 1}}
                ],
                "studyStoppingConfig": {
                    "maximumRuntimeConstraint": {"maxDuration": "3600s"},
                    "maxNumTrialsNoProgress": "5",
                    "maxDurationNoProgress": "600s",
                    "minNumTrials": 4,
                    "maxNumTrials": 30,
                },
            },
            "maxTrialCount": 50,
        }
    )
    budget = parsed.budget
    assert budget is not None
    assert (budget.wall_seconds, budget.no_progress_trials, budget.no_progress_seconds) == (
        3600.0,
        5,
        600.0,
    )
    assert budget.min_trials == 4
    assert parsed.max_trials == 30, "the smaller of maxNumTrials and maxTrialCount"


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"maxDurationNoProgress": "ten minutes"}, "maxDurationNoProgress", "expected a duration"),
        (
            {"maximumRuntimeConstraint": {"endTime": "2027-01-01T00:00:00Z"}},
            "endTime",
            "not supported",
        ),
        ({"maxNumTrialsNoProgres": 3}, "maxNumTrialsNoProgres", "unknown field"),
    ],
)
def test_vertex_study_stopping_config_problems_name_the_field(config, field, message):
    from tuner.domain.errors import SpecError

    with pytest.raises(SpecError) as raised:
        parse_spec(
            {
                "displayName": "stopping",
                "trainer": "synthetic",
                "studySpec": {
                    "metrics": [{"metricId": "rmse", "goal": "MINIMIZE"}],
                    "parameters": [
                        {"parameterId": "x", "doubleValueSpec": {"minValue": 0, "maxValue": 1}}
                    ],
                    "studyStoppingConfig": config,
                },
            }
        )
    ((path, reason),) = raised.value.problems
    assert path.startswith("studySpec.studyStoppingConfig") and path.endswith(field)
    assert message in reason


def test_a_dominated_trial_is_stopped_and_the_study_goes_on(tmp_path):
    """Several objectives with early stopping: trials dominated at an eval by completed ones
    are stopped (PRUNED, saying by which), and TPE keeps proposing after them."""
    registry = tmp_path / "trainers.yaml"
    registry.write_text(
        "trainers:\n"
        "  pareto:\n"
        f"    command: [{sys.executable}, {REPO / 'bench/pareto_trainer.py'}]\n"
        f"    workingDir: {REPO}\n"
    )
    document = {
        "name": "two-stop",
        "trainer": "pareto",
        "args": ["--train-steps=1000", "--eval-every-steps=100", "--eval-seconds=0.15"],
        "seed": 3,
        "hyperparameters": {
            "metrics": [
                {"metricId": "rmse", "goal": "MINIMIZE"},
                {"metricId": "latency_ms", "goal": "MINIMIZE"},
            ],
            "maxTrials": 14,
            "maxParallelTrials": 2,
            "enableTrialEarlyStopping": True,
            "params": [
                {
                    "parameterName": "learning_rate",
                    "type": "DOUBLE",
                    "minValue": 1e-4,
                    "maxValue": 0.1,
                    "scaleType": "UNIT_LOG_SCALE",
                },
                {"parameterName": "width", "type": "INTEGER", "minValue": 8, "maxValue": 512},
            ],
        },
    }
    path = tmp_path / "two-stop.json"
    path.write_text(json.dumps(document))
    done = tuner(tmp_path, "run", str(path), "--no-view", trainers=registry)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(tuner(tmp_path, "trials", "two-stop", "--json", trainers=registry).stdout)
    rows = rows["data"] if isinstance(rows, dict) else rows
    states = [r["state"] for r in rows]
    assert len(rows) == 14 and set(states) <= {"COMPLETED", "PRUNED"}, states
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned, "some trial is dominated early on this task"
    for row in pruned:
        reason = row["failureReason"]
        assert "dominated by" in reason and "completed trial(s) at that step" in reason
        shown = tuner(
            tmp_path, "trial", "two-stop", str(row["number"]), "--json", trainers=registry
        )
        detail = json.loads(shown.stdout)
        assert detail["lastStep"] < 1000, "never stopped at its last eval"
