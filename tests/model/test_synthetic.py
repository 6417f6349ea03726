"""The synthetic generator: determinism, contract schema, ordering, noise shares and the realism it promises."""

from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from features import synthetic
from features.contract import prepare_transactions
from features.kernel import index_transactions
from features.sources import read_table
from features.synthetic import COLUMNS, GeneratorConfig, generate_transactions, write_transactions

N_CUSTOMERS = 20_000
DAYS = 730


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(N_CUSTOMERS, DAYS, seed=7)


@pytest.fixture(scope="module")
def unique(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("transaction_id")


@pytest.fixture(scope="module")
def purchases(unique: pd.DataFrame) -> pd.DataFrame:
    return unique[unique["amount"] >= 0]


def _digest(frame: pd.DataFrame) -> str:
    """A content hash of the whole frame: values, dtypes, column names and index."""
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    h.update(repr(list(frame.dtypes.astype(str).items())).encode())
    return h.hexdigest()


def test_same_arguments_same_frame_and_seed_matters():
    a = generate_transactions(3_000, 365, seed=1)
    b = generate_transactions(3_000, 365, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert _digest(a) == _digest(b)
    c = generate_transactions(3_000, 365, seed=2)
    assert len(a) != len(c) or not a["amount"].equals(c["amount"])
    assert _digest(a) != _digest(c)


def test_output_does_not_depend_on_threads(monkeypatch):
    n = 2 * synthetic._BLOCK + 10  # three random streams
    threaded = generate_transactions(n, 60, seed=3)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 1)
    serial = generate_transactions(n, 60, seed=3)
    pd.testing.assert_frame_equal(threaded, serial)


def test_start_date_shifts_the_calendar():
    frame = generate_transactions(500, 90, seed=0, start="2024-03-01")
    assert frame["timestamp"].min() >= pd.Timestamp("2024-03-01", tz="UTC")
    assert frame["timestamp"].max() < pd.Timestamp("2024-05-30", tz="UTC")


def test_schema(frame: pd.DataFrame):
    assert tuple(frame.columns) == COLUMNS
    for name in ("customer_id", "transaction_id", "category", "channel"):
        assert frame[name].dtype == "str", name
    assert frame["timestamp"].dtype == "datetime64[ns, UTC]"
    assert frame["amount"].dtype == np.float64
    assert frame["quantity"].dtype == np.int64
    assert frame.notna().all().all()
    assert (frame["quantity"] >= 1).all()
    cents = frame["amount"].to_numpy() * 100
    assert np.allclose(cents, np.round(cents), atol=1e-6)
    assert set(frame["channel"].unique()) == {"web", "store", "app"}
    assert set(frame["category"].unique()) == set(synthetic.CATEGORIES)
    assert len(synthetic.CATEGORIES) == 6
    seconds_of_day = (frame["timestamp"] - frame["timestamp"].dt.floor("D")).dt.total_seconds()
    assert seconds_of_day.nunique() > 1_000  # real times of day, not midnights
    assert frame["timestamp"].min() >= pd.Timestamp("2023-01-01", tz="UTC")
    assert frame["timestamp"].max() < pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(days=DAYS)


def test_ids_are_zero_padded_strings(frame: pd.DataFrame):
    assert frame["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert frame["transaction_id"].str.fullmatch(r"T\d{9}").all()
    assert "C0000042" in set(frame["customer_id"])
    assert frame["customer_id"].nunique() == N_CUSTOMERS  # every customer buys at least once


def test_sorted_by_customer_then_time_with_duplicates_next_to_original(frame: pd.DataFrame):
    cust = frame["customer_id"]
    assert cust.is_monotonic_increasing
    same = (cust.to_numpy()[1:] == cust.to_numpy()[:-1]).astype(bool)
    ts = frame["timestamp"].to_numpy()
    assert (ts[1:][same] >= ts[:-1][same]).all()
    dup = frame["transaction_id"].duplicated().to_numpy()
    assert dup.any() and not dup[0]
    original = np.flatnonzero(dup) - 1
    assert not dup[original].any()
    pd.testing.assert_frame_equal(
        frame.iloc[np.flatnonzero(dup)].reset_index(drop=True), frame.iloc[original].reset_index(drop=True)
    )
    # the feature kernel's fast path keeps the order as it is
    prep = index_transactions(frame)
    assert (np.diff(prep.code) >= 0).all()


def test_noise_shares(frame: pd.DataFrame, unique: pd.DataFrame):
    dup_share = 1 - len(unique) / len(frame)
    assert 0.001 < dup_share < 0.004
    refund_share = float((unique["amount"] < 0).mean())
    assert 0.02 < refund_share < 0.04
    zero = int((unique["amount"] == 0).sum())
    assert 0 < zero < 0.005 * len(unique)
    _, report = prepare_transactions(frame)
    assert report.rule_counts["duplicate_line"] == len(frame) - len(unique)
    assert report.rows_valid == len(unique)
    assert 0.01 < report.refund_share < 0.08


def test_refunds_mirror_an_earlier_purchase(unique: pd.DataFrame, purchases: pd.DataFrame):
    refunds = unique[unique["amount"] < 0]
    pairs = refunds.merge(purchases, on=["customer_id", "category", "channel"], suffixes=("", "_buy"))
    pairs = pairs[(pairs["timestamp_buy"] < pairs["timestamp"]) & (pairs["amount_buy"] >= -pairs["amount"])]
    assert pairs["transaction_id"].nunique() == len(refunds)
    assert not set(refunds["transaction_id"]) & set(purchases["transaction_id"])


def test_frequency_one_time_buyers_and_churn(purchases: pd.DataFrame):
    per_customer = purchases.groupby("customer_id").size()
    assert 14 < per_customer.mean() < 28
    assert per_customer.quantile(0.99) > 5 * per_customer.median()  # heavy tail
    assert 0.25 < (per_customer == 1).mean() < 0.45
    end = pd.Timestamp("2023-01-01", tz="UTC") + pd.Timedelta(days=DAYS)
    last = purchases.groupby("customer_id")["timestamp"].max()
    assert 0.40 < (last < end - pd.Timedelta(days=90)).mean() < 0.75


def test_revenue_is_concentrated(unique: pd.DataFrame):
    revenue = unique.groupby("customer_id")["amount"].sum().sort_values(ascending=False)
    top = revenue.iloc[: len(revenue) // 5].sum() / revenue.sum()
    assert 0.55 < top < 0.85


def test_weekly_and_yearly_seasonality(purchases: pd.DataFrame):
    weekday = purchases["timestamp"].dt.day_of_week.value_counts(normalize=True)
    assert weekday[5] > 1.2 * weekday[[0, 1, 2, 3]].max()  # Saturday beats every Monday..Thursday
    assert weekday[[5, 6]].sum() > 2 / 7 * 1.1
    daily = purchases.groupby(purchases["timestamp"].dt.floor("D")).size()
    month = daily.index.month
    # compare with the surrounding months, so that the growing customer base does not mask the peak
    holiday = daily[(month >= 11)].mean()
    autumn = daily[(month >= 9) & (month <= 10)].mean()
    january = daily[month == 1].mean()
    assert holiday > 1.2 * autumn
    assert holiday > 1.2 * january


def test_customers_join_over_time(purchases: pd.DataFrame):
    first = purchases.groupby("customer_id")["timestamp"].min()
    quarter = ((first - pd.Timestamp("2023-01-01", tz="UTC")).dt.days // 91).clip(upper=7)
    joins = quarter.value_counts().sort_index()
    assert len(joins) == 8 and (joins > 0.05 * N_CUSTOMERS).all()
    assert joins.iloc[-2:].sum() > 1.3 * joins.iloc[:2].sum()  # acquisition grows


def test_drift_in_purchases_per_active_customer(purchases: pd.DataFrame):
    month = purchases["timestamp"].dt.year * 12 + purchases["timestamp"].dt.month
    per_month = purchases.groupby(month).agg(tx=("amount", "size"), active=("customer_id", "nunique"))
    rate = per_month["tx"] / per_month["active"]
    first_year, last_year = rate.iloc[:12].mean(), rate.iloc[-12:].mean()
    assert abs(last_year / first_year - 1) > 0.05
    basket = purchases.groupby(purchases["timestamp"].dt.year)["amount"].mean()
    assert basket.iloc[-1] > basket.iloc[0] * 1.03


def test_app_customers_churn_less(purchases: pd.DataFrame):
    by_customer = purchases.groupby("customer_id")
    channel_counts = purchases.groupby(["customer_id", "channel"]).size().unstack(fill_value=0)
    primary = channel_counts.idxmax(axis=1)
    joined_early = by_customer["timestamp"].min() < pd.Timestamp("2024-01-01", tz="UTC")
    lapsed = by_customer["timestamp"].max() < pd.Timestamp("2024-10-01", tz="UTC")
    lapse_rate = lapsed[joined_early].groupby(primary[joined_early]).mean()
    assert lapse_rate["app"] < lapse_rate["web"] - 0.03
    assert lapse_rate["app"] < lapse_rate["store"] - 0.03


def test_overrides_and_config():
    clean = generate_transactions(2_000, 200, seed=5, refund_rate=0.0, duplicate_rate=0.0, zero_amount_rate=0.0)
    assert (clean["amount"] > 0).all()
    assert clean["transaction_id"].is_unique
    with pytest.raises(TypeError):
        generate_transactions(10, 30, not_a_field=1)
    fields = {f.name: f.default for f in dataclasses.fields(GeneratorConfig)}
    assert fields["refund_rate"] == pytest.approx(0.03, abs=0.005)
    assert fields["duplicate_rate"] == pytest.approx(0.002)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_keeps_ids(tmp_path, suffix):
    frame = generate_transactions(100, 120, seed=11)
    path = write_transactions(frame, tmp_path / "nested" / f"tx{suffix}")
    assert path.exists()
    back = read_table(path)
    assert list(back.columns) == list(COLUMNS)
    assert "C0000042" in set(back["customer_id"])
    assert back["transaction_id"].str.match(re.compile(r"T\d{9}$")).all()
    tx, report = prepare_transactions(back)
    assert report.rows_read == len(frame)
    assert report.rows_valid == frame["transaction_id"].nunique()
    original, _ = prepare_transactions(frame)
    pd.testing.assert_series_equal(tx["customer_id"], original["customer_id"])
    pd.testing.assert_series_equal(tx["timestamp"], original["timestamp"])
    np.testing.assert_allclose(tx["amount"].to_numpy(), original["amount"].to_numpy())
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame)


def test_write_rejects_other_extensions(tmp_path):
    with pytest.raises(ValueError):
        write_transactions(generate_transactions(5, 30), tmp_path / "tx.json")


# --- scenarios (docs/quality.md) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(synthetic.SCENARIOS))
def test_scenarios_are_deterministic(name):
    a = generate_transactions(800, 200, seed=4, scenario=name)
    b = generate_transactions(800, 200, seed=4, scenario=name)
    pd.testing.assert_frame_equal(a, b)
    assert _digest(a) == _digest(b)
    c = generate_transactions(800, 200, seed=5, scenario=name)
    assert _digest(a) != _digest(c)
    assert tuple(a.columns) == COLUMNS


def test_default_scenario_is_todays_generator():
    plain = generate_transactions(1_000, 120, seed=3)
    named = generate_transactions(1_000, 120, seed=3, scenario="default", start="2023-01-01")
    assert _digest(plain) == _digest(named)
    preset = synthetic.SCENARIOS["default"]
    assert (preset.days, preset.start, preset.overrides) == (730, "2023-01-01", {})


def test_unknown_scenario():
    with pytest.raises(KeyError, match="unknown scenario 'nope'"):
        generate_transactions(10, 30, scenario="nope")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_transactions(3_000, seed=2, scenario="cohort")


@pytest.fixture(scope="module")
def seasonal() -> pd.DataFrame:
    return generate_transactions(4_000, seed=2, scenario="seasonal")


def test_cohort_is_one_ageing_cohort(cohort: pd.DataFrame):
    preset = synthetic.SCENARIOS["cohort"]
    start = pd.Timestamp(preset.start, tz="UTC")
    assert preset.days >= 365 + 182  # a 12-month history and a 182-day horizon fit
    assert cohort["timestamp"].max() < start + pd.Timedelta(days=preset.days)
    purchases = cohort[cohort["amount"] >= 0].drop_duplicates("transaction_id")
    day = (purchases["timestamp"] - start).dt.days
    first = day.groupby(purchases["customer_id"]).min()
    assert first.max() < 84  # no first purchase after week 12
    assert first.nunique() > 60  # spread over the 12 weeks
    # purchases per cohort customer fall as the cohort ages (quarter by quarter after acquisition)
    quarter = (day // 91).clip(upper=5)
    per_quarter = quarter.value_counts().sort_index()
    assert (np.diff(per_quarter.iloc[1:5].to_numpy()) < 0).all()
    assert per_quarter.iloc[4] < 0.6 * per_quarter.iloc[1]
    # the real shapes: most customers buy on a single day, and most are gone after a year
    as_of = 364
    before = purchases[day <= as_of]
    single_day = day[day <= as_of].groupby(before["customer_id"]).nunique() == 1
    assert 0.45 < single_day.mean() < 0.65
    later = set(purchases.loc[(day > as_of) & (day <= as_of + 182), "customer_id"])
    churn = 1 - before["customer_id"].drop_duplicates().isin(later).mean()
    assert 0.7 < churn < 0.88


def test_seasonal_has_the_wholesalers_shapes(seasonal: pd.DataFrame):
    preset = synthetic.SCENARIOS["seasonal"]
    assert preset.days >= 365 + 90
    assert seasonal["timestamp"].min() >= pd.Timestamp(preset.start, tz="UTC")
    # ~25 % of rows without a customer id
    no_id = (seasonal["customer_id"] == "").mean()
    assert 0.22 < no_id < 0.28
    known = seasonal[seasonal["customer_id"] != ""]
    assert known["customer_id"].str.fullmatch(r"\d+\.0").all()  # ids exported as floats
    unique = known.drop_duplicates("transaction_id")
    # cancellations: separate negative invoices with a "C" prefix, ~15 % of invoices and ~6 % of spend
    negative = unique["amount"] < 0
    assert unique.loc[negative, "transaction_id"].str.startswith("C").all()
    assert not unique.loc[~negative, "transaction_id"].str.startswith("C").any()
    assert 0.10 < negative.mean() < 0.20
    refunded = -unique.loc[negative, "amount"].sum() / unique.loc[~negative, "amount"].sum()
    assert 0.03 < refunded < 0.10
    # several invoices per customer on one day
    per_day = unique[~negative].groupby(["customer_id", unique["timestamp"].dt.floor("D")]).size()
    assert (per_day > 1).mean() > 0.03
    # heavy tail: the top 1 % of customers hold ~30 % of spend
    spend = unique.groupby("customer_id")["amount"].sum().sort_values(ascending=False)
    top1 = spend.iloc[: len(spend) // 100].sum() / spend.sum()
    assert 0.15 < top1 < 0.5
    # a Nov-Dec peak: spend per active customer at least twice the summer's
    month = unique["timestamp"].dt.month
    monthly = unique.groupby(unique["timestamp"].dt.tz_convert(None).dt.to_period("M")).agg(
        spend=("amount", "sum"), active=("customer_id", "nunique")
    )
    per_active = monthly["spend"] / monthly["active"]
    m = monthly.index.month
    assert per_active[m >= 11].mean() >= 2.0 * per_active[(m >= 6) & (m <= 8)].mean()
    assert month.isin([11, 12]).any()


def test_seasonal_rows_without_id_are_counted_and_dropped_by_the_contract(seasonal: pd.DataFrame):
    tx, report = prepare_transactions(seasonal)
    assert report.rule_counts["null_customer_id"] == int((seasonal["customer_id"] == "").sum())
    assert (tx["customer_id"] != "").all()
    assert report.refunds > 0
