#!/usr/bin/env bash
# Set up, start the server on the embedded default (SQLite + a local artifact store under
# demo-out/), submit the custom-Estimator example study over HTTP, watch its leaderboard live,
# and pull the best SavedModel into TF Serving's layout (checking that it loads).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TUNER_DATABASE_URL="sqlite:///demo-out/tuner.db"
export TUNER_ARTIFACT_ROOT="demo-out/artifacts"
export TUNER_TRAINERS_FILE="trainers.yaml"
export TUNER_SERVER="http://127.0.0.1:${TUNER_DEMO_PORT:-8765}"
tuner=.venv/bin/tuner

rm -rf demo-out
mkdir -p demo-out
$tuner db upgrade
TUNER_TOKEN="$($tuner token create --scope write --name demo 2>/dev/null)"
export TUNER_TOKEN

$tuner serve --port "${TUNER_DEMO_PORT:-8765}" --slots 2 > demo-out/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fs "$TUNER_SERVER/readyz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat demo-out/server.log; exit 1; }
  sleep 0.5
done
echo "watch it in the browser: $TUNER_SERVER/#/studies/house-prices-demo (sign in with the token $TUNER_TOKEN)"

$tuner submit examples/house_prices/spec.yaml
$tuner watch house-prices-demo
$tuner best house-prices-demo
$tuner pull house-prices-demo --to demo-out/serving
echo "best model in TF Serving's layout: $(ls -d demo-out/serving/house-prices-demo/*)"
