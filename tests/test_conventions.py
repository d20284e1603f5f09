"""Real trainers written to AI Platform's and Vertex's conventions, run unchanged.

One real server (`tuner serve --slots 2`, the real PostgreSQL) runs a study per convention with
the trainers of `tests/trainers/` (real TensorFlow, a few steps each); the tests then look at
what a user sees through the API and the CLI: states, reasons, the best step, the pulled model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server import JsonClient, RunningServer, start_server

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf

LEARNING_RATE = {
    "parameterName": "learning_rate",
    "type": "DOUBLE",
    "minValue": 0.005,
    "maxValue": 0.05,
    "scaleType": "UNIT_LOG_SCALE",
}


def study(
    name: str, trainer: str, args: list[str], *, trials: int = 1, **fields: Any
) -> dict[str, Any]:
    param = fields.pop("param", LEARNING_RATE)
    return {
        "name": name,
        "trainer": trainer,
        "args": args,
        "seed": 3,
        **fields,
        "hyperparameters": {
            "goal": "MINIMIZE",
            "hyperparameterMetricTag": "rmse",
            "maxTrials": trials,
            "maxParallelTrials": trials,
            "maxFailedTrials": trials,
            "params": [param],
        },
    }


STUDIES = [
    study("subdir-latest", "trial_subdir", ["--exporter=latest"]),
    study("subdir-best", "trial_subdir", ["--exporter=best"]),
    study("subdir-final", "trial_subdir", ["--exporter=final"]),
    study("vertex", "vertex_keras", [], trials=2),
    study("vertex-events-only", "vertex_keras", [], metricSource="events"),
    study("empty-eval", "trial_subdir", ["--eval-glob=/nonexistent/*.csv"]),
    study("empty-train", "trial_subdir", ["--train-glob=/nonexistent/*.csv"]),
    study(
        "bad-argument",
        "trial_subdir",
        [],
        param={"parameterName": "learning_rate", "type": "DOUBLE", "minValue": -2, "maxValue": -1},
    ),
    study("truncated", "truncated_events", ["--damage=truncate"]),
    study("junk", "truncated_events", ["--damage=junk"]),
    study("slow-checkpoint-path", "slow_checkpoint_path", ["--no-state-file"]),
    study("keras-epochs", "keras_timestamp", []),
    study("keras-weights", "keras_timestamp", ["--checkpoint-name=weights"]),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Every study above, run to its end by one real server."""
    from tests.conftest import new_pg_database

    tmp_path = tmp_path_factory.mktemp("conventions")
    with new_pg_database() as db_url:
        server = start_server(
            db_url,
            tmp_path,
            slots=2,
            env_overrides={"TUNER_TRAINERS_FILE": str(REPO / "tests/trainers/trainers.yaml")},
        )
        try:
            with JsonClient(server.url, token=server.write_token) as client:
                for spec in STUDIES:
                    client.submit(spec)
                deadline = time.monotonic() + 600
                pending = {s["name"] for s in STUDIES}
                while pending and time.monotonic() < deadline:
                    pending = {n for n in pending if client.study(n)["state"] == "RUNNING"}
                    time.sleep(1)
            assert not pending, f"still running: {pending}\n{server.log()[-3000:]}"
            yield server
        finally:
            server.stop()


def trial(server: RunningServer, name: str, number: int = 0) -> dict[str, Any]:
    with JsonClient(server.url, token=server.read_token) as client:
        return client.trial(name, number)


def best(server: RunningServer, name: str) -> dict[str, Any]:
    with JsonClient(server.url, token=server.read_token) as client:
        return client.best(name)


def pull(
    server: RunningServer, name: str, to: Path, *options: str
) -> subprocess.CompletedProcess[str]:
    auth = ["--server", server.url, "--token", server.read_token]
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", "pull", name, "--to", str(to), *auth, *options],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_trial_number_subdir_is_found_and_its_export_pulled(served, tmp_path):
    detail = trial(served, "subdir-latest")
    assert detail["state"] == "COMPLETED", detail["failureReason"]
    assert [s["step"] for s in detail["steps"]] == [10, 20, 30]
    assert {s["evalName"] for s in detail["steps"]} == {"0/eval"}
    assert detail["problems"] == []
    exports = detail["exports"]
    assert sorted(e["step"] for e in exports) == [10, 20, 30]
    assert {e["matchedBy"] for e in exports} == {"global_step"}
    top = best(served, "subdir-latest")
    assert top["step"] == 30 and top["export"]["step"] == 30
    assert top["checkpoint"]["step"] == 30
    # a canned estimator over raw features exports only `predict`: a good model all the same
    pulled = pull(served, "subdir-latest", tmp_path / "models")
    assert pulled.returncode == 0, pulled.stderr
    assert "signature predict:" in pulled.stdout
    assert "input  neighborhood: string" in pulled.stdout
    assert "output predictions: float32" in pulled.stdout
    (version,) = (tmp_path / "models" / "subdir-latest").iterdir()
    assert version.name == top["export"]["version"]


@pytest.mark.parametrize(("name", "steps"), [("subdir-best", [10, 20, 30]), ("subdir-final", [30])])
def test_best_and_final_exporters_are_matched_to_their_steps(served, name, steps):
    detail = trial(served, name)
    assert detail["state"] == "COMPLETED", detail["failureReason"]
    assert sorted(e["step"] for e in detail["exports"]) == steps
    assert {e["matchedBy"] for e in detail["exports"]} == {"global_step"}
    top = best(served, name)
    assert top["export"]["step"] == top["step"] == 30


def test_vertex_trainer_reports_through_hypertune_in_parallel(served, tmp_path):
    details = [trial(served, "vertex", n) for n in (0, 1)]
    for number, detail in enumerate(details):
        assert detail["state"] == "COMPLETED", detail["failureReason"]
        hypertune = [s for s in detail["steps"] if s["evalName"] == "hypertune"]
        assert [s["step"] for s in hypertune] == [10, 20, 30]
        metric_file = served.artifact_root / f"vertex/trial-{number:04d}/hypertune/output.metrics"
        lines = [json.loads(line) for line in metric_file.read_text().splitlines()]
        assert {line["trial"] for line in lines} == {str(number)}  # its own file, its own id
        values = [float(line["rmse"]) for line in lines]
        assert [s["metrics"]["rmse"] for s in hypertune] == pytest.approx(values)
        assert detail["objective"] == pytest.approx(min(values))
        (export,) = detail["exports"]
        assert (export["exporter"], export["step"], export["matchedBy"]) == (
            "model",
            30,
            "global_step",
        )
    assert details[0]["params"] != details[1]["params"]
    assert details[0]["objective"] != details[1]["objective"]
    pulled = pull(served, "vertex", tmp_path / "models")
    assert pulled.returncode == 0, pulled.stderr
    assert "signature serving_default:" in pulled.stdout


def test_objective_only_from_events_says_where_the_tags_are(served):
    detail = trial(served, "vertex-events-only")
    assert detail["state"] == "FAILED"
    reason = detail["failureReason"]
    assert "without reporting the objective 'rmse'" in reason
    assert "event files under logs/validation hold tags" in reason
    assert "evaluation_rmse_vs_iterations" in reason


@pytest.mark.parametrize(
    ("name", "check", "words"),
    [
        ("empty-eval", "empty-eval", "had all its metrics exactly 0: the eval saw no data?"),
        ("empty-train", "untrained", "every eval of 'rmse' is at global step 0"),
        ("truncated", "damaged-events", "truncated"),
        ("junk", "damaged-events", "fails its CRC check"),
    ],
)
def test_broken_trials_fail_with_the_named_check(served, name, check, words):
    detail = trial(served, name)
    assert detail["state"] == "FAILED", detail
    assert detail["objective"] is None
    reason = detail["failureReason"]
    assert reason.startswith(f"[check {check}]")
    assert words in reason
    assert "skipChecks" in reason
    with JsonClient(served.url, token=served.read_token) as client:
        summary = client.study(name)
    assert summary["state"] == "FAILED" and summary["best"] is None


def test_swallowed_bad_argument_fails_with_the_log(served):
    detail = trial(served, "bad-argument")
    assert detail["state"] == "FAILED" and detail["exitCode"] == 0
    reason = detail["failureReason"]
    assert "without reporting the objective 'rmse'" in reason
    assert "learning_rate" in reason.split("last log lines:", 1)[1]


def test_late_checkpoint_path_keeps_the_checkpoint_it_names(served, tmp_path):
    detail = trial(served, "slow-checkpoint-path")
    assert detail["state"] == "COMPLETED", detail["failureReason"]
    assert detail["bestStep"] == 20 and detail["lastStep"] == 30
    (kept,) = detail["checkpoints"]
    assert kept["step"] == 20
    assert kept["path"].endswith("trial-0000.kept/weights-20")
    assert Path(served.artifact_root / f"{kept['path']}.index").is_file()
    # the trainer deleted weights-20 itself; the kept copy is what downloads
    source = served.artifact_root / "slow-checkpoint-path/trial-0000/ckpt"
    assert not list(source.glob("weights-20.*"))
    with JsonClient(served.url, token=served.read_token) as client:
        unpacked = client.download_checkpoint("slow-checkpoint-path", tmp_path / "ckpt")
    assert (unpacked / "weights-20.index").is_file()


@pytest.mark.parametrize(
    ("name", "checkpoint"), [("keras-epochs", "ckpt-3"), ("keras-weights", "weights")]
)
def test_a_keras_trainer_reporting_epochs_has_its_model_and_checkpoint_kept(
    served, tmp_path, name, checkpoint
):
    """Google's Vertex Keras layout: `model.save` into `<out>/<trial>/<timestamp>/`, epochs as
    hypertune steps, `ModelCheckpoint` checkpoints named in `checkpoints/checkpoint`. The
    export is found without `exportDirs`, tied to the last epoch by its write time (its
    variables hold the optimizer's 30 iterations), and pulled; the checkpoint is kept."""
    detail = trial(served, name)
    assert detail["state"] == "COMPLETED", detail["failureReason"]
    assert [s["step"] for s in detail["steps"]] == [1, 2, 3]
    assert detail["bestStep"] == 3  # every epoch better than the one before
    (export,) = detail["exports"]
    assert (export["exporter"], export["step"], export["matchedBy"]) == ("0", 3, "write_time")
    assert len(export["version"]) == 14  # YYYYmmddHHMMSS
    (kept,) = detail["checkpoints"]
    assert kept["step"] == 3 and kept["path"].endswith(f"/{checkpoint}")
    notes = [p for p in detail["problems"] if "by its write time" in p]
    assert notes and "global step 30, which no eval reported" in notes[0], detail["problems"]
    assert not [p for p in detail["problems"] if "no checkpoint kept" in p]
    pulled = pull(served, name, tmp_path / "serving")
    assert pulled.returncode == 0, pulled.stderr
    assert list((tmp_path / "serving").glob(f"{name}/*/saved_model.pb"))
    assert "serving_default" in pulled.stdout
    # Any recorded export, by name, whatever its step.
    named = pull(served, name, tmp_path / "named", "--trial", "0", "--export", "0", "--no-check")
    assert named.returncode == 0, named.stderr
    assert list((tmp_path / "named").glob(f"{name}/{export['version']}/saved_model.pb"))
    missing = pull(served, name, tmp_path / "none", "--trial", "0", "--export", "latest")
    assert missing.returncode != 0
    assert f"has no export 'latest' (its exports: 0/{export['version']})" in missing.stderr
