"""Storage of the tuner's own facts: tables, transactions, migrations, queries.

This package is the only one that imports SQLAlchemy's ORM. Other packages use `Database` for
transactions and `tuner.persistence.repository` for queries, which return `tuner.domain.entities`.
"""

from tuner.persistence.database import (
    Database,
    head_revision,
    is_sqlite,
    is_unavailable,
    normalize_url,
    optuna_engine_kwargs,
    tune_optuna_engine,
)

__all__ = [
    "Database",
    "head_revision",
    "is_sqlite",
    "is_unavailable",
    "normalize_url",
    "optuna_engine_kwargs",
    "tune_optuna_engine",
]
