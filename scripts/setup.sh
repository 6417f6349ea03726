#!/usr/bin/env bash
# Create the project-local virtual environment (.venv) and install retention with the given extras.
# Usage: scripts/setup.sh [extras]   (default extras: dev,postgres,redis,spark)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,postgres,redis,spark}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
# Debian's Chromium for the HTML report's real-browser test (tests/integration/test_report_browser.py): installed
# when missing, as root with apt-get (25-30 s here: 25 packages, ~120 MB); elsewhere the test skips and says so.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  install_chromium() { apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
  install_chromium || { apt-get update -qq && install_chromium; } \
    || echo "setup.sh: could not install chromium; the report's browser test will skip" >&2
fi
