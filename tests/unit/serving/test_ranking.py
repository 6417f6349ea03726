"""serving.ranking: value at risk highest first on exact values, ties by customer id (code points)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.ranking import rank_frame, rank_order


def test_exact_ties_are_ordered_by_customer_id() -> None:
    order = rank_order(np.array([5.0, 5.0, 7.0, 5.0]), np.array(["b", "a", "c", "0042"], dtype=object))
    assert order.tolist() == [2, 3, 1, 0]  # c (7), then the 5s by id: "0042" < "a" < "b"


def test_ids_compare_as_text_not_numbers() -> None:
    ids = np.array(["42", "0042", "00042", "9"], dtype=object)
    assert rank_order(np.zeros(4), ids).tolist() == [2, 1, 0, 3]  # "00042" < "0042" < "42" < "9"


def test_near_ties_are_ranked_on_exact_values_not_rounded_ones() -> None:
    near = 0.1 + 0.2  # 0.30000000000000004
    assert near > 0.3 and round(near, 4) == round(0.3, 4)  # equal once rounded for JSON
    order = rank_order(np.array([0.3, near]), np.array(["a", "b"], dtype=object))
    assert order.tolist() == [1, 0]  # "b" first: its exact value is higher, although "a" sorts first by id


def test_nan_sorts_last_and_empty_input_gives_no_positions() -> None:
    assert rank_order(np.array([np.nan, 1.0, 0.0]), np.array(["a", "b", "c"], dtype=object)).tolist() == [1, 2, 0]
    assert rank_order(np.array([]), np.array([], dtype=object)).tolist() == []


def test_rank_frame_numbers_the_rows_from_one_in_the_second_column() -> None:
    table = pd.DataFrame({"customer_id": ["x", "y", "z"], "value_at_risk": [1.0, 3.0, 1.0], "tier": ["a", "b", "c"]})
    ranked = rank_frame(table)
    assert list(ranked.columns) == ["customer_id", "retention_rank", "value_at_risk", "tier"]
    assert ranked["customer_id"].tolist() == ["y", "x", "z"] and ranked["retention_rank"].tolist() == [1, 2, 3]
    assert ranked["tier"].tolist() == ["b", "a", "c"]  # whole rows move


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.3, 0.1 + 0.2, 1.5, 1e-12]), st.text("ab0", min_size=1, max_size=3)),
        min_size=1,
        max_size=25,
        unique_by=lambda row: row[1],
    )
)
def test_the_order_is_a_permutation_sorted_by_risk_then_id(rows) -> None:
    risk = np.array([r for r, _ in rows])
    ids = np.array([i for _, i in rows], dtype=object)
    order = rank_order(risk, ids)
    assert sorted(order.tolist()) == list(range(len(rows)))
    assert [(-risk[k], ids[k]) for k in order] == sorted((-r, i) for r, i in rows)
