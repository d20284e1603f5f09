"""Process and schema boundaries: no TensorFlow outside trials, one migration head, no drift."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import text

from tuner.errors import SchemaOutdatedError
from tuner.persistence import Database, head_revision
from tuner.persistence.database import alembic_config

NO_TF = """
import sys
import tuner.cli, tuner.manager, tuner.studies, tuner.metrics, tuner.persistence.repository
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if "tensorflow" in m)[:5]
print("ok")
"""


def test_manager_cli_and_api_never_import_tensorflow():
    done = subprocess.run(
        [sys.executable, "-c", NO_TF], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_single_migration_head():
    assert head_revision() == "0001"


def test_migrations_match_the_models(db_url):
    db = Database(db_url)
    db.upgrade()
    command.check(alembic_config(db_url))  # raises if autogenerate would find changes
    db.dispose()


def test_our_version_table_leaves_optunas_alone(db_url):
    from tuner.studies import Backend

    backend = Backend.connect(db_url)
    with backend.db.engine.connect() as conn:
        ours = conn.execute(text("SELECT version_num FROM tuner_alembic_version")).scalar()
        optunas = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    backend.close()
    assert ours == "0001"
    assert optunas and optunas != ours


def test_new_database_needs_upgrade_when_auto_init_is_off(db_url):
    db = Database(db_url)
    with pytest.raises(SchemaOutdatedError, match="run `tuner db upgrade`"):
        db.prepare(auto_init=False)
    db.dispose()
