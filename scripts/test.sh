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
run_pytest -n 2 --dist loadfile -m "not serial and not ray" "$@"
run_pytest -m "serial and not ray" "$@"
# The Ray executor's tests start real Ray nodes, which bind to the machine's interface address
# whatever they are told: they run in a network namespace of their own with only loopback up,
# reaching PostgreSQL through its socket (tests/ray_cluster.py).
if unshare -n true 2>/dev/null; then
  TUNER_TEST_PG_URL="${TUNER_TEST_PG_SOCKET_URL:-postgresql://postgres@/postgres}" \
    unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' \
    .venv/bin/pytest -q -m ray tests/test_ray.py "$@" || {
      status=$?; [[ $status -eq 5 ]] || exit $status; }
else
  echo "error: the Ray tests need a network namespace (unshare -n: run as root)" >&2
  exit 1
fi
