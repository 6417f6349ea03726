"""Interval calibration at the validation cutoff, and how well intervals cover, at ``V`` and out of time.

The runtime (what a bundle does with its calibration) is :mod:`serving.intervals`; this module fits it.

At the validation cutoff ``V = as_of - H`` every validation customer has a churn probability and an expected value
that no label of hers has touched (the selection heads never saw ``V``'s labels; calibration and level are
cross-fitted on two halves of the customers, see :mod:`training.pipeline`), and her actual value over the next
``H`` days. For each customer who bought (actual > 0) the ratio ``R = actual / m`` with ``m = expected value /
(1 - P(no purchase))`` is a conformity score; the ratios of a tier (tiers by rank at ``V`` with the training
config's ``tier_top_shares``, as the bundle's tiers are at the as-of date) give that tier's conformal quantile
function (:func:`conformal_knots`, Mondrian split conformal: coverage holds per tier, the top tier included, for
customers exchangeable with ``V``'s). A tier with fewer than :data:`MIN_TIER_ROWS` buying customers uses every
tier's ratios (named in the calibration).

Honest coverage at ``V`` is cross-fitted like the rest of the validation: ratios of one half of the customers
calibrate the other half's intervals (:func:`cross_fitted_intervals`). Out-of-time coverage -- the customer
base, the level and the season move between ``V`` and the as-of date -- is measured by the backtest
(:func:`training.jobs.evaluate_fold`) and the quality scoreboard.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd

from features.kernel import PreparedTransactions, date_to_day
from serving.intervals import (
    INTERVAL_LEVEL,
    MIN_BUY_PROBABILITY,
    RATIO_GRID,
    IntervalCalibration,
    promised_coverage,
    value_intervals,
    value_quantiles,
)
from serving.model import tier_index
from training.metrics import covered

MIN_TIER_ROWS = 30
"""Buying customers a tier needs at ``V`` to be calibrated on its own ratios."""
RELIABILITY_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""Quantile levels of the reliability table (0.05 .. 0.95)."""


def tier_thresholds(expected_value: np.ndarray, top_shares: tuple[float, ...]) -> tuple[float, ...]:
    """Tier lower bounds (highest tier first, the last 0): the expected-value quantiles at the cumulative top
    shares, e.g. ``(0.05, 0.2, 0.5)`` -> top 5%, next 15%, next 30%, the rest (the bundle's tiers at as-of)."""
    return (*tuple(float(np.quantile(expected_value, 1.0 - s)) for s in top_shares), 0.0)


def tiers_by_rank(expected_value: np.ndarray, top_shares: tuple[float, ...]) -> np.ndarray:
    """Tier index per customer (0 = highest) by rank within ``expected_value``: the tiers a population would get
    from thresholds fitted on itself."""
    return tier_index(expected_value, tier_thresholds(expected_value, top_shares))


def purchase_days(prep: PreparedTransactions, cutoff: dt.date, horizon_days: int) -> np.ndarray:
    """Distinct days with a purchase (``amount >= 0``) in ``(cutoff, cutoff + H]`` per customer present at the
    cutoff, in the kernel's customer order (that of :func:`features.labels.labels_at`): the count that
    ``purchases_*`` predict."""
    day = date_to_day(cutoff)
    present = np.bincount(prep.code[prep.day <= day], minlength=prep.n_customers) > 0
    window = (prep.day > day) & (prep.day <= day + horizon_days) & (prep.amount >= 0)
    pairs = np.unique(prep.code[window].astype(np.int64) * (horizon_days + 1) + (prep.day[window] - day))
    counts = np.bincount(pairs // (horizon_days + 1), minlength=prep.n_customers)
    return counts[np.flatnonzero(present)].astype(np.float64)


def ratios(churn_probability: np.ndarray, expected_value: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """``actual / m`` (``m = expected_value / (1 - P(no purchase))``) of the customers who bought (actual > 0),
    NaN for the others; ``inf`` where ``m`` is 0 but the customer bought."""
    p = np.asarray(churn_probability, dtype=np.float64)
    m = np.maximum(np.asarray(expected_value, dtype=np.float64), 0.0) / np.maximum(1.0 - p, MIN_BUY_PROBABILITY)
    y = np.asarray(actual, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(m > 0, y / np.where(m > 0, m, 1.0), np.inf)
    return np.where(y > 0, r, np.nan)


def conformal_knots(scores: np.ndarray) -> np.ndarray:
    """The split-conformal quantile function of ``scores`` on the :data:`RATIO_GRID` levels ``beta = 0, 0.01, .., 1``:
    the ``ceil((n + 1) beta)``-th smallest score (1-based, clipped to ``1..n``), so that a new exchangeable score
    is at most knot(beta) with probability at least ``beta`` (for ``beta <= n / (n + 1)``). Infinite scores (a
    purchase where the value head said 0) are replaced by the largest finite one."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size == 0:
        raise ValueError("conformal_knots needs at least one score")
    finite = s[np.isfinite(s)]
    s = np.minimum(s, finite.max() if finite.size else 0.0)
    beta = np.linspace(0.0, 1.0, RATIO_GRID)
    rank = np.clip(np.ceil((s.size + 1) * beta - 1e-9).astype(np.intp), 1, s.size)
    return s[rank - 1]


def squared_cv(expected_value: np.ndarray, actual: np.ndarray) -> float:
    """``sum (actual - expected)^2 / sum expected^2``: a group's squared coefficient of variation of a customer's
    value around its expected value (the equity interval's per-customer variance is this x expected^2); 0 for an
    empty group or one without expected value."""
    ev = np.asarray(expected_value, dtype=np.float64)
    denominator = float(np.sum(ev**2))
    return float(np.sum((np.asarray(actual, dtype=np.float64) - ev) ** 2)) / denominator if denominator > 0 else 0.0


def fit_calibration(
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    actual: np.ndarray,
    tiers: np.ndarray,
    tier_names: tuple[str, ...],
    *,
    level_log_sd: float | None = None,
) -> IntervalCalibration:
    """The interval calibration from customers scored at ``V`` (``tiers``: index per customer, 0 = highest).

    Per tier the conformal ratio quantiles of its buying customers (:func:`conformal_knots`), or every tier's when
    it has fewer than :data:`MIN_TIER_ROWS`, and its :func:`squared_cv` (equity); ``ValueError`` when nobody bought
    at all."""
    r = ratios(churn_probability, expected_value, actual)
    bought = ~np.isnan(r)
    if not bought.any():
        raise ValueError("no customer bought in the validation window: intervals cannot be calibrated")
    pooled = r[bought]
    knots, cv2, rows, pooled_tiers = [], [], [], []
    for g, name in enumerate(tier_names):
        own = r[bought & (tiers == g)]
        sample = own if own.size >= MIN_TIER_ROWS else pooled
        if own.size < MIN_TIER_ROWS:
            pooled_tiers.append(name)
        knots.append(tuple(conformal_knots(sample).tolist()))
        cv2.append(squared_cv(expected_value[tiers == g], actual[tiers == g]))
        rows.append(int(sample.size))
    return IntervalCalibration(
        ratio_knots=tuple(knots),
        value_cv2=tuple(cv2),
        calibration_rows=tuple(rows),
        pooled_tiers=tuple(pooled_tiers),
        level_log_sd=level_log_sd,
    )


def level_log_sd(backtest_error: float | None) -> float | None:
    """The standard deviation of log(level forecast / actual) from the level estimator's backtest error (mean
    ``|log error|``, :class:`training.level.LevelChoice`): ``sd = mean |error| * sqrt(pi / 2)`` for a centred
    normal. None when the estimator could not be backtested."""
    if backtest_error is None or not math.isfinite(backtest_error):
        return None
    return float(backtest_error) * math.sqrt(math.pi / 2.0)


@dataclasses.dataclass(frozen=True)
class CrossFitted:
    """Intervals at ``V`` for the two customer halves, each calibrated on the other half (same order as input)."""

    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray
    low: np.ndarray
    high: np.ndarray
    quantiles: dict[float, np.ndarray]
    """``Q(tau)`` per customer at each :data:`RELIABILITY_LEVELS` level."""


def cross_fitted_intervals(
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    actual: np.ndarray,
    tiers: np.ndarray,
    folds: np.ndarray,
    tier_names: tuple[str, ...],
) -> CrossFitted | None:
    """Each half's intervals from a calibration on the other half (:func:`fit_calibration`); None when a half has
    no buyer (nothing to calibrate the other half with)."""
    n = len(actual)
    out = {k: np.full(n, np.nan) for k in ("p10", "p50", "p90", "low", "high")}
    quantiles = {t: np.full(n, np.nan) for t in RELIABILITY_LEVELS}
    for k in (0, 1):
        train, test = folds != k, folds == k
        if not test.any():
            continue
        try:
            calibration = fit_calibration(
                churn_probability[train], expected_value[train], actual[train], tiers[train], tier_names
            )
        except ValueError:
            return None
        p, ev, g = churn_probability[test], expected_value[test], tiers[test]
        for name, values in zip(out, value_intervals(p, ev, g, calibration), strict=True):
            out[name][test] = values
        found = value_quantiles(RELIABILITY_LEVELS, p, ev, g, calibration.knots)
        for j, tau in enumerate(RELIABILITY_LEVELS):
            quantiles[tau][test] = found[:, j]
    return CrossFitted(**out, quantiles=quantiles)


def reliability_table(
    actual: np.ndarray, quantiles: dict[float, np.ndarray], churn_probability: np.ndarray
) -> pd.DataFrame:
    """Per level ``tau``: the share of customers whose actual value is at most their ``Q(tau)`` (``observed``) and
    what calibrated quantiles give (``promised``, the mean of ``max(tau, P(no purchase))``: where ``tau`` is below a
    customer's P(no purchase), ``Q(tau) = 0`` holds the whole point mass)."""
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(churn_probability, dtype=np.float64)
    below = np.full_like(y, -np.inf)
    rows = [
        {"tau": tau, "observed": float(np.mean(covered(y, below, q))), "promised": float(np.mean(np.maximum(tau, p)))}
        for tau, q in quantiles.items()
    ]
    return pd.DataFrame(rows, columns=["tau", "observed", "promised"])


def tier_coverage(
    actual: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    churn_probability: np.ndarray,
    tiers: np.ndarray,
    tier_names: tuple[str, ...],
) -> pd.DataFrame:
    """Per tier: customers, the share whose actual value is inside the 80% interval, and the coverage the intervals
    promise (mean of :func:`serving.intervals.promised_coverage`)."""
    inside = covered(actual, low, high)
    promised = promised_coverage(churn_probability)
    rows = []
    for g, name in enumerate(tier_names):
        mask = tiers == g
        if mask.any():
            rows.append(
                {
                    "tier": name,
                    "customers": int(mask.sum()),
                    "coverage": float(inside[mask].mean()),
                    "promised": float(promised[mask].mean()),
                }
            )
    return pd.DataFrame(rows, columns=["tier", "customers", "coverage", "promised"])


__all__ = [
    "INTERVAL_LEVEL",
    "MIN_TIER_ROWS",
    "RELIABILITY_LEVELS",
    "CrossFitted",
    "conformal_knots",
    "cross_fitted_intervals",
    "fit_calibration",
    "level_log_sd",
    "purchase_days",
    "ratios",
    "reliability_table",
    "squared_cv",
    "tier_coverage",
    "tier_thresholds",
    "tiers_by_rank",
]
