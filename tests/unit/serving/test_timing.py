"""Tests of purchase timing: BG/NBD's P(no purchase in (T, T+d]) on a grid (serving.btyd.bgnbd) and
serving.timing (P(purchase within d days), expected days to the next purchase). Time in days after the as-of date."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from btyd_simulate import OTHER, ages, simulate_bgnbd
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.btyd import (
    BGNBDParams,
    BTYDModel,
    GammaGammaParams,
    probability_no_purchase,
    probability_no_purchase_curve,
)
from serving.model import BTYD_COLUMNS, BUYER_COLUMN, btyd_scores
from serving.timing import TIMING_DAYS, TimingScores, timing_grid, timing_scores

# r = 1, alpha = 10 days, a = b = 1: small numbers that make the closed form exact by hand
SIMPLE = BGNBDParams(r=1.0, alpha=10.0, a=1.0, b=1.0)
GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def _model(params: BGNBDParams) -> BTYDModel:
    return BTYDModel(bgnbd=params, gamma_gamma=GG)


def _summary(rows: list[tuple[float, float, float]]) -> np.ndarray:
    """(n, 4) in the order of BTYD_COLUMNS (frequency, recency, T in days; monetary unused here)."""
    return np.array([(x, tx, t, 10.0) for x, tx, t in rows], dtype=np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------------------------------------
# the BG/NBD closed form on a grid
# ----------------------------------------------------------------------------------------------------------


def test_no_purchase_curve_hand_computed() -> None:
    # Customer A: x = 1, t_x = 5, T = 10.
    #   P(alive) = 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)) = 1 / (1 + (20/15)^2) = 9/25 = 0.36
    #   S(d) = P(dead) + P(alive) (20/(20+d))^2 = 0.64 + 0.36 (20/(20+d))^2
    #   d = 0: 1;  d = 5: 0.64 + 0.36 * 0.64 = 0.8704;  d = 20: 0.64 + 0.36/4 = 0.73;  d = 60: 0.64 + 0.36/16 = 0.6625
    # Customer B: a one-time buyer x = 0, t_x = 0, T = 10: P(alive) = 1, S(d) = (20/(20+d))^1
    #   d = 0: 1;  d = 5: 0.8;  d = 20: 0.5;  d = 60: 0.25
    days = [0, 5, 20, 60]
    got = probability_no_purchase_curve(SIMPLE, days, [1, 0], [5, 0], [10, 10])
    expected = np.array([[1.0, 0.8704, 0.73, 0.6625], [1.0, 0.8, 0.5, 0.25]])
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_curve_is_the_one_horizon_formula_column_by_column() -> None:
    rng = np.random.default_rng(3)
    x, tx, big_t = simulate_bgnbd(OTHER, 300, ages(300, 4), rng)
    days = np.array([1.0, 7.0, 30.0, 90.0, 365.0])
    curve = probability_no_purchase_curve(OTHER, days, x, tx, big_t)
    for j, d in enumerate(days):
        assert np.array_equal(curve[:, j], probability_no_purchase(OTHER, d, x, tx, big_t))
    assert (np.diff(curve, axis=1) <= 0).all()


def test_curve_rejects_bad_days() -> None:
    with pytest.raises(ValueError, match="days must be finite and non-negative"):
        probability_no_purchase_curve(SIMPLE, [-1.0], [1], [5], [10])
    with pytest.raises(ValueError, match="days must be finite and non-negative"):
        probability_no_purchase_curve(SIMPLE, [np.nan], [1], [5], [10])


def test_horizon_column_equals_the_btyd_churn_of_the_scoring_model() -> None:
    """btyd_scores (what BTYD and hybrid heads score from) and the timing curve share one formula: at d = H
    the curve IS the BTYD churn probability, bit for bit, and timing_scores reproduces it from that churn."""
    rng = np.random.default_rng(5)
    n, horizon = 200, 60
    x, tx, big_t = simulate_bgnbd(OTHER, n, ages(n, 6), rng)
    columns = (*BTYD_COLUMNS, BUYER_COLUMN)
    X = np.column_stack([x, tx, big_t, np.full(n, 20.0), x + 1.0])
    model = _model(OTHER)
    churn, _ = btyd_scores(model, X, columns, horizon)
    curve = probability_no_purchase_curve(OTHER, [7, horizon], x, tx, big_t)
    assert np.array_equal(curve[:, -1], churn)
    scores = timing_scores(model, X[:, :4], churn, horizon, days=(7,))
    assert scores.days == (7, horizon)
    np.testing.assert_allclose(scores.purchase_within, 1.0 - curve, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# timing_scores: hand-computed values
# ----------------------------------------------------------------------------------------------------------


def test_timing_grid() -> None:
    assert TIMING_DAYS == (7, 14, 30, 60, 90)
    assert timing_grid(90) == (7, 14, 30, 60, 90)
    assert timing_grid(30) == (7, 14, 30)
    assert timing_grid(45) == (7, 14, 30, 45)
    assert timing_grid(3) == (3,)
    assert timing_grid(30, [30, 7, 7, 400]) == (7, 30)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="horizon_days"):
            timing_grid(bad)  # type: ignore[arg-type]
    for days in ([0], [7.5], [-1], [math.nan]):
        with pytest.raises(ValueError, match="timing days"):
            timing_grid(30, days)  # type: ignore[arg-type]


def test_btyd_churn_keeps_the_btyd_curve_and_other_churn_rescales_its_hazard() -> None:
    # Customer A of the hand-computed fixture with the BTYD churn itself (k = 1): P(within d) = 1 - S_btyd(d),
    # d = 5: 1 - 0.8704 = 0.1296; d = 20: 1 - 0.73 = 0.27.
    # Customer B (S_btyd(d) = 20/(20+d), S_btyd(20) = 1/2) with a churn head saying 1/4: k = log(1/4)/log(1/2) = 2,
    # S(d) = (20/(20+d))^2: d = 5: 1 - 0.64 = 0.36; d = 20: 1 - 0.25 = 0.75.
    scores = timing_scores(_model(SIMPLE), _summary([(1, 5, 10), (0, 0, 10)]), np.array([0.73, 0.25]), 20, (5,))
    assert isinstance(scores, TimingScores)
    assert scores.days == (5, 20)
    np.testing.assert_allclose(scores.purchase_within, [[0.1296, 0.27], [0.36, 0.75]], rtol=0, atol=1e-12)


def test_expected_days_hand_computed() -> None:
    # Trapezoid on t = 0, 1, 2 (H = 2) of S(t) - S(H), divided by 1 - S(H):
    # * customer B, churn = S_btyd(2) = 20/22 (k = 1): S(1) = 20/21, so
    #   (0.5 (1 - 10/11) + (20/21 - 10/11)) / (1/11) = 0.5 + 11 (20/21 - 10/11) = 0.5 + 10/21 = 41/42;
    # * no purchase yet (NaN summary), churn 1/2: constant hazard S(t) = (1/2)^(t/2), S(1) = sqrt(1/2), so
    #   (0.25 + sqrt(1/2) - 1/2) / (1/2) = sqrt(2) - 1/2, and P(within 1 day) = 1 - sqrt(1/2).
    summary = _summary([(0, 0, 10)])
    summary = np.vstack([summary, np.full((1, 4), np.nan)])
    scores = timing_scores(_model(SIMPLE), summary, np.array([10 / 11, 0.5]), 2, (1,))
    np.testing.assert_allclose(scores.expected_days_to_next, [41 / 42, math.sqrt(2) - 0.5], rtol=0, atol=1e-12)
    np.testing.assert_allclose(scores.purchase_within[1], [1 - math.sqrt(0.5), 0.5], rtol=0, atol=1e-12)


def test_edges_certain_churn_certain_purchase_no_purchase_yet() -> None:
    summary = _summary([(1, 5, 10), (1, 5, 10), (0, 0, 0)])
    summary = np.vstack([summary, np.full((2, 4), np.nan)])
    churn = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = timing_scores(_model(SIMPLE), summary, churn, 30)
    assert scores.days == (7, 14, 30)
    within, expected = scores.purchase_within, scores.expected_days_to_next
    assert (within[0] == 0).all() and math.isnan(expected[0])  # churn 1: never within the horizon
    assert (within[1] == 1).all()  # churn 0: a purchase right away (the trapezoid's first half day)
    assert expected[1] == 0.5
    assert 0 < within[2, 0] < within[2, 1] < within[2, 2] == 0.5  # a brand-new customer: BTYD's shape
    assert (within[3] == 0).all() and math.isnan(expected[3])
    assert (within[4] == 1).all() and expected[4] == 0.5
    assert np.isnan(expected).sum() == 2


def test_customers_btyd_gives_no_shape_get_a_constant_hazard() -> None:
    # constant hazard S(d) = c ** (d/H): with c = 1/2, H = 90, d = 45: P(within 45 days) = 1 - sqrt(1/2)
    expected = [[1 - math.sqrt(0.5), 0.5]]
    summary = _summary([(1, 5, 10)])
    for column in (0, 1, 2):  # any missing BTYD input
        row = summary.copy()
        row[0, column] = np.nan
        scores = timing_scores(_model(SIMPLE), row, np.array([0.5]), 90, (45,))
        np.testing.assert_allclose(scores.purchase_within, expected, rtol=0, atol=1e-12)
    # x = 30, t_x = 10, T = 1000: odds of being dead (1/30) (1010/20)^31 ~ 2e51, so S_btyd(H) == 1.0 in floating point
    dead = _summary([(30, 10, 1000)])
    assert probability_no_purchase_curve(SIMPLE, [90], 30, 10, 1000)[0, 0] == 1.0
    scores = timing_scores(_model(SIMPLE), dead, np.array([0.5]), 90, (45,))
    np.testing.assert_allclose(scores.purchase_within, expected, rtol=0, atol=1e-12)


def test_empty_input_and_blocks() -> None:
    empty = timing_scores(_model(SIMPLE), np.empty((0, 4)), np.empty(0), 30)
    assert empty.purchase_within.shape == (0, 3) and empty.expected_days_to_next.shape == (0,)
    # more rows than one block: the same answers as row by row
    rng = np.random.default_rng(8)
    n = 12_000
    x, tx, big_t = simulate_bgnbd(OTHER, n, ages(n, 9), rng)
    summary = np.column_stack([x, tx, big_t, np.ones(n)])
    churn = rng.uniform(0, 1, n)
    whole = timing_scores(_model(OTHER), summary, churn, 90)
    some = [0, 5_000, 11_999]
    part = timing_scores(_model(OTHER), summary[some], churn[some], 90)
    np.testing.assert_allclose(whole.purchase_within[some], part.purchase_within, rtol=0, atol=1e-15)
    np.testing.assert_allclose(whole.expected_days_to_next[some], part.expected_days_to_next, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("summary", "churn", "match"),
    [
        (np.zeros((2, 3)), np.zeros(2), r"\(n, 4\)"),
        (np.zeros(4), np.zeros(1), r"\(n, 4\)"),
        (np.zeros((2, 4)), np.zeros(3), "one value per customer"),
        (np.zeros((1, 4)), np.array([np.nan]), r"in \[0, 1\]"),
        (np.zeros((1, 4)), np.array([1.5]), r"in \[0, 1\]"),
        (np.array([[1.0, 20.0, 10.0, 1.0]]), np.array([0.5]), "recency must be <= T"),
    ],
)
def test_bad_input_is_a_clear_error(summary: np.ndarray, churn: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        timing_scores(_model(SIMPLE), summary, churn, 30)


# ----------------------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------------------

_customer = st.one_of(
    st.tuples(st.integers(0, 60), st.floats(0, 1), st.floats(0, 2000)).map(
        lambda c: (float(c[0]), (c[1] * c[2]) if c[0] > 0 else 0.0, c[2])
    ),
    st.just((math.nan, math.nan, math.nan)),
)
_churn = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 1e-300, 1 - 1e-16, 0.5]))
_params = st.builds(
    BGNBDParams,
    r=st.floats(1e-3, 50),
    alpha=st.floats(1e-2, 1e4),
    a=st.floats(1e-3, 1e4),
    b=st.floats(1e-3, 1e4),
)


@settings(max_examples=200, deadline=None)
@given(
    params=_params,
    rows=st.lists(st.tuples(_customer, _churn), min_size=1, max_size=6),
    horizon=st.integers(1, 400),
    days=st.lists(st.integers(1, 500), max_size=6),
)
def test_timing_properties(
    params: BGNBDParams, rows: list[tuple[tuple[float, float, float], float]], horizon: int, days: list[int]
) -> None:
    summary = _summary([r[0] for r in rows])
    churn = np.array([r[1] for r in rows])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = timing_scores(_model(params), summary, churn, horizon, days)
    grid = scores.days
    assert list(grid) == sorted(set(grid)) and grid[-1] == horizon and all(1 <= d <= horizon for d in grid)
    within, expected = scores.purchase_within, scores.expected_days_to_next
    assert within.shape == (len(rows), len(grid)) and expected.shape == (len(rows),)
    assert ((within >= 0) & (within <= 1)).all()
    assert (np.diff(within, axis=1) >= 0).all()
    np.testing.assert_allclose(within[:, -1], 1.0 - churn, rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(expected), churn == 1.0)
    done = ~np.isnan(expected)
    assert ((expected[done] >= 0) & (expected[done] <= horizon)).all()


# ----------------------------------------------------------------------------------------------------------
# against simulation
# ----------------------------------------------------------------------------------------------------------


def _simulate_next_purchase(
    params: BGNBDParams, big_t: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Purchase by purchase (an oracle independent of the closed forms): first purchase at day 0, then gaps
    ``Exp(lambda)`` while alive, dropout with probability ``p`` right after each repeat purchase;
    ``lambda ~ Gamma(r, rate alpha)``, ``p ~ Beta(a, b)``. Returns ``(frequency, recency, days from T to the
    next purchase)`` (``inf`` for customers who dropped out before buying again)."""
    n = big_t.size
    lam = rng.gamma(params.r, 1.0 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    x, tx, nxt = np.zeros(n), np.zeros(n), np.full(n, np.inf)
    last = np.zeros(n)
    active = np.arange(n)  # alive and not yet past T
    while active.size:
        when = last[active] + rng.exponential(1.0 / lam[active])
        after = when > big_t[active]
        nxt[active[after]] = when[after] - big_t[active[after]]
        buy = active[~after]
        x[buy] += 1
        tx[buy] = last[buy] = when[~after]
        active = buy[rng.uniform(size=buy.size) >= p[buy]]  # survive the dropout coin after a repeat purchase
    return x, tx, nxt


@pytest.mark.parametrize("params", [OTHER, BGNBDParams(r=0.5, alpha=20.0, a=0.8, b=2.5)])
def test_purchase_within_and_expected_days_match_simulated_customers(params: BGNBDParams) -> None:
    n, horizon = 20_000, 90
    rng = np.random.default_rng(11)
    big_t = ages(n, 12)
    x, tx, nxt = _simulate_next_purchase(params, big_t, rng)
    model = _model(params)
    churn = probability_no_purchase(params, horizon, x, tx, big_t)
    scores = timing_scores(model, np.column_stack([x, tx, big_t, np.ones(n)]), churn, horizon, (7, 30))
    assert scores.days == (7, 30, 90)
    for j, d in enumerate(scores.days):
        p = scores.purchase_within[:, j]
        se = math.sqrt(float((p * (1 - p)).sum())) / n
        assert abs(p.mean() - (nxt <= d).mean()) < 4 * se, (d, p.mean(), (nxt <= d).mean(), se)
    # E[days to next | a purchase within H] of the group: each customer's conditional mean weighted by her
    # P(purchase within H) (NaN, i.e. undefined, only where that is 0), against the mean of the simulated times that
    # fell within H
    p_h = scores.purchase_within[:, -1]
    assert np.array_equal(np.isnan(scores.expected_days_to_next), p_h == 0)
    predicted = float((p_h * np.nan_to_num(scores.expected_days_to_next)).sum() / p_h.sum())
    within = nxt[nxt <= horizon]
    se = float(within.std()) / math.sqrt(within.size)
    assert abs(predicted - within.mean()) < 4 * se + 0.05, (predicted, within.mean(), se)


@pytest.mark.parametrize("d", [7, 30, 90])
def test_new_customers_match_the_btyd_simulator(d: int) -> None:
    """Customers who made their first purchase on the as-of date (x = t_x = T = 0): P(purchase within d) is the
    share of simulated customers with a repeat purchase in their first d days (tests/btyd_simulate.py)."""
    n = 40_000
    x, _, _ = simulate_bgnbd(OTHER, n, float(d), 21 + d)
    churn_h = probability_no_purchase(OTHER, 90, 0, 0, 0)
    scores = timing_scores(_model(OTHER), _summary([(0, 0, 0)]), churn_h, 90, (d,))
    p = float(scores.purchase_within[0, scores.days.index(d)])
    share = float((x > 0).mean())
    assert abs(p - share) < 4 * math.sqrt(p * (1 - p) / n), (p, share)
