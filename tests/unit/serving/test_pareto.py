"""serving.pareto: the gains curve and the top share, ties counted as their group's mean (hand-computed values),
and the curve's properties on any non-negative values (Hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.pareto import gains_curve, ordered_by_score, top_share


def test_lorenz_curve_of_four_customers() -> None:
    x, share = gains_curve([1.0, 4.0, 2.0, 3.0])  # ordered 4, 3, 2, 1 of a total of 10
    assert x.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    np.testing.assert_allclose(share, [0.0, 0.4, 0.7, 0.9, 1.0], rtol=0, atol=1e-15)
    assert top_share([1.0, 4.0, 2.0, 3.0], 0.5) == pytest.approx(0.7, abs=1e-15)
    # 20% of four customers: 0.8 of the first customer's 40% (linear between customers)
    assert top_share([1.0, 4.0, 2.0, 3.0]) == pytest.approx(0.32, abs=1e-15)


def test_tied_scores_count_as_their_group_s_mean() -> None:
    # by = (3, 1, 3): the tie group {6, 4} counts 5 each, then 2; total 12
    _, share = gains_curve([6.0, 2.0, 4.0], by=[3.0, 1.0, 3.0])
    np.testing.assert_allclose(share, [0.0, 5 / 12, 10 / 12, 1.0], rtol=0, atol=1e-15)
    assert ordered_by_score(np.array([6.0, 2.0, 4.0]), np.array([3.0, 1.0, 3.0])).tolist() == [5.0, 5.0, 2.0]
    # the order tied rows come in does not matter: 10 and 0 tied share the first half
    assert top_share([10.0, 0.0], 0.5, by=[1.0, 1.0]) == top_share([0.0, 10.0], 0.5, by=[1.0, 1.0]) == 0.5


def test_the_captured_share_of_a_model_s_top_customers() -> None:
    actual, predicted = [0.0, 8.0, 2.0, 0.0, 10.0], [0.9, 0.8, 0.1, 0.2, 0.3]
    # by prediction: 0 (0.9), 8 (0.8), 10 (0.3), 0 (0.2), 2 (0.1); the top 40% (two customers) hold 8 of 20
    assert top_share(actual, 0.4, by=predicted) == pytest.approx(0.4, abs=1e-15)


def test_zero_total_is_nan_and_bad_input_is_refused() -> None:
    assert np.isnan(top_share([0.0, 0.0]))
    with pytest.raises(ValueError, match="no values"):
        gains_curve([])
    with pytest.raises(ValueError, match="3 entries but the score has 2"):
        gains_curve([1.0, 2.0, 3.0], by=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        gains_curve([1.0, np.nan])
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\]"):
        top_share([1.0], 1.5)


# amounts are 0 or at least a billionth of a currency unit: a subnormal float's tie-group mean underflows to 0
amounts = st.one_of(st.just(0.0), st.floats(1e-9, 1e6, allow_nan=False))
values = st.lists(amounts, min_size=1, max_size=40).filter(lambda v: sum(v) > 0)


@settings(max_examples=150, deadline=None)
@given(values, st.data())
def test_the_curve_rises_from_zero_to_one(v: list[float], data: st.DataObject) -> None:
    by = data.draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=len(v), max_size=len(v)))
    for score in (None, by):
        x, share = gains_curve(v, by=score)
        assert share[0] == 0.0 and share[-1] == pytest.approx(1.0, rel=1e-12)
        assert np.all(np.diff(share) >= -1e-12) and np.all(np.diff(x) > 0)
        assert top_share(v, 1.0, by=score) == pytest.approx(1.0, rel=1e-12) and top_share(v, 0.0, by=score) == 0.0
    # ordered by the values themselves, no other order captures more in its top 20%
    assert top_share(v, 0.2) >= top_share(v, 0.2, by=by) - 1e-12
