"""Real studies of real Estimator trials (few steps), on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.artifacts.store import ArtifactStore, copy_for_serving
from tuner.domain.spec import load_spec_file
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.tf

FEW_STEPS = ["--train-steps=100", "--eval-every-steps=50"]

PREDICT = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
fn = model.signatures["serving_default"]
out = fn(
    sqft=tf.constant([1500.0, 2500.0]), bedrooms=tf.constant([3, 4], tf.int64),
    age=tf.constant([10.0, 5.0]), neighborhood=tf.constant(["downtown", "suburb"]),
    has_garage=tf.constant([1, 0], tf.int64),
)
(value,) = out.values()
print(json.dumps(value.numpy().reshape(-1).tolist()))
"""


def spec_for(example: str, name: str, **hp: object):
    spec = load_spec_file(REPO / "examples" / example / "spec.yaml", name=name)
    hyper = spec.hyperparameters.model_copy(update=hp)
    return spec.model_copy(update={"args": FEW_STEPS, "hyperparameters": hyper})


def test_custom_estimator_study_end_to_end(backend, registry, settings, tmp_path):
    spec = spec_for(
        "house_prices",
        "houses",
        max_trials=2,
        max_parallel_trials=2,
        enable_trial_early_stopping=False,
    )
    study_ops.submit_study(backend, spec, registry)
    StudyManager(backend, registry, settings, slots=2, studies=["houses"]).run()

    with backend.db.session() as s:
        study = repo.get_study(s, "houses")
        rows, _ = repo.leaderboard(s, study)
        details = [repo.trial_detail(s, study, r.number) for r in rows]
    assert study.state == "COMPLETED", [r.failure_reason for r in rows]
    assert [r.state for r in rows] == ["COMPLETED", "COMPLETED"]
    for detail in details:
        assert [st.step for st in detail.steps] == [50, 100]
        assert {"rmse", "mae", "loss"} <= set(detail.steps[0].metrics)
        assert all(st.checkpoint_path for st in detail.steps)
        assert sorted(e.step for e in detail.exports) == [50, 100]
        assert detail.checkpoints and detail.checkpoints[0].step == detail.best_step

    best = study_ops.best_model(backend, "houses")
    assert best.objective == pytest.approx(rows[0].objective)
    assert best.export is not None and best.export.step == best.step
    assert best.checkpoint is not None
    kept = settings.artifact_root / best.checkpoint.kept_path
    assert Path(f"{kept}.index").is_file()

    # the export of the best step, in TF Serving's layout, loads and predicts
    store = ArtifactStore(settings.artifact_root)
    target = copy_for_serving(
        store.resolve(best.export.path), tmp_path / "serving", model_name="houses"
    )
    assert (target / "saved_model.pb").is_file()
    predicted = subprocess.run(
        [sys.executable, "-c", PREDICT, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    prices = json.loads(predicted.stdout.strip().splitlines()[-1])
    assert len(prices) == 2 and all(0 < p < 100 for p in prices)


@pytest.mark.parametrize("example", ["keras_houses", "premade_houses"])
def test_keras_and_premade_examples(example, sqlite_url, registry, tmp_path):
    from tuner.domain.config import Settings
    from tuner.study.operations import Backend

    settings = Settings(
        database_url=sqlite_url,
        artifact_root=tmp_path / "artifacts",
        trainers_file=REPO / "trainers.yaml",
        poll_interval=0.1,
    )
    backend = Backend.connect(sqlite_url)
    try:
        spec = spec_for(example, example.replace("_", "-"), max_trials=1, max_parallel_trials=1)
        study_ops.submit_study(backend, spec, registry)
        StudyManager(backend, registry, settings, slots=1, studies=[spec.name]).run()
        best = study_ops.best_model(backend, spec.name)
        assert best.run.state == "COMPLETED", best.run.failure_reason
        assert best.export is not None and best.export.step == best.step
        assert (settings.artifact_root / best.export.path / "saved_model.pb").is_file()
    finally:
        backend.close()


def test_server_runs_estimators_and_serves_a_model_that_predicts(db_url, tmp_path):
    """Submit over HTTP, trials train, the leaderboard fills, the model downloads and predicts."""
    from tests.server import JsonClient, start_server

    text = (REPO / "examples/house_prices/spec.yaml").read_text()
    text = text.replace(
        'args: ["--train-steps=300", "--eval-every-steps=50"]',
        'args: ["--train-steps=100", "--eval-every-steps=50"]',
    )
    text = text.replace("maxTrials: 6", "maxTrials: 2")
    assert '"--train-steps=100"' in text and "maxTrials: 2" in text
    server = start_server(db_url, tmp_path, slots=2)
    try:
        with JsonClient(server.url, token=server.write_token) as client:
            client.submit(text)
            kinds = [e.kind for e in client.events("house-prices-demo")]
            assert kinds.count("eval") == 4 and kinds[-1] == "end"
            board = client.trials("house-prices-demo")
            assert [r["state"] for r in board["data"]] == ["COMPLETED", "COMPLETED"]
            best = client.best("house-prices-demo")
            target = client.download_model("house-prices-demo", tmp_path / "serving" / "houses")
        assert target.name == best["export"]["version"]
        predicted = subprocess.run(
            [sys.executable, "-c", PREDICT, str(target)],
            capture_output=True,
            text=True,
            timeout=120,
            env={"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
        )
        assert predicted.returncode == 0, predicted.stderr[-2000:]
        prices = json.loads(predicted.stdout.strip().splitlines()[-1])
        assert len(prices) == 2 and all(0 < p < 100 for p in prices)
    finally:
        server.stop()


def test_pull_command_checks_the_saved_model(sqlite_url, tmp_path):
    """`tuner pull` downloads into TF Serving's layout and lists the serving signature."""
    from tests.server import start_server

    text = (REPO / "examples/house_prices/spec.yaml").read_text()
    text = text.replace(
        '"--train-steps=300", "--eval-every-steps=50"',
        '"--train-steps=50", "--eval-every-steps=50"',
    )
    text = text.replace("maxTrials: 6", "maxTrials: 1")
    server = start_server(sqlite_url, tmp_path, slots=1)
    try:
        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(text)
        cli = [sys.executable, "-m", "tuner.cli"]
        auth = ["--server", server.url, "--token", server.write_token]
        done = subprocess.run(
            [*cli, "submit", str(spec_path), *auth], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        watched = subprocess.run(
            [*cli, "watch", "house-prices-demo", *auth], capture_output=True, text=True, timeout=300
        )
        assert watched.returncode == 0, watched.stderr
        assert "trial 0 COMPLETED" in watched.stdout
        pulled = subprocess.run(
            [*cli, "pull", "house-prices-demo", "--to", str(tmp_path / "models"), *auth],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "signature serving_default:" in pulled.stdout
        assert "input  neighborhood: string" in pulled.stdout
        (version,) = (tmp_path / "models" / "house-prices-demo").iterdir()
        assert (version / "saved_model.pb").is_file()
    finally:
        server.stop()
