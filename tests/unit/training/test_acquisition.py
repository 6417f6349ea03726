"""The new-customer forecast on a hand-made log: every figure below is worked out in the comments."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from acquisition_util import AS_OF, acquisition_log

from features.contract import ContractError, prepare_transactions
from features.kernel import index_transactions
from training.acquisition import COLUMNS, acquisition_forecast, forecast_json

Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    tx, _ = prepare_transactions(acquisition_log())
    return tx


@pytest.fixture(scope="module")
def forecast(transactions: pd.DataFrame) -> pd.DataFrame:
    return acquisition_forecast(transactions, AS_OF, 30, "channel", cohort_days=30).set_index("group")


def test_columns_and_groups(forecast: pd.DataFrame) -> None:
    assert ["group", *forecast.columns] == list(COLUMNS)
    # most customers first, ties by name, all last
    assert forecast.index.tolist() == ["web", "(missing)", "app", "store", "all"]
    assert forecast["customers"].tolist() == [2, 1, 1, 1, 5]
    assert (forecast["acquired_from"] == dt.date(2024, 5, 2)).all()
    assert (forecast["acquired_to"] == dt.date(2024, 5, 31)).all()


def test_web_cohort_hand_computed(forecast: pd.DataFrame) -> None:
    web = forecast.loc["web"]
    # A: first day 150, next 30 - 10 = 20, value 170; B: 40 + 60 = 100
    assert (web["first_purchase_value"], web["next_value"], web["value"]) == (95.0, 40.0, 135.0)
    assert web["repeat_rate"] == 1.0 and web["cohort_share"] == 0.4
    # sample sd of (170, 100) = 35 * sqrt(2); standard error = 35
    assert web["value_low"] == pytest.approx(135 - Z95 * 35, rel=1e-12)
    assert web["value_high"] == pytest.approx(135 + Z95 * 35, rel=1e-12)


def test_single_customers_and_missing_channel(forecast: pd.DataFrame) -> None:
    assert (forecast.loc["app", "value"], forecast.loc["app", "repeat_rate"]) == (20.0, 0.0)
    assert forecast.loc["store", "first_purchase_value"] == 7.0  # 10 - 3 on the acquisition day
    assert forecast.loc["(missing)", "value"] == 8.0
    assert math.isnan(forecast.loc["app", "value_low"])  # one customer: no interval


def test_all_row_hand_computed(forecast: pd.DataFrame) -> None:
    row = forecast.loc["all"]
    # values 170, 100, 20, 7, 8: mean 61, sample variance 20808 / 4 = 5202
    assert row["value"] == 61.0
    assert (row["first_purchase_value"], row["next_value"], row["repeat_rate"]) == (45.0, 16.0, 0.4)
    half = Z95 * math.sqrt(5202 / 5)
    assert (row["value_low"], row["value_high"]) == pytest.approx((61 - half, 61 + half), rel=1e-12)


def test_365_day_cohort(forecast: pd.DataFrame) -> None:
    # H alone: 10 + 5 (Jun 10, 2024 is day 361 after Jun 15, 2023); Jun 20, 2024 is day 371
    assert forecast.loc["all", "customers_365d"] == 1 and forecast.loc["all", "value_365d"] == 15.0
    assert forecast.loc["web", "value_365d"] == 15.0 and forecast.loc["app", "customers_365d"] == 0
    assert math.isnan(forecast.loc["app", "value_365d"])
    assert "2023-06-02 .. 2023-07-01" in forecast.attrs["caveat"]


def test_same_from_the_kernel_index_and_json(transactions: pd.DataFrame, forecast: pd.DataFrame) -> None:
    again = acquisition_forecast(index_transactions(transactions), AS_OF, 30, cohort_days=30)
    pd.testing.assert_frame_equal(forecast, again.set_index("group"))
    document = json.loads(forecast_json(again))
    assert (document["as_of"], document["horizon_days"], document["by"]) == ("2024-06-30", 30, "channel")
    assert document["rows"][0] == {"group": "web", "customers": 2, **document["rows"][0]}
    assert document["rows"][0]["acquired_from"] == "2024-05-02" and document["rows"][2]["value_low"] is None


def test_without_the_column_the_forecast_is_for_everyone(transactions: pd.DataFrame) -> None:
    table = acquisition_forecast(transactions.drop(columns=["channel"]), AS_OF, 30, cohort_days=30)
    assert table["group"].tolist() == ["all"] and table["value"].iloc[0] == 61.0
    assert "no channel column" in table.attrs["caveat"]
    by_all = acquisition_forecast(transactions, AS_OF, 30, "all", cohort_days=30)
    np.testing.assert_array_equal(by_all["value"], table["value"])


def test_bad_input_is_one_sentence(transactions: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match="by must be one of channel, category, all"):
        acquisition_forecast(transactions, AS_OF, 30, "region")
    with pytest.raises(ContractError, match="at least 1 day"):
        acquisition_forecast(transactions, AS_OF, 0)
    with pytest.raises(ContractError, match=r"nobody was acquired between 2023-01-02 and 2023-04-01"):
        acquisition_forecast(transactions, dt.date(2023, 5, 1), 30)
