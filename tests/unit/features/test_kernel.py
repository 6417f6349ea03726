"""Hand-computed features and labels for a few customers; every expected number is worked out in comments."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from features.contract import prepare_transactions
from features.kernel import compute_features, index_transactions, label_codes
from features.labels import cutoff_plan, labels_at

RAW = pd.DataFrame(
    {
        "customer_id": ["00042", "00042", "00042", "00042", "00042", "7", "00042", "7", "7"],
        "timestamp": [
            "2024-01-01T10:00:00",
            "2024-01-01T17:00:00+02:00",  # 15:00 UTC, same UTC day
            "2024-01-11",
            "2024-01-15",
            "2024-01-31T23:59:59",  # last second of the cutoff day: included
            "2024-01-20",
            "2024-02-10",  # after the cutoff
            "2024-03-01",  # last day of a 30-day window after 2024-01-31 (leap year)
            "2024-03-02",  # outside that window
        ],
        "amount": [10.0, 20.0, 30.0, -5.0, 40.0, 0.0, -3.0, 12.0, 99.0],
    }
)
CUTOFF = dt.date(2024, 1, 31)


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    tx, _ = prepare_transactions(RAW)
    return tx


@pytest.fixture(scope="module")
def features(transactions: pd.DataFrame) -> pd.DataFrame:
    return compute_features(transactions, CUTOFF).set_index("customer_id")


def test_frequent_customer_features(features: pd.DataFrame) -> None:
    row = features.loc["00042"]
    # purchases 10, 20 (Jan 1), 30 (Jan 11), 40 (Jan 31); refund -5 (Jan 15)
    assert row["n_transactions"] == 4
    assert row["n_purchase_days"] == 3
    assert row["gross_spend"] == 100.0
    assert row["net_spend"] == 95.0
    assert row["mean_amount"] == 25.0
    assert row["max_amount"] == 40.0
    assert row["std_amount"] == pytest.approx(math.sqrt(125.0))  # population std of 10, 20, 30, 40
    assert row["recency_days"] == 0.0
    assert row["tenure_days"] == 30.0
    # purchase days Jan 1, Jan 11, Jan 31: gaps 10 and 20
    assert row["ipt_mean_days"] == 15.0
    assert row["ipt_std_days"] == 5.0
    assert row["days_overdue"] == -15.0
    assert row["overdue_ratio"] == 0.0
    assert row["refund_count"] == 1.0
    assert row["refund_share"] == 0.05  # 5 / 100
    assert (row["btyd_frequency"], row["btyd_recency"], row["btyd_T"]) == (2.0, 30.0, 30.0)
    assert row["btyd_monetary"] == 35.0  # repeat days spend 30 and 40
    # windows end on the cutoff day: 7d = Jan 25..31, 30d = Jan 2..31
    assert (row["tx_7d"], row["spend_7d"]) == (1.0, 40.0)
    assert (row["tx_30d"], row["spend_30d"]) == (2.0, 65.0)  # 30 - 5 + 40
    assert (row["tx_90d"], row["spend_90d"]) == (4.0, 95.0)
    assert row["trend_tx_30_365"] == pytest.approx((2 / 30) / (4 / 365))


def test_one_time_zero_amount_customer(features: pd.DataFrame) -> None:
    row = features.loc["7"]
    assert (row["n_transactions"], row["n_purchase_days"], row["gross_spend"], row["net_spend"]) == (1, 1, 0, 0)
    assert (row["recency_days"], row["tenure_days"]) == (11.0, 11.0)
    assert math.isnan(row["ipt_mean_days"]) and math.isnan(row["days_overdue"])
    assert row["refund_share"] == 0.0
    assert (row["btyd_frequency"], row["btyd_recency"], row["btyd_T"], row["btyd_monetary"]) == (0, 0, 11, 0)


def test_ids_and_cutoff_column(transactions: pd.DataFrame) -> None:
    table = compute_features(transactions, CUTOFF)
    assert table["customer_id"].tolist() == ["00042", "7"]
    assert set(table["cutoff"]) == {CUTOFF}


def test_customer_unknown_before_first_transaction(transactions: pd.DataFrame) -> None:
    table = compute_features(transactions, dt.date(2024, 1, 19))
    assert table["customer_id"].tolist() == ["00042"]


def test_labels_hand_computed(transactions: pd.DataFrame) -> None:
    ids, labels = labels_at(index_transactions(transactions), CUTOFF, 30)
    got = dict(zip(ids, zip(labels["churned"].tolist(), labels["future_value"].tolist(), strict=True), strict=True))
    # 00042: only a refund in the window -> churned, value -3; 7: buys 12 on Mar 1 (day 30), Mar 2 is outside
    assert got == {"00042": (1, -3.0), "7": (0, 12.0)}


def test_cutoff_plan_stays_inside_as_of() -> None:
    plan = cutoff_plan("2024-12-31", 90, first_date="2023-01-01", step_days=30, max_cutoffs=4)
    assert plan == [dt.date(2024, 7, 4), dt.date(2024, 8, 3), dt.date(2024, 9, 2), dt.date(2024, 10, 2)]
    assert all(c + dt.timedelta(days=90) <= dt.date(2024, 12, 31) for c in plan)


def test_cutoff_plan_is_empty_when_no_cutoff_can_be_labeled() -> None:
    # V = 2024-02-01 - 90 days is before the first transaction + 30 days of history: nothing to label
    assert cutoff_plan("2024-02-01", 90, first_date="2024-01-01") == []
    # 30 days of history before V = as_of - H is enough by default, and the minimum is configurable
    assert cutoff_plan("2024-05-01", 90, first_date="2024-01-01") == [dt.date(2024, 2, 1)]
    assert cutoff_plan("2024-05-01", 90, first_date="2024-01-01", min_history_days=60) == []


def test_cutoff_plan_latest_is_exactly_as_of_minus_h_for_any_horizon() -> None:
    for horizon in (90, 91, 182):
        plan = cutoff_plan("2024-12-31", horizon, first_date="2023-06-01", step_days=30)
        v = dt.date(2024, 12, 31) - dt.timedelta(days=horizon)
        assert plan[-1] == v
        # the cutoff a whole horizon before V is in the plan: a strictly temporal validation exists
        assert v - dt.timedelta(days=horizon) in plan


def test_unsorted_input_gives_same_features(transactions: pd.DataFrame) -> None:
    shuffled = transactions.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = compute_features(transactions, CUTOFF).set_index("customer_id").sort_index()
    b = compute_features(shuffled, CUTOFF).set_index("customer_id").sort_index()
    pd.testing.assert_frame_equal(a, b)


def test_optional_columns_diversity() -> None:
    raw = RAW.assign(category=list("aabcbaaaa"), channel=["web", "web", "app", "web", "web", "app", "app", "web", "x"])
    tx, _ = prepare_transactions(raw)
    row = compute_features(tx, CUTOFF).set_index("customer_id").loc["00042"]
    assert row["n_categories"] == 2  # purchases in a, a, b, b (the refund's category c does not count)
    assert row["n_channels"] == 2  # web and app up to the cutoff (the later app row is excluded)
    assert np.isfinite(row["n_channels"])


# --- first purchase (acquisition) features -----------------------------------------------------------------------
# CRC-32 of the names (zlib.crc32(b"app") ...): the fixed codes every input gives these names
CODE = {"web": 365508689.0, "app": 3379458255.0, "store": 4283914359.0, "a": 3904355907.0, "b": 1908338681.0}
WITH_OPTIONAL = RAW.assign(
    channel=["web", "app", "app", "web", "web", "store", "app", "web", "x"],
    category=["a", "b", "a", "b", "b", "a", "a", "a", "a"],
    quantity=[1, 2, 3, -1, 4, 1, -1, 1, 1],
)


def test_label_codes_are_fixed_numbers() -> None:
    codes = label_codes(np.array(["web", "app", "", None, "web"], dtype=object))
    np.testing.assert_array_equal(codes, [CODE["web"], CODE["app"], np.nan, np.nan, CODE["web"]])


def test_first_purchase_features_hand_computed() -> None:
    tx, _ = prepare_transactions(WITH_OPTIONAL)
    table = compute_features(tx, CUTOFF).set_index("customer_id")
    row = table.loc["00042"]
    # first purchase day Jan 1: 10 (web, a, 1 item) and 20 (app, b, 2 items); second purchase day Jan 11
    assert row["first_basket_value"] == 30.0
    assert row["first_basket_items"] == 3.0
    assert row["first_channel_code"] == CODE["app"]  # the channel of the day's largest purchase (20)
    assert row["first_category_code"] == CODE["b"]
    assert row["days_to_second_purchase"] == 10.0
    one = table.loc["7"]
    # one purchase (0.00, store, a, 1 item) on Jan 20; the Mar 1 purchase is after the cutoff
    assert (one["first_basket_value"], one["first_basket_items"]) == (0.0, 1.0)
    assert (one["first_channel_code"], one["first_category_code"]) == (CODE["store"], CODE["a"])
    assert math.isnan(one["days_to_second_purchase"])
    # point in time: on Jan 10 the second purchase day (Jan 11) has not happened yet
    early = compute_features(tx, dt.date(2024, 1, 10)).set_index("customer_id").loc["00042"]
    assert math.isnan(early["days_to_second_purchase"]) and early["first_basket_value"] == 30.0


def test_first_purchase_features_without_optional_columns() -> None:
    tx, _ = prepare_transactions(RAW)
    table = compute_features(tx, CUTOFF)
    assert not {"first_channel_code", "first_category_code", "first_basket_items"} & set(table.columns)
    assert table.set_index("customer_id").loc["00042", "first_basket_value"] == 30.0


def test_first_label_tie_takes_the_smallest_code_whatever_the_row_order() -> None:
    rows = pd.DataFrame(
        {
            "customer_id": ["t", "t", "t"],
            "timestamp": ["2024-01-03T08:00", "2024-01-03T09:00", "2024-01-02T10:00"],
            "amount": [5.0, 5.0, -2.0],  # the refund on Jan 2 is not a purchase: the first purchase day is Jan 3
            "channel": ["store", "web", "app"],
        }
    )
    for frame in (rows, rows.iloc[::-1]):
        tx, _ = prepare_transactions(frame.reset_index(drop=True))
        row = compute_features(tx, CUTOFF).iloc[0]
        assert row["first_channel_code"] == min(CODE["store"], CODE["web"])
        assert row["first_basket_value"] == 10.0
