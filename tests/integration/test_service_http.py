"""The real HTTP server (``retention serve`` in a subprocess) called over HTTP as a CRM would."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_util import run_cli
from server_util import ADMIN, UNKNOWN_CUSTOMER, Server, assert_error_shape, server_log, start_server, stop

from serving.schemas import PredictResponse


@pytest.fixture(scope="module")
def store_url(workspace, tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'online.db'}"
    result = run_cli(
        "materialize", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--store", url, env=workspace.env
    )
    assert result.returncode == 0, result.stderr
    return url


@pytest.fixture(scope="module")
def server(workspace, store_url) -> Iterator[Server]:
    s = start_server(workspace, store_url, "models:/retention@champion")
    yield s
    stop(s)


@pytest.fixture(scope="module")
def known_ids(workspace) -> list[str]:
    import pandas as pd

    return sorted(pd.read_parquet(workspace.transactions)["customer_id"].unique())[:5]


def test_predict_by_id_from_the_online_store(server, known_ids, workspace) -> None:
    response = server.post("/predict", {"customers": [{"customer_id": known_ids[0]}, {"customer_id": "nobody"}]})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "1" and body["horizon_days"] == 90 and body["as_of"] == workspace.AS_OF
    first, unknown = body["predictions"]
    assert first["customer_id"] == known_ids[0]
    assert 0 <= first["churn_probability"] <= 1 and first["expected_value"] >= 0
    assert first["value_at_risk"] == pytest.approx(first["churn_probability"] * first["expected_value"], rel=1e-3)
    assert first["tier"] in {"platinum", "gold", "silver", "bronze"}
    assert first["segment"] in {"star", "rising", "fading", "low"}
    assert 1 <= len(first["reasons"]) <= 3
    assert {"feature", "description", "value", "effect", "contribution"} <= set(first["reasons"][0])
    assert unknown == {"customer_id": "nobody", "error": UNKNOWN_CUSTOMER}
    # intervals: quantiles in order, the 80% interval inside [P10, P90], whole purchase days
    assert 0 <= first["value_p10"] <= first["value_p50"] <= first["value_p90"]
    assert first["value_low"] == first["value_p10"] and first["value_low"] <= first["value_high"] <= first["value_p90"]
    assert all(isinstance(first[f], int) for f in ("purchases_p50", "purchases_low", "purchases_high"))
    assert 0 <= first["purchases_low"] <= first["purchases_p50"] <= first["purchases_high"] <= body["horizon_days"]
    # timing: P(a purchase within d days) grows with d up to 1 - P(no purchase in the horizon)
    within = [first[f"purchase_within_{d}d"] for d in (7, 14, 30, 60, 90)]
    assert within == sorted(within) and within[-1] == pytest.approx(1 - first["churn_probability"], abs=2e-6)
    if first["churn_probability"] < 1:  # given a purchase within the horizon (null when none can happen)
        assert 0 <= first["expected_days_to_next_purchase"] <= body["horizon_days"]
    PredictResponse.model_validate(body)  # the answer is what the OpenAPI document says it is


def test_the_server_runs_with_bentoml_s_internals_patched(server, workspace) -> None:
    """serving.bento_patches.apply ran in the worker, and every patch was applied (the installed BentoML is the
    tested series: test_bento_patches.py)."""
    from serving import bento_patches

    patched = f"BentoML {bento_patches.bentoml_version()} internals patched: {', '.join(bento_patches.PATCHES)}\n"
    assert patched in server_log(workspace, server)


def test_serve_reads_the_store_materialize_writes_by_default(workspace, known_ids, tmp_path) -> None:
    """Neither command is given a store: both use the SQLite file under RETENTION_HOME. Before ``materialize`` has
    written it, the server starts, creates no file and answers a customer sent by id "unknown customer_id"; once
    it is written, the same server scores that customer from it."""
    home = tmp_path / "home"
    s = start_server(workspace, None, "models:/retention@champion", {"RETENTION_HOME": str(home)})
    try:
        body = {"customers": [{"customer_id": known_ids[0]}]}
        before = s.post("/predict", body)
        assert before.status_code == 200, before.text
        assert before.json()["predictions"] == [{"customer_id": known_ids[0], "error": UNKNOWN_CUSTOMER}]
        assert s.get("/readyz").status_code == 200 and not home.exists()
        materialized = run_cli(
            "materialize",
            "-t",
            str(workspace.transactions),
            "--as-of",
            workspace.AS_OF,
            env={**workspace.env, "RETENTION_HOME": str(home)},
        )
        assert materialized.returncode == 0, materialized.stderr
        assert (home / "online_store.db").is_file()
        after = s.post("/predict", body).json()["predictions"][0]
        assert after["customer_id"] == known_ids[0] and "error" not in after and 0 <= after["churn_probability"] <= 1
    finally:
        stop(s)


def test_batch_and_online_scores_agree(server, known_ids, workspace, tmp_path) -> None:
    import pandas as pd

    out = tmp_path / "scores.parquet"
    result = run_cli(
        "score",
        "-t",
        str(workspace.transactions),
        "--as-of",
        workspace.AS_OF,
        "--out",
        str(out),
        "--no-record",
        env=workspace.env,
        cwd=workspace.root,
    )
    assert result.returncode == 0, result.stderr
    batch = pd.read_parquet(out).set_index("customer_id")
    body = server.post("/predict", {"customers": [{"customer_id": c} for c in known_ids]}).json()
    for p in body["predictions"]:
        assert p["churn_probability"] == pytest.approx(batch.loc[p["customer_id"], "churn_probability"], abs=1e-6)
        assert p["expected_value"] == pytest.approx(batch.loc[p["customer_id"], "expected_value"], abs=1e-3)
        assert p["tier"] == batch.loc[p["customer_id"], "tier"]


def test_inline_transactions_match_the_same_customer_by_id(server, known_ids, workspace) -> None:
    import pandas as pd

    tx = pd.read_parquet(workspace.transactions)
    mine = tx[tx["customer_id"] == known_ids[1]]
    columns = ("timestamp", "amount", "transaction_id", "category", "channel", "quantity")
    inline = [  # every column the log has (the first basket's items come from quantity)
        {
            "timestamp": t.isoformat(),
            "amount": float(a),
            "transaction_id": i,
            "category": c,
            "channel": ch,
            "quantity": int(q),
        }
        for t, a, i, c, ch, q in zip(*(mine[k] for k in columns), strict=True)
    ]
    by_id = server.post("/predict", {"customers": [{"customer_id": known_ids[1]}]}).json()["predictions"][0]
    body = {"customers": [{"customer_id": known_ids[1], "transactions": inline}], "as_of": workspace.AS_OF}
    by_tx = server.post("/predict", body).json()["predictions"][0]
    assert by_tx["churn_probability"] == pytest.approx(by_id["churn_probability"], abs=1e-9)
    assert by_tx["expected_value"] == pytest.approx(by_id["expected_value"], abs=1e-6)


def test_rank_sorts_by_value_at_risk_with_top_k(server, known_ids) -> None:
    customers = [{"customer_id": c} for c in [*known_ids, "nobody"]]
    body = server.post("/rank", {"customers": customers, "top_k": 3}).json()
    ranking = body["ranking"]
    assert [r["retention_rank"] for r in ranking] == [1, 2, 3]
    assert [r["value_at_risk"] for r in ranking] == sorted((r["value_at_risk"] for r in ranking), reverse=True)
    assert body["errors"] == [{"customer_id": "nobody", "error": UNKNOWN_CUSTOMER}]


def test_inline_order_lines_give_the_answer_of_the_same_transactions(server, known_ids, workspace) -> None:
    """One customer's purchases sent once as transactions and once as priced order lines (each transaction split
    into two lines, ``quantity × unit_price``, in shuffled order, plus an exact copy): the same scores."""
    import random

    import pandas as pd

    tx = pd.read_parquet(workspace.transactions)
    mine = tx[tx["customer_id"] == known_ids[2]].drop_duplicates()
    mine = mine[mine["timestamp"].dt.date <= pd.Timestamp(workspace.AS_OF).date()]
    as_transactions, as_lines = [], []
    for t, a, i in zip(mine["timestamp"], mine["amount"], mine["transaction_id"], strict=True):
        when = t.isoformat()
        as_transactions.append({"timestamp": when, "amount": float(a), "transaction_id": i})
        half = round(float(a) / 2, 2)
        as_lines.append({"timestamp": when, "transaction_id": i, "line_id": "1", "quantity": 2.0, "unit_price": half})
        rest = float(a) - 2 * half  # the rest of the amount, as an amount
        as_lines.append({"timestamp": when, "transaction_id": i, "line_id": "2", "amount": rest})
    as_lines.append(dict(as_lines[0]))  # the same line twice: a duplicate, kept once
    random.Random(7).shuffle(as_lines)

    def predict(transactions):
        body = {"customers": [{"customer_id": known_ids[2], "transactions": transactions}], "as_of": workspace.AS_OF}
        response = server.post("/predict", body)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    whole, lines = predict(as_transactions), predict(as_lines)
    assert "error" not in whole and len(as_lines) == 2 * len(as_transactions) + 1
    assert lines["churn_probability"] == pytest.approx(whole["churn_probability"], abs=1e-9)
    assert lines["expected_value"] == pytest.approx(whole["expected_value"], abs=1e-6)
    assert (lines["tier"], lines["segment"], lines["reasons"]) == (whole["tier"], whole["segment"], whole["reasons"])


@pytest.mark.parametrize(
    ("line", "status", "field"),
    [
        ({"timestamp": "2024-01-02", "quantity": 2}, 422, "customers[0].transactions[1].unit_price"),
        ({"timestamp": "2024-01-02", "unit_price": 2.5}, 422, "customers[0].transactions[1].quantity"),
        ({"timestamp": "2024-01-02"}, 422, "customers[0].transactions[1].amount"),
        ({"timestamp": "2024-01-02", "quantity": 1, "unit_price": "x"}, 400, "customers[0].transactions[1].unit_price"),
        ({"timestamp": "2024-01-02", "amount": 1, "sku": "A"}, 400, "customers[0].transactions[1].sku"),
    ],
)
def test_a_bad_order_line_is_a_4xx_naming_its_field(server, line, status, field) -> None:
    """The schema rejects types and unknown fields (400), the contract a line without an amount (422)."""
    good = {"timestamp": "2024-01-01", "transaction_id": "o1", "quantity": 1, "unit_price": 3.0}
    body = {"customers": [{"customer_id": "a", "transactions": [good, {"transaction_id": "o1", **line}]}]}
    assert assert_error_shape(server.post("/predict", body), status)["field"] == field


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"customers": []}, 400, "customers"),
        ({"customers": [{"customer_id": 42}]}, 400, "customer_id"),
        ({"customers": [{}]}, 400, "customer_id"),
        (
            {"customers": [{"customer_id": "a", "transactions": [{"timestamp": "soon", "amount": 1}]}]},
            422,
            "customers[0].transactions[0].timestamp",
        ),
        (
            {"customers": [{"customer_id": "a", "transactions": [{"timestamp": "2024-01-01", "amount": "x"}]}]},
            400,
            "amount",
        ),
        (
            {
                "customers": [{"customer_id": "a", "transactions": [{"timestamp": "2025-02-01", "amount": 3}]}],
                "as_of": "2025-01-01",
            },
            422,
            "is after as_of",
        ),
        ({"customers": [{"customer_id": "a"}], "as_of": "someday"}, 422, "as_of"),
        (
            {"customers": [{"customer_id": "a", "transactions": [{"timestamp": "0707-02-06", "amount": 1}]}]},
            422,
            "customers[0].transactions[0].timestamp",
        ),
        ({"customers": [{"customer_id": "a"}], "top_k": 0}, 400, "top_k"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(server, body, status, names) -> None:
    path = "/rank" if "top_k" in body else "/predict"
    response = server.post(path, body)
    assert response.status_code == status, response.text
    assert names in assert_error_shape(response, status)["error"]


def test_non_finite_amount_and_malformed_json(server) -> None:
    nan = b'{"customers": [{"customer_id": "a", "transactions": [{"timestamp": "2024-01-01", "amount": NaN}]}]}'
    response = httpx.post(server.base + "/predict", content=nan, headers={"content-type": "application/json"})
    assert assert_error_shape(response, 400)["field"] == "customers[0].transactions[0].amount"
    broken = httpx.post(server.base + "/predict", content=b"{oops", headers={"content-type": "application/json"})
    assert "Invalid JSON" in assert_error_shape(broken, 400)["error"]
    assert_error_shape(httpx.get(server.base + "/rank"), 405)


def test_limits_answer_413(server) -> None:
    many = {"customers": [{"customer_id": str(i)} for i in range(1001)]}
    assert assert_error_shape(server.post("/predict", many), 413)["field"] == "customers"
    big = b'{"customers": [{"customer_id": "' + b"x" * (6 * 1024 * 1024) + b'"}]}'
    response = httpx.post(server.base + "/predict", content=big, headers={"content-type": "application/json"})
    assert "exceeds the limit" in assert_error_shape(response, 413)["error"]


def test_health_metrics_docs_and_reload(server) -> None:
    assert server.get("/livez").status_code == 200
    assert server.get("/readyz").status_code == 200
    for _ in range(10):  # the worker's Prometheus files are merged on read; give them a moment under load
        metrics = server.get("/metrics")
        assert metrics.status_code == 200
        if "bentoml_service_request" in metrics.text:
            break
        time.sleep(1)
    assert 'endpoint="/predict"' in metrics.text
    spec = server.get("/docs.json").json()
    assert "/predict" in spec["paths"] and "/rank" in spec["paths"]
    answer = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["predictions"]["items"]  # the documented answer, with the interval fields:
    assert spec["components"]["schemas"]["Prediction"]["properties"]["value_p90"]["nullable"] is True
    reload = server.post("/admin/reload", {}, headers=ADMIN)
    assert reload.status_code == 200 and reload.json()["model_version"] == "1"
    assert server.post("/model", {}).json()["model_version"] == "1"


def test_readyz_is_503_while_no_model_is_loaded(workspace) -> None:
    s = start_server(workspace, None, "models:/does-not-exist@champion", wait_ready=False)
    try:
        assert s.get("/readyz").status_code == 503
        assert s.get("/livez").status_code == 200
        response = s.post("/predict", {"customers": [{"customer_id": "a"}]})
        assert "not loaded" in assert_error_shape(response, 503)["error"]
        assert_error_shape(s.post("/model", {}), 503)
        deadline = time.monotonic() + 60  # the load fails: /readyz then says why, and the service stays up
        while "failed to load" not in s.get("/readyz").text and time.monotonic() < deadline:
            time.sleep(0.3)
        reason = assert_error_shape(s.get("/readyz"), 503)["error"]
        assert "models:/does-not-exist@champion failed to load" in reason and "ModelNotFound" in reason
        assert reason in assert_error_shape(s.post("/predict", {"customers": [{"customer_id": "a"}]}), 503)["error"]
        assert s.get("/livez").status_code == 200
    finally:
        stop(s)


def test_api_key_protects_every_prediction_route(workspace, store_url) -> None:
    s = start_server(workspace, store_url, "models:/retention@champion", {"RETENTION_API_KEY": "s3cret"})
    try:
        body = {"customers": [{"customer_id": "a"}]}
        for path in ("/predict", "/rank", "/admin/reload", "/model"):
            assert_error_shape(s.post(path, body), 401)
            assert s.get(path).status_code == 401, path
        assert s.post("/predict", body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert s.post("/predict", body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert s.post("/predict", body, headers={"X-API-Key": "s3cret"}).status_code == 200
        for open_path in ("/livez", "/readyz", "/metrics"):
            assert s.get(open_path).status_code == 200, open_path
    finally:
        stop(s)


def test_schemathesis_finds_no_server_error(server, workspace) -> None:
    import schemathesis
    from hypothesis import HealthCheck, settings

    schema = schemathesis.openapi.from_url(server.base + "/docs.json")
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()
        if op.path not in ("/predict", "/rank", "/plan"):
            continue
        strategy = op.as_strategy()

        from hypothesis import given

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def check(case) -> None:
            response = case.call(base_url=server.base, timeout=30)
            if response.status_code >= 500:
                failures.append((case.body, response.status_code, response.text[:200]))
            elif response.status_code >= 400:
                try:
                    assert_error_shape(response, response.status_code)
                except (AssertionError, ValueError, KeyError):
                    failures.append((case.body, response.status_code, "error shape: " + response.text[:200]))

        check()
    assert not failures, failures[:3]
    log = server_log(workspace, server)
    assert "Traceback" not in log and "Exception on /" not in log  # client errors are one quiet line, not an ERROR


def test_failed_reload_keeps_the_old_version(workspace, tmp_path: Path) -> None:
    import shutil

    from serving.loader import load_model
    from serving.online import ModelHolder

    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    bundle = tmp_path / "bundle"
    load_model("models:/retention@champion").save(bundle)
    holder = ModelHolder(str(bundle))
    first = holder.load()
    (bundle / "churn.txt").write_text("not a model")
    with pytest.raises(Exception):  # noqa: B017 -- any load failure must leave the old model
        holder.load()
    assert holder.model is first and holder.error
    shutil.rmtree(bundle)


def test_sighup_to_the_worker_loads_the_new_champion(workspace, store_url) -> None:
    import signal

    import mlflow
    import pandas as pd
    import psutil

    from serving.loader import load_model
    from training import registry

    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    name = "retention-sighup"  # its own registered model: the shared champion of the workspace is left alone
    model = load_model("models:/retention@champion")
    example = pd.DataFrame(0.0, index=range(5), columns=list(model.feature_columns))

    def register() -> str:
        mlflow.set_experiment("sighup-test")
        with mlflow.start_run():
            version = registry.log_bundle(model, name, example)
        registry.set_alias(name, registry.CHAMPION, version)
        return version

    first = register()
    s = start_server(workspace, store_url, f"models:/{name}@champion")
    try:
        assert s.post("/model", {}).json()["model_version"] == first
        second = register()
        workers = [
            p
            for p in psutil.Process(s.proc.pid).children(recursive=True)
            if "_bentoml_impl.worker" in " ".join(p.cmdline())
        ]
        assert len(workers) == 1
        workers[0].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while s.post("/model", {}).json()["model_version"] != second and time.monotonic() < deadline:
            time.sleep(0.3)
        assert s.post("/model", {}).json()["model_version"] == second
        body = s.post("/predict", {"customers": [{"customer_id": "nobody"}]}).json()
        assert body["model_version"] == second
        assert s.get("/readyz").status_code == 200
    finally:
        stop(s)
