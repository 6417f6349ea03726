"""Invariants of the point-in-time kernel and labels, checked on random transaction logs (Hypothesis).

Logs carry the optional ``channel``, ``category`` and ``quantity`` columns, so every feature (the first purchase's
channel, category and items among them) is covered."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import prepare_transactions
from features.kernel import FIRST_PURCHASE_FEATURES, compute_features, index_transactions
from features.labels import labels_at

START = pd.Timestamp("2024-01-01", tz="UTC")
CUTOFF = dt.date(2024, 3, 1)
CUTOFF_OFFSET_DAYS = (pd.Timestamp(CUTOFF, tz="UTC") - START).days

transaction = st.tuples(
    st.sampled_from(["001", "01", "1", "A", "b"]),
    st.integers(min_value=0, max_value=120 * 24),  # hours after START
    st.one_of(st.floats(min_value=-50, max_value=500, allow_nan=False).map(lambda v: round(v, 2)), st.just(0.0)),
    st.sampled_from(["web", "app", "store", ""]),  # channel ("": missing)
    st.sampled_from(["a", "b", "c"]),  # category
    st.integers(min_value=1, max_value=5),  # quantity
)
logs = st.lists(transaction, min_size=1, max_size=40)
Row = tuple[str, int, float, str, str, int]


def frame(rows: list[Row], id_prefix: str = "t") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": [START + pd.Timedelta(hours=r[1]) for r in rows],
            "amount": [r[2] for r in rows],
            "transaction_id": [f"{id_prefix}{i}" for i in range(len(rows))],
            "channel": [r[3] for r in rows],
            "category": [r[4] for r in rows],
            "quantity": [r[5] for r in rows],
        }
    )


def features_of(raw: pd.DataFrame) -> pd.DataFrame:
    tx, _ = prepare_transactions(raw)
    return compute_features(tx, CUTOFF).set_index("customer_id").sort_index()


def before_cutoff(rows):
    return [r for r in rows if r[1] < (CUTOFF_OFFSET_DAYS + 1) * 24]


@settings(max_examples=60, deadline=None)
@given(logs, logs)
def test_transactions_after_cutoff_change_nothing(rows, later) -> None:
    base = before_cutoff(rows)
    if not base:
        return
    future = [(c, (CUTOFF_OFFSET_DAYS + 1) * 24 + h, *rest) for c, h, *rest in later]
    pd.testing.assert_frame_equal(features_of(frame(base)), features_of(frame(base + future)))


@settings(max_examples=60, deadline=None)
@given(logs, st.randoms(use_true_random=False))
def test_row_order_changes_nothing(rows, rnd) -> None:
    if not before_cutoff(rows):
        return
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    pd.testing.assert_frame_equal(features_of(frame(rows)), features_of(frame(shuffled)))


@settings(max_examples=60, deadline=None)
@given(logs, st.data())
def test_duplicated_transaction_id_changes_nothing(rows, data) -> None:
    if not before_cutoff(rows):
        return
    raw = frame(rows)
    picks = data.draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=5))
    with_dupes = pd.concat([raw, raw.iloc[picks]], ignore_index=True)
    pd.testing.assert_frame_equal(features_of(raw), features_of(with_dupes))


@settings(max_examples=60, deadline=None)
@given(logs, logs, st.integers(min_value=1, max_value=60))
def test_labels_never_read_before_cutoff(rows, other_past, horizon) -> None:
    """Changing what happened on or before the cutoff (same customers present) leaves labels unchanged."""
    past = before_cutoff(rows)
    future = [r for r in rows if r not in past]
    if not past:
        return
    # another history for the same customers: same first rows per customer, plus extra past rows
    present = {r[0] for r in past}
    extra = [(c, min(h, CUTOFF_OFFSET_DAYS * 24), a * 3 + 1, *rest) for c, h, a, *rest in other_past if c in present]

    def labels(rows_):
        tx, _ = prepare_transactions(frame(rows_))
        ids, lab = labels_at(index_transactions(tx), CUTOFF, horizon)
        order = np.argsort(ids)
        return ids[order].tolist(), lab["churned"][order].tolist(), lab["future_value"][order].tolist()

    assert labels(past + future) == labels(past + extra + future)


FIRST_DAY_FEATURES = [f for f in FIRST_PURCHASE_FEATURES if f != "days_to_second_purchase"]


@settings(max_examples=60, deadline=None)
@given(logs, logs)
def test_later_days_never_change_what_the_first_purchase_day_says(rows, later) -> None:
    """Rows on days after a customer's first purchase day (up to the cutoff) leave its first-day features as they
    were; the first purchase day itself is the same, so only ``days_to_second_purchase`` may change."""
    base = before_cutoff(rows)
    if not base:
        return
    first_day: dict[str, int] = {}  # each buyer's first purchase day (days after START)
    for c, h, a, *_ in base:
        if a >= 0:
            first_day[c] = min(first_day.get(c, h // 24), h // 24)
    last_hour = (CUTOFF_OFFSET_DAYS + 1) * 24 - 1
    added = [
        (c, min((first_day[c] + 1) * 24 + h % (24 * 30), last_hour), *rest)
        for c, h, *rest in later
        if c in first_day and first_day[c] < CUTOFF_OFFSET_DAYS
    ]
    before, after = features_of(frame(base)), features_of(frame(base + added))
    buyers = sorted(first_day)
    pd.testing.assert_frame_equal(before.loc[buyers, FIRST_DAY_FEATURES], after.loc[buyers, FIRST_DAY_FEATURES])
