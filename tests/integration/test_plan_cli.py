"""``retention plan`` and ``/plan`` as their users call them: the command line in a subprocess, the service over
HTTP. Both make the plan of :func:`serving.plan.make_plan` on customers scored by the one scoring core, so each
must equal ``make_plan`` of the nightly list ``retention score`` writes under the same economics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pytest
from cli_util import run_cli
from server_util import Server, assert_error_shape, start_server, stop

from serving.economics import Economics
from serving.plan import PLAN_COLUMNS, make_plan
from serving.schemas import PlanResponse

ECONOMICS = {"gross_margin": 0.4, "cost_to_serve_per_order": 4.0, "cost_per_refund": 5.0, "contact_cost": 0.5}
OFFERS = ("email:fixed=1,save=0.1", "call:fixed=12,save=0.35,share=0.05")
BUDGET = "150"


@pytest.fixture(scope="module")
def files(workspace, tmp_path_factory) -> dict:
    """The economics file, the nightly list under it and a plan of the same customers."""
    root = tmp_path_factory.mktemp("plan")
    out = {"economics": root / "economics.json", "scores": root / "scores.parquet", "plan": root / "plan.parquet"}
    out["economics"].write_text(json.dumps(ECONOMICS))
    tx, as_of = str(workspace.transactions), workspace.AS_OF
    scored = run_cli(
        "score", "-t", tx, "--as-of", as_of, "--out", str(out["scores"]), "--no-record", "--reasons", "all",
        "--economics", str(out["economics"]), env=workspace.env,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    planned = run_cli(
        "plan", "-t", tx, "--as-of", as_of, "--budget", BUDGET, *(f"--offer={o}" for o in OFFERS),
        "--economics", str(out["economics"]), "--out", str(out["plan"]), env=workspace.env,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    out["stdout"] = planned.stdout
    return out


@pytest.fixture(scope="module")
def meta(workspace):
    import os

    from serving.loader import load_model

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = workspace.tracking_uri
    try:
        return load_model("models:/retention@champion", isolate=False).meta
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def test_the_plan_command_writes_the_plan_of_the_nightly_list(files, meta) -> None:
    written = pd.read_parquet(files["plan"])
    assert list(written.columns) == list(PLAN_COLUMNS)
    expected = make_plan(
        pd.read_parquet(files["scores"]), list(OFFERS), float(BUDGET), Economics(**ECONOMICS), meta=meta
    )
    pd.testing.assert_frame_equal(written, expected.rows, check_dtype=False)
    totals = json.loads(files["plan"].with_name("plan.parquet.plan.json").read_text())
    assert totals["totals"] == pytest.approx(expected.totals)
    assert totals["offers"] == expected.offers and set(totals["budget_curve"]) == set(expected.budget_curve)
    assert totals["economics"]["gross_margin"] == 0.4 and [o["name"] for o in totals["economics"]["offers"]] == [
        "email",
        "call",
    ]
    t = expected.totals
    assert 0 < t["customers_contacted"] < t["customers_scored"] and t["spend"] <= float(BUDGET)
    assert (written["expected_benefit"] > 0).all() and written["reason_1"].notna().all()
    assert t["uplift_source"] == "assumed" and "plan: contact" in files["stdout"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--budget", "-5", "--offer", "email:fixed=1,save=0.1"), "error: --budget must be at least 0, got -5"),
        (("--budget", "10", "--offer", "email:cost=1"), "error: --offer 'email:cost=1': 'cost=1' is not KEY=VALUE"),
        (("--budget", "10"), "error: no offer: give at least one"),
        (("--budget", "10", "--offer", "x:save=2"), "error: offer 'x' save_rate must be between 0 and 1, got 2"),
        (("--budget", "10", "--offer", "x", "--contact-cost", "-1"), "error: contact_cost must be at least 0"),
        (("--budget", "10", "--offer", "x", "--scorecard-weights", "value=1"), "error: scorecard weights take"),
    ],
)
def test_bad_budget_offers_or_economics_exit_2_with_one_sentence(workspace, tmp_path, args, message) -> None:
    out = tmp_path / "plan.parquet"
    result = run_cli(
        "plan", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--out", str(out), *args,
        env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_flags_override_the_economics_file_and_a_csv_plan_is_written(workspace, files, tmp_path) -> None:
    out, totals = tmp_path / "plan.csv", tmp_path / "totals.json"
    result = run_cli(
        "plan", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--budget", "50", "--offer",
        "email:fixed=1,save=0.1", "--economics", str(files["economics"]), "--margin", "0.2", "--contact-cost", "0",
        "--out", str(out), "--plan-json", str(totals), env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    economics = json.loads(totals.read_text())["economics"]
    assert (economics["gross_margin"], economics["contact_cost"], economics["cost_per_refund"]) == (0.2, 0.0, 5.0)
    plan = pd.read_csv(out)
    assert list(plan.columns) == list(PLAN_COLUMNS) and (plan["cost"] == 1.0).all() and len(plan) <= 50


def test_a_bad_economics_file_exits_2_naming_the_field(workspace, tmp_path) -> None:
    bad = tmp_path / "economics.json"
    bad.write_text(json.dumps({"margin": 0.3}))
    result = run_cli(
        "score", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--out", str(tmp_path / "s.parquet"),
        "--economics", str(bad), "--no-record", env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 2 and "economics: unknown field 'margin'" in result.stderr


# --- the service -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(workspace, files, tmp_path_factory) -> Iterator[Server]:
    store = f"sqlite:///{tmp_path_factory.mktemp('plan-store') / 'online.db'}"
    result = run_cli(
        "materialize", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--store", store,
        env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    s = start_server(workspace, store, "models:/retention@champion", {"RETENTION_ECONOMICS": str(files["economics"])})
    yield s
    stop(s)


def offer_objects() -> list[dict]:
    return [
        {"name": "email", "fixed_cost": 1, "save_rate": 0.1},
        {"name": "call", "fixed_cost": 12, "spend_share": 0.05, "save_rate": 0.35},
    ]


def test_plan_over_http_is_the_plan_of_the_same_customers_in_the_nightly_list(server, files, meta) -> None:
    scores = pd.read_parquet(files["scores"])
    chosen = scores["customer_id"].iloc[::25].tolist()
    body = {"customers": [{"customer_id": c} for c in [*chosen, "nobody"]], "budget": 40, "offers": offer_objects()}
    response = server.post("/plan", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    PlanResponse.model_validate(answer)
    subset = scores.set_index("customer_id").loc[chosen].reset_index()
    expected = make_plan(subset, list(OFFERS), 40, Economics(**ECONOMICS), meta=meta)
    assert [r["customer_id"] for r in answer["plan"]] == expected.rows["customer_id"].tolist()
    assert [r["offer"] for r in answer["plan"]] == expected.rows["offer"].tolist()
    for row, (_, want) in zip(answer["plan"], expected.rows.iterrows(), strict=True):
        assert row["expected_benefit"] == pytest.approx(want["expected_benefit"], abs=1e-4)
        texts = [r["fact"] for r in row["reasons"]]
        assert all(str(want[f"reason_{k + 1}"]).startswith(t) for k, t in enumerate(texts))
    assert answer["totals"]["spend"] == pytest.approx(expected.totals["spend"])
    assert answer["totals"]["customers_contacted"] == expected.totals["customers_contacted"] > 0
    assert answer["errors"] == [{"customer_id": "nobody", "error": "unknown customer_id: not in the online store"}]
    cheaper = server.post("/plan", {**body, "economics": {"contact_cost": 0}}).json()
    assert cheaper["totals"]["expected_net_benefit"] > answer["totals"]["expected_net_benefit"]


def test_plan_takes_inline_transactions_like_rank(server) -> None:
    history = [{"timestamp": f"2024-{m:02d}-10", "amount": 80.0} for m in range(1, 12)]
    body = {"customers": [{"customer_id": "inline", "transactions": history}], "as_of": "2024-12-30", "budget": 100}
    answer = server.post("/plan", {**body, "offers": [{"name": "email", "fixed_cost": 0.1, "save_rate": 0.5}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["totals"]["customers_scored"] == 1


def test_bad_plan_requests_answer_the_one_error_shape(server) -> None:
    customers = [{"customer_id": "a"}, {"customer_id": "a"}]
    repeated = assert_error_shape(server.post("/plan", {"customers": customers, "budget": 1}), 422)
    assert repeated["field"] == "customers[1].customer_id"
    assert_error_shape(server.post("/plan", {"customers": customers[:1], "budget": -1}), 400)
    bad_offer = {"customers": customers[:1], "budget": 1, "offers": [{"name": "x", "save_rate": 2}]}
    assert_error_shape(server.post("/plan", bad_offer), 400)
    no_offer = assert_error_shape(server.post("/plan", {"customers": customers[:1], "budget": 1}), 422)
    assert no_offer["field"] == "offers" and "no offer" in no_offer["error"]
    twice = {"customers": customers[:1], "budget": 1, "offers": [{"name": "x"}, {"name": "x"}]}
    assert "given twice" in assert_error_shape(server.post("/plan", twice), 422)["error"]


def test_the_openapi_document_describes_plan(server) -> None:
    document = server.get("/docs.json").json()
    operation = document["paths"]["/plan"]["post"]
    assert {"200", "400", "422", "503"} <= set(operation["responses"])
    assert "PlanRow" in document["components"]["schemas"] and "OfferSpec" in document["components"]["schemas"]
