"""Real-shaped histories train instead of being refused (issue 9): short logs, any horizon, BTYD-only fallback.

The BTYD-only version goes end to end through the real commands and a real HTTP server: train -> score ->
serve by id -> promote.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from cli_util import run_cli
from mlflow.tracking import MlflowClient

from features.contract import ContractError, prepare_transactions
from features.kernel import compute_features, index_transactions
from features.synthetic import generate_transactions
from serving.model import ScoringModel
from training.pipeline import fit_pipeline
from training.report import model_card


@pytest.fixture(scope="module")
def nine_months():
    """1,500 customers over 9 months, from 2024-01-01 (the generator's default start)."""
    raw = generate_transactions(1500, 274, seed=11)
    tx, _ = prepare_transactions(raw)
    return index_transactions(tx)


def first_day(prep) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=int(prep.day.min()))


@pytest.mark.parametrize("horizon", [90, 91])
def test_any_horizon_trains_where_a_neighbour_trains(nine_months, horizon: int) -> None:
    # as-of in the ninth month: 90 trained and 91 was refused before (the cutoffs stepped back from as_of - H by 30)
    as_of = first_day(nine_months) + dt.timedelta(days=255)
    result = fit_pipeline(nine_months, as_of, horizon, seed=0)
    assert result.plan.validation_cutoff == as_of - dt.timedelta(days=horizon)
    assert result.plan.scheme == "temporal"
    assert result.plan.temporal_cutoffs[-1] == as_of - dt.timedelta(days=2 * horizon)
    assert result.metrics["model"]["churn_auc"] > 0.5


def test_six_months_with_a_90_day_horizon_falls_back_to_customer_grouped_validation(nine_months) -> None:
    as_of = first_day(nine_months) + dt.timedelta(days=182)
    result = fit_pipeline(nine_months, as_of, 90, seed=0)
    assert result.plan.scheme == "customer_grouped"
    assert result.choice["validation_scheme"] == "customer_grouped"
    assert result.model.meta.validation_scheme == "customer_grouped"
    assert any("customer-grouped (fallback)" in w for w in result.warnings)
    # validation customers never trained the selection models: the two halves are disjoint
    card = model_card(result)
    assert "Validation scheme: customer-grouped (fallback)" in card
    assert {"model", "lightgbm", "hybrid", "btyd", "naive"} <= set(result.metrics)


def test_history_shorter_than_the_horizon_gives_a_btyd_only_version(nine_months) -> None:
    as_of = first_day(nine_months) + dt.timedelta(days=100)
    result = fit_pipeline(nine_months, as_of, 182, seed=0)
    meta = result.model.meta
    assert result.plan.scheme == "none" and result.metrics == {}
    assert (meta.churn_head, meta.value_head, meta.level_source) == ("btyd", "btyd", "btyd")
    assert result.model.churn_booster is None and result.model.value_booster is None
    population = compute_features(nine_months, as_of)
    X = population[list(meta.feature_columns)].to_numpy(dtype=np.float64)
    scores = result.model.score(X)
    p_btyd, v_btyd = result.model.btyd_scores(X)
    # identity calibration and a level of 1 (no year of history for a seasonal factor): exactly BTYD's outputs
    np.testing.assert_allclose(scores.churn_probability, np.clip(p_btyd + 1e-6 * p_btyd, 0, 1))
    np.testing.assert_allclose(scores.expected_value, v_btyd)
    # reasons come from the BTYD summary features only
    contributions = result.model.churn_contributions(X[:50])
    btyd_columns = [j for j, c in enumerate(meta.feature_columns) if c in ("btyd_frequency", "btyd_recency", "btyd_T")]
    others = [j for j in range(len(meta.feature_columns)) if j not in btyd_columns]
    assert np.abs(contributions[:, others]).max() == 0.0
    assert np.abs(contributions[:, btyd_columns]).max() > 0.0


def test_nothing_to_fit_is_a_clear_error() -> None:
    # everyone bought once: no repeat purchase, so neither BTYD nor a labeled cutoff can say anything
    raw = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(40)],
            "timestamp": pd.date_range("2024-01-01", periods=40, freq="D").astype(str),
            "amount": 10.0,
        }
    )
    tx, _ = prepare_transactions(raw)
    with pytest.raises(ContractError, match="no customer has a repeat purchase"):
        fit_pipeline(index_transactions(tx), dt.date(2024, 3, 1), 90)
    with pytest.raises(ContractError, match="at least 20 needed"):
        fit_pipeline(index_transactions(tx.head(5)), dt.date(2024, 3, 1), 90)


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
