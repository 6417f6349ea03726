"""The settings through the real command: `retention settings` prints the generated table and hides secrets, an
invalid setting exits 2, and materialize-then-serve answers by id with no store setting (one default store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cli_util import run_cli

from retention.settings import settings_table


def test_settings_command_prints_the_table_and_hides_secrets() -> None:
    table = run_cli("settings")
    assert table.returncode == 0, table.stderr
    assert table.stdout.strip() == settings_table()
    env = {"RETENTION_API_KEY": "s3cret-key", "RETENTION_STORE_URL": "postgresql://app:pa55word@db:5432/crm"}
    shown = run_cli("settings", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "s3cret-key" not in shown.stdout and "pa55word" not in shown.stdout
    values = json.loads(shown.stdout)
    assert values["api_key"] == "**********" and values["store_url"].startswith("postgresql://app:")
    assert values["resolved_store_url"] == values["store_url"] and values["max_customers"] == 1000


def test_an_invalid_setting_exits_2_with_one_sentence() -> None:
    result = run_cli("settings", env={"RETENTION_MAX_CUSTOMERS": "many"})
    assert result.returncode == 2
    assert "RETENTION_MAX_CUSTOMERS" in result.stderr and "Traceback" not in result.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_materialize_then_serve_answers_by_id_without_a_store_setting(workspace, tmp_path: Path) -> None:
    """A new user's first steps: neither command is given --store, RETENTION_STORE_URL or RETENTION_HOME."""
    import pandas as pd

    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    materialized = subprocess.run(
        [
            sys.executable,
            "-m",
            "retention",
            "materialize",
            "-t",
            str(workspace.transactions),
            "--as-of",
            workspace.AS_OF,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert materialized.returncode == 0, materialized.stderr
    assert (tmp_path / ".retention" / "online_store.db").is_file()
    customer = str(sorted(pd.read_parquet(workspace.transactions)["customer_id"].unique())[0])
    port = _free_port()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "retention", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        answer = httpx.post(base + "/predict", json={"customers": [{"customer_id": customer}]}, timeout=30)
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction["customer_id"] == customer and "error" not in prediction
        assert 0 <= prediction["churn_probability"] <= 1 and prediction["expected_value"] >= 0
        assert answer.json()["as_of"] == workspace.AS_OF
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
