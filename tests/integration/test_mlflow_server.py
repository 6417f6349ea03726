"""Training against an MLflow tracking server whose backend store is PostgreSQL (both started for real)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cli_util import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(postgres_url: str, tmp_path: Path):
    import psycopg

    database = f"mlflow_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url.replace("/test", "/postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    backend = postgres_url.replace("postgresql://", "postgresql+psycopg://").replace("/test", f"/{database}")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
        assert proc.poll() is None, "mlflow server exited during start-up"
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        with psycopg.connect(postgres_url.replace("/test", "/postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.mark.postgres
def test_train_registers_on_a_postgres_backed_tracking_server(workspace, mlflow_server, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    env = {**workspace.env, "MLFLOW_TRACKING_URI": mlflow_server}
    result = run_cli(
        "train",
        "-t",
        str(workspace.transactions),
        "--as-of",
        workspace.AS_OF,
        "--horizon-days",
        "90",
        "--model-name",
        "retention-pg",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking_uri=mlflow_server)
    version = client.get_model_version_by_alias("retention-pg", "champion")
    assert str(version.version) == "1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["lightgbm_churn_auc"] > 0.5
    # the registered model loads back through the server, as serving does
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    from serving.loader import load_model

    model = load_model("models:/retention-pg@champion")
    assert model.version == "1" and model.meta.horizon_days == 90
