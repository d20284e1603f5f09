#!/usr/bin/env bash
# Set up, start PostgreSQL, lint, type-check and run the whole test suite (SQLite + PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/start-postgres.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy tuner api
.venv/bin/pytest -q "$@"
