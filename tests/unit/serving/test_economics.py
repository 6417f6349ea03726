"""serving.economics: expected profit from expected value (hand-computed), the default economics leaving the value
exactly as it is, offers and economics files parsed and refused in one sentence naming the field; and the batch
summary's population part (serving.batch.population_summary) on hand-computed customers."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_util import make_model

from features.contract import ContractError
from serving.batch import CURVE_POINTS, Population, population_summary
from serving.economics import Economics, Offer, contact_costs, expected_profit, expected_revenue
from serving.intervals import EquityMoments

COLUMNS = ("mean_amount", "refund_count", "n_transactions")


@functools.cache
def base_meta():
    return make_model().meta


@pytest.fixture(scope="module")
def meta():
    """A bundle whose expected value is half the revenue (margin 0.5), undiscounted, with a 90-day horizon."""
    return dataclasses.replace(base_meta(), margin=0.5, discount_rate=0.0)


def test_expected_profit_subtracts_the_costs_of_the_expected_orders_and_refunds(meta) -> None:
    """Revenue = value / 0.5 = (100, 20, 0, 60); orders = revenue / mean amount = (4, 0.5, 0 (amount unknown), 0
    (amount 0)); refunds = orders x refund_count / n_transactions = (1, 0, 0, 0); profit = 0.4 x revenue - 3 x orders
    - 10 x refunds = (18, 6.5, 0, 24)."""
    value = np.array([50.0, 10.0, 0.0, 30.0])
    X = np.array([[25.0, 1.0, 4.0], [40.0, 0.0, 2.0], [np.nan, 2.0, 0.0], [0.0, 1.0, 3.0]])
    economics = Economics(gross_margin=0.4, cost_to_serve_per_order=3.0, cost_per_refund=10.0)
    profit = expected_profit(value, X, COLUMNS, meta, economics)
    np.testing.assert_allclose(profit, [18.0, 6.5, 0.0, 24.0], rtol=1e-12)
    np.testing.assert_allclose(expected_revenue(value, meta, economics), [100.0, 20.0, 0.0, 60.0], rtol=1e-12)


def test_rows_without_the_order_features_have_no_order_costs(meta) -> None:
    value = np.array([50.0])
    profit = expected_profit(value, np.array([[1.0]]), ("recency_days",), meta, Economics(cost_to_serve_per_order=5))
    assert profit.tolist() == [50.0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=20),
    st.floats(0.01, 1.0),
    st.floats(0.0, 0.5),
)
def test_the_default_economics_give_the_expected_value_exactly(values, margin, rate) -> None:
    meta = dataclasses.replace(base_meta(), margin=margin, discount_rate=rate)
    value = np.asarray(values)
    X = np.full((len(value), 3), 7.0)
    profit = expected_profit(value, X, COLUMNS, meta, Economics())
    assert profit.tolist() == value.tolist() and profit is not value
    assert expected_profit(value, X, COLUMNS, meta, None).tolist() == value.tolist()
    same = Economics(gross_margin=None, discount_rate=rate)  # the bundle's own rate: no change either
    assert expected_profit(value, X, COLUMNS, meta, same).tolist() == value.tolist()


def test_an_own_discount_rate_rescales_by_the_ratio_of_mid_horizon_discount_factors(meta) -> None:
    profit = expected_profit(np.array([100.0]), np.zeros((1, 3)), COLUMNS, meta, Economics(discount_rate=0.1))
    assert profit[0] == pytest.approx(100.0 * 1.1 ** (-(90 / 365) / 2), rel=1e-12)


def test_contact_costs_add_the_contact_the_fixed_cost_and_a_share_of_revenue() -> None:
    offer = Offer("voucher", fixed_cost=5.0, spend_share=0.1, save_rate=0.2)
    costs = contact_costs(np.array([100.0, -20.0]), offer, Economics(contact_cost=0.5))
    assert costs.tolist() == [15.5, 5.5]  # negative revenue counts as none


def test_offers_parse_from_command_line_text_and_json() -> None:
    assert Offer.parse("call:fixed=5,save=0.2,share=0.1") == Offer("call", 5.0, 0.1, 0.2)
    assert Offer.parse("email") == Offer("email")
    raw = {"name": "call", "fixed_cost": 5, "spend_share": 0.1, "save_rate": 0.2}
    assert Offer.from_dict(raw) == Offer("call", 5.0, 0.1, 0.2) and Offer.from_dict(raw).to_dict() == raw


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("call:cost=5", "'cost=5' is not KEY=VALUE"),
        ("call:fixed=-1", "offer 'call' fixed_cost must be at least 0, got -1"),
        ("call:save=1.5", "offer 'call' save_rate must be between 0 and 1, got 1.5"),
        ("call:share=abc", "offer 'call' spend_share must be a number, got 'abc'"),
        (":fixed=1", "offer name must be"),
        ("call:fixed=nan", "must be a finite number"),
    ],
)
def test_bad_offers_are_one_sentence_naming_the_field(text, message) -> None:
    with pytest.raises(ContractError, match=message):
        Offer.parse(text)


def test_economics_round_trip_through_json_and_refuse_unknown_or_negative_fields(tmp_path) -> None:
    economics = Economics(
        gross_margin=0.3, cost_to_serve_per_order=4.0, contact_cost=1.0, offers=(Offer("call", 5.0, 0.0, 0.2),)
    )
    path = tmp_path / "economics.json"
    path.write_text(json.dumps(economics.to_dict()))
    assert Economics.read(path) == economics
    assert Economics.from_dict({"offers": [{"name": "sms", "save_rate": 0.05}]}).offers == (Offer("sms", 0, 0, 0.05),)
    with pytest.raises(ContractError, match="economics: unknown field 'margin'"):
        Economics.from_dict({"margin": 0.3})
    with pytest.raises(ContractError, match="cost_per_refund must be at least 0, got -2"):
        Economics.from_dict({"cost_per_refund": -2})
    with pytest.raises(ContractError, match="gross_margin must be between 0 and 1"):
        Economics.from_dict({"gross_margin": 30})
    with pytest.raises(ContractError, match=r"offers\[0\]: unknown field 'cost'"):
        Economics.from_dict({"offers": [{"name": "x", "cost": 1}]})
    with pytest.raises(ContractError, match="offer 'x' is given twice"):
        Economics.from_dict({"offers": [{"name": "x"}, {"name": "x"}]})
    path.write_text("{not json")
    with pytest.raises(ContractError, match="is not valid JSON"):
        Economics.read(path)
    with pytest.raises(ContractError, match="cannot read the economics file"):
        Economics.read(tmp_path / "missing.json")


def test_overrides_replace_only_the_fields_given() -> None:
    base = Economics(gross_margin=0.3, contact_cost=1.0)
    assert base.override(gross_margin=None, contact_cost=2.0) == Economics(gross_margin=0.3, contact_cost=2.0)
    assert base.override() is base
    with pytest.raises(ContractError, match="contact_cost must be at least 0"):
        base.override(contact_cost=-1.0)


def test_population_summary_is_hand_computed() -> None:
    """Values (60, 30, 10, 0), profits (50, 20, -5, -15): the top quarter holds 60% of the value, the first half
    90%; ranked by profit the cumulative profit runs 0, 50, 70, 65, 50; two customers lose 20 together."""
    population = Population(
        expected_value=np.array([60.0, 30.0, 10.0, 0.0]),
        moments=EquityMoments(total=100.0, squares=(4500.0, 100.0)),
        tier_counts={"gold": 2, "bronze": 2},
        expected_profit=np.array([50.0, 20.0, -5.0, -15.0]),
        value_at_risk=np.array([6.0, 9.0, 5.0, 0.0]),
        tier=np.array(["gold", "gold", "bronze", "bronze"], dtype=object),
        segment=np.array(["star", "rising", "low", "low"], dtype=object),
    )
    out = population_summary(population, ("gold", "bronze"))
    assert out["tiers"] == [
        {"tier": "gold", "customers": 2, "expected_value": 90.0, "expected_profit": 70.0, "value_at_risk": 15.0},
        {"tier": "bronze", "customers": 2, "expected_value": 10.0, "expected_profit": -20.0, "value_at_risk": 5.0},
    ]
    cells = {(c["tier"], c["segment"]): (c["customers"], c["expected_value"]) for c in out["matrix"]}
    assert len(cells) == 8 and cells[("gold", "star")] == (1, 60.0) and cells[("bronze", "low")] == (2, 10.0)
    assert cells[("bronze", "star")] == (0, 0.0)
    x = out["pareto"]["customer_share"]
    assert len(x) == CURVE_POINTS and x[25] == 0.25 and x[-1] == 1.0
    share = out["pareto"]["value_share"]
    assert (share[0], share[10], share[25], share[50], share[100]) == pytest.approx((0.0, 0.24, 0.6, 0.9, 1.0))
    profit = out["profit_curve"]["cumulative_profit"]
    assert out["profit_curve"]["customer_share"] == x and len(profit) == CURVE_POINTS
    assert (profit[0], profit[25], profit[50], profit[75], profit[100]) == pytest.approx((0, 50, 70, 65, 50))
    assert out["unprofitable"] == {"customers": 2, "expected_profit": -20.0}
    json.dumps(out, allow_nan=False)  # plain JSON: no NaN
