"""features.event_features through the kernel: exact features of a hand-made event log, events of unknown customers
counted, the no-events path unchanged, Hypothesis invariants (events after the cutoff change nothing, nor does row
order) and the event generator's contract (deterministic, strict-clean events, only later purchases removed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import ContractError, prepare_transactions
from features.event_features import EVENT_FEATURE_DESCRIPTIONS, EVENT_FEATURES, require_events, uses_events
from features.events import KNOWN_EVENT_TYPES, prepare_events
from features.kernel import (
    BASE_FEATURES,
    FEATURE_DESCRIPTIONS,
    compute_features,
    feature_columns,
    index_transactions,
)
from features.synthetic import generate_transactions
from features.synthetic_events import generate_events

CUTOFF = dt.date(2024, 3, 31)
TRANSACTIONS = [
    ("a", "2024-01-01", 10.0),
    ("a", "2024-03-01", 20.0),
    ("b", "2024-03-20", 5.0),
    ("d", "2024-04-10", 1.0),
]
EVENTS = [
    ("a", "2024-01-10T08:00", "complaint", None),  # D - 81: in 90 days, not in 30
    ("a", "2024-03-15T23:59", "complaint", None),  # D - 16
    ("a", "2024-03-20", "complaint_resolved", None),
    ("a", "2024-04-05", "complaint", None),  # after the cutoff
    ("a", "2024-01-05", "rating", 5),
    ("a", "2024-02-01", "rating", 3),
    ("a", "2024-03-10T18:00", "rating", 1),  # two ratings on the latest rating day: their mean
    ("a", "2024-03-10T09:00", "rating", 2),
    ("a", "2024-04-02", "rating", 5),  # after the cutoff
    ("a", "2023-12-01", "support_contact", None),  # outside 90 days
    ("a", "2024-03-30", "support_contact", None),
    ("a", "2024-01-01", "email_open", None),  # D - 90: outside the trailing 90 days (days D-89 .. D)
    ("a", "2024-03-25", "email_open", None),
    ("a", "2024-03-26", "email_click", None),
    ("a", "2024-04-01", "unsubscribe", None),  # after the cutoff
    ("b", "2024-03-01", "complaint", None),  # D - 30: outside the trailing 30 days
    ("b", "2024-03-02", "complaint_resolved", None),
    ("b", "2024-03-03", "complaint_resolved", None),  # more resolutions than complaints: 0 unresolved
    ("b", "2024-03-05", "rating", None),  # a rating without a value is no score
    ("b", "2024-02-01", "unsubscribe", None),
    ("b", "2024-03-06", "nps", 9),  # a type the features do not read
    ("c", "2024-03-01", "complaint", None),  # no transaction at all: counted, left out
    ("c", "2024-03-02", "rating", 1),
    ("d", "2024-03-01", "complaint", None),  # a customer whose first transaction is after the cutoff
]
EXPECTED = {
    "a": {
        "complaints_30d": 1,
        "complaints_90d": 2,
        "unresolved_complaints": 1,
        "days_since_last_complaint": 16,
        "support_contacts_90d": 1,
        "last_rating": 1.5,
        "mean_rating": 2.75,
        "rating_trend": 1.5 - 4.0,
        "email_opens_90d": 1,
        "email_clicks_90d": 1,
        "days_since_last_engagement": 5,
        "unsubscribed": 0,
    },
    "b": {
        "complaints_30d": 0,
        "complaints_90d": 1,
        "unresolved_complaints": 0,
        "days_since_last_complaint": 30,
        "support_contacts_90d": 0,
        "last_rating": np.nan,
        "mean_rating": np.nan,
        "rating_trend": np.nan,
        "email_opens_90d": 0,
        "email_clicks_90d": 0,
        "days_since_last_engagement": np.nan,
        "unsubscribed": 1,
    },
}


def tx_frame(rows=TRANSACTIONS) -> pd.DataFrame:
    raw = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    return prepare_transactions(raw)[0]


def event_frame(rows=EVENTS) -> pd.DataFrame:
    raw = pd.DataFrame(rows, columns=["customer_id", "timestamp", "type", "value"])
    return prepare_events(raw.astype({"value": "float64"}), allow_empty=True)[0]


def test_hand_fixture() -> None:
    prep = index_transactions(tx_frame(), events=event_frame())
    features = compute_features(prep, CUTOFF).set_index("customer_id")
    assert features.index.tolist() == ["a", "b"]  # d has no transaction by the cutoff, c none at all
    for customer, expected in EXPECTED.items():
        found = features.loc[customer, list(EVENT_FEATURES)].to_numpy(dtype=float)
        np.testing.assert_array_equal(found, [expected[name] for name in EVENT_FEATURES], err_msg=customer)
    assert (prep.events.unmatched_events, prep.events.unmatched_customers) == (2, 1)
    assert len(prep.events) == len(EVENTS) - 2


def test_event_features_are_described_and_optional() -> None:
    assert set(EVENT_FEATURES) <= set(FEATURE_DESCRIPTIONS)
    assert all(FEATURE_DESCRIPTIONS[name] == EVENT_FEATURE_DESCRIPTIONS[name] for name in EVENT_FEATURES)
    assert not set(EVENT_FEATURES) & set(BASE_FEATURES)
    assert feature_columns(True, True, True, has_events=True) == [*feature_columns(True, True, True), *EVENT_FEATURES]
    assert set(KNOWN_EVENT_TYPES) >= {"complaint", "complaint_resolved", "rating", "unsubscribe"}


def test_a_model_that_reads_events_is_not_scored_without_them() -> None:
    with_events, without = feature_columns(has_events=True), feature_columns()
    assert uses_events(with_events) and not uses_events(without)
    require_events(without, events_given=False)
    require_events(with_events, events_given=True)
    with pytest.raises(ContractError, match=r"customer-event features \(complaints_30d, complaints_90d, .*--events"):
        require_events(with_events, events_given=False)


def test_without_events_the_kernel_is_unchanged() -> None:
    tx = tx_frame()
    plain = compute_features(index_transactions(tx), CUTOFF)
    assert list(plain.columns) == ["customer_id", "cutoff", *feature_columns()]
    assert index_transactions(tx).events is None
    with_events = compute_features(index_transactions(tx, events=event_frame()), CUTOFF)
    pd.testing.assert_frame_equal(plain, with_events[list(plain.columns)])
    empty = compute_features(index_transactions(tx, events=event_frame([])), CUTOFF)
    assert (empty[["complaints_90d", "unsubscribed"]].to_numpy() == 0).all()
    assert empty["last_rating"].isna().all()


START = pd.Timestamp("2024-01-01", tz="UTC")
CUTOFF_HOURS = ((pd.Timestamp(CUTOFF, tz="UTC") - START).days + 1) * 24  # the first hour after the cutoff day
event = st.tuples(
    st.sampled_from(["a", "b", "c", "x"]),
    st.integers(min_value=0, max_value=CUTOFF_HOURS - 1),
    st.sampled_from([*KNOWN_EVENT_TYPES, "other"]),
    st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
)
event_logs = st.lists(event, max_size=40)
PURCHASES = [("a", "2024-01-03", 5.0), ("b", "2024-02-10", 7.0), ("c", "2024-03-30", 1.0), ("a", "2024-03-02", 2.0)]


def features_with(rows) -> pd.DataFrame:
    events = event_frame([(c, START + pd.Timedelta(hours=h), kind, v) for c, h, kind, v in rows])
    prep = index_transactions(tx_frame(PURCHASES), events=events)
    return compute_features(prep, CUTOFF).set_index("customer_id").sort_index()


@settings(max_examples=40, deadline=None)
@given(event_logs, event_logs)
def test_events_after_the_cutoff_change_nothing(rows, later) -> None:
    future = [(c, CUTOFF_HOURS + h, kind, v) for c, h, kind, v in later]
    pd.testing.assert_frame_equal(features_with(rows), features_with(rows + future))


@settings(max_examples=40, deadline=None)
@given(event_logs, st.randoms(use_true_random=False))
def test_row_order_changes_nothing(rows, rnd) -> None:
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    pd.testing.assert_frame_equal(features_with(rows), features_with(shuffled))


@pytest.fixture(scope="module")
def generated():
    raw = generate_transactions(300, 400, seed=5)
    return raw, generate_events(raw, seed=5)


def test_generated_events_are_deterministic_and_clean(generated) -> None:
    raw, (transactions, events) = generated
    again, events_again = generate_events(raw, seed=5)
    pd.testing.assert_frame_equal(transactions, again)
    pd.testing.assert_frame_equal(events, events_again)
    assert not generate_events(raw, seed=6)[1].equals(events)
    _, report = prepare_events(events, strict=True)
    assert not report.unknown_types and report.ratings_without_value == 0
    assert set(events["customer_id"]) <= set(raw["customer_id"])
    ratings = events.loc[events["type"] == "rating", "value"]
    assert ratings.between(1, 5).all() and (ratings == ratings.round()).all()


def test_generated_effect_only_removes_later_transactions(generated) -> None:
    raw, (transactions, events) = generated
    assert list(transactions.columns) == list(raw.columns) and len(transactions) < len(raw)
    key = ["customer_id", "transaction_id", "timestamp", "amount"]
    merged = raw.merge(transactions[key].drop_duplicates().assign(kept=True), on=key, how="left")
    removed = merged[merged["kept"].isna()]
    for customer, rows in removed.groupby("customer_id"):
        kept_times = transactions.loc[transactions["customer_id"] == customer, "timestamp"]
        assert kept_times.empty or kept_times.max() < rows["timestamp"].min()  # a departure cuts the tail only
        mine = events[(events["customer_id"] == customer) & events["type"].isin(["complaint", "rating"])]
        assert (mine["timestamp"] < rows["timestamp"].min()).any(), "every departure follows a complaint or rating"
