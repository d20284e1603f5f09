#!/usr/bin/env bash
# Set up, then run a real demo study of the custom-Estimator example on the embedded default
# (SQLite + local artifact store under demo-out/), and pull the best model for TF Serving.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TUNER_DATABASE_URL="sqlite:///demo-out/tuner.db"
export TUNER_ARTIFACT_ROOT="demo-out/artifacts"
export TUNER_TRAINERS_FILE="trainers.yaml"
rm -rf demo-out
.venv/bin/tuner run examples/house_prices/spec.yaml
.venv/bin/tuner best house-prices-demo
.venv/bin/tuner export house-prices-demo --to demo-out/serving
