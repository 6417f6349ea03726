"""One scoring core: every field and the order agree across /predict, /rank, `retention score` (local and Spark)
and the MLflow pyfunc, for the same customers at the same as-of date, under the same economics (an economics file
given as ``--economics`` to the command line and as ``RETENTION_ECONOMICS`` to the service and the pyfunc, so
``expected_profit`` differs from ``expected_value`` and must agree too).

Each path is called as its user calls it: HTTP against a real server, the CLI in a subprocess, the registered
model through ``mlflow.pyfunc.load_model``. Files carry exact values; JSON carries values rounded to
:data:`serving.scoring.JSON_DECIMALS`, so JSON is compared within half a unit of its last decimal and reason texts
(rendered from the rounded value) must be equal character for character.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from cli_util import run_cli
from server_util import start_server, stop

from serving import scoring
from serving.scoring import INTERVAL_FIELDS, JSON_DECIMALS, OPTIONAL_FIELDS

CUSTOMERS = 60
SCORE_FIELDS = ("churn_probability", "expected_value", "value_at_risk", "expected_profit", *OPTIONAL_FIELDS)
ECONOMICS = {"gross_margin": 0.4, "cost_to_serve_per_order": 8.0, "cost_per_refund": 5.0, "contact_cost": 1.0}
LABEL_FIELDS = ("tier", "segment", "scorecard_tier", "churn_cause")
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")


@pytest.fixture(scope="module")
def paths(workspace, tmp_path_factory):
    """The store, the local batch list, the feature table at the workspace's as-of date and the economics file."""
    root = tmp_path_factory.mktemp("parity")
    out = {"store": f"sqlite:///{root / 'online.db'}", "local": root / "local.parquet", "features": root / "f.parquet"}
    out["economics"] = root / "economics.json"
    out["economics"].write_text(json.dumps(ECONOMICS))
    tx, as_of, env = str(workspace.transactions), workspace.AS_OF, workspace.env
    economics = ("--economics", str(out["economics"]))
    commands = [
        ("materialize", "-t", tx, "--as-of", as_of, "--store", out["store"]),
        ("score", "-t", tx, "--as-of", as_of, "--out", str(out["local"]), "--no-record", *economics),
        ("features", "-t", tx, "--as-of", as_of, "--out", str(out["features"])),
    ]
    for command in commands:
        result = run_cli(*command, env=env)
        assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def local(paths) -> pd.DataFrame:
    return pd.read_parquet(paths["local"])


@pytest.fixture(scope="module")
def chosen(local) -> list[str]:
    """Customers spread over the whole list (every tier), in an order unrelated to their rank."""
    step = max(1, len(local) // CUSTOMERS)
    return sorted(local["customer_id"].iloc[::step].head(CUSTOMERS).tolist(), reverse=True)


@pytest.fixture(scope="module")
def online(workspace, paths, chosen):
    server = start_server(
        workspace, paths["store"], "models:/retention@champion", {"RETENTION_ECONOMICS": str(paths["economics"])}
    )
    try:
        customers = [{"customer_id": c} for c in chosen]
        predicted = server.post("/predict", {"customers": customers})
        ranked = server.post("/rank", {"customers": customers})
        assert predicted.status_code == 200, predicted.text
        assert ranked.status_code == 200, ranked.text
        yield predicted.json(), ranked.json()
    finally:
        stop(server)


def reason_text(reason: dict) -> str:
    """A JSON reason as the batch list writes it: its fact, cause family and effect."""
    return scoring.reason_text(reason["fact"], reason["cause"], reason["effect"])


def assert_json_row_matches(row: dict, expected: pd.Series) -> None:
    for field in SCORE_FIELDS:
        tolerance = 0.5 * 10 ** -JSON_DECIMALS[field] + 1e-12
        if field not in INTERVAL_FIELDS and pd.isna(expected[field]):  # timing: NaN in files is null in JSON
            assert row[field] is None, (row["customer_id"], field)
            continue
        assert row[field] is not None, (row["customer_id"], field)  # the workspace's model has intervals
        assert math.isclose(row[field], expected[field], abs_tol=tolerance), (row["customer_id"], field)
    for field in LABEL_FIELDS:
        assert row[field] == (None if pd.isna(expected[field]) else expected[field]), (row["customer_id"], field)
    texts = [reason_text(r) for r in row["reasons"]]
    expected_texts = [expected[c] for c in REASON_COLUMNS if pd.notna(expected[c])]
    assert texts == expected_texts, row["customer_id"]


def test_the_economics_make_profit_differ_from_value(local) -> None:
    assert (local["expected_profit"] < 0.4 * local["expected_value"] + 1e-9).all()
    assert (local["expected_profit"] < 0).any() and local["uplift"].isna().all()  # no uplift heads: NaN


def test_predict_gives_every_field_of_the_nightly_list(online, local, chosen) -> None:
    predicted, _ = online
    by_id = local.set_index("customer_id")
    rows = predicted["predictions"]
    assert [r["customer_id"] for r in rows] == chosen
    for row in rows:
        assert_json_row_matches(row, by_id.loc[row["customer_id"]])


def test_rank_orders_the_customers_as_the_nightly_list_does(online, local, chosen) -> None:
    _, ranked = online
    nightly_order = local.loc[local["customer_id"].isin(chosen), "customer_id"].tolist()
    assert [r["customer_id"] for r in ranked["ranking"]] == nightly_order
    assert [r["retention_rank"] for r in ranked["ranking"]] == list(range(1, len(chosen) + 1))
    assert ranked["errors"] == []
    by_id = local.set_index("customer_id")
    for row in ranked["ranking"]:
        assert_json_row_matches(row, by_id.loc[row["customer_id"]])


def test_the_mlflow_pyfunc_gives_the_nightly_list_s_exact_values(workspace, paths, local, monkeypatch) -> None:
    import mlflow.pyfunc

    from retention.settings import get_settings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.tracking_uri)
    monkeypatch.setenv("RETENTION_ECONOMICS", str(paths["economics"]))
    get_settings.cache_clear()
    features = pd.read_parquet(paths["features"])
    model = mlflow.pyfunc.load_model("models:/retention@champion")
    scored = model.predict(features.drop(columns=["customer_id", "cutoff"]))  # rows answer in input order
    expected = local.set_index("customer_id").loc[features["customer_id"]].reset_index(drop=True)
    columns = [*SCORE_FIELDS, *LABEL_FIELDS, *REASON_COLUMNS]
    get_settings.cache_clear()
    pd.testing.assert_frame_equal(scored[columns].reset_index(drop=True), expected[columns], check_dtype=False)


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_the_spark_engine_writes_the_local_engine_s_list(workspace, paths, local) -> None:
    pytest.importorskip("pyspark")
    out = paths["local"].with_name("spark.parquet")
    result = run_cli(
        "score", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--out", str(out),
        "--engine", "spark", "--no-record", "--economics", str(paths["economics"]), env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out), local, check_dtype=False)
