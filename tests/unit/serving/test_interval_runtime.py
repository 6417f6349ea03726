"""serving.intervals and serving.btyd.counts: the quantile functions and 80% intervals of value and purchase days
on hand-computed cases, the equity interval, BG/NBD's conditional count distribution against its closed-form mean
and a direct simulation, and bundles with and without intervals."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from model_util import make_model

from serving.btyd.bgnbd import BGNBDParams, expected_purchases, probability_alive, probability_no_purchase
from serving.btyd.counts import alive_count_pmf, cdf_quantiles, positive_count_cdf, positive_count_quantiles
from serving.intervals import (
    RATIO_GRID,
    EquityMoments,
    IntervalCalibration,
    count_intervals,
    equity_interval,
    equity_interval_of,
    equity_moments,
    interval_levels,
    promised_coverage,
    value_intervals,
    value_quantile,
)
from serving.model import BundleMeta, ScoringModel, tier_index
from serving.scoring import INTERVAL_FIELDS, json_rows, score_customers

LINEAR = np.linspace(0.0, 2.0, RATIO_GRID)[None, :]
"""One tier whose ratio quantile function is K(beta) = 2 beta (linear, so interpolation is exact)."""


def calibration(tiers: int = 2) -> IntervalCalibration:
    return IntervalCalibration(
        ratio_knots=tuple(tuple(LINEAR[0].tolist()) for _ in range(tiers)),
        value_cv2=(0.25,) * tiers,
    )


def test_value_quantile_is_zero_inside_the_point_mass_and_scaled_ratios_above_it() -> None:
    # pi = 0.5, expected value 10: m = 10 / 0.5 = 20; Q(tau) = 20 * 2 * (tau - 0.5) / 0.5 above the mass
    p, ev, g = np.array([0.5]), np.array([10.0]), np.array([0])
    assert value_quantile(0.5, p, ev, g, LINEAR).tolist() == [0.0]
    assert value_quantile(0.4, p, ev, g, LINEAR).tolist() == [0.0]
    assert value_quantile(0.9, p, ev, g, LINEAR)[0] == pytest.approx(32.0)  # 20 * K(0.8) = 20 * 1.6
    assert value_quantile(0.8, p, ev, g, LINEAR)[0] == pytest.approx(24.0)  # 20 * K(0.6)
    # pi = 0.05, expected value 19: m = 20; beta(0.1) = 0.05 / 0.95, beta(0.9) = 0.85 / 0.95
    p, ev = np.array([0.05]), np.array([19.0])
    assert value_quantile(0.1, p, ev, g, LINEAR)[0] == pytest.approx(20 * 2 * 0.05 / 0.95)
    assert value_quantile(0.9, p, ev, g, LINEAR)[0] == pytest.approx(20 * 2 * 0.85 / 0.95)


def test_the_80_interval_is_equal_tailed_below_10_percent_zero_mass_and_starts_at_0_above() -> None:
    p = np.array([0.05, 0.5, 0.9, 0.1])
    ev = np.array([19.0, 10.0, 1.0, 9.0])
    g = np.zeros(4, dtype=np.intp)
    p10, p50, p90, low, high = value_intervals(p, ev, g, calibration(1))
    assert interval_levels(p)[1].tolist() == [0.9, 0.8, 0.8, 0.8]
    assert low[0] == pytest.approx(40 * 0.05 / 0.95) and high[0] == pytest.approx(40 * 0.85 / 0.95)
    assert low[1] == 0.0 and high[1] == pytest.approx(24.0)  # [0, Q(0.8)] holds 0.5 + 0.3
    assert low[2] == 0.0 and high[2] == 0.0  # P(no purchase) 0.9 > 0.8: {0}, which holds 90%
    assert low[3] == 0.0 and high[3] == pytest.approx(10.0 * 2 * (0.8 - 0.1) / 0.9)  # m = 9 / 0.9 = 10
    np.testing.assert_array_equal(low, p10)
    assert (p10 <= p50).all() and (p50 <= p90).all() and (high <= p90).all()
    assert promised_coverage(p).tolist() == [0.8, 0.8, 0.9, 0.8]


def test_quantiles_scale_with_the_expected_value_for_fixed_tiers() -> None:
    # level factor x margin x discount multiply expected_value; the intervals follow (the ratios are unitless)
    p, ev, g = np.array([0.05, 0.3, 0.95]), np.array([19.0, 7.0, 2.0]), np.array([0, 1, 0])
    base, scaled = value_intervals(p, ev, g, calibration()), value_intervals(p, 2.5 * ev, g, calibration())
    for a, b in zip(base, scaled, strict=True):
        np.testing.assert_allclose(b, 2.5 * a)


def test_the_calibration_reads_back_equal_from_bundle_json() -> None:
    meta = dataclasses.replace(make_model().meta, intervals=calibration().to_dict())
    assert BundleMeta.from_json(meta.to_json()) == meta


def test_tiers_pick_their_own_ratios() -> None:
    knots = np.vstack([LINEAR[0], 2 * LINEAR[0]])  # tier 1's ratios twice tier 0's
    p, ev = np.array([0.5, 0.5]), np.array([10.0, 10.0])
    q = value_quantile(0.9, p, ev, np.array([0, 1]), knots)
    assert q.tolist() == pytest.approx([32.0, 64.0])


def test_count_quantiles_on_a_hand_made_distribution() -> None:
    cdf = np.array([[0.0, 0.5, 0.8, 1.0], [0.0, 0.5, 0.8, 1.0]])  # P(X <= n | X >= 1), n = 0..3
    p = np.array([0.2, 0.05])
    # pi 0.2: Q(0.5) -> beta 0.375 -> 1; Q(0.8) -> beta 0.75 -> 2; Q(0.1) inside the mass -> 0
    # pi 0.05: Q(0.1) -> beta 0.0526 -> 1; Q(0.5) -> beta 0.4737 -> 1; Q(0.9) -> beta 0.8947 -> 3
    assert cdf_quantiles(cdf[:1], np.array([[0.375, 0.75, 0.8, 0.80001]])).tolist() == [[1.0, 2.0, 2.0, 3.0]]
    p50, low, high = count_intervals(p, lambda beta: cdf_quantiles(cdf, beta))
    assert p50.tolist() == [1.0, 1.0] and low.tolist() == [0.0, 1.0] and high.tolist() == [2.0, 3.0]


def test_count_quantiles_in_blocks_are_those_of_the_whole_distribution(monkeypatch) -> None:
    x, big_t = np.array([0.0, 3.0, 12.0, 40.0] * 50), np.array([40.0, 200.0, 300.0, 330.0] * 50)
    beta = np.tile([0.2, 0.5, 0.95], (200, 1))
    whole = cdf_quantiles(positive_count_cdf(PARAMS, x, big_t, 90.0), beta)
    monkeypatch.setattr("serving.btyd.counts._BLOCK_CELLS", 500)  # a few customers per block
    np.testing.assert_array_equal(positive_count_quantiles(PARAMS, x, big_t, 90.0, beta), whole)


def test_equity_interval_is_a_lognormal_with_the_hand_computed_spread() -> None:
    ev, g = np.array([100.0, 100.0]), np.array([0, 0])
    low, high, total = equity_interval(ev, g, calibration(1))
    s2 = math.log1p(0.25 * 20_000 / 200.0**2)  # variance 0.25 * (100^2 + 100^2), total 200
    center, z = math.log(200.0) - s2 / 2, 1.2815515655446004
    assert total == 200.0
    assert low == pytest.approx(math.exp(center - z * math.sqrt(s2)))
    assert high == pytest.approx(math.exp(center + z * math.sqrt(s2)))
    with_level = equity_interval(ev, g, dataclasses.replace(calibration(1), level_log_sd=0.2))
    assert with_level[0] < low and with_level[1] > high  # level uncertainty widens it
    assert equity_interval(np.zeros(3), np.zeros(3, dtype=np.intp), calibration(1)) == (0.0, 0.0, 0.0)
    assert math.isnan(equity_interval(ev, g, IntervalCalibration(None, None))[0])


def test_equity_moments_are_hand_computed_sums_that_add_over_disjoint_parts() -> None:
    ev, g = np.array([3.0, -1.0, 4.0, 2.0]), np.array([0, 1, 0, 1])
    # negative expected values count 0; tier 0: 3^2 + 4^2, tier 1: 0^2 + 2^2; a third tier without customers
    assert equity_moments(ev, g, 3) == EquityMoments(total=9.0, squares=(25.0, 4.0, 0.0))
    parts = [equity_moments(ev[:2], g[:2], 2), equity_moments(ev[2:], g[2:], 2)]
    summed = EquityMoments(sum(m.total for m in parts), tuple(np.add(*[m.squares for m in parts]).tolist()))
    c = dataclasses.replace(calibration(2), value_cv2=(0.25, 1.0), level_log_sd=0.1)
    assert equity_interval_of(summed, c) == equity_interval(ev, g, c)  # small sums: exact in any order
    # variance 0.25 * 25 + 1.0 * 4 = 10.25, total 9
    s2 = math.log1p(10.25 / 81.0) + 0.01
    low, high, total = equity_interval(ev, g, c)
    assert total == 9.0
    assert low == pytest.approx(math.exp(math.log(9.0) - s2 / 2 - 1.2815515655446004 * math.sqrt(s2)))
    assert high == pytest.approx(math.exp(math.log(9.0) - s2 / 2 + 1.2815515655446004 * math.sqrt(s2)))
    with pytest.raises(ValueError):  # customers of a tier the calibration does not know
        equity_interval_of(EquityMoments(1.0, (1.0, 1.0, 1.0)), c)


PARAMS = BGNBDParams(r=0.243, alpha=30.9, a=0.793, b=2.426)


def test_bgnbd_count_distribution_matches_its_closed_form_mean_and_zero() -> None:
    x, tx, big_t = (
        np.array([0.0, 2.0, 10.0, 40.0]),
        np.array([0.0, 30.0, 200.0, 300.0]),
        np.array([100.0] + [320.0] * 3),
    )
    pmf = alive_count_pmf(PARAMS, x, big_t, 90.0, 600)
    alive = probability_alive(PARAMS, x, tx, big_t)
    np.testing.assert_allclose(pmf.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(
        (pmf * np.arange(601)).sum(axis=1) * alive, expected_purchases(PARAMS, 90.0, x, tx, big_t)
    )
    np.testing.assert_allclose(1 - alive * (1 - pmf[:, 0]), probability_no_purchase(PARAMS, 90.0, x, tx, big_t))


def test_bgnbd_count_distribution_matches_a_simulation_of_the_posterior_process() -> None:
    # given alive at T: lambda ~ Gamma(r + x, alpha + T), p ~ Beta(a, b + x), then BG/NBD from T on
    x, big_t, t, n = 3.0, 200.0, 90.0, 400_000
    rng = np.random.default_rng(3)
    lam = rng.gamma(PARAMS.r + x, 1.0 / (PARAMS.alpha + big_t), n)
    drop = rng.beta(PARAMS.a, PARAMS.b + x, n)
    arrivals = rng.poisson(lam * t)
    before_dropout = rng.geometric(drop)  # purchases up to and including the one after which she drops out
    counts = np.minimum(arrivals, before_dropout)
    pmf = alive_count_pmf(PARAMS, [x], [big_t], t, 12)[0]
    observed = np.bincount(counts, minlength=13)[:13] / n
    se = np.sqrt(pmf * (1 - pmf) / n)
    assert (np.abs(observed - pmf) <= 4 * se + 1e-6).all(), (observed, pmf)


def test_positive_count_cdf_is_a_distribution_on_at_least_one_purchase_day() -> None:
    cdf = positive_count_cdf(PARAMS, [0.0, 5.0, 60.0], [50.0, 300.0, 330.0], 90.0)
    assert cdf.shape[1] <= 91  # never more purchase days than days in the window
    assert (cdf[:, 0] == 0).all() and (cdf[:, -1] == 1).all() and (np.diff(cdf, axis=1) >= 0).all()


def test_no_customers_score_empty_intervals_and_timing() -> None:
    empty = positive_count_quantiles(PARAMS, np.zeros(0), np.zeros(0), 90.0, np.zeros((0, 3)))
    assert empty.shape == (0, 3)
    with pytest.raises(ValueError, match="one row of levels per customer"):
        positive_count_quantiles(PARAMS, np.zeros(2), np.zeros(2), 90.0, np.zeros(2))


def test_tier_index_follows_the_descending_bounds() -> None:
    assert tier_index(np.array([150.0, 100.0, 99.9, 0.0, -1.0]), (100.0, 10.0, 0.0)).tolist() == [0, 0, 1, 2, 2]


def test_a_bundle_with_intervals_scores_them_and_keeps_them_through_json() -> None:
    model = make_model()
    meta = dataclasses.replace(model.meta, intervals=calibration().to_dict())
    scored = ScoringModel(model.churn_booster, model.value_booster, BundleMeta.from_json(meta.to_json()))
    X = np.array([[10.0, 500.0, 3.0], [90.0, 5.0, 1.0], [50.0, np.nan, 2.0]])
    out = scored.score(X)
    assert out.intervals is not None and out.intervals.purchases_low is None  # no BG/NBD in this bundle
    i = out.intervals
    assert (
        (i.value_p10 <= i.value_p50).all()
        and (i.value_p50 <= i.value_p90).all()
        and (i.value_low <= i.value_high).all()
    )
    expected = value_intervals(
        out.churn_probability, out.expected_value, tier_index(out.expected_value, meta.tier_thresholds), calibration()
    )
    np.testing.assert_array_equal(i.value_high, expected[4])
    row = json_rows(score_customers(scored, ["a", "b", "c"], X), reasons=False)[0]
    assert row["value_p90"] == round(float(i.value_p90[0]), 4) and row["purchases_p50"] is None
    assert scored.describe()["intervals"]["value"] is True


def test_a_bundle_saved_before_intervals_loads_and_scores_none() -> None:
    model = make_model()
    raw = json.loads(model.meta.to_json())
    del raw["intervals"]
    raw["format_version"] = 2
    old = ScoringModel(model.churn_booster, model.value_booster, BundleMeta.from_json(json.dumps(raw)))
    assert old.meta.intervals is None and old.score(np.array([[10.0, 500.0, 3.0]])).intervals is None
    assert old.describe()["intervals"] is None
    row = json_rows(score_customers(old, ["a"], np.array([[10.0, 500.0, 3.0]])), reasons=False)[0]
    assert all(row[f] is None for f in INTERVAL_FIELDS)


def test_a_calibration_for_other_tiers_or_another_level_is_refused() -> None:
    model = make_model()  # two tiers
    with pytest.raises(ValueError, match="3 tiers of ratios, not 2"):
        dataclasses.replace(model.meta, intervals=calibration(3).to_dict())
    with pytest.raises(ValueError, match=r"level 0\.9"):
        IntervalCalibration.from_dict({**calibration().to_dict(), "level": 0.9})
    with pytest.raises(ValueError, match="non-decreasing"):
        IntervalCalibration(((1.0,) * (RATIO_GRID - 1) + (0.0,),), (0.1,))
