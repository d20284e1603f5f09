#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the project with TensorFlow, Ray, the analysis and
# dataframe extras and the dev tools.
# Idempotent: reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
if [[ -z "$PYTHON" ]]; then
  echo "error: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[tf,ray,dev,analysis,dataframe]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The browser tests (tests/test_web.py) and bench/web.py drive Debian's chromium through
# Playwright (installed above with the dev extra); without a chromium they skip.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  sudo=""
  if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo"
  fi
  if command -v apt-get >/dev/null && { [[ "$(id -u)" -eq 0 ]] || [[ -n "$sudo" ]]; }; then
    echo "installing chromium for the browser tests (apt-get)..." >&2
    { $sudo apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }; } \
      || echo "warning: could not install chromium: tests/test_web.py will skip" >&2
  else
    echo "note: no chromium found: tests/test_web.py will skip" \
      "(install it with 'apt-get install chromium', or set TUNER_TEST_CHROMIUM)" >&2
  fi
fi
