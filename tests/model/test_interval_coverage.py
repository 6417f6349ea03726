"""Out-of-sample coverage of the 80% intervals on generated data: a model trained at the as-of date, its intervals
checked against the true next 90 days (which training never saw).

One population (5,000 generated customers, two years, as of 2024-12-30, where the level forecast holds; the quality
scoreboard covers the scenarios where it does not: benchmarks/results/intervals.md). Tolerances are sampling noise
plus the shift from the validation window to the next one: about 4,000 customers score, 1,500-2,000 of them with
P(no purchase) <= 80% (binomial standard error of a share near 0.8: 0.01).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from features.contract import prepare_transactions
from features.kernel import compute_features, index_transactions
from features.labels import labels_at
from features.synthetic import generate_transactions
from serving.model import tier_index
from training.intervals import purchase_days
from training.metrics import interval_metrics
from training.pipeline import PRODUCT, fit_pipeline

AS_OF = dt.date(2024, 12, 30)
HORIZON = 90


@pytest.fixture(scope="module")
def fold():
    raw = generate_transactions(5_000, 730 + HORIZON, seed=21)  # two years, then the 90 days scored
    tx, _ = prepare_transactions(raw)
    prep = index_transactions(tx)
    train_prep = index_transactions(tx[tx["timestamp"].dt.date <= AS_OF])
    result = fit_pipeline(train_prep, AS_OF, HORIZON, seed=0)
    test = compute_features(prep, AS_OF)
    _, labels = labels_at(prep, AS_OF, HORIZON)
    X = test[list(result.model.feature_columns)].to_numpy(dtype=np.float64)
    return result, result.model.score(X), labels["future_value"], purchase_days(prep, AS_OF, HORIZON)


@pytest.mark.slow  # one training run on 5,000 customers
def test_value_intervals_cover_out_of_sample_what_they_promise(fold) -> None:
    result, scores, actual, _ = fold
    scale = result.model.meta.margin * result.model.meta.discount_factor
    tiers = tier_index(scores.expected_value, result.model.meta.tier_thresholds)
    i = scores.intervals
    m = interval_metrics(actual, i.value_low / scale, i.value_high / scale, scores.churn_probability, tiers == 0)
    assert abs(m["coverage"] - m["promised"]) <= 0.03, m
    assert abs(m["coverage_attainable"] - 0.80) <= 0.04, m
    assert abs(m["coverage_top_tier"] - 0.80) <= 0.08, m  # ~250 customers: standard error 0.025
    assert m["below"] < 0.15 and m["above"] < 0.15  # both ends matter, neither is left open


@pytest.mark.slow
def test_cross_fitted_coverage_at_the_validation_cutoff(fold) -> None:
    result, *_ = fold
    m = result.metrics[PRODUCT]
    assert abs(m["interval_coverage"] - m["interval_promised"]) <= 0.02, m
    assert abs(m["interval_coverage_attainable"] - 0.80) <= 0.04, m
    reliability = result.interval_checks["reliability"]
    assert (abs(reliability["observed"] - reliability["promised"]) <= 0.04).all(), reliability


@pytest.mark.slow
def test_purchase_day_intervals_cover_what_they_promise(fold) -> None:
    _, scores, _, days = fold
    i = scores.intervals
    assert (i.purchases_low <= i.purchases_p50).all() and (i.purchases_p50 <= i.purchases_high).all()
    m = interval_metrics(days, i.purchases_low, i.purchases_high, scores.churn_probability, np.zeros(len(days), bool))
    assert abs(m["coverage"] - m["promised"]) <= 0.05, m  # whole numbers: an interval holds at least its promise


@pytest.mark.slow
def test_quantiles_are_ordered_and_scale_with_the_expected_value(fold) -> None:
    _, scores, *_ = fold
    i = scores.intervals
    assert (i.value_p10 >= 0).all() and (i.value_p10 <= i.value_p50).all() and (i.value_p50 <= i.value_p90).all()
    assert (i.value_low <= i.value_high).all() and (i.value_high <= i.value_p90 + 1e-9).all()
    zero_mass = scores.churn_probability >= 0.9
    assert (i.value_p90[zero_mass] == 0).all()  # P(no purchase) >= 90%: the 90% quantile is the point mass
