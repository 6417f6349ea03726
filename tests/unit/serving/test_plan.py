"""serving.plan: the budget-constrained retention plan on hand-computed customers (offers chosen along each
customer's cost/benefit hull, sleeping dogs and unprofitable customers never contacted, totals and the budget curve)
and its properties (Hypothesis): never over the budget, no contact without a positive benefit, more budget never
lowers the total, one offer of equal cost = the top k by benefit, within one customer's benefit of the optimum."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_util import make_model

from features.contract import ContractError
from serving.economics import Economics, Offer
from serving.plan import PLAN_COLUMNS, SLEEPING_DOG_UPLIFT, make_plan
from serving.scoring import output_columns, score_customers

OFFERS = ["email:fixed=1,save=0.1", "call:fixed=10,save=0.4"]


def customers(**extra) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "churn_probability": [0.5, 0.8, 0.2, 0.9],
            "expected_value": [100.0, 50.0, 200.0, 5.0],
            "expected_profit": [100.0, 50.0, 200.0, -10.0],
        }
    )
    return frame.assign(**extra)


def test_a_tight_budget_buys_cheap_contacts_first_then_upgrades_by_benefit_per_unit_cost() -> None:
    """Contact 0.5 + fixed: email costs 1.5, call 10.5. Saved value = save rate x churn x profit: email (5, 4, 4),
    call (20, 16, 16); benefits email (3.5, 2.5, 2.5), call (9.5, 5.5, 5.5); d (profit -10) is never worth it.
    Increments by benefit per unit cost: a email (2.33), b email, c email (1.67, ties by id), a email->call
    (6 / 9 = 0.67), b and c upgrades (3 / 9). Budget 15: the three emails (4.5) and a's upgrade (9) = 13.5; the
    next upgrade (22.5) does not fit."""
    plan = make_plan(customers(), OFFERS, 15, Economics(contact_cost=0.5))
    assert list(plan.rows.columns) == list(PLAN_COLUMNS)
    assert plan.rows["customer_id"].tolist() == ["a", "b", "c"]
    assert plan.rows["plan_rank"].tolist() == [1, 2, 3]
    assert plan.rows["offer"].tolist() == ["call", "email", "email"]
    assert plan.rows["cost"].tolist() == [10.5, 1.5, 1.5]
    np.testing.assert_allclose(plan.rows["uplift"], [0.2, 0.08, 0.02])
    np.testing.assert_allclose(plan.rows["expected_benefit"], [9.5, 2.5, 2.5])
    t = plan.totals
    assert (t["budget"], t["customers_scored"], t["candidates"], t["customers_contacted"]) == (15.0, 4, 3, 3)
    assert t["spend"] == 13.5 and t["expected_saved_value"] == pytest.approx(28.0)
    assert t["expected_net_benefit"] == pytest.approx(14.5) and t["roi"] == pytest.approx(14.5 / 13.5)
    assert (t["sleeping_dogs"], t["uplift_source"]) == (0, "assumed")
    assert plan.budget_curve["spend"] == [0.0, 1.5, 3.0, 4.5, 13.5]
    np.testing.assert_allclose(plan.budget_curve["expected_saved_value"], [0, 5, 9, 13, 28])
    np.testing.assert_allclose(plan.budget_curve["expected_net_benefit"], [0, 3.5, 6, 8.5, 14.5])
    assert plan.offers == {"email": 2, "call": 1}
    assert plan.to_dict() == {"totals": t, "budget_curve": plan.budget_curve, "offers": plan.offers}
    assert "contact 3 of 4 customers" in plan.render()


def test_offers_on_one_line_are_separate_steps_so_a_small_budget_stops_between_them() -> None:
    """x and y (churn 1, profit 10): offer a costs 1 and saves 2 (benefit 1), b costs 3 and saves 6 (benefit 3): one
    line of slope 1 through (0, 0). Budget 2 buys a for both (not b's upgrade for x alone: it would cost 3); 3.5 buys
    x's a then its upgrade to b; 8 upgrades both."""
    frame = pd.DataFrame(
        {"customer_id": ["x", "y"], "churn_probability": 1.0, "expected_value": 10.0, "expected_profit": 10.0}
    )
    offers = ["a:fixed=1,save=0.2", "b:fixed=3,save=0.6"]
    chosen = {b: make_plan(frame, offers, b) for b in (2, 3.5, 8)}
    assert chosen[2].rows[["customer_id", "offer"]].values.tolist() == [["x", "a"], ["y", "a"]]
    assert chosen[2].totals["spend"] == 2.0 and chosen[2].budget_curve["spend"] == [0.0, 1.0, 2.0]
    assert chosen[3.5].rows[["customer_id", "offer"]].values.tolist() == [["x", "b"]]
    assert chosen[3.5].totals["spend"] == 3.0 and chosen[3.5].budget_curve["spend"] == [0.0, 1.0, 3.0]
    assert chosen[8].rows["offer"].tolist() == ["b", "b"] and chosen[8].totals["spend"] == 6.0


def test_with_money_enough_every_candidate_gets_the_offer_of_its_largest_benefit_and_no_one_else() -> None:
    plan = make_plan(customers(), OFFERS, 1e9, Economics(contact_cost=0.5))
    assert plan.rows["offer"].tolist() == ["call", "call", "call"]
    assert "d" not in plan.rows["customer_id"].tolist()  # negative profit: saving d loses money
    assert plan.totals["spend"] == 31.5 and plan.totals["expected_net_benefit"] == pytest.approx(20.5)
    assert make_plan(customers(), OFFERS, 0).totals["customers_contacted"] == 0  # no budget, no free contact


def test_the_model_s_uplift_replaces_the_save_rate_and_sleeping_dogs_are_never_contacted() -> None:
    """Uplift (0.3, -0.1, 0.05, -0.5): saved value (30, -5, 10, 5): d's negative uplift times its negative profit
    looks like a gain, but a contact makes d leave; b and d are sleeping dogs. Email costs 1: a 29, c 9."""
    scored = customers(uplift=[0.3, -0.1, 0.05, -0.5])
    plan = make_plan(scored, [Offer("email", fixed_cost=1.0, save_rate=0.9)], 100)
    assert plan.rows["customer_id"].tolist() == ["a", "c"]
    np.testing.assert_allclose(plan.rows["expected_benefit"], [29.0, 9.0])
    assert plan.totals["uplift_source"] == "model" and plan.totals["sleeping_dogs"] == 2
    assert plan.sleeping_dogs["customer_id"].tolist() == ["d", "b"]  # most negative uplift first
    # c's uplift of -0.01 is noise around 0: never contacted, but not listed as a sleeping dog (threshold -0.05)
    unmoved = make_plan(customers(uplift=[0.3, -0.1, -0.01, -0.5]), [Offer("email", fixed_cost=1.0)], 100)
    assert unmoved.rows["customer_id"].tolist() == ["a"] and unmoved.totals["sleeping_dogs"] == 2
    no_heads = make_plan(customers(uplift=[np.nan] * 4), ["email:fixed=1,save=0.1"], 100)
    assert no_heads.totals["uplift_source"] == "assumed"  # a list written without uplift heads: NaN column


def test_spend_share_applies_to_the_expected_revenue_of_the_bundle() -> None:
    """Margin 0.5: revenue = 2 x expected value; a 10% discount on a's 200 of revenue costs 20 (b's 10). c's would
    cost 40 and save 0.2 x 200 = 40: a benefit of exactly 0, not worth a contact."""
    meta = dataclasses.replace(make_model().meta, margin=0.5)
    plan = make_plan(customers(), ["discount:share=0.1,save=1"], 1000, meta=meta)
    assert plan.rows.set_index("customer_id")["cost"].to_dict() == {"a": 20.0, "b": 10.0}
    assert plan.totals["candidates"] == 2


def test_a_scored_batch_and_its_written_columns_give_the_same_plan() -> None:
    model = make_model()
    X = np.random.default_rng(3).uniform(0, 100, size=(40, 3))
    batch = score_customers(model, [f"c{i:02d}" for i in range(40)], X)
    from_batch = make_plan(batch, ["email:fixed=0.5,save=0.3"], 5.0, meta=model.meta)
    from_frame = make_plan(output_columns(batch), ["email:fixed=0.5,save=0.3"], 5.0, meta=model.meta)
    pd.testing.assert_frame_equal(from_batch.rows, from_frame.rows)
    assert from_batch.totals == from_frame.totals and from_batch.totals["customers_contacted"] == 10
    assert from_batch.rows["reason_1"].notna().all()


@pytest.mark.parametrize(
    ("budget", "offers", "message"),
    [
        (-1, OFFERS, "budget must be at least 0, got -1"),
        (float("nan"), OFFERS, "budget must be a finite number"),
        (10, [], "no offer: give at least one"),
        (10, ["email:fixed=1", "email:fixed=2"], "offer 'email' is given twice"),
        (10, ["email:fixed=x"], "offer 'email' fixed_cost must be a number"),
    ],
)
def test_bad_budget_or_offers_are_one_sentence(budget, offers, message) -> None:
    with pytest.raises(ContractError, match=message):
        make_plan(customers(), offers, budget)


def test_the_economics_file_s_offers_come_first() -> None:
    economics = Economics(offers=(Offer("sms", fixed_cost=0.1, save_rate=0.05),))
    plan = make_plan(customers(), ["call:fixed=10,save=0.4"], 1e6, economics)
    assert list(plan.offers) == ["sms", "call"]


# --- properties ----------------------------------------------------------------------------------------------


@st.composite
def markets(draw, max_customers: int = 25, max_offers: int = 3, whole_money: bool = False, lines: bool = False):
    """Customers, offers and economics; ``lines``: sometimes offers that are multiples of one (fixed cost and save
    rate times 1, 3, 4: every customer's offers lie on one line through (0, 0)) and customers drawn from a few
    kinds (ties of benefit per unit cost within and across customers)."""
    n = draw(st.integers(1, max_customers))
    m = draw(st.integers(1, max_offers))
    money = st.integers(0, 40).map(float) if whole_money else st.floats(0, 40, allow_nan=False)
    frame = pd.DataFrame(
        {
            "customer_id": [f"c{i:03d}" for i in range(n)],
            "churn_probability": draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)),
            "expected_value": draw(st.lists(st.floats(0, 300), min_size=n, max_size=n)),
            "expected_profit": draw(st.lists(st.floats(-100, 300), min_size=n, max_size=n)),
        }
    )
    if draw(st.booleans()):
        frame["uplift"] = draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n))
    if lines and draw(st.booleans()):
        unit_save = draw(st.sampled_from([0.125, 0.25]))  # binary fractions: the lines are exact
        unit_cost = draw(st.integers(1, 3))
        times = (1, 3, 4)  # unequal steps along the line
        offers = [Offer(f"o{k}", unit_cost * times[k], 0.0, unit_save * times[k]) for k in range(m)]
        few = st.lists(st.sampled_from([0.5, 1.0]), min_size=n, max_size=n)  # customers tie: equal slopes
        frame["churn_probability"] = draw(few)
        frame["expected_profit"] = draw(st.lists(st.sampled_from([-10.0, 40.0, 80.0]), min_size=n, max_size=n))
        frame = frame.drop(columns=["uplift"], errors="ignore")  # the save rates make the lines
        return frame, offers, Economics()
    offers = [
        Offer(f"o{k}", draw(money), 0.0 if whole_money else draw(st.floats(0, 0.3)), draw(st.floats(0, 1)))
        for k in range(m)
    ]
    contact = 0.0 if whole_money else draw(st.floats(0, 5))
    return frame, offers, Economics(contact_cost=contact)


def benefits(frame: pd.DataFrame, offers: list[Offer], economics: Economics) -> np.ndarray:
    """customers x offers benefit, from the module doc's formula (revenue = expected value without a bundle)."""
    p, profit = frame["churn_probability"].to_numpy(), frame["expected_profit"].to_numpy()
    rows = []
    for o in offers:
        uplift = frame["uplift"].to_numpy() if "uplift" in frame else o.save_rate * p
        cost = economics.contact_cost + o.fixed_cost + o.spend_share * frame["expected_value"].to_numpy()
        rows.append(uplift * profit - cost)
    return np.column_stack(rows)


@settings(max_examples=200, deadline=None)
@given(markets(lines=True), st.floats(0, 200), st.floats(0, 200))
def test_the_plan_stays_within_budget_contacts_only_positive_benefits_and_grows_with_the_budget(
    market, budget, more
) -> None:
    frame, offers, economics = market
    plan = make_plan(frame, offers, budget, economics)
    assert plan.totals["spend"] <= budget * (1 + 1e-12) + 1e-12
    assert plan.totals["spend"] == pytest.approx(plan.rows["cost"].sum(), abs=1e-9)
    assert (plan.rows["expected_benefit"] > 0).all()
    if "uplift" in frame:
        harmed = set(frame.loc[frame["uplift"] < 0, "customer_id"])
        dogs = set(frame.loc[frame["uplift"] <= -SLEEPING_DOG_UPLIFT, "customer_id"])
        assert not harmed & set(plan.rows["customer_id"]) and plan.totals["sleeping_dogs"] == len(dogs)
        assert set(plan.sleeping_dogs["customer_id"]) == dogs
    best = benefits(frame, offers, economics).max(axis=1)
    worthless = set(frame.loc[best <= 0, "customer_id"])
    assert not worthless & set(plan.rows["customer_id"])
    bigger = make_plan(frame, offers, budget + more, economics)
    assert bigger.totals["expected_net_benefit"] >= plan.totals["expected_net_benefit"] - 1e-9
    curve = plan.budget_curve
    assert len(curve["spend"]) == len(curve["expected_saved_value"]) == len(curve["expected_net_benefit"])
    assert curve["spend"][-1] == pytest.approx(plan.totals["spend"], abs=1e-9)
    assert curve["expected_net_benefit"][-1] == pytest.approx(plan.totals["expected_net_benefit"], abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(markets(max_offers=1, whole_money=True), st.integers(0, 300))
def test_one_offer_of_equal_cost_for_everyone_is_the_top_k_by_benefit(market, budget) -> None:
    frame, offers, economics = market
    plan = make_plan(frame, offers, budget, economics)
    benefit = benefits(frame, offers, economics)[:, 0]
    if "uplift" in frame:
        benefit[frame["uplift"].to_numpy() < 0] = -np.inf
    cost = offers[0].fixed_cost
    ranked = sorted((-b, cid) for b, cid in zip(benefit, frame["customer_id"], strict=True) if b > 0)
    k = len(ranked) if cost == 0 else min(len(ranked), int(budget // cost))
    assert plan.rows["customer_id"].tolist() == [cid for _, cid in ranked[:k]]


@settings(max_examples=80, deadline=None)
@given(markets(max_customers=6, max_offers=2, lines=True), st.floats(0, 80))
def test_the_greedy_is_within_one_customer_s_benefit_of_the_optimum(market, budget) -> None:
    frame, offers, economics = market
    benefit = benefits(frame, offers, economics)
    if "uplift" in frame:
        benefit[frame["uplift"].to_numpy() < 0] = -np.inf
    cost = np.column_stack(
        [economics.contact_cost + o.fixed_cost + o.spend_share * frame["expected_value"].to_numpy() for o in offers]
    )
    best = 0.0
    for choice in itertools.product(range(-1, len(offers)), repeat=len(frame)):  # -1: no contact
        picked = [(i, k) for i, k in enumerate(choice) if k >= 0]
        if sum(cost[i, k] for i, k in picked) <= budget:
            best = max(best, math.fsum(benefit[i, k] for i, k in picked))
    got = make_plan(frame, offers, budget, economics).totals["expected_net_benefit"]
    largest = max(0.0, float(np.max(benefit)))
    assert best - largest - 1e-9 <= got <= best + 1e-9


# --- the service's logic (serving.online, no server) ---------------------------------------------------------


def test_the_online_plan_is_make_plan_of_the_customers_scored_as_predict_scores_them() -> None:
    from serving.online import ModelHolder, OnlineScorer, RequestError

    holder = ModelHolder("tiny")
    holder.model = make_model("5")
    scorer = OnlineScorer(holder, economics=Economics(contact_cost=0.25))
    customers = [
        {"customer_id": f"c{i}", "transactions": [{"timestamp": f"2024-0{1 + i % 3}-0{1 + i}", "amount": 30.0 + i}]}
        for i in range(5)
    ]
    offers = [{"name": "email", "fixed_cost": 0.5, "spend_share": 0.0, "save_rate": 0.3}]
    answer = scorer.plan(customers, 2.0, offers, {"contact_cost": 0.5}, "2024-03-31")
    predicted = scorer.predict(customers, "2024-03-31")["predictions"]
    frame = pd.DataFrame(predicted)[["customer_id", "churn_probability", "expected_value", "expected_profit"]]
    expected = make_plan(frame, ["email:fixed=0.5,save=0.3"], 2.0, Economics(contact_cost=0.5))
    assert [r["customer_id"] for r in answer["plan"]] == expected.rows["customer_id"].tolist()
    assert answer["totals"]["spend"] == expected.totals["spend"] == 2.0  # two contacts of 1.0 each
    assert answer["totals"]["customers_scored"] == 5 and answer["errors"] == []
    assert set(answer["plan"][0]) == {*PLAN_COLUMNS[:9], "reasons"} and answer["sleeping_dogs"] == []
    with pytest.raises(RequestError) as caught:
        scorer.plan(customers, 1.0, [{"name": "x", "fixed_cost": -1}])
    assert caught.value.field == "offers[0]" and "fixed_cost must be at least 0" in str(caught.value)
    with pytest.raises(RequestError) as caught:
        scorer.plan(customers, 1.0, offers, {"gross_margin": 2})
    assert caught.value.field == "economics"


def test_rt_plan_scores_with_the_economics_then_plans(tmp_path) -> None:
    """``rt.plan`` (retention.api) = make_plan of ``rt.score``'s batch under the same economics; the economics may
    be a dict or a JSON file, and bad offers fail before any scoring."""
    import json

    from retention import api

    model = make_model("5")
    tx = pd.DataFrame(
        {
            "customer_id": [f"c{i % 7}" for i in range(40)],
            "timestamp": [f"2024-{1 + i % 12:02d}-{1 + i % 27:02d}" for i in range(40)],
            "amount": [10.0 + 3 * i for i in range(40)],
        }
    )
    economics = {"contact_cost": 0.5, "offers": [{"name": "email", "fixed_cost": 0.5, "save_rate": 0.3}]}
    path = tmp_path / "economics.json"
    path.write_text(json.dumps(economics))
    plan = api.plan(model, tx, "2024-12-31", budget=3.0, economics=path)
    batch = api.score(model, tx, "2024-12-31", economics=economics)
    expected = make_plan(batch, None, 3.0, Economics.from_dict(economics), meta=model.meta)
    pd.testing.assert_frame_equal(plan.rows, expected.rows)
    assert plan.totals == expected.totals and plan.totals["customers_contacted"] == 3
    with pytest.raises(ContractError, match="offer 'email' is given twice"):
        api.plan(model, tx, "2024-12-31", budget=3.0, offers=["email:fixed=1"], economics=economics)
