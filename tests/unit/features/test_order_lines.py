"""Order-line exports: lines of one order become one transaction, exact copies are dropped, cancellations refund.

The fixture is a small export in the shape of the classic online-retail file (InvoiceNo, StockCode, Quantity,
InvoiceDate, UnitPrice, CustomerID with ids exported as floats); every expected number is computed by hand.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_util import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import ContractError, prepare_transactions, row_rules
from features.kernel import compute_features, feature_columns
from serving.online import RequestError, inline_features

AS_OF = dt.date(2024, 1, 31)
LINES_CSV = """InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID
536365,A,6,2024-01-05 08:26,2.55,17850.0
536365,B,6,2024-01-05 08:26,3.39,17850.0
536365,C,2,2024-01-05 08:28,7.65,17850.0
536365,C,2,2024-01-05 08:28,7.65,17850.0
536366,A,12,2024-01-20 09:00,2.55,17850.0
C536367,A,-6,2024-01-25 10:00,2.55,17850.0
536368,D,3,2024-01-10 12:00,1.25,13047.0
536368,E,3,2024-01-10 12:00,1.25,13047.0
536369,F,1,2024-02-10 12:00,4.00,13047.0
536365,A,1,2024-01-06 09:00,9.99,13047.0
"""
# row 4 is an exact copy of row 3; rows 7 and 8 differ only in the product (not a duplicate); row 9 is after the
# as-of date; row 10 reuses invoice 536365 for another customer (an order of its own)
LINE_MAP = {
    "customer_id": "CustomerID",
    "timestamp": "InvoiceDate",
    "unit_price": "UnitPrice",
    "transaction_id": "InvoiceNo",
    "quantity": "Quantity",
}
AS_TRANSACTIONS = {**{k: v for k, v in LINE_MAP.items() if k != "unit_price"}, "amount": "UnitPrice"}


def raw_lines() -> pd.DataFrame:
    from io import StringIO

    return pd.read_csv(StringIO(LINES_CSV), dtype={"InvoiceNo": str, "CustomerID": str})


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_lines_become_orders_with_hand_computed_amounts() -> None:
    tx, report = prepare_transactions(raw_lines(), columns=LINE_MAP, as_of=AS_OF, normalize_float_ids=True)
    assert tx["customer_id"].tolist() == ["17850", "17850", "17850", "13047", "13047"]
    assert tx["transaction_id"].tolist() == ["536365", "536366", "C536367", "536368", "536365"]
    # 6 x 2.55 + 6 x 3.39 + 2 x 7.65 (the copy once) = 50.94 at the earliest line's time
    np.testing.assert_allclose(tx["amount"].to_numpy(), [50.94, 30.60, -15.30, 7.50, 9.99], rtol=0, atol=1e-9)
    assert tx["timestamp"].tolist() == [
        ts("2024-01-05 08:26"),
        ts("2024-01-20 09:00"),
        ts("2024-01-25 10:00"),
        ts("2024-01-10 12:00"),
        ts("2024-01-06 09:00"),
    ]
    assert tx["quantity"].tolist() == [14, 12, -6, 6, 1]
    assert list(tx.columns) == ["customer_id", "timestamp", "amount", "transaction_id", "quantity"]

    assert (report.rows_read, report.rows_valid, report.lines) == (10, 8, 8)
    assert report.rule_counts == {
        "null_customer_id": 0,
        "bad_timestamp": 0,
        "bad_amount": 0,
        "implausible_timestamp": 0,
        "duplicate_line": 1,
        "after_as_of": 1,
    }
    assert report.rows_read == report.rows_valid + sum(report.rule_counts.values())
    assert (report.orders, report.multi_line_orders, report.cancelled_orders) == (5, 2, 1)
    assert (report.customers, report.purchases, report.refunds, report.zero_amount) == (2, 7, 1, 0)
    assert report.gross_amount == pytest.approx(99.03)  # 15.30 + 20.34 + 15.30 + 30.60 + 3.75 + 3.75 + 9.99
    assert report.refund_share == pytest.approx(15.30 / 99.03)
    assert not report.looks_like_order_lines and report.warnings == []
    assert (report.first_date, report.last_date) == ("2024-01-05", "2024-01-25")


def test_features_of_the_orders() -> None:
    tx, _ = prepare_transactions(raw_lines(), columns=LINE_MAP, as_of=AS_OF, normalize_float_ids=True)
    features = compute_features(tx, AS_OF).set_index("customer_id")
    big, small = features.loc["17850"], features.loc["13047"]
    # 17850: purchases on Jan 5 (50.94) and Jan 20 (30.60), a refund of 15.30 on Jan 25
    assert (big["n_transactions"], big["refund_count"], big["recency_days"], big["tenure_days"]) == (2, 1, 11, 26)
    assert big["gross_spend"] == pytest.approx(81.54) and big["net_spend"] == pytest.approx(66.24)
    assert big["max_amount"] == pytest.approx(50.94) and big["mean_amount"] == pytest.approx(40.77)
    # 13047: invoice 536365 on Jan 6 (9.99) and 536368 on Jan 10 (two lines, 7.50); February is out of scope
    assert (small["n_transactions"], small["refund_count"], small["recency_days"], small["tenure_days"]) == (
        2,
        0,
        21,
        25,
    )
    assert small["net_spend"] == pytest.approx(17.49)


def test_float_ids_stay_text_unless_normalised() -> None:
    tx, report = prepare_transactions(raw_lines(), columns=LINE_MAP, as_of=AS_OF)
    assert sorted(tx["customer_id"].unique()) == ["13047.0", "17850.0"]
    assert report.float_like_ids == 2
    assert "--normalize-ids" in report.warnings[0]
    floats = raw_lines().assign(CustomerID=lambda f: f["CustomerID"].astype(float))
    tx, _ = prepare_transactions(floats, columns=LINE_MAP, as_of=AS_OF)
    assert sorted(tx["customer_id"].unique()) == ["13047.0", "17850.0"]  # as the file readers render a float
    tx, report = prepare_transactions(floats, columns=LINE_MAP, as_of=AS_OF, normalize_float_ids=True)
    assert sorted(tx["customer_id"].unique()) == ["13047", "17850"] and report.float_like_ids == 0


def test_lines_mapped_as_transactions_are_flagged_and_fail_strict() -> None:
    _, report = prepare_transactions(raw_lines(), columns=AS_TRANSACTIONS, as_of=AS_OF)
    assert report.looks_like_order_lines and report.undeclared_line_orders == 2
    assert report.rule_counts["duplicate_line"] == 1 and report.orders == 5
    assert report.warnings[0].startswith("the input looks like order lines mapped as transactions: 2 transaction ids")
    assert "unit_price=" in report.warnings[0]
    with pytest.raises(ContractError, match="looks like order lines"):
        prepare_transactions(raw_lines(), columns=AS_TRANSACTIONS, as_of=AS_OF, strict=True)


def test_amount_wins_over_unit_price_and_mismatches_are_counted() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a"],
            "timestamp": ["2024-01-02", "2024-01-02", "2024-01-03"],
            "transaction_id": ["o1", "o1", "o2"],
            "quantity": [2, 1, -1],
            "unit_price": [5.0, 3.0, 4.0],
            "amount": [9.0, 3.0, -4.0],  # a discount on the first line
        }
    )
    tx, report = prepare_transactions(raw)
    assert tx["amount"].tolist() == [12.0, -4.0]
    assert report.price_mismatch_lines == 1 and "the amount column was used" in report.warnings[0]


def test_line_id_repeats_are_duplicates_and_bad_lines_are_counted() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "a", "b"],
            "timestamp": ["2024-01-02", "2024-01-02", "2024-01-02", "2024-01-02", "2024-01-02"],
            "transaction_id": ["o1", "o1", "o1", "o1", "o1"],
            "line_id": ["1", "2", "2", "3", "1"],
            "quantity": [1, 2, 9, None, 1],
            "unit_price": [1.5, 2.0, 2.0, 1.0, 7.0],
        }
    )
    tx, report = prepare_transactions(raw)
    assert tx[["customer_id", "amount"]].values.tolist() == [["a", 5.5], ["b", 7.0]]
    assert report.rule_counts["duplicate_line"] == 1 and report.rule_counts["bad_amount"] == 1
    assert row_rules(raw).tolist() == ["", "", "duplicate_line", "bad_amount", ""]


def test_a_line_without_an_amount_is_quantity_times_unit_price() -> None:
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a"],
            "timestamp": ["2024-01-02", "2024-01-02", "2024-01-03"],
            "transaction_id": ["o1", "o1", "o2"],
            "amount": [9.0, None, None],  # the first line's amount wins, the others have none
            "quantity": [2, 3, None],
            "unit_price": [5.0, 1.5, 4.0],
        }
    )
    tx, report = prepare_transactions(raw)
    assert tx["amount"].tolist() == [13.5]  # 9 + 3 x 1.5; o2 has neither amount nor quantity
    assert report.rule_counts["bad_amount"] == 1 and report.price_mismatch_lines == 1


def test_inline_lines_may_mix_amounts_and_prices() -> None:
    whole = [{"timestamp": "2024-01-05", "amount": 25.0, "transaction_id": "o1"}]
    lines = [
        {"timestamp": "2024-01-05", "transaction_id": "o1", "quantity": 2.0, "unit_price": 7.5},
        {"timestamp": "2024-01-05", "transaction_id": "o1", "amount": 10.0},
    ]
    columns = feature_columns()
    a = inline_features([{"customer_id": "x", "transactions": whole}], AS_OF, columns)[0]
    b = inline_features([{"customer_id": "x", "transactions": lines}], AS_OF, columns)[0]
    np.testing.assert_array_equal(a, b)
    half = [{"timestamp": "2024-01-05", "transaction_id": "o1", "unit_price": 7.5}, *lines]
    with pytest.raises(RequestError, match=r"customers\[0\]\.transactions\[0\]\.quantity: no line amount"):
        inline_features([{"customer_id": "x", "transactions": half}], AS_OF, columns)


def test_unit_price_without_quantity_is_one_sentence() -> None:
    raw = pd.DataFrame({"customer_id": ["a"], "timestamp": ["2024-01-02"], "price": [1.0]})
    with pytest.raises(ContractError, match="needs a quantity column"):
        prepare_transactions(raw, columns={"unit_price": "price"})


def test_inline_lines_online_give_the_contract_features() -> None:
    raw = raw_lines()
    tx, _ = prepare_transactions(raw, columns=LINE_MAP, as_of=AS_OF, normalize_float_ids=True)
    expected = compute_features(tx, AS_OF).set_index("customer_id").loc["17850"]
    mine = raw[raw["CustomerID"] == "17850.0"]
    inline = [
        {"timestamp": t, "transaction_id": i, "quantity": float(q), "unit_price": float(p)}
        for t, i, q, p in zip(mine["InvoiceDate"], mine["InvoiceNo"], mine["Quantity"], mine["UnitPrice"], strict=True)
    ]
    columns = feature_columns()
    vectors = inline_features([{"customer_id": "17850", "transactions": inline}], AS_OF, columns)
    np.testing.assert_allclose(vectors[0], expected[columns].to_numpy(dtype=float), rtol=1e-12, equal_nan=True)


# --- splitting an order into lines never changes a feature (Hypothesis) ------------------------------------------

START = pd.Timestamp("2024-01-01", tz="UTC")
CUTOFF = dt.date(2024, 3, 1)
order = st.tuples(
    st.sampled_from(["001", "1", "A"]),
    st.integers(min_value=0, max_value=80 * 24),  # hours after START
    st.integers(min_value=-5_000, max_value=50_000),  # cents
    st.lists(st.integers(min_value=0, max_value=30), min_size=0, max_size=4),  # extra lines: hours after the order
)


def _features(raw: pd.DataFrame) -> pd.DataFrame:
    tx, _ = prepare_transactions(raw)
    return compute_features(tx, CUTOFF).set_index("customer_id").sort_index()


@settings(max_examples=60, deadline=None)
@given(st.lists(order, min_size=1, max_size=25), st.data())
def test_splitting_orders_into_lines_changes_nothing(orders, data) -> None:
    whole, lines = [], []
    for k, (customer, hour, cents, extra) in enumerate(orders):
        when = START + pd.Timedelta(hours=hour)
        whole.append((customer, when, cents / 100, f"o{k}", "0"))
        # the order's cents split over 1 + len(extra) lines; the first line carries the order's (earliest) time
        cuts = sorted(data.draw(st.lists(st.integers(-5_000, 5_000), min_size=len(extra), max_size=len(extra))))
        parts = np.diff([0, *cuts, cents]) if extra else [cents]
        times = [when] + [when + pd.Timedelta(hours=h) for h in extra]
        lines += [
            (customer, t, int(p) / 100, f"o{k}", str(j)) for j, (t, p) in enumerate(zip(times, parts, strict=True))
        ]
    lines = data.draw(st.permutations(lines))
    names = ["customer_id", "timestamp", "amount", "transaction_id", "line_id"]
    pd.testing.assert_frame_equal(
        _features(pd.DataFrame(whole, columns=names)), _features(pd.DataFrame(lines, columns=names)), rtol=1e-9
    )


# --- the real command ---------------------------------------------------------------------------------------------


def _quality(path: Path, mapping: dict[str, str], *extra: str):
    spec = ",".join(f"{k}={v}" for k, v in mapping.items())
    return run_cli("quality", "-t", str(path), "--as-of", "2024-01-31", "--columns", spec, *extra)


def test_cli_quality_counts_lines_orders_duplicates_and_cancellations(tmp_path: Path) -> None:
    path = tmp_path / "lines.csv"
    path.write_text(LINES_CSV)
    result = _quality(path, LINE_MAP, "--json", "--normalize-ids")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["rows_read"], report["lines"], report["orders"]) == (10, 8, 5)
    assert report["rule_counts"]["duplicate_line"] == 1 and report["rule_counts"]["after_as_of"] == 1
    assert (report["multi_line_orders"], report["cancelled_orders"], report["refunds"]) == (2, 1, 1)
    assert report["looks_like_order_lines"] is False and report["warnings"] == []
    assert report["refund_share"] == pytest.approx(15.30 / 99.03)

    text = _quality(path, LINE_MAP)
    assert text.returncode == 0 and "orders (transactions)" in text.stderr and "--normalize-ids" in text.stderr

    strict = _quality(path, AS_TRANSACTIONS, "--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "looks like order lines mapped as transactions" in strict.stderr and "unit_price=" in strict.stderr
