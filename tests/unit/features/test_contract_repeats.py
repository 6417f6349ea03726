"""The contract's fast paths for repeated ids agree with a plain factorisation (Hypothesis + hash collisions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import features.contract as contract
from features.contract import _repeated_values, _string_hashes, distinct_ids, prepare_transactions

ids = st.text(alphabet=st.sampled_from(["A", "b", "0", "1", " ", "é", "€", "\u3000"]), min_size=1, max_size=20)


def reference(values: list[str], rows: np.ndarray) -> np.ndarray:
    """Rows whose value appears on another of ``rows``: the count of a factorisation, as before the fast path."""
    codes, _ = pd.factorize(pd.Series(values, dtype="str").array.take(rows))
    return np.bincount(codes)[codes] > 1 if len(codes) else np.zeros(0, dtype=bool)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(ids, max_size=60), data=st.data())
def test_repeated_values_is_a_factorisation_count(values: list[str], data: st.DataObject) -> None:
    keep = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    rows = np.flatnonzero(np.asarray(keep, dtype=bool))
    got = _repeated_values(pd.Series(values, dtype="str"), rows)
    assert got.tolist() == reference(values, rows).tolist()


def test_hash_collisions_are_confirmed_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every hash equal (the worst collision): only rows with truly equal values are repeats."""
    monkeypatch.setattr(contract, "_string_hashes", lambda values: np.zeros(len(values), dtype=np.uint64))
    values = ["T1", "T2", "T1", "T3", "T22", "T2 "]
    rows = np.arange(len(values))
    assert _repeated_values(pd.Series(values, dtype="str"), rows).tolist() == [True, False, True, False, False, False]


def test_equal_strings_hash_equal_across_lengths_and_chunks() -> None:
    values = pa.chunked_array([["a", "bb", "0123456789"], ["a", "0123456789", "x" * 17, ""]]).combine_chunks()
    hashes = _string_hashes(values)
    assert hashes is not None
    assert hashes[0] == hashes[3] and hashes[2] == hashes[4]
    assert len(set(hashes.tolist())) == 5
    many_lengths = pa.array(["x" * k for k in range(contract._MAX_HASHED_LENGTHS + 1)])
    assert _string_hashes(many_lengths) is None  # the factorisation path then
    assert _string_hashes(pa.array(["a", None])) is None


@pytest.mark.parametrize(
    "values",
    [["C2", "C2", "C1", "C3", "C1"], ["C1", "C1", "C2", "C3", "C3"], ["C1"], [], ["b", "a", "a"], ["a", "b", "a"]],
)
def test_distinct_ids_is_series_unique(values: list[str]) -> None:
    series = pd.Series(values, dtype="str")
    assert sorted(distinct_ids(series).tolist()) == sorted(series.unique().tolist())
    assert len(distinct_ids(series)) == series.nunique()


def test_many_unique_transaction_ids_with_repeats_across_customers() -> None:
    """A transaction id reused by two customers is two orders; one repeated by a customer is one order."""
    raw = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c", "c"],
            "transaction_id": ["T001", "T001", "T0002", "T3", "T3"],
            "timestamp": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"],
            "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    tx, report = prepare_transactions(raw)
    assert report.orders == 4 and report.multi_line_orders == 1
    assert tx["amount"].tolist() == [1.0, 2.0, 3.0, 9.0]
