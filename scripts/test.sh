#!/usr/bin/env bash
# Set up, start PostgreSQL, lint, type-check and run the whole test suite (SQLite + PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/start-postgres.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy tuner api
# Most tests wait on real trainer processes: two pytest processes share the machine's cores.
# The timing-sensitive ones (paused workers, database outages against lease timeouts) then run
# alone, so that the load of other tests cannot stretch the intervals they measure.
run_pytest() {
  local status=0
  .venv/bin/pytest -q "$@" || status=$?
  [[ $status -eq 0 || $status -eq 5 ]] || exit $status  # 5: these arguments selected no test
}
run_pytest -n 2 --dist loadfile -m "not serial" "$@"
run_pytest -m serial "$@"
