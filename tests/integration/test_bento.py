"""A Bento carries the champion model and serves it with no MLflow server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import yaml
from cli_util import REPO, run_cli
from server_util import free_port

from serving import bento


def test_bento_serves_the_bundled_model_without_mlflow(workspace, tmp_path) -> None:
    context = tmp_path / "bento"
    built = run_cli("bento", "--context", str(context), cwd=workspace.root, env=workspace.env)
    assert built.returncode == 0, built.stderr
    assert "with model version 1" in built.stdout
    tag = built.stdout.split("built Bento ")[1].split()[0]
    assert (context / "bento_model" / "VERSION").read_text() == "1"
    bentofile = yaml.safe_load((context / "bentofile.yaml").read_text())
    assert bentofile["python"]["packages"] == list(bento.requirements(REPO))  # = pyproject's: test_bento_requirements
    assert all((context / package / "__init__.py").is_file() for package in bento.PACKAGES)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RETENTION_MODEL_URI", "RETENTION_STORE_URL")}
    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens there: the Bento must not need MLflow
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.5)
            try:
                status = httpx.get(base + "/readyz", timeout=2).status_code
            except httpx.HTTPError:
                status = None
        assert status == 200
        body = {
            "customers": [{"customer_id": "a", "transactions": [{"timestamp": "2024-11-01", "amount": 30}]}],
            "as_of": "2024-12-30",
        }
        response = httpx.post(base + "/predict", json=body, timeout=30)
        assert response.status_code == 200 and response.json()["model_version"] == "1"
    finally:
        proc.terminate()
        proc.wait(30)
