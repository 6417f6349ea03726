"""features.synthetic_campaigns on a small generated log: determinism, who is eligible and treated, what a contact
does to each response type (and to nobody else), truth equal to the outcomes of the observed transactions, and the
response rules and the profit score worked out by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from features.campaigns import campaign_outcomes, prepare_campaigns
from features.contract import ContractError, prepare_transactions
from features.kernel import compute_features, index_transactions
from features.synthetic import generate_transactions
from features.synthetic_campaigns import (
    RESPONSES,
    TRUTH_COLUMNS,
    CampaignDesign,
    response_summary,
    response_types,
    simulate_campaign,
    true_incremental_profit,
)

SENT_AT = "2023-10-01T09:30:00Z"
CUTOFF = dt.date(2023, 10, 1)
HORIZON = 60


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return generate_transactions(1_500, 400, seed=5)  # 2023-01-01 .. 2024-02-04


@pytest.fixture(scope="module")
def sim(raw: pd.DataFrame):
    return simulate_campaign(raw, SENT_AT, horizon_days=HORIZON, treated_share=0.4, seed=3, cost=1.25)


def _rows(frame: pd.DataFrame, ids) -> pd.DataFrame:
    """The rows of these customers, in a canonical order (customer, time, transaction id)."""
    part = frame[frame["customer_id"].isin(list(ids))]
    return part.sort_values(["customer_id", "timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def test_same_arguments_same_campaign_and_the_seed_matters(raw: pd.DataFrame, sim) -> None:
    again = simulate_campaign(raw, SENT_AT, horizon_days=HORIZON, treated_share=0.4, seed=3, cost=1.25)
    for name in ("transactions", "campaigns", "truth"):
        pd.testing.assert_frame_equal(getattr(sim, name), getattr(again, name))
    other = simulate_campaign(raw, SENT_AT, horizon_days=HORIZON, treated_share=0.4, seed=4)
    assert not np.array_equal(other.truth["treated"], sim.truth["treated"])
    pd.testing.assert_series_equal(other.truth["response"], sim.truth["response"])  # a function of the features


def test_text_timestamps_give_the_same_campaign(raw: pd.DataFrame) -> None:
    small = raw[raw["customer_id"] < "C0000300"]
    text = small.assign(timestamp=small["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    a, b = (simulate_campaign(frame, SENT_AT, horizon_days=HORIZON, seed=3) for frame in (small, text))
    pd.testing.assert_frame_equal(a.truth, b.truth)
    pd.testing.assert_frame_equal(a.campaigns, b.campaigns)


def test_every_customer_with_a_purchase_by_the_send_day_is_assigned(raw: pd.DataFrame, sim) -> None:
    features = compute_features(prepare_transactions(raw)[0], CUTOFF)
    eligible = features.loc[features["n_transactions"] > 0, "customer_id"]
    assert sorted(sim.campaigns["customer_id"]) == sorted(eligible)
    assert sim.truth["customer_id"].tolist() == sim.campaigns["customer_id"].tolist()
    assert list(sim.truth.columns) == list(TRUTH_COLUMNS)
    treated = sim.campaigns["treatment"].to_numpy()
    assert treated.sum() == round(0.4 * len(treated))
    np.testing.assert_array_equal(treated, sim.truth["treated"].to_numpy())
    assert (sim.campaigns["cost"] == np.where(treated == 1, 1.25, 0.0)).all()
    assert set(sim.campaigns["campaign_id"]) == {"C1"} and set(sim.campaigns["offer"]) == {"call"}
    assert (sim.campaigns["sent_at"] == pd.Timestamp(SENT_AT)).all()
    again, report = prepare_campaigns(sim.campaigns, strict=True)  # the log follows its contract
    pd.testing.assert_frame_equal(again, sim.campaigns)
    assert report.arms == {"C1": {"treated": int(treated.sum()), "control": int(len(treated) - treated.sum())}}
    assert sim.cutoff == CUTOFF and sim.horizon_days == HORIZON


def test_a_contact_changes_only_treated_persuadables_and_sleeping_dogs(raw: pd.DataFrame, sim) -> None:
    truth = sim.truth
    affected = truth[(truth["treated"] == 1) & truth["response"].isin(["persuadable", "sleeping_dog"])]
    everyone = set(raw["customer_id"])
    untouched = everyone - set(affected["customer_id"])
    pd.testing.assert_frame_equal(_rows(sim.transactions, untouched), _rows(raw, untouched))
    assert set(sim.transactions["customer_id"]) <= everyone

    end = pd.Timestamp(CUTOFF + dt.timedelta(days=HORIZON + 1), tz="UTC")
    after_send_day = pd.Timestamp(CUTOFF + dt.timedelta(days=1), tz="UTC")
    annoyed = persuaded = 0
    for customer, response in zip(affected["customer_id"], affected["response"], strict=True):
        before, now = _rows(raw, [customer]), _rows(sim.transactions, [customer])
        if response == "sleeping_dog":  # unchanged, or every transaction after the send day dropped
            stopped = before[before["timestamp"] < after_send_day].reset_index(drop=True)
            if len(now) < len(before):
                annoyed += 1
                pd.testing.assert_frame_equal(now, stopped)
            else:
                pd.testing.assert_frame_equal(now, before)
        else:  # unchanged, or extra purchases inside the window
            extra = now[now["transaction_id"].str.startswith("C1-")]
            kept = now[~now["transaction_id"].str.startswith("C1-")].reset_index(drop=True)
            pd.testing.assert_frame_equal(kept, before)
            if len(extra):
                persuaded += 1
                assert extra["timestamp"].between(after_send_day, end, inclusive="left").all()
                assert (extra["amount"] >= 0).all() and (extra["quantity"] == 1).all()
                assert extra["channel"].isin(before["channel"]).all()
    assert annoyed > 0 and persuaded > 0


def test_truth_is_what_the_observed_transactions_give_each_arm(raw: pd.DataFrame, sim) -> None:
    observed = campaign_outcomes(index_transactions(prepare_transactions(sim.transactions)[0]), sim.campaigns, HORIZON)
    truth = sim.truth
    arm = truth["treated"].to_numpy() == 1
    assert observed["known"].all()
    np.testing.assert_array_equal(
        observed["retained"], np.where(arm, truth["retained_if_treated"], truth["retained_if_control"])
    )
    np.testing.assert_allclose(
        observed["net_spend"], np.where(arm, truth["spend_if_treated"], truth["spend_if_control"]), rtol=0, atol=1e-9
    )
    untreated = campaign_outcomes(index_transactions(prepare_transactions(raw)[0]), sim.campaigns, HORIZON)
    np.testing.assert_array_equal(untreated["retained"], truth["retained_if_control"])
    np.testing.assert_allclose(untreated["net_spend"], truth["spend_if_control"], rtol=0, atol=1e-9)
    same = truth["response"].isin(["sure_thing", "lost_cause"])
    assert (truth.loc[same, "spend_if_treated"] == truth.loc[same, "spend_if_control"]).all()
    assert set(truth["response"]) == set(RESPONSES)


def test_response_types_by_hand() -> None:
    features = {  # recency, purchase days, refund share, overdue ratio
        "recency_days": np.array([301.0, 61.0, 40.0, 10.0, 200.0, 5.0, 59.0, np.nan]),
        "n_purchase_days": np.array([5.0, 1.0, 3.0, 4.0, 6.0, 9.0, 1.0, 0.0]),
        "refund_share": np.array([0.5, 0.0, 0.05, 0.2, 0.0, 0.0, 0.0, 0.0]),
        "overdue_ratio": np.array([9.0, np.nan, 5.0, 0.5, 2.0, 1.9, np.nan, np.nan]),
    }
    expected = [
        "lost_cause",  # silent for more than 300 days, whatever else
        "lost_cause",  # a one-time buyer silent for more than 60 days
        "sleeping_dog",  # refund share 5 %: before the overdue rule
        "sleeping_dog",
        "persuadable",  # a repeat buyer twice overdue within 300 days
        "sure_thing",  # a loyal customer on schedule
        "sure_thing",  # a recent one-time buyer
        "lost_cause",  # no purchase at all
    ]
    assert response_types(features).tolist() == expected
    stricter = CampaignDesign(persuadable_overdue_ratio=2.5, sleeping_refund_share=0.1)
    assert response_types(features, stricter).tolist()[2:5] == ["persuadable", "sleeping_dog", "sure_thing"]


TRUTH = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "response": ["persuadable", "sleeping_dog", "sure_thing", "persuadable"],
        "treated": [1, 0, 1, 0],
        "spend_if_treated": [100.0, 0.0, 50.0, 30.0],
        "spend_if_control": [20.0, 80.0, 50.0, 30.0],
        "retained_if_treated": [1, 0, 1, 1],
        "retained_if_control": [0, 1, 1, 1],
    }
)


def test_true_incremental_profit_by_hand() -> None:
    assert true_incremental_profit(TRUTH, ["a"], margin=0.5, cost_per_contact=3.0) == 80 * 0.5 - 3
    both = true_incremental_profit(TRUTH, ["a", "b", "a", "c"], margin=0.5, cost_per_contact=3.0)
    assert both == (80 - 80 + 0) * 0.5 - 3 * 3  # each customer once
    assert true_incremental_profit(TRUTH, [], margin=0.5, cost_per_contact=3.0) == 0.0
    with pytest.raises(ContractError, match=r"1 contacted customer.* not in the campaign's truth, e.g. 'zz'"):
        true_incremental_profit(TRUTH, ["a", "zz"], margin=0.5, cost_per_contact=3.0)


def test_response_summary_by_hand() -> None:
    summary = response_summary(TRUTH)
    assert summary.index.tolist() == ["persuadable", "sure_thing", "sleeping_dog"]
    assert summary.loc["persuadable"].tolist() == [2, 0.5, 0.5, 1.0, 0.5, 40.0]
    assert summary.loc["sleeping_dog", "retention_uplift"] == -1 and summary.loc["sleeping_dog", "spend_uplift"] == -80


def test_refusals(raw: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match=r"sent on 2024-01-01 needs transactions through 2024-03-31"):
        simulate_campaign(raw, "2024-01-01", horizon_days=90)
    with pytest.raises(ContractError, match="treated share"):
        simulate_campaign(raw, SENT_AT, treated_share=1.0)
    with pytest.raises(ContractError, match="nobody has a purchase"):
        simulate_campaign(raw, "2022-06-01", horizon_days=30)
