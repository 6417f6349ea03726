"""training.uplift_metrics: hand-computed Qini curves, coefficient and uplift at k; properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import uplift_metrics as um

# Eight customers in score order (highest first): arm (1 treated, 0 control) and retained (1/0).
T8 = np.array([1, 0, 1, 0, 1, 0, 1, 0], dtype=float)
Y8 = np.array([1, 0, 1, 0, 0, 1, 0, 1], dtype=float)
S8 = np.arange(8, 0, -1, dtype=float)


def test_qini_curve_hand_computed() -> None:
    x, q = um.qini_curve(Y8, T8, S8)
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # k=1: one treated responder, no control yet -> 1; k=2: 1 - 0 x 1/1 = 1; k=3: 2 - 0 = 2; k=4: 2 - 0 x 2/2 = 2
    # k=5: 2 - 0 x 3/2 = 2; k=6: 2 - 1 x 3/3 = 1; k=7: 2 - 1 x 4/3 = 2/3; k=8: 2 - 2 x 4/4 = 0
    assert q == pytest.approx([0, 1, 1, 2, 2, 2, 1, 2 / 3, 0])


def test_qini_curve_ties_enter_together_whatever_their_order() -> None:
    score = np.array([2, 2, 1, 1], dtype=float)
    x, q = um.qini_curve([1, 0, 0, 1], [1, 0, 1, 0], score)
    assert x.tolist() == [0, 2, 4]
    # the tie group {treated responder, control non-responder}: 1 - 0 = 1; all: 1 - 1 x 2/2 = 0
    assert q == pytest.approx([0, 1, 0])
    _, q2 = um.qini_curve([0, 1, 1, 0], [0, 1, 0, 1], score)  # the same customers, ties swapped
    assert q2 == pytest.approx(q)


def test_qini_coefficient_hand_computed() -> None:
    # model curve (above): trapezoid area = 1/2 + 1 + 3/2 + 2 + 2 + 3/2 + 5/6 + 1/3 = 9.6667; random line ends at 0
    # perfect score = y x t - y x (1 - t): the treated responders (rows 0, 2) as one tie group, Q(2) = 2; then the
    # non-responders (rows 1, 3, 4, 6), Q(6) = 2 - 0 = 2; then the control responders (rows 5, 7), Q(8) = 2 - 2 x 4/4
    # = 0: points (0, 0), (2, 2), (6, 2), (8, 0), area = 2 + 8 + 2 = 12 (the random line ends at 0: area 0)
    assert um.qini_coefficient(Y8, T8, S8) == pytest.approx((1 / 2 + 1 + 3 / 2 + 2 + 2 + 3 / 2 + 5 / 6 + 1 / 3) / 12)


def test_qini_coefficient_of_the_perfect_score_is_one_and_reversed_is_negative() -> None:
    perfect = Y8 * T8 - Y8 * (1 - T8)
    assert um.qini_coefficient(Y8, T8, perfect) == pytest.approx(1.0)
    assert um.qini_coefficient(Y8, T8, -perfect) < 0


def test_uplift_at_k_hand_computed() -> None:
    # top 50% = rows 0..3: treated 2/2 retained, control 0/2 -> 1.0
    assert um.uplift_at_k(Y8, T8, S8, 0.5) == pytest.approx(1.0)
    # all: treated 2/4, control 2/4 -> 0
    assert um.uplift_at_k(Y8, T8, S8, 1.0) == pytest.approx(0.0)
    # top 1 holds no control customer
    assert math.isnan(um.uplift_at_k(Y8, T8, S8, 0.125))


def test_uplift_metrics_names() -> None:
    found = um.uplift_metrics(Y8, T8, S8)
    assert list(found) == ["qini", "uplift_at_10", "uplift_at_20", "uplift_at_30"]


@pytest.mark.parametrize(
    ("y", "t", "s", "message"),
    [
        ([1, 0], [1, 0], [1.0], "values"),
        ([], [], [], "zero rows"),
        ([2, 0], [1, 0], [1, 2], "y must be 0/1"),
        ([1, 0], [1, 1], [1, 2], "both arms"),
        ([1, 0], [1, 0], [np.nan, 2], "finite"),
    ],
)
def test_bad_input_is_refused(y, t, s, message) -> None:
    with pytest.raises(ValueError, match=message):
        um.qini_coefficient(y, t, s)


def test_random_qini_is_a_seeded_quantile_near_zero() -> None:
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, 2_000).astype(float)
    y = (rng.random(2_000) < 0.3 + 0.1 * t).astype(float)
    p95 = um.random_qini(y, t, draws=100, seed=1)
    assert p95 == um.random_qini(y, t, draws=100, seed=1)
    assert 0 < p95 < 0.5
    assert um.random_qini(y, t, draws=100, quantile=0.05, seed=1) < 0 < p95


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 5)), min_size=4, max_size=40),
    st.randoms(use_true_random=False),
)
def test_qini_does_not_depend_on_row_order(rows, random) -> None:
    y, t, s = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    if t.all() or not t.any():
        return
    order = list(range(len(y)))
    random.shuffle(order)
    x1, q1 = um.qini_curve(y, t, s)
    x2, q2 = um.qini_curve(y[order], t[order], s[order])
    assert x1.tolist() == x2.tolist()
    assert q1 == pytest.approx(q2)
    c1, c2 = um.qini_coefficient(y, t, s), um.qini_coefficient(y[order], t[order], s[order])
    assert (math.isnan(c1) and math.isnan(c2)) or c1 == pytest.approx(c2)
    # the curve ends at the campaign's total incremental responders, whatever the score
    n_t, n_c = t.sum(), (1 - t).sum()
    assert q1[-1] == pytest.approx((y * t).sum() - (y * (1 - t)).sum() * n_t / n_c)
