"""Process and schema boundaries: no TensorFlow outside trials, one migration head, no drift."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import text

from tuner.domain.errors import SchemaOutdatedError
from tuner.persistence import Database, head_revision
from tuner.persistence.database import alembic_config

NO_TF = """
import sys
import tuner.cli.main, tuner.engine.manager, tuner.study.operations, tuner.outputs.events
import tuner.persistence.repository
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if "tensorflow" in m)[:5]
print("ok")
"""


def test_manager_cli_and_api_never_import_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", NO_TF], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


CLIENT_ALONE = """
import sys
from tuner.client import Client
server = {"api", "fastapi", "starlette", "uvicorn", "sqlalchemy", "optuna", "tensorflow"}
loaded = sorted({m.split(".")[0] for m in sys.modules} & server)
loaded += sorted(m for m in sys.modules if m.startswith(("tuner.persistence", "tuner.engine")))
print(loaded)
"""


def test_the_python_client_needs_none_of_the_server():
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_ALONE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_single_migration_head():
    assert head_revision() == "0013"


def test_migrations_match_the_models(db_url):
    db = Database(db_url)
    db.upgrade()
    command.check(alembic_config(db_url))  # raises if autogenerate would find changes
    db.dispose()


def test_our_version_table_leaves_optunas_alone(db_url):
    from tuner.study.operations import Backend

    backend = Backend.connect(db_url)
    with backend.db.engine.connect() as conn:
        ours = conn.execute(text("SELECT version_num FROM tuner_alembic_version")).scalar()
        optunas = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    backend.close()
    assert ours == head_revision()
    assert optunas and optunas != ours


def test_new_database_needs_upgrade_when_auto_init_is_off(db_url):
    db = Database(db_url)
    with pytest.raises(SchemaOutdatedError, match="run `tuner db upgrade`"):
        db.prepare(auto_init=False)
    db.dispose()


def test_rows_written_at_0001_survive_the_upgrade(db_url):
    """Write a study, a trial and an export with the first schema, upgrade, read them back."""
    db = Database(db_url)
    db.upgrade("0001")
    stamp = "2026-01-01 00:00:00+00:00"
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tuner_studies (id, name, spec_json, trainer, state, created_at, "
                "updated_at) VALUES (1, 'old', '{}', 't', 'COMPLETED', :t, :t)"
            ),
            {"t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO tuner_trial_runs (id, study_id, number, state, params_json, worker, "
                "problems_json, started_at, heartbeat_at) "
                "VALUES (1, 1, 0, 'COMPLETED', '{}', 'w', '[]', :t, :t)"
            ),
            {"t": stamp},
        )
        conn.execute(
            text(
                "INSERT INTO tuner_exports (id, run_id, exporter, version, path) "
                "VALUES (1, 1, 'latest', '1700000000', 'old/trial-0000/export/latest/1700000000')"
            )
        )
    with pytest.raises(SchemaOutdatedError, match="is at revision 0001"):
        db.check_schema()
    db.upgrade()
    db.check_schema()
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT version, path, kept_path FROM tuner_exports")).one()
        runs = conn.execute(text("SELECT count(*) FROM tuner_trial_runs")).scalar()
    assert tuple(row) == ("1700000000", "old/trial-0000/export/latest/1700000000", None)
    assert runs == 1
    db.dispose()
