"""features.contract on hand-made frames: every row is valid or counted under the first rule it breaks, the lines
of an order are summed, and float-like ids are normalised only on request. Counts and sums are worked out by hand
from the rows below (the rule order is the module docstring's)."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import (
    MIN_DATE,
    RULES,
    ContractError,
    combine_reports,
    prepare_transactions,
    row_rules,
)

AS_OF = dt.date(2024, 1, 31)

# (customer_id, timestamp, amount, transaction_id) -> the rule each row breaks ("" = a valid line)
ROWS = [
    ("a", "2024-01-05", 10.0, "t1", ""),
    (None, "2024-01-05", 1.0, "x1", "null_customer_id"),
    ("   ", "garbage", 1.0, "x2", "null_customer_id"),  # null id wins over the bad timestamp (first rule)
    ("b", "not a date", 1.0, "x3", "bad_timestamp"),
    ("b", "1980-06-01", 1.0, "x4", "implausible_timestamp"),  # before MIN_DATE 1990-01-01
    ("b", "2024-01-06", math.nan, "x5", "bad_amount"),
    ("b", "2024-01-06", math.inf, "x6", "bad_amount"),
    ("a", "2024-01-05", 10.0, "t1", "duplicate_line"),  # row 0 again, every column equal
    ("a", "2024-02-10", 4.0, "t3", "after_as_of"),
    ("a", "2024-01-08T09:00:00", 5.0, "t2", ""),
    ("a", "2024-01-07T18:30:00", 2.5, "t2", ""),  # a second line of order t2, earlier in the day before
    ("c", "2024-01-20", -3.0, "t4", ""),  # a refund line
]


def frame(rows=ROWS) -> pd.DataFrame:
    return pd.DataFrame([r[:4] for r in rows], columns=["customer_id", "timestamp", "amount", "transaction_id"])


def test_each_row_is_named_by_the_first_rule_it_breaks() -> None:
    rules = row_rules(frame(), as_of=AS_OF, min_date=MIN_DATE)
    assert rules.tolist() == [r[4] for r in ROWS]


def test_rule_counts_and_line_counts_add_up_to_the_rows_read() -> None:
    _, report = prepare_transactions(frame(), as_of=AS_OF, min_date=MIN_DATE)
    assert report.rule_counts == {
        "null_customer_id": 2,
        "bad_timestamp": 1,
        "implausible_timestamp": 1,
        "bad_amount": 2,
        "duplicate_line": 1,
        "after_as_of": 1,
    }
    assert (report.rows_read, report.rows_valid) == (12, 4)
    assert report.rows_read == report.rows_valid + sum(report.rule_counts.values())
    assert report.rows_broken == 7  # every rule but after_as_of
    # valid lines: 10, 5, 2.5 (purchases) and -3 (refund); gross 17.5, refunded 3
    assert (report.purchases, report.refunds, report.zero_amount) == (3, 1, 0)
    assert report.gross_amount == 17.5 and report.refunded_amount == 3.0
    assert report.refund_share == 3.0 / 17.5
    assert (report.first_date, report.last_date, report.as_of) == ("2024-01-05", "2024-01-20", "2024-01-31")
    assert (report.customers, report.orders, report.multi_line_orders, report.cancelled_orders) == (2, 3, 1, 1)


def test_the_lines_of_an_order_are_summed_at_the_earliest_line() -> None:
    tx, report = prepare_transactions(frame(), as_of=AS_OF, min_date=MIN_DATE)
    assert tx["customer_id"].tolist() == ["a", "a", "c"]
    assert tx["transaction_id"].tolist() == ["t1", "t2", "t4"]
    assert tx["amount"].tolist() == [10.0, 7.5, -3.0]
    assert tx["timestamp"].tolist() == [
        pd.Timestamp("2024-01-05", tz="UTC"),
        pd.Timestamp("2024-01-07T18:30:00", tz="UTC"),
        pd.Timestamp("2024-01-20", tz="UTC"),
    ]
    # t2's two differing lines without unit_price or line_id: an order-line export read as transactions
    assert report.undeclared_line_orders == 1 and report.looks_like_order_lines
    with pytest.raises(ContractError, match="looks like order lines mapped as transactions"):
        prepare_transactions(frame(), as_of=AS_OF, min_date=MIN_DATE, strict=True)


def test_strict_names_every_broken_rule_with_its_count() -> None:
    rows = [r for r in ROWS if r[3] not in ("t2",)]  # no multi-line order: only the rule counts fail
    with pytest.raises(ContractError) as caught:
        prepare_transactions(frame(rows), as_of=AS_OF, min_date=MIN_DATE, strict=True)
    assert str(caught.value) == (
        "--strict: 2 null customer id, 1 bad timestamp, 1 implausible timestamp, 2 bad amount, 1 duplicate line"
        " row(s) break the input contract"
    )


def test_without_a_floor_or_as_of_those_rules_count_nothing() -> None:
    rules = row_rules(frame())
    assert rules[4] == "" and rules[8] == ""  # 1980 and after the (absent) as-of date are valid lines


def test_quantities_are_summed_and_float_noise_does_not_make_a_refund() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b", "b", "b"],
            "timestamp": ["2024-01-02"] * 5,
            "amount": [0.1, 0.2, -0.01, 0.03, -0.02],
            "quantity": [1, 2, 1, 3, 1],
            "transaction_id": ["o1", "o1", "o2", "o2", "o2"],
        }
    )
    tx, report = prepare_transactions(raw)
    assert 0.1 + 0.2 != 0.3  # the float sum is 0.30000000000000004 ...
    assert tx["amount"].tolist() == [0.3, 0.0]  # ... rounded to 9 decimals per order; -0.01 + 0.03 - 0.02 is 0
    assert tx["quantity"].tolist() == [3.0, 5.0]
    assert report.cancelled_orders == 0 and report.multi_line_orders == 2


def test_a_transaction_id_reused_by_two_customers_is_two_orders() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "timestamp": ["2024-01-02", "2024-01-03"],
            "amount": [4.0, 6.0],
            "transaction_id": "x",
        }
    )
    tx, report = prepare_transactions(raw)
    assert tx["amount"].tolist() == [4.0, 6.0] and report.orders == 2 and report.multi_line_orders == 0


def test_rows_without_a_transaction_id_are_purchases_of_their_own_even_when_equal() -> None:
    raw = pd.DataFrame({"customer_id": ["a", "a"], "timestamp": ["2024-01-02"] * 2, "amount": [3.0, 3.0]})
    tx, report = prepare_transactions(raw)
    assert len(tx) == 2 and report.rule_counts["duplicate_line"] == 0


def test_float_like_ids_are_normalised_only_on_request() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": pd.Series([17850.0, 17850.0, 13047.0]),  # an export that turned ids into floats
            "timestamp": ["2024-01-02", "2024-01-09", "2024-01-03"],
            "amount": [1.0, 2.0, 3.0],
            "transaction_id": ["536365.0", "536366.0", "00042"],
        }
    )
    kept, report = prepare_transactions(raw)
    assert kept["customer_id"].tolist() == ["17850.0", "17850.0", "13047.0"]
    assert report.float_like_ids == 2 and "--normalize-ids" in report.warnings[0]
    normalised, report = prepare_transactions(raw, normalize_float_ids=True)
    assert normalised["customer_id"].tolist() == ["17850", "17850", "13047"]
    assert normalised["transaction_id"].tolist() == ["536365", "536366", "00042"]  # "00042" is text: kept
    assert report.float_like_ids == 0 and report.warnings == []


def test_combined_reports_of_parts_are_the_report_of_the_whole() -> None:
    whole = frame()
    first = whole[whole["customer_id"].isin(["a"])]
    rest = whole[~whole["customer_id"].isin(["a"])]
    reports = [prepare_transactions(p, as_of=AS_OF, min_date=MIN_DATE, allow_empty=True)[1] for p in (first, rest)]
    _, report = prepare_transactions(whole, as_of=AS_OF, min_date=MIN_DATE)
    assert combine_reports(reports) == report


rows = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "", None]),
        st.sampled_from(["2024-01-02", "2024-02-05", "1985-01-01", "nope", None]),
        st.sampled_from([1.0, -2.0, 0.0, math.nan, math.inf]),
        st.sampled_from(["t1", "t2", None]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(rows)
def test_every_row_ends_in_exactly_one_place(data) -> None:
    raw = pd.DataFrame(data, columns=["customer_id", "timestamp", "amount", "transaction_id"])
    rules = row_rules(raw, as_of=AS_OF, min_date=MIN_DATE)
    _, report = prepare_transactions(raw, as_of=AS_OF, min_date=MIN_DATE, allow_empty=True)
    assert report.rows_read == len(raw) == report.rows_valid + sum(report.rule_counts.values())
    assert {rule: int(np.sum(rules == rule)) for rule in RULES} == report.rule_counts
    assert int(np.sum(rules == "")) == report.rows_valid


def test_column_map_parses_pairs_and_refuses_unknown_or_twice_mapped_columns() -> None:
    from features.contract import parse_column_map

    assert parse_column_map(None) == {}
    assert parse_column_map(" customer_id = cust , timestamp=ts,") == {"customer_id": "cust", "timestamp": "ts"}
    assert parse_column_map("sent_at=assigned", known=("customer_id", "sent_at")) == {"sent_at": "assigned"}
    for spec, problem in (
        ("sent_at=assigned", "unknown column 'sent_at'"),
        ("customer_id=a,customer_id=b", "maps 'customer_id' twice"),
        ("customer_id=a,timestamp=a", "to both 'customer_id' and 'timestamp'"),
        (",", "is empty"),
        ("customer_id", "must look like"),
    ):
        with pytest.raises(ContractError, match=problem):
            parse_column_map(spec)
