"""Alembic environment for the tuner's own tables.

Optuna keeps its own Alembic chain in the default `alembic_version` table; ours lives in
`tuner_alembic_version`, and autogenerate looks only at tables named `tuner_*`.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool

from tuner.persistence.database import VERSION_TABLE, is_sqlite
from tuner.persistence.models import Base

config = context.config
target_metadata = Base.metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    if type_ == "table":
        return bool(name and name.startswith("tuner_"))
    table = getattr(obj, "table", None)
    if table is not None:
        return bool(table.name.startswith("tuner_"))
    return True


def _options(url: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "version_table": VERSION_TABLE,
        "include_object": include_object,
        "render_as_batch": is_sqlite(url),
        "compare_type": True,
    }


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    context.configure(url=url, literal_binds=True, **_options(url))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or ""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section) or {},
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, **_options(url))
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
