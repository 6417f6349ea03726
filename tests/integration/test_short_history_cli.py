"""A history shorter than the horizon through the real commands: `retention train` registers a BTYD-only version and
says so, which scores, serves by id, and waits for a manual promotion when a second run cannot be compared."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from cli_util import run_cli
from mlflow.tracking import MlflowClient

from serving.model import ScoringModel


@pytest.fixture(scope="module")
def short_log(tmp_path_factory) -> SimpleNamespace:
    """A 100-day log (2023-01-01 .. 2023-04-10) trained through the CLI with a 182-day horizon: nothing to label."""
    root = tmp_path_factory.mktemp("btyd-only")
    ws = SimpleNamespace(
        root=root,
        transactions=root / "tx.parquet",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "RETENTION_HOME": str(root / "home")},
        AS_OF="2023-04-10",
    )
    made = run_cli("generate", "--customers", "800", "--days", "100", "--seed", "3", "--out", str(ws.transactions))
    assert made.returncode == 0, made.stderr
    ws.train = run_cli(
        "train", "-t", str(ws.transactions), "--as-of", ws.AS_OF, "--horizon-days", "182", cwd=root, env=ws.env
    )
    return ws


def test_btyd_only_train_registers_and_says_so(short_log) -> None:
    result = short_log.train
    assert result.returncode == 0, result.stderr
    assert "BTYD-only version" in result.stderr
    assert "no cutoff could be labeled" in result.stdout
    assert "version 1 as champion: no champion yet" in result.stdout
    client = MlflowClient(tracking_uri=short_log.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(client.get_model_version("retention", "1").run_id)
    assert run.data.params["validation_scheme"] == "none"
    assert run.data.params["churn_head"] == "btyd" and run.data.params["value_head"] == "btyd"


def test_btyd_only_scores_serves_by_id_and_promotes(short_log, tmp_path: Path) -> None:
    from server_util import start_server, stop

    out = tmp_path / "ranked.parquet"
    scored = run_cli(
        "score", "-t", str(short_log.transactions), "--as-of", short_log.AS_OF, "--out", str(out), "--no-record",
        cwd=short_log.root, env=short_log.env,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    ranked = pd.read_parquet(out)
    customers = pd.read_parquet(short_log.transactions)["customer_id"].nunique()
    assert len(ranked) == customers and ranked["customer_id"].is_unique
    assert ranked["value_at_risk"].is_monotonic_decreasing
    assert ranked["churn_probability"].between(0, 1).all() and (ranked["expected_value"] >= 0).all()

    store = f"sqlite:///{tmp_path / 'online.db'}"
    filled = run_cli(
        "materialize", "-t", str(short_log.transactions), "--as-of", short_log.AS_OF, "--store", store,
        env=short_log.env,
    )  # fmt: skip
    assert filled.returncode == 0, filled.stderr
    server = start_server(short_log, store, "models:/retention@champion")
    try:
        first = ranked.iloc[0]
        body = server.post("/predict", {"customers": [{"customer_id": first["customer_id"]}]}).json()
    finally:
        stop(server)
    answer = body["predictions"][0]
    assert body["horizon_days"] == 182
    assert answer["churn_probability"] == pytest.approx(first["churn_probability"], abs=1e-6)
    assert answer["expected_value"] == pytest.approx(first["expected_value"], rel=1e-6)
    assert answer["reasons"] and {r["feature"] for r in answer["reasons"]} <= {
        "btyd_frequency",
        "btyd_recency",
        "btyd_T",
    }

    # a second training run registers version 2 but cannot be compared, so it waits for a manual promotion
    again = run_cli(
        "train", "-t", str(short_log.transactions), "--as-of", short_log.AS_OF, "--horizon-days", "182",
        cwd=short_log.root, env=short_log.env,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "version 2 as challenger: not validated" in again.stdout
    promoted = run_cli("promote", "2", cwd=short_log.root, env=short_log.env)
    assert promoted.returncode == 0, promoted.stderr
    client = MlflowClient(tracking_uri=short_log.env["MLFLOW_TRACKING_URI"])
    assert str(client.get_model_version_by_alias("retention", "champion").version) == "2"
    bundle = ScoringModel.load(_bundle_dir(client, "2"))
    assert json.loads(bundle.meta.to_json())["churn_head"] == "btyd"


def _bundle_dir(client: MlflowClient, version: str) -> Path:
    import mlflow

    from serving.loader import find_bundle_dir

    source = client.get_model_version("retention", version).source
    mlflow.set_tracking_uri(client.tracking_uri)
    return find_bundle_dir(Path(mlflow.artifacts.download_artifacts(artifact_uri=source)))
