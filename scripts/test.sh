#!/usr/bin/env bash
# Install everything (project-local .venv) and run the whole test suite: lint, then pytest on 2 workers.
# PostgreSQL and Redis on 127.0.0.1 are used for real; they are started here if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,postgres,redis,spark
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort | tail -n 1)" main start || true
fi
if command -v redis-server >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
.venv/bin/ruff check .
# two pytest workers on two cores: one OpenMP thread each, or LightGBM's spinning threads fight over the cores
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest -n 2 "$@"
