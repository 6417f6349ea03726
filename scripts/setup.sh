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
