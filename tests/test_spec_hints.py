""" "Did you mean" for misspelt keys, enum values and trainer names, and YAML errors said once:
through the parser, the `tuner` command and the API of a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import REPO, RunningServer, start_server
from tuner.domain.errors import SpecError, TrainerNotFoundError
from tuner.domain.hints import did_you_mean, unknown_field
from tuner.domain.spec import load_spec_text
from tuner.domain.trainers import TrainerRegistry

TRAINERS = ["house_prices", "keras_houses", "premade_houses", "synthetic"]

MISSPELT = """
name: hinted
trainer: synthetc
hyperparameters:
  goal: MINIMISE
  hyperparameterMetricTag: rmse
  maxTrials: 2
  maxParalelTrials: 1
  algorithm: random_serch
  params:
    - {parameterName: x, type: DOUBL, minValue: 0.1, maxValue: 1, scaleType: UNIT_LOG_SCLE}
    - {parameterName: y, type: INTEGER, minValue: 1, maxValue: 3, scaleTyp: UNIT_LINEAR_SCALE}
earlyStopping: {type: medain, warmupStep: 2}
"""
HINTS = [
    ("trainer", "did you mean 'synthetic'?"),
    ("hyperparameters.goal", "did you mean 'MINIMIZE'?"),
    ("hyperparameters.maxParalelTrials", "unknown field; did you mean 'maxParallelTrials'?"),
    ("hyperparameters.algorithm", "did you mean 'RANDOM_SEARCH'?"),
    ("hyperparameters.params[0].type", "did you mean 'DOUBLE'?"),
    ("hyperparameters.params[0].scaleType", "did you mean 'UNIT_LOG_SCALE'?"),
    ("hyperparameters.params[1].scaleTyp", "unknown field; did you mean 'scaleType'?"),
    ("earlyStopping.type", "did you mean 'median'?"),
    ("earlyStopping.warmupStep", "unknown field; did you mean 'warmupSteps'?"),
]
#: Not valid YAML: an unclosed flow sequence.
BROKEN = "name: broken\ntrainer: synthetic\nhyperparameters:\n  goal: [MINIMIZE\n  maxTrials: 2\n"
BROKEN_REASON = (
    "not valid YAML or JSON: line 5, column 12: expected ',' or ']', but got ':' "
    "(while parsing a flow sequence at line 4, column 9)"
)


def reasons(text: str, **kwargs: object) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(text, **kwargs)  # type: ignore[arg-type]
    return dict(info.value.problems)


# -- the parser ---------------------------------------------------------------------------------


def test_every_misspelling_gets_its_closest_word():
    found = reasons(MISSPELT, trainers=TRAINERS)
    for field, hint in HINTS:
        assert field in found, field
        assert found[field].endswith(hint), (field, found[field])
    assert len(found) == len(HINTS)


def test_a_flat_spec_and_a_job_file_name_fields_as_written():
    flat = reasons(
        "name: s\ntrainer: t\nmaxParalelTrials: 2\ngoal: MINIMIZE\nhyperparameterMetricTag: m\n"
        "params: [{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}]\nobjectve: best\n"
    )
    assert flat == {
        "maxParalelTrials": "unknown field; did you mean 'maxParallelTrials'?",
        "objectve": "unknown field; did you mean 'objective'?",
    }
    job = reasons(
        "name: s\ntrainer: t\ntrainingInput:\n  hyperparameters:\n    goal: MAXIMISE\n"
        "    hyperparameterMetricTag: m\n"
        "    params: [{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}]\n"
    )
    assert job == {
        "trainingInput.hyperparameters.goal": "got 'MAXIMISE', expected one of 'MAXIMIZE' or "
        "'MINIMIZE'; did you mean 'MAXIMIZE'?"
    }


def test_a_vertex_job_is_compared_with_vertex_names():
    vertex = (
        "trainer: synthetic\nname: v\nstudySpec:\n"
        "  metrics: [{metricId: rmse, goal: MINIMIZE}]\n"
        "  parameters: [{parameterId: x, doubleValueSpec: {minValue: 0, maxValue: 1}}]\n"
    )
    found = reasons(vertex + "maxTrialCont: 3\nparalelTrialCount: 1\n")
    assert found == {
        "maxTrialCont": "unknown field; did you mean 'maxTrialCount'?",
        "paralelTrialCount": "unknown field; did you mean 'parallelTrialCount'?",
    }
    found = reasons(
        vertex.replace("maxValue: 1", "maxValu: 1")
        + "  measurementSelectionType: LAST_MESUREMENT\n  algoritm: GRID_SEARCH\n"
    )
    assert found == {
        "studySpec.algoritm": "unknown field; did you mean 'algorithm'?",
        "studySpec.parameters[0].doubleValueSpec.maxValu": (
            "unknown field; did you mean 'maxValue'?"
        ),
        "studySpec.measurementSelectionType": "got 'LAST_MESUREMENT', expected one of "
        "BEST_MEASUREMENT, LAST_MEASUREMENT, MEASUREMENT_SELECTION_TYPE_UNSPECIFIED; "
        "did you mean 'LAST_MEASUREMENT'?",
    }


def test_nothing_close_gets_no_guess():
    assert unknown_field("zzzz", ["maxTrials", "goal"]) == "unknown field (check its spelling)"
    assert did_you_mean("qqq", ["MINIMIZE", "MAXIMIZE"]) == ""
    assert did_you_mean(3, ["MINIMIZE"]) == ""
    found = reasons(
        "name: s\ntrainer: nothing_like_it\ngoal: UP\nhyperparameterMetricTag: m\n"
        "params: [{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}]\n",
        trainers=TRAINERS,
    )
    assert "did you mean" not in found["trainer"]
    assert found["goal"] == "got 'UP', expected one of 'MAXIMIZE' or 'MINIMIZE'"


def test_the_registry_suggests_a_trainer():
    registry = TrainerRegistry.from_file(REPO / "trainers.yaml", missing_ok=False)
    with pytest.raises(TrainerNotFoundError) as info:
        registry.get("synthetc")
    assert str(info.value).endswith("did you mean 'synthetic'?")


def test_a_yaml_error_names_its_place_once():
    assert reasons(BROKEN) == {"": BROKEN_REASON}
    [reason] = reasons("a: 'never closed\n").values()
    assert reason.count("line") == 2  # where it failed, and where the string started
    assert "\n" not in reason


# -- the command --------------------------------------------------------------------------------


def tuner(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def local_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TUNER_DATABASE_URL=f"sqlite:///{tmp_path / 'tuner.db'}",
        TUNER_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
        TUNER_TRAINERS_FILE=str(REPO / "trainers.yaml"),
    )
    return env


def test_tuner_run_prints_the_hints_and_the_yaml_error_once(tmp_path):
    env = local_env(tmp_path)
    (tmp_path / "misspelt.yaml").write_text(MISSPELT)
    result = tuner("run", "misspelt.yaml", cwd=tmp_path, env=env)
    assert result.returncode != 0
    for field, hint in HINTS[1:]:  # the trainer is looked up once the spec parses
        assert f"  {field}: " in result.stderr and hint in result.stderr, (field, result.stderr)
    fixed = MISSPELT.replace("MINIMISE", "MINIMIZE").replace("maxParalelTrials", "maxTrials2")
    fixed = "\n".join(
        line
        for line in fixed.splitlines()
        if not any(k in line for k in ("maxTrials2", "algorithm", "params", "parameterName"))
    )
    fixed = fixed.replace("earlyStopping: {type: medain, warmupStep: 2}", "")
    fixed += "\n  params: [{parameterName: x, type: DOUBLE, minValue: 0, maxValue: 1}]\n"
    (tmp_path / "trainer.yaml").write_text(fixed)
    result = tuner("run", "trainer.yaml", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "'synthetc' is not a registered trainer" in result.stderr
    assert result.stderr.rstrip().endswith("did you mean 'synthetic'?")

    (tmp_path / "broken.yaml").write_text(BROKEN)
    result = tuner("run", "broken.yaml", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert result.stderr.count("line 5, column 12") == 1, result.stderr
    assert result.stderr.count("not valid YAML") == 1
    assert BROKEN_REASON in result.stderr


# -- the API ------------------------------------------------------------------------------------


@pytest.fixture
def server(sqlite_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(sqlite_url, tmp_path, slots=0)
    yield running
    running.stop()


def test_the_api_answers_each_hint_by_field_and_submit_prints_yaml_errors_once(server, tmp_path):
    headers = {
        "Authorization": f"Bearer {server.write_token}",
        "Content-Type": "application/yaml",
    }
    answer = httpx.post(f"{server.url}/api/v1/studies", content=MISSPELT, headers=headers)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "SPEC_INVALID"
    details = {d["field"]: d["message"] for d in error["details"]}
    for field, hint in HINTS:  # the server knows its trainers: every problem at once
        assert details[field].endswith(hint), (field, details)

    broken = httpx.post(f"{server.url}/api/v1/studies", content=BROKEN, headers=headers)
    assert broken.status_code == 422
    assert broken.json()["error"]["message"] == f"invalid study spec: {BROKEN_REASON}"

    (tmp_path / "broken.yaml").write_text(BROKEN)
    env = {**local_env(tmp_path), "TUNER_TOKEN": server.write_token}
    result = tuner("submit", "broken.yaml", "--server", server.url, cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert result.stderr.count("line 5, column 12") == 1, result.stderr
    assert result.stderr.count("not valid YAML") == 1
