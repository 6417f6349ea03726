#!/usr/bin/env bash
# Install everything, then run the main job end to end on embedded defaults: generated transactions,
# MLflow's local store (./mlflow.db), a SQLite online store, local files. No server to start by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
mkdir -p demo
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/demo/mlflow.db}"
export RETENTION_HOME="${RETENTION_HOME:-$PWD/demo}"
r=.venv/bin/retention
$r generate --customers 20000 --days 730 --seed 7 --out demo/transactions.parquet
$r train --transactions demo/transactions.parquet --as-of 2024-12-30 --horizon-days 90
$r score --transactions demo/transactions.parquet --as-of 2024-12-30 --out demo/retention_list.parquet
$r materialize --transactions demo/transactions.parquet --as-of 2024-12-30 --store "sqlite:///$PWD/demo/online_store.db"
echo
echo "Ranked retention list: demo/retention_list.parquet"
echo "MLflow UI:   .venv/bin/mlflow ui --backend-store-uri $MLFLOW_TRACKING_URI"
echo "Serve:       RETENTION_STORE_URL=sqlite:///$PWD/demo/online_store.db .venv/bin/retention serve --port 3000"
