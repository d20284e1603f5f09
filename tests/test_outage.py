"""A database that goes away for a while: trials keep running and nothing is lost."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from tests.test_manager import make_spec
from tuner.domain.config import Settings
from tuner.engine.manager import StudyManager
from tuner.persistence import repository as repo
from tuner.study import operations as study_ops
from tuner.study.operations import Backend


@pytest.fixture
def pg_backend(pg_url):
    backend = Backend.connect(pg_url)
    yield backend
    backend.close()


def set_outage(db_name: str, down: bool) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS {"false" if down else "true"}')
        if down:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (db_name,),
            )


def test_manager_rides_out_a_database_outage(pg_url, pg_backend, registry, tmp_path):
    settings = Settings(
        database_url=pg_url,
        artifact_root=tmp_path / "artifacts",
        poll_interval=0.05,
        stop_grace_seconds=3,
    )
    spec = make_spec(
        args=["--train-steps=200", "--eval-every-steps=20", "--step-seconds=0.25"], maxTrials=2
    )
    study_ops.submit_study(pg_backend, spec, registry)
    manager = StudyManager(pg_backend, registry, settings, slots=1, studies=["s"])
    db_name = make_url(pg_url).database
    assert db_name

    def stored_steps() -> int:
        with pg_backend.db.session() as s:
            return sum(len(repo.eval_steps(s, r.id)) for r in repo.active_runs(s))

    deadline = time.monotonic() + 60
    while stored_steps() < 2 and time.monotonic() < deadline:
        manager.tick()
        time.sleep(0.05)
    (trial,) = manager.active.values()

    set_outage(db_name, down=True)
    try:
        outage_end = time.monotonic() + 3.0
        while time.monotonic() < outage_end:
            assert manager.tick() is True  # no exception, still busy
            time.sleep(0.05)
        assert trial.process.poll() is None or trial.process.poll() == 0  # never killed
        assert trial.pending_values  # read while the database was away
    finally:
        set_outage(db_name, down=False)

    deadline = time.monotonic() + 90
    while manager.tick() and time.monotonic() < deadline:
        time.sleep(0.05)
    manager.shutdown()
    with pg_backend.db.session() as s:
        study = repo.get_study(s, "s")
        runs = repo.runs(s, study.id)
        steps = [[st.step for st in repo.eval_steps(s, r.id)] for r in runs]
    assert study.state == "COMPLETED"
    assert [r.state for r in runs] == ["COMPLETED", "COMPLETED"]
    assert steps == [list(range(20, 201, 20))] * 2  # every eval, none lost or doubled
