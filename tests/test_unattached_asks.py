"""An Optuna trial asked by a manager that never attached it is told FAIL by whoever finds it.

A manager held up (paused, starved) right after asking Optuna, for longer than the heartbeat
timeout, has its reservation taken over by another manager; that manager also finds the asked
trial RUNNING with no run, and tells it FAIL once it has seen it so for a full timeout of its
own clock (left RUNNING, TPE's constant liar and optuna-dashboard would count it forever). When
the held-up manager resumes, its attach finds the reservation gone: it gives the trial back,
and neither pauses the study nor takes the database for away.
"""

from __future__ import annotations

import logging
import time

import pytest
from optuna.trial import TrialState

from tests.test_manager import make_spec
from tuner.domain.config import Settings
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend

pytestmark = pytest.mark.postgres


def test_a_trial_asked_by_a_manager_held_up_past_its_takeover_is_told_fail(
    pg_url, registry, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="tuner")
    settings = Settings(
        database_url=pg_url,
        artifact_root=tmp_path / "artifacts",
        heartbeat_timeout=2,
        poll_interval=0.05,
        stop_grace_seconds=1,
    )
    held_up_backend = Backend.connect(pg_url, pre_ping=False)
    other_backend = Backend.connect(pg_url, pre_ping=False)
    try:
        study = study_ops.submit_study(held_up_backend, make_spec("held", maxTrials=2), registry)
        held_up = StudyManager(held_up_backend, registry, settings, slots=1)
        other = StudyManager(other_backend, registry, settings, slots=1, studies=[])
        # The held-up manager reserves a run and asks Optuna, then stops before the attach.
        claim = held_up.launcher._reserve_and_ask(study)
        assert claim is not None
        asked = claim.trial._trial_id

        def state() -> TrialState:
            return other_backend.storage.get_trial(asked).state

        # Another manager (with no studies of its own to claim) finds both.
        deadline = time.monotonic() + 30
        while state() is TrialState.RUNNING:
            other.tick()
            assert time.monotonic() < deadline, "the asked trial was never told"
            time.sleep(0.1)
        assert state() is TrialState.FAIL
        assert "was asked by a manager that never attached it" in caplog.text
        with other_backend.db.session() as s:
            taken = repo.get_run(s, claim.lease.run_id)
        assert taken.state == "STOPPED"

        # It resumes: the attach finds the reservation taken; the trial is given back.
        caplog.clear()
        assert held_up.launcher._attach_or_drop(claim) is False
        held_up.launcher.clean_abandoned()
        assert "its reservation was taken over meanwhile; told FAIL, not run" in caplog.text
        assert "database unavailable" not in caplog.text
        with held_up_backend.db.session() as s:
            assert repo.get_study(s, "held").state == "RUNNING"  # not paused

        # The study then runs its budget, and no Optuna trial is left RUNNING.
        runner = StudyManager(held_up_backend, registry, settings, slots=1, studies=["held"])
        runner.run()
        with held_up_backend.db.session() as s:
            counts = repo.trial_counts(s, repo.get_study(s, "held").id)
        assert counts.get("COMPLETED") == 2
        trials = held_up_backend.storage.get_all_trials(
            held_up_backend.storage.get_study_id_from_name("held")
        )
        assert [t.state for t in trials if t.state is TrialState.RUNNING] == []
        other.shutdown()
        held_up.shutdown()
    finally:
        held_up_backend.close()
        other_backend.close()
