"""Statistical checks of serving.btyd against simulated customers: maximum likelihood recovers the BG/NBD and
Gamma-Gamma parameters the customers were drawn from, and churn probability and expected purchases match a
purchase-by-purchase simulation of the future (the closed forms themselves: tests/unit/serving/test_btyd.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from btyd_simulate import CDNOW, CDNOW_GG, OTHER, simulate_bgnbd, simulate_gamma_gamma
from btyd_simulate import ages as _ages

from serving.btyd import (
    BGNBDParams,
    bgnbd_log_likelihood,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_no_purchase,
)


@pytest.mark.parametrize(
    ("true", "n", "tol"),
    [
        # Over 8 seeds at these sizes the relative sd of the MLE was ~0.6% (r), 1.7% (alpha), 3.2% (a),
        # 4.6% (b) for CDNOW and 1.4%, 2.0%, 4.0%, 4.9% for OTHER; the tolerances are >= 4 sd.
        (CDNOW, 40_000, {"r": 0.10, "alpha": 0.10, "a": 0.20, "b": 0.20}),
        (OTHER, 30_000, {"r": 0.10, "alpha": 0.10, "a": 0.20, "b": 0.20}),
    ],
    ids=["cdnow", "other"],
)
def test_bgnbd_parameter_recovery(true: BGNBDParams, n: int, tol: dict[str, float]) -> None:
    x, tx, T = simulate_bgnbd(true, n, _ages(n, 1), seed=2)
    fitted = fit_bgnbd(x, tx, T)
    for name, rel in tol.items():
        t, f = getattr(true, name), getattr(fitted, name)
        assert abs(f / t - 1) < rel, f"{name}: true {t}, fitted {f}"
    # the optimum is a maximum: the true parameters have a lower likelihood
    assert bgnbd_log_likelihood(fitted, x, tx, T).sum() >= bgnbd_log_likelihood(true, x, tx, T).sum()


def test_bgnbd_recovery_with_integer_days_and_weights() -> None:
    """Real summaries are whole days; aggregation of identical rows must not change the estimate."""
    x, tx, T = simulate_bgnbd(CDNOW, 20_000, _ages(20_000, 3), seed=4)
    tx = np.floor(tx)
    fitted = fit_bgnbd(x, tx, T)
    # same data, shuffled and with float noise-free duplicates: identical estimate
    perm = np.random.default_rng(0).permutation(x.size)
    refit = fit_bgnbd(x[perm], tx[perm], T[perm])
    for name in ("r", "alpha", "a", "b"):
        assert getattr(refit, name) == pytest.approx(getattr(fitted, name), rel=1e-6)
        assert getattr(fitted, name) == pytest.approx(getattr(CDNOW, name), rel=0.3)


def test_gamma_gamma_parameter_recovery() -> None:
    # Over 8 seeds with 20k customers the relative sd was 3.9% (p), 1.3% (q), 4.8% (v): tolerance >= 3 sd.
    x = np.random.default_rng(7).geometric(0.3, 20_000).astype(np.float64)
    x[:2000] = 0  # one-time buyers are ignored
    m = simulate_gamma_gamma(CDNOW_GG, x, seed=8)
    fitted = fit_gamma_gamma(x, m)
    assert fitted.p == pytest.approx(CDNOW_GG.p, rel=0.15)
    assert fitted.q == pytest.approx(CDNOW_GG.q, rel=0.10)
    assert fitted.v == pytest.approx(CDNOW_GG.v, rel=0.20)
    assert fitted.population_mean == pytest.approx(CDNOW_GG.population_mean, rel=0.05)


def _simulate_with_future(
    params: BGNBDParams, n: int, T: float, horizon: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Purchase by purchase (not the order-statistics shortcut of simulate_bgnbd): summary at T and the
    number of purchases in (T, T + horizon]."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(params.r, 1 / params.alpha, n)
    p = rng.beta(params.a, params.b, n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    x = np.zeros(n)
    tx = np.zeros(n)
    future = np.zeros(n)
    active = np.arange(n)
    while active.size:
        now[active] += rng.exponential(1 / lam[active])
        before = now[active] <= T
        within = (now[active] > T) & (now[active] <= T + horizon)
        i_before, i_within = active[before], active[within]
        x[i_before] += 1
        tx[i_before] = now[i_before]
        future[i_within] += 1
        buyers = active[before | within]
        alive[buyers] = rng.random(buyers.size) > p[buyers]  # dropout right after a purchase
        active = buyers[alive[buyers]]
    return x, tx, np.full(n, T), future


def test_churn_probability_and_expected_purchases_match_simulation() -> None:
    horizon = 180.0
    x, tx, T, future = _simulate_with_future(CDNOW, 60_000, 365.0, horizon, seed=11)
    churn = probability_no_purchase(CDNOW, horizon, x, tx, T)
    n_exp = expected_purchases(CDNOW, horizon, x, tx, T)
    groups = {"one-time": x == 0, "x=1-2": (x >= 1) & (x <= 2), "x=3-9": (x >= 3) & (x < 10), "x>=10": x >= 10}
    for name, g in groups.items():
        assert g.sum() > 500, name
        observed = (future[g] == 0).mean()
        se = math.sqrt((churn[g] * (1 - churn[g])).sum()) / g.sum()
        assert abs(observed - churn[g].mean()) < 4 * se + 1e-3, (name, observed, churn[g].mean())
        se_n = future[g].std() / math.sqrt(g.sum())
        assert abs(future[g].mean() - n_exp[g].mean()) < 4 * se_n + 1e-3, (name, future[g].mean(), n_exp[g].mean())
    # the summary at T of the purchase-by-purchase simulator matches simulate_bgnbd (same model)
    x2, _, _ = simulate_bgnbd(CDNOW, 60_000, 365.0, seed=12)
    assert abs(x.mean() - x2.mean()) < 4 * math.sqrt(x.var() / x.size + x2.var() / x2.size)
    assert abs((x == 0).mean() - (x2 == 0).mean()) < 0.015


def test_simulate_bgnbd_recency_distribution() -> None:
    """Order-statistics shortcut vs purchase-by-purchase simulation: same recency distribution."""
    x, tx, _, _ = _simulate_with_future(OTHER, 30_000, 200.0, 1.0, seed=13)
    x2, tx2, T2 = simulate_bgnbd(OTHER, 30_000, 200.0, seed=14)
    assert np.all(tx2 <= T2) and np.all(tx2[x2 == 0] == 0)
    for q in (0.25, 0.5, 0.75):
        assert np.quantile(tx[x > 0], q) == pytest.approx(np.quantile(tx2[x2 > 0], q), abs=5.0)
