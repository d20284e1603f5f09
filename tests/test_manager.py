"""The study manager end to end with real trial processes (the cheap synthetic trainer).

Every test runs on SQLite and on PostgreSQL (see `db_url` in conftest).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from tuner.artifacts.store import ArtifactStore
from tuner.domain.config import Settings
from tuner.domain.spec import Check, StudySpec, parse_spec
from tuner.domain.trainers import TrainerRegistry
from tuner.engine.active_trial import ActiveTrial
from tuner.engine.fencing import Fencing
from tuner.engine.launcher import Launcher
from tuner.engine.manager import StudyManager
from tuner.engine.optuna_link import OptunaLink
from tuner.engine.outcome import RunState, Step
from tuner.engine.store_sync import StoreSync
from tuner.engine.supervisor import build_supervisor
from tuner.engine.writes import LeaseWrites
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend
from tuner.trial.execution import wait_for_exit
from tuner.trial.resources import Capacity, ResourceLedger
from tuner.trial.warm_starts import WarmStarts


def make_spec(name: str = "s", *, args: list[str] | None = None, **hp: Any) -> StudySpec:
    hyper: dict[str, Any] = {
        "goal": "MINIMIZE",
        "hyperparameterMetricTag": "rmse",
        "maxTrials": 3,
        "maxParallelTrials": 1,
        "params": [
            {"parameterName": "x", "type": "DOUBLE", "minValue": -1, "maxValue": 1},
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "sgd", "with space"],
            },
        ],
    }
    hyper.update(hp)
    return parse_spec(
        {
            "name": name,
            "trainer": "synthetic",
            "seed": 1,
            "args": args if args is not None else ["--train-steps=60", "--eval-every-steps=20"],
            "hyperparameters": hyper,
        }
    )


def run_study(
    backend: Backend, registry: TrainerRegistry, settings: Settings, spec: StudySpec
) -> StudyManager:
    study_ops.submit_study(backend, spec, registry)
    manager = StudyManager(
        backend,
        registry,
        settings,
        slots=spec.hyperparameters.max_parallel_trials,
        studies=[spec.name],
    )
    manager.run()
    return manager


def test_study_runs_to_budget_and_ingests_every_eval(backend, registry, settings):
    spec = make_spec(args=["--train-steps=60", "--eval-every-steps=20", "--export"])
    run_study(backend, registry, settings, spec)

    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        rows, total = repo.leaderboard(s, study)
        details = [repo.trial_detail(s, study, r.number) for r in rows]
    assert study.state == "COMPLETED"
    assert total == 3
    assert [r.state for r in rows] == ["COMPLETED"] * 3
    objectives = [r.objective for r in rows]
    assert objectives == sorted(objectives)  # MINIMIZE: best first
    for detail in details:
        assert [st.step for st in detail.steps] == [20, 40, 60]
        assert all(set(st.metrics) == {"rmse", "loss"} for st in detail.steps)
        assert all(
            st.checkpoint_path and st.checkpoint_path.endswith(f"model.ckpt-{st.step}")
            for st in detail.steps
        )
        # every eval step has its own export, matched to it
        assert sorted(e.step for e in detail.exports) == [20, 40, 60]
        assert detail.objective == min(st.metrics["rmse"] for st in detail.steps)

    optuna_study = optuna.load_study(study_name="s", storage=backend.storage)
    completed = [t for t in optuna_study.trials if t.state.name == "COMPLETE"]
    assert len(completed) == 3
    assert {t.number for t in completed} == {r.number for r in rows}
    assert optuna_study.best_value == pytest.approx(rows[0].objective)
    # intermediate values were reported at the global steps
    assert set(completed[0].intermediate_values) == {20, 40, 60}


def test_trial_command_follows_ai_platform_conventions(backend, registry, settings):
    spec = make_spec(
        maxTrials=3,
        algorithm="GRID_SEARCH",
        params=[
            {
                "parameterName": "optimizer",
                "type": "CATEGORICAL",
                "categoricalValues": ["adam", "with space", "sgd"],
            },
        ],
    )
    run_study(backend, registry, settings, spec)
    logs = sorted((settings.artifact_root / "s").glob("trial-*.log"))
    assert len(logs) == 3
    texts = [p.read_text() for p in logs]
    # the synthetic trainer prints TF_CONFIG; argparse would reject a split value
    assert all('{"task": {"trial": "' in t for t in texts)
    with backend.db.session() as s:
        params = sorted(r.params["optimizer"] for r in repo.runs(s, repo.get_study(s, "s").id))
    assert params == ["adam", "sgd", "with space"]


def test_best_checkpoint_survives_rotation(backend, registry, settings):
    # keep_checkpoint_max=1: the estimator-like trainer deletes every older checkpoint
    spec = make_spec(
        args=[
            "--train-steps=100",
            "--eval-every-steps=20",
            "--keep-checkpoint-max=1",
            "--step-seconds=0.5",
            "--export",
            "--exports-to-keep=1",
        ],
        goal="MAXIMIZE",
        maxTrials=1,
    )
    run_study(backend, registry, settings, spec)
    best = study_ops.best_model(backend, "s")
    # MAXIMIZE on a decreasing curve: the best step is the first eval
    assert best.step == 20
    assert best.checkpoint is not None
    kept = settings.artifact_root / best.checkpoint.kept_path
    assert Path(f"{kept}.index").read_text() == "step 20\n"
    assert not (settings.artifact_root / "s/trial-0000/model.ckpt-20.index").exists()
    # the exporter deleted that export itself (exports_to_keep=1); the kept copy survives
    assert best.export is not None and best.export.step == 20
    assert ".kept/export/latest/" in best.export.path
    assert (settings.artifact_root / best.export.path / "saved_model.pb").read_text() == "step 20\n"
    kept_vars = settings.artifact_root / best.export.path / "variables" / "variables.index"
    assert kept_vars.read_text() == "step 20\n"
    assert len(list((settings.artifact_root / "s/trial-0000/export/latest").iterdir())) == 1
    # only the best step's copy is kept
    assert len(list((settings.artifact_root / "s/trial-0000.kept/export/latest").iterdir())) == 1


def test_crashing_trainer_fails_with_exit_code_and_log(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=60", "--eval-every-steps=20", "--crash-at-step=40"],
        maxTrials=2,
        maxFailedTrials=2,
    )
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
        steps = repo.eval_steps(s, runs[0].id)
    assert study.state == "FAILED"
    assert "2 trials failed (maxFailedTrials=2)" in (study.state_reason or "")
    assert [r.state for r in runs] == ["FAILED", "FAILED"]
    assert runs[0].exit_code == 3
    assert "exited with code 3" in (runs[0].failure_reason or "")
    assert "simulated crash at step 40" in (runs[0].failure_reason or "")
    # what was evaluated before the crash is kept
    assert [st.step for st in steps] == [20]


def test_exit_zero_without_metric_fails_with_tags_seen(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=40", "--eval-every-steps=20", "--tag=metrics/rmse"],
        maxTrials=1,
        maxFailedTrials=1,
    )
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        (run,) = repo.runs(s, repo.get_study(s, "s").id)
    assert run.state == "FAILED"
    assert run.exit_code == 0
    reason = run.failure_reason or ""
    assert "without reporting the objective 'rmse'" in reason
    assert "eval dirs read: eval, eval_*" in reason
    assert "tags seen there: loss, metrics/rmse" in reason  # exact tags, never prefix matches
    assert "set hyperparameterMetricTag to the tag your trainer writes" in reason
    assert "step 40: metrics/rmse=" in reason  # last log lines


def test_nan_objective_fails_with_reason(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=40", "--eval-every-steps=20", "--nan-at-step=20", "--nan-at-step=40"],
        maxTrials=1,
        maxFailedTrials=1,
    )
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        (run,) = repo.runs(s, repo.get_study(s, "s").id)
        steps = repo.eval_steps(s, run.id)
    assert run.state == "FAILED"
    assert "objective 'rmse' is nan at step 40" in (run.failure_reason or "")
    assert math.isnan(steps[-1].metrics["rmse"])


def test_default_failure_limit_stops_a_broken_trainer_early(backend, registry, settings):
    spec = make_spec(args=["--train-steps=40", "--crash-at-step=20"], maxTrials=10)
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        counts = repo.trial_counts(s, study.id)
    assert study.state == "FAILED"
    assert counts == {"FAILED": 3}
    assert "first 3 trials all failed" in (study.state_reason or "")


def test_parallel_trials_never_exceed_the_limit(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=40", "--eval-every-steps=20", "--step-seconds=0.3"],
        maxTrials=4,
        maxParallelTrials=2,
    )
    study_ops.submit_study(backend, spec, registry)
    # the manager has more slots than the study allows
    manager = StudyManager(backend, registry, settings, slots=4, studies=["s"])
    peak = 0
    while manager.tick():
        peak = max(peak, len(manager.active))
    manager.shutdown()
    assert peak == 2
    with backend.db.session() as s:
        assert repo.trial_counts(s, repo.get_study(s, "s").id) == {"COMPLETED": 4}


@pytest.mark.parametrize("skip", [False, True])
def test_corrupt_event_file_fails_the_trial_not_the_manager(
    backend, registry, settings, tmp_path, skip
):
    spec = make_spec(
        args=["--train-steps=40", "--eval-every-steps=20", "--step-seconds=0.5"], maxTrials=1
    )
    if skip:
        spec = spec.model_copy(update={"skip_checks": [Check.DAMAGED_EVENTS]})
    study_ops.submit_study(backend, spec, registry)
    manager = StudyManager(backend, registry, settings, slots=1, studies=["s"])
    manager.tick()
    (trial,) = manager.active.values()
    eval_dir = trial.paths.output_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    bad = eval_dir / "events.out.tfevents.0.corrupt"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 4 + b"garbage!" * 3)
    while manager.tick():
        pass
    manager.shutdown()
    with backend.db.session() as s:
        (run,) = repo.runs(s, repo.get_study(s, "s").id)
        steps = repo.eval_steps(s, run.id)
    assert any("events.out.tfevents.0.corrupt" in p and "CRC" in p for p in run.problems)
    assert [st.step for st in steps] == [20, 40]  # what the good file held is kept
    if skip:
        assert run.state == "COMPLETED", run.failure_reason
    else:
        assert run.state == "FAILED"
        reason = run.failure_reason or ""
        assert reason.startswith("[check damaged-events]")
        assert "eval/events.out.tfevents.0.corrupt" in reason


def test_event_offsets_are_stored_with_the_values(backend, registry, settings):
    spec = make_spec(maxTrials=1)
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        (run,) = repo.runs(s, repo.get_study(s, "s").id)
        offsets = repo.event_offsets(s, run.id)
    (path, offset) = next(iter(offsets.items()))
    assert path.startswith("eval/events.out.tfevents.")
    assert offset == (settings.artifact_root / "s/trial-0000" / path).stat().st_size


def test_stopped_study_stops_its_trials_and_resume_finishes_budget(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=200", "--eval-every-steps=20", "--step-seconds=0.5"], maxTrials=2
    )
    study_ops.submit_study(backend, spec, registry)
    manager = StudyManager(backend, registry, settings, slots=1, studies=["s"])
    manager.tick()
    (trial,) = manager.active.values()
    first_params = None
    with backend.db.session() as s:
        first_params = repo.get_run(s, trial.run_id).params
    study_ops.request_stop(backend, "s")
    while manager.tick():
        pass
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        (run,) = repo.runs(s, study.id)
    assert study.state == "STOPPED"
    assert run.state == "STOPPED"
    assert run.exit_code is not None and run.exit_code != 0  # SIGTERM
    # the process group is gone
    assert trial.process.poll() is not None

    study_ops.resume_study(backend, "s")
    fast = spec.model_copy(update={"args": ["--train-steps=40", "--eval-every-steps=20"]})
    with backend.db.session() as s:
        repo.update_study_spec(s, repo.get_study(s, "s").id, fast)
    StudyManager(backend, registry, settings, slots=1, studies=["s"]).run()
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
    assert study.state == "COMPLETED"
    assert [r.state for r in runs] == ["STOPPED", "COMPLETED", "COMPLETED"]
    # the stopped trial's params were run again first
    assert runs[1].params == first_params
    assert json.dumps(runs[1].params) == json.dumps(first_params)


def test_leaderboard_pages_in_the_goals_direction(backend, registry, settings):
    spec = make_spec(
        args=["--train-steps=20", "--eval-every-steps=20"], maxTrials=4, goal="MAXIMIZE"
    )
    run_study(backend, registry, settings, spec)
    with backend.db.session() as s:
        study = repo.get_study(s, "s")
        rows, total = repo.leaderboard(s, study)
        pages = [repo.leaderboard(s, study, limit=1, offset=i)[0] for i in range(5)]
        best = repo.best_completed_run(s, study)
    objectives = [r.objective for r in rows]
    assert total == 4 and objectives == sorted(objectives, reverse=True)
    assert [p[0].number for p in pages[:4]] == [r.number for r in rows]
    assert pages[4] == []
    assert best is not None and best.number == rows[0].number


def test_a_trial_that_exits_between_the_signal_and_the_shutdown_is_stopped(
    backend, registry, settings
):
    """Ctrl-C: the trials get SIGTERM at once; a tick that sees one exit before `shutdown`
    records it STOPPED (not FAILED by an unknown SIGTERM), and launches nothing new."""
    spec = make_spec(
        args=["--train-steps=200", "--eval-every-steps=20", "--step-seconds=0.5"], maxTrials=3
    )
    study_ops.submit_study(backend, spec, registry)
    manager = StudyManager(backend, registry, settings, slots=1, studies=["s"])
    manager.tick()
    (trial,) = manager.active.values()
    manager.stop_requested()
    trial.process.stop(10)  # it has exited on the SIGTERM before the next tick
    for _ in range(5):
        manager.tick()
    assert not manager.active
    manager.shutdown()
    with backend.db.session() as s:
        (run,) = repo.runs(s, repo.get_study(s, "s").id)
    assert run.state == "STOPPED" and "interrupted" in (run.failure_reason or "")


def test_one_trial_is_supervised_without_a_manager(backend, registry, settings):
    """The per-trial supervisor needs only its parts: a trial launched and supervised with no
    `StudyManager` is ingested, kept, recorded and told like any other."""
    spec = make_spec("alone", maxTrials=1)
    study_ops.submit_study(backend, spec, registry)
    with backend.db.session() as s:
        study = repo.get_study(s, "alone")
    store = ArtifactStore(settings.artifact_root)
    warm = WarmStarts(store.root / ".warm", enabled=False)
    writes = LeaseWrites(backend.db)
    fencing = Fencing(backend.db, settings)
    link = OptunaLink(backend)
    backed_off: list[str] = []
    store_sync = StoreSync(
        None, store, writes, settings, back_off=lambda _s, why: backed_off.append(why)
    )
    active: dict[int, ActiveTrial] = {}
    launcher = Launcher(
        backend,
        registry,
        store,
        settings,
        worker_id="alone-worker",
        resources=ResourceLedger(Capacity(), active),
        warm=warm,
        writes=writes,
        fencing=fencing,
        optuna_link=link,
        active=active,
        back_off=lambda _s, why: backed_off.append(why),
        end_study=lambda *_: None,
    )
    supervisor = build_supervisor(
        backend,
        store,
        settings,
        warm=warm,
        fencing=fencing,
        optuna_link=link,
        writes=writes,
        store_sync=store_sync,
        back_off=lambda _s, why: backed_off.append(why),
    )
    try:
        assert launcher.claim_and_start(study)
        (trial,) = active.values()
        done = False
        for _ in range(400):
            done = supervisor.step(trial)
            if done:
                break
            wait_for_exit([trial.process], 0.05)
        assert done, "the trial did not end"
    finally:
        fencing.close()
        warm.close()

    assert trial.decision is not None and trial.decision.state is RunState.COMPLETED
    assert {Step.RECORDED, Step.VIEWERS, Step.TOLD} <= trial.done
    assert backed_off == []
    with backend.db.session() as s:
        (run,) = repo.runs(s, study.id)
        steps = repo.eval_steps(s, run.id)
        kept = repo.checkpoints(s, run.id)
    assert run.state == "COMPLETED" and run.worker == "alone-worker"
    assert [st.step for st in steps if st.eval_name == "eval"] == [20, 40, 60]
    assert [c.step for c in kept] == [trial.best.step if trial.best else None]
    (told,) = optuna.load_study(study_name="alone", storage=backend.storage).trials
    assert told.state is optuna.trial.TrialState.COMPLETE
    assert told.value == pytest.approx(trial.decision.objective)
