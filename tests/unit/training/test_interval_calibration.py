"""training.intervals and the interval metrics: the conformal correction, ratios, the per-tier fit, purchase-day
labels, cross-fitting and coverage, on hand-computed cases."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from features.contract import prepare_transactions
from features.kernel import index_transactions
from serving.intervals import RATIO_GRID
from training import intervals as iv
from training.metrics import interval_metrics


def test_conformal_knots_take_the_ceil_n_plus_1_beta_th_smallest_score() -> None:
    knots = iv.conformal_knots(np.array([4.0, 1.0, 3.0, 2.0]))  # n = 4: rank ceil(5 beta), clipped to 1..4
    assert knots.shape == (RATIO_GRID,)
    beta = np.linspace(0, 1, RATIO_GRID)
    by_level = dict(zip(np.round(beta, 2), knots, strict=True))
    assert by_level[0.0] == 1.0  # rank 0 -> clipped to the smallest
    assert by_level[0.2] == 1.0  # ceil(1.0) = 1 (not 2: 5 x 0.2 is 1 up to float noise)
    assert by_level[0.21] == 2.0  # ceil(1.05) = 2
    assert by_level[0.6] == 3.0 and by_level[0.61] == 4.0
    assert by_level[0.8] == 4.0 and by_level[1.0] == 4.0  # beyond n / (n + 1): the largest
    assert (np.diff(knots) >= 0).all()


def test_conformal_knots_replace_infinite_scores_by_the_largest_finite_one() -> None:
    knots = iv.conformal_knots(np.array([1.0, np.inf, 2.0]))
    assert knots.max() == 2.0


def test_ratios_divide_the_actual_by_the_expected_value_given_a_purchase() -> None:
    p = np.array([0.5, 0.5, 0.0, 0.2])
    ev = np.array([10.0, 10.0, 0.0, 8.0])
    y = np.array([30.0, 0.0, 5.0, -3.0])
    r = iv.ratios(p, ev, y)
    assert r[0] == 1.5  # m = 10 / 0.5 = 20
    assert math.isnan(r[1]) and math.isnan(r[3])  # no purchase value: not a ratio
    assert r[2] == math.inf  # bought although the value head said 0


def test_fit_calibration_gives_each_tier_its_ratios_or_pools_a_small_tier() -> None:
    rng = np.random.default_rng(0)
    n = 200
    tiers = np.r_[np.zeros(100, dtype=np.intp), np.ones(90, dtype=np.intp), np.full(10, 2)]
    p = np.full(n, 0.5)
    ev = np.full(n, 10.0)  # m = 20
    ratio = np.where(tiers == 0, 1.0, 3.0) * rng.uniform(0.5, 1.5, n)
    y = 20.0 * ratio
    cal = iv.fit_calibration(p, ev, y, tiers, ("gold", "silver", "bronze"), level_log_sd=0.1)
    assert cal.calibration_rows == (100, 90, 200) and cal.pooled_tiers == ("bronze",)
    knots = np.asarray(cal.ratio_knots)
    assert knots[0, 50] == pytest.approx(np.sort(ratio[:100])[50])  # ceil(101 x 0.5) = 51st smallest
    assert knots[1, 50] > 2 * knots[0, 50]
    assert cal.value_cv2[0] == pytest.approx(iv.squared_cv(ev[:100], y[:100]))
    assert cal.level_log_sd == 0.1
    with pytest.raises(ValueError, match="no customer bought"):
        iv.fit_calibration(p, ev, np.zeros(n), tiers, ("gold", "silver", "bronze"))


def test_squared_cv_and_the_level_s_log_sd_by_hand() -> None:
    # (12 - 10)^2 + (0 - 10)^2 = 104 over 10^2 + 10^2 = 200
    assert iv.squared_cv(np.array([10.0, 10.0]), np.array([12.0, 0.0])) == pytest.approx(0.52)
    assert iv.squared_cv(np.zeros(2), np.ones(2)) == 0.0
    assert iv.level_log_sd(0.1) == pytest.approx(0.1 * math.sqrt(math.pi / 2))
    assert iv.level_log_sd(None) is None and iv.level_log_sd(math.nan) is None


def test_tiers_by_rank_use_the_top_shares() -> None:
    ev = np.arange(100, dtype=np.float64)
    tiers = iv.tiers_by_rank(ev, (0.05, 0.2, 0.5))
    assert np.bincount(tiers).tolist() == [5, 15, 30, 50]
    assert iv.tier_thresholds(ev, (0.5,)) == (pytest.approx(49.5), 0.0)


def test_purchase_days_count_distinct_days_with_a_purchase_in_the_window() -> None:
    raw = pd.DataFrame(
        [
            ("a", "2024-01-01", 10.0),  # before the cutoff
            ("a", "2024-01-03", 5.0),
            ("a", "2024-01-03 18:00", 7.0),  # same day: one purchase day
            ("a", "2024-01-05", -5.0),  # a refund is not a purchase
            ("a", "2024-01-12", 0.0),  # zero amount counts (contract: amount >= 0)
            ("a", "2024-01-20", 9.0),  # after the window
            ("b", "2024-01-02", 4.0),
            ("c", "2024-01-04", 4.0),  # first transaction after the cutoff: not scored
        ],
        columns=["customer_id", "timestamp", "amount"],
    )
    tx, _ = prepare_transactions(raw)
    counts = iv.purchase_days(index_transactions(tx), dt.date(2024, 1, 2), 10)  # window Jan 3 .. Jan 12
    assert counts.tolist() == [2.0, 0.0]  # a, b (c is not present at the cutoff)


def test_interval_metrics_by_hand() -> None:
    y = np.array([0.0, 5.0, 20.0, 0.0, -1.0])
    low = np.array([0.0, 1.0, 1.0, 2.0, 0.0])
    high = np.array([10.0, 10.0, 10.0, 10.0, 0.0])
    p = np.array([0.5, 0.05, 0.05, 0.05, 0.95])
    m = interval_metrics(y, low, high, p, np.array([False, True, True, False, False]))
    assert m["coverage"] == pytest.approx(2 / 5)  # 0 in [0, 10], 5 in [1, 10]
    assert m["below"] == pytest.approx(2 / 5) and m["above"] == pytest.approx(1 / 5)
    assert m["promised"] == pytest.approx((0.8 * 4 + 0.95) / 5)
    assert m["coverage_attainable"] == pytest.approx(2 / 4)  # the four with P(no purchase) <= 0.8
    assert m["coverage_top_tier"] == pytest.approx(1 / 2)
    assert math.isnan(interval_metrics(y, low, high, p, np.zeros(5, dtype=bool))["coverage_top_tier"])


def test_cross_fitted_intervals_calibrate_each_half_on_the_other() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    p = rng.uniform(0.0, 0.9, n)
    ev = rng.lognormal(3.0, 1.0, n)
    m = ev / (1 - p)
    buys = rng.uniform(size=n) > p
    y = np.where(buys, m * rng.lognormal(-0.5, 1.0, n), 0.0)
    tiers = iv.tiers_by_rank(ev, (0.05, 0.2, 0.5))
    folds = (np.arange(n) % 2).astype(np.int8)
    fitted = iv.cross_fitted_intervals(p, ev, y, tiers, folds, ("a", "b", "c", "d"))
    assert fitted is not None
    m_ = interval_metrics(y, fitted.low, fitted.high, p, tiers == 0)
    # the model is right by construction: out-of-half coverage is what the intervals promise (binomial noise)
    assert abs(m_["coverage"] - m_["promised"]) < 0.03
    assert abs(m_["coverage_attainable"] - 0.8) < 0.03
    table = iv.reliability_table(y, fitted.quantiles, p)
    assert (np.abs(table["observed"] - table["promised"]) < 0.03).all()
    coverage = iv.tier_coverage(y, fitted.low, fitted.high, p, tiers, ("a", "b", "c", "d"))
    assert coverage["customers"].tolist() == np.bincount(tiers).tolist()
    assert iv.cross_fitted_intervals(p, ev, np.zeros(n), tiers, folds, ("a", "b", "c", "d")) is None
