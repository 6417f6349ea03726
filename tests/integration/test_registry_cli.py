"""Training, registry and promotion through the real command, against MLflow's local store."""

from __future__ import annotations

import json

from cli_util import run_cli
from mlflow.tracking import MlflowClient


def client(workspace) -> MlflowClient:
    return MlflowClient(tracking_uri=workspace.tracking_uri)


def test_first_training_run_is_registered_as_champion(workspace) -> None:
    out = (workspace.root / "train.out").read_text()
    assert "| churn_auc" in out and "lightgbm" in out and "btyd" in out and "naive" in out
    assert "version 1 as champion: no champion yet" in out
    c = client(workspace)
    assert str(c.get_model_version_by_alias("retention", "champion").version) == "1"
    assert str(c.get_model_version_by_alias("retention", "challenger").version) == "1"


def test_run_logs_metrics_artifacts_and_lineage(workspace) -> None:
    c = client(workspace)
    version = c.get_model_version_by_alias("retention", "champion")
    run = c.get_run(version.run_id)
    for model in ("lightgbm", "btyd", "naive"):
        assert f"{model}_churn_auc" in run.data.metrics
        assert f"{model}_value_normalized_gini" in run.data.metrics
    assert run.data.params["horizon_days"] == "90" and run.data.params["as_of"] == workspace.AS_OF
    names = {a.path for a in c.list_artifacts(run.info.run_id, "report")}
    for expected in (
        "report/roc.png",
        "report/calibration.png",
        "report/lorenz_value.png",
        "report/model_card.md",
        "report/shap_summary_churn.png",
        "report/deciles.csv",
        "report/feature_importance.png",
    ):
        assert expected in names
    assert run.inputs.dataset_inputs, "dataset lineage is logged"


def test_the_training_config_is_logged_whole_and_read_back(workspace, monkeypatch) -> None:
    from training.config import TrainingConfig
    from training.jobs import logged_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)
    run_id = client(workspace).get_model_version_by_alias("retention", "champion").run_id
    assert logged_config(run_id) == TrainingConfig(horizon_days=90)
    params = client(workspace).get_run(run_id).data.params
    assert params["config.tier_top_shares"] == "0.05,0.2,0.5" and params["config.churn_params.num_leaves"] == "15"


def test_manual_promotion_and_unknown_version(workspace, tmp_path) -> None:
    result = run_cli("promote", "1", cwd=workspace.root, env=workspace.env)
    assert result.returncode == 0, result.stderr
    assert "champion is now version 1" in result.stdout
    missing = run_cli("promote", "99", cwd=workspace.root, env=workspace.env)
    assert missing.returncode == 2 and "no version 99" in missing.stderr


def test_btyd_command_prints_parameters_with_time_unit(workspace) -> None:
    result = run_cli("btyd", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, env=workspace.env)
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout)
    assert params["time_unit"] == "days"
    assert {"r", "alpha", "a", "b"} <= set(params["bgnbd"]) and {"p", "q", "v"} <= set(params["gamma_gamma"])


def test_gate_keeps_champion_when_challenger_is_worse(workspace, monkeypatch) -> None:
    import numpy as np

    from serving.loader import load_model
    from training import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)
    champion = load_model("models:/retention@champion")
    from features.kernel import compute_features
    from features.sources import load_transactions

    tx, _ = load_transactions(str(workspace.transactions), as_of="2024-09-30")
    rows = compute_features(tx, "2024-09-30")
    churned = np.asarray(rows["recency_days"] > 60, dtype=int)
    value = rows["spend_90d"].to_numpy()
    theirs = registry.score_primary(champion, rows, churned, value)
    worse = {k: v - 0.05 for k, v in theirs.items()}
    better = {k: v + 0.01 for k, v in theirs.items()}
    assert not registry.gate("retention", worse, rows, churned, value).promoted
    assert registry.gate("retention", better, rows, churned, value).promoted
    assert registry.gate("retention", worse, rows, churned, value, force=True).promoted
    mixed = {"churn_auc": theirs["churn_auc"] + 0.01, "value_normalized_gini": theirs["value_normalized_gini"] - 0.01}
    decision = registry.gate("retention", mixed, rows, churned, value)
    assert not decision.promoted and "does not beat" in decision.reason


def test_promotion_json_says_what_was_compared_and_the_model_holds_no_pickle(workspace, monkeypatch) -> None:
    from pathlib import Path

    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)
    c = client(workspace)
    version = c.get_model_version("retention", "1")
    promotion = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/promotion.json")
    assert promotion["promoted"] is True and promotion["comparison"] == {"method": "none", "note": "no champion"}
    local = Path(mlflow.artifacts.download_artifacts("models:/retention/1"))
    names = {p.name for p in local.rglob("*")}
    assert "python_model.pkl" not in names and {"pyfunc_model.py", "manifest.json"} <= names
    assert "model_churn_auc" in c.get_run(version.run_id).data.metrics  # what a later gate compares with
