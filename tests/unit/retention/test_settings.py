"""One settings object: the README's table is generated from it, `retention settings` prints it, and the default
online store is the same for `materialize` and `serve` (materialize-then-serve answers by id)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cli_util import REPO, run_cli

from retention.settings import Settings, get_settings, settings_table

README = REPO / "README.md"
TABLE = re.compile(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", re.S)


@pytest.fixture
def clean_env(monkeypatch):
    """No RETENTION_* variable from the caller's environment; the settings cache cleared before and after."""
    for name in [n for n in os.environ if n.startswith("RETENTION_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_readme_configuration_table_is_the_generated_one() -> None:
    found = TABLE.search(README.read_text())
    assert found, "README.md has no <!-- settings-table:start/end --> markers"
    assert found.group(1) == settings_table(), "regenerate the README table from retention.settings.settings_table()"


def test_the_table_names_every_setting_once() -> None:
    rows = settings_table().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [f"RETENTION_{name.upper()}" for name in Settings.model_fields]


def test_materialize_and_serve_share_one_default_store(clean_env, tmp_path: Path) -> None:
    clean_env.setenv("RETENTION_HOME", str(tmp_path / "home"))
    settings = get_settings()
    assert settings.store_url is None
    assert settings.resolved_store_url == f"sqlite:///{(tmp_path / 'home' / 'online_store.db').as_posix()}"
    clean_env.setenv("RETENTION_STORE_URL", "redis://127.0.0.1:6379/0")
    assert get_settings().resolved_store_url == "sqlite:///" + str(tmp_path / "home" / "online_store.db"), "cached"
    get_settings.cache_clear()
    assert get_settings().resolved_store_url == "redis://127.0.0.1:6379/0"


def test_model_defaults_to_the_champion_of_the_model_name(clean_env) -> None:
    assert get_settings().resolved_model_uri == "models:/retention@champion"
    clean_env.setenv("RETENTION_MODEL_NAME", "churn-eu")
    get_settings.cache_clear()
    assert get_settings().resolved_model_uri == "models:/churn-eu@champion"
    clean_env.setenv("RETENTION_MODEL_URI", "models:/retention/3")
    get_settings.cache_clear()
    assert get_settings().resolved_model_uri == "models:/retention/3"


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
