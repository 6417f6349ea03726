"""serving.online without a server: request checks (413 over a limit, 422 for a bad as_of or inline row naming its
field), inline transactions through the input contract, and OnlineAnswer's /predict and /rank bodies and split.
The model is the tiny two-booster bundle of tests/model_util.py; there is no store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from model_util import COLUMNS, make_model

from serving.online import (
    UNKNOWN_CUSTOMER,
    Limits,
    ModelHolder,
    OnlineAnswer,
    OnlineScorer,
    RequestError,
    check_top_k,
    inline_features,
)

AS_OF = dt.date(2024, 1, 31)


@pytest.fixture(scope="module")
def scorer() -> OnlineScorer:
    holder = ModelHolder("tiny")
    holder.model = make_model("5")
    return OnlineScorer(holder, store=None, limits=Limits(max_customers=3, max_transactions=2))


def error_of(call) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call()
    return caught.value


def test_limits_answer_413_naming_the_field(scorer) -> None:
    many = error_of(lambda: scorer.check([{"customer_id": str(i)} for i in range(4)]))
    assert (many.status, many.field) == (413, "customers") and "limit is 3" in str(many)
    tx = [{"timestamp": "2024-01-02", "amount": 1.0}] * 3
    long = error_of(lambda: scorer.check([{"customer_id": "a"}, {"customer_id": "b", "transactions": tx}]))
    assert (long.status, long.field) == (413, "customers[1].transactions")
    empty = error_of(lambda: scorer.check([]))
    assert (empty.status, empty.field) == (422, "customers")


@pytest.mark.parametrize("as_of", ["2024-13-01", "06/01/2024", "soon", "2024-02-30"])
def test_an_as_of_that_is_not_an_iso_date_is_422(scorer, as_of: str) -> None:
    error = error_of(lambda: scorer.check([{"customer_id": "a"}], as_of))
    assert (error.status, error.field) == (422, "as_of") and str(error).startswith("as_of: ")


def test_a_good_as_of_is_parsed_and_top_k_must_be_positive(scorer) -> None:
    assert scorer.check([{"customer_id": "a"}], "2024-01-31") == AS_OF
    assert scorer.check([{"customer_id": "a"}]) is None
    assert error_of(lambda: check_top_k(0)).field == "top_k"


def customer(*lines: dict) -> dict:
    return {"customer_id": "z", "transactions": list(lines)}


@pytest.mark.parametrize(
    ("line", "field", "fragment"),
    [
        ({"timestamp": "2024-01-05"}, "customers[1].transactions[1].amount", "no line amount"),
        ({"timestamp": "2024-01-05", "quantity": 2}, "customers[1].transactions[1].unit_price", "no line amount"),
        ({"timestamp": "2024-01-05", "unit_price": 2.0}, "customers[1].transactions[1].quantity", "no line amount"),
        ({"timestamp": "2024-02-05", "amount": 1.0}, "customers[1].transactions[1].timestamp", "after as_of"),
        ({"timestamp": "05/01/2024", "amount": 1.0}, "customers[1].transactions[1].timestamp", "'05/01/2024'"),
    ],
)
def test_a_broken_inline_row_names_its_field(line: dict, field: str, fragment: str) -> None:
    good = {"timestamp": "2024-01-02", "amount": 3.0}
    customers = [customer(good), customer(good, line)]
    error = error_of(lambda: inline_features(customers, AS_OF, COLUMNS))
    assert (error.status, error.field) == (422, field) and str(error).startswith(field) and fragment in str(error)


def test_inline_lines_are_summed_into_orders_like_a_file() -> None:
    lines = (
        {"timestamp": "2024-01-01", "amount": 10.0, "transaction_id": "t1"},
        {"timestamp": "2024-01-21T10:00:00Z", "quantity": 2, "unit_price": 1.0, "transaction_id": "t2"},
        {"timestamp": "2024-01-21T09:00:00Z", "amount": 3.0, "transaction_id": "t2"},
        {"timestamp": "2024-01-21T09:00:00Z", "amount": 3.0, "transaction_id": "t2"},  # an exact duplicate line
    )
    vectors = inline_features([{"customer_id": "a"}, customer(*lines)], AS_OF, COLUMNS)
    assert list(vectors) == [1]  # by request position; the id-only customer has none
    recency, spend, days = vectors[1]
    # orders: t1 10 on Jan 1, t2 = 2 x 1 + 3 on Jan 21 (the duplicate kept once); as of Jan 31
    assert (recency, spend, days) == (10.0, 15.0, 2.0)


def test_score_checked_scores_inline_customers_and_flags_unknown_ids(scorer) -> None:
    request = [
        {"customer_id": "known", "transactions": [{"timestamp": "2024-01-10", "amount": 40.0}]},
        {"customer_id": "ghost"},  # by id, and there is no store
        {"customer_id": "late", "transactions": [{"timestamp": "2024-01-31", "amount": 5.0}]},
    ]
    answer = scorer.score_checked(request, AS_OF)
    assert answer.header == {"model_version": "5", "as_of": "2024-01-31", "horizon_days": 90}
    assert answer.rows[1] == {"customer_id": "ghost", "error": UNKNOWN_CUSTOMER} and answer.risk[1] is None
    for i in (0, 2):
        row = answer.rows[i]
        assert row["features_as_of"] == "2024-01-31" and list(row)[-1] == "reasons"
        assert answer.risk[i] == pytest.approx(row["value_at_risk"], abs=5e-5)  # exact vs rounded to 4 decimals
    body = scorer.predict(request, "2024-01-31")
    assert body["predictions"] == answer.rows and body["model_version"] == "5"


def hand_answer() -> OnlineAnswer:
    near = 0.1 + 0.2  # rounds to the same 0.3 in JSON as "a"'s exact 0.3
    rows = [
        {"customer_id": "a", "value_at_risk": 0.3},
        {"customer_id": "b", "value_at_risk": 0.3},
        {"customer_id": "c", "error": UNKNOWN_CUSTOMER},
        {"customer_id": "0", "value_at_risk": 0.3},
    ]
    return OnlineAnswer({"model_version": "1"}, rows, [0.3, near, None, 0.3])


def test_rank_body_orders_on_exact_values_then_ids_and_lists_errors_apart() -> None:
    body = hand_answer().rank_body()
    assert [(r["customer_id"], r["retention_rank"]) for r in body["ranking"]] == [("b", 1), ("0", 2), ("a", 3)]
    assert body["errors"] == [{"customer_id": "c", "error": UNKNOWN_CUSTOMER}] and body["model_version"] == "1"
    assert [r["customer_id"] for r in hand_answer().rank_body(top_k=2)["ranking"]] == ["b", "0"]


def test_predict_body_keeps_the_request_order_and_split_cuts_merged_requests() -> None:
    answer = hand_answer()
    assert [r["customer_id"] for r in answer.predict_body()["predictions"]] == ["a", "b", "c", "0"]
    first, second = answer.split([3, 1])
    assert [r["customer_id"] for r in first.rows] == ["a", "b", "c"] and first.risk == answer.risk[:3]
    assert second.rows == [answer.rows[3]] and second.risk == [0.3] and second.header is answer.header
    np.testing.assert_array_equal([len(p.rows) for p in answer.split([0, 4])], [0, 4])
