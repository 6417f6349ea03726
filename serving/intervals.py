"""Per-customer prediction intervals of future value and of the number of purchase days, and the equity interval.

**Value.** Future value ``Y`` over the horizon (the units of ``expected_value``: currency after level, margin and
discount) has a point mass at 0 -- the customers who buy nothing -- and a heavy right tail. The predictive
distribution of customer ``i`` joins the model's two heads:

- ``P(Y = 0) = pi_i``, the calibrated churn probability (P(no purchase in the horizon));
- given a purchase, ``Y = m_i R`` with ``m_i = expected_value_i / (1 - pi_i)`` (the expected value given a
  purchase, ``1 - pi`` floored at :data:`MIN_BUY_PROBABILITY`) and ``R`` a unitless ratio whose distribution is
  the *empirical* distribution of ``actual / m`` over the customers of the same tier who bought at the validation
  cutoff ``V = as_of - H`` (:class:`IntervalCalibration`, fitted by ``training.intervals``).

The quantile at level ``tau`` is ``0`` when ``tau <= pi_i`` and ``m_i K_g((tau - pi_i) / (1 - pi_i))`` otherwise,
where ``K_g`` is tier ``g``'s conformal quantile function of ``R``: at level ``beta`` the ``ceil((n + 1) beta)``-th
smallest of its ``n`` calibration ratios (split conformal, Mondrian by tier: exchangeable customers of a tier have
``P(Y <= m K_g(beta) | Y > 0) >= beta``), stored on a grid of :data:`RATIO_GRID` levels and interpolated linearly.
Because ``m`` carries whatever scales ``expected_value`` (level factor x margin x discount at the as-of date), every
quantile scales with it, and ratios are unitless.

**The 80% interval** (:data:`INTERVAL_LEVEL` = ``L``) from that quantile function. With a point mass at 0 the
equal-tailed interval ``[P10, P90]`` holds 90% for every customer with ``pi >= 10%`` (``P10 = 0`` already holds the
whole atom), so the interval is:

- ``[Q(0.1), Q(0.9)]`` when ``pi < 0.1`` (0 is outside: equal tails);
- ``[0, Q(0.8)]`` when ``pi >= 0.1``: it holds ``0.8`` when ``pi <= 0.8`` and ``pi`` when ``pi > 0.8`` (then it is
  ``{0}``, the smallest closed interval holding 80%: no interval that includes 0 can hold less than ``pi``).

So the coverage the interval promises is ``max(pi, 0.8)`` per customer (:func:`promised_coverage`): exactly 80%
for customers who may well buy, more where a purchase is unlikely. ``value_low`` is always ``P10``.

**Purchase days.** ``P(X = 0) = pi_i`` (the same churn probability) and, given at least one purchase day, BG/NBD's
closed-form distribution of the count (:func:`serving.btyd.counts.positive_count_cdf`, the bundle's BG/NBD at its
as-of date); quantiles and the 80% interval follow the same rules on whole numbers (a count's interval holds at
least its promise). Not conformalized: its coverage is measured in the backtest and the quality scoreboard.

**Equity** (the sum over customers, :func:`equity_interval`): customers independent given the level, customer ``i``
of tier ``g`` with variance ``v_g expected_value_i^2``, where ``v_g`` is the tier's squared coefficient of variation
measured at ``V`` (``sum (actual - expected)^2 / sum expected^2``: robust to the few buyers the value head gave
almost nothing, whose ratios make ``E[R^2]`` useless), times a level factor whose log is normal with the standard
deviation the level estimator showed in its backtest; the sum as a lognormal with mean ``sum(expected_value)``. Only
``sum(expected_value)`` and each tier's sum of ``expected_value^2`` enter (:class:`EquityMoments`), so an engine
can add them up over partitions instead of gathering the customers.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = [
    "INTERVAL_LEVEL",
    "RATIO_GRID",
    "EquityMoments",
    "IntervalCalibration",
    "Intervals",
    "equity_interval",
    "equity_interval_of",
    "equity_moments",
    "interval_levels",
    "promised_coverage",
    "value_intervals",
    "value_quantile",
    "value_quantiles",
]

INTERVAL_LEVEL = 0.8
"""Content of the prediction intervals (value and purchase days)."""
LOWER_TAIL = (1.0 - INTERVAL_LEVEL) / 2.0
"""0.1: the lower tail of an equal-tailed interval, and the level of ``value_p10``."""
QUANTILE_LEVELS = (0.1, 0.5, 0.9)
"""The levels of ``value_p10``, ``value_p50``, ``value_p90``."""
RATIO_GRID = 101
"""Levels ``0, 0.01, ..., 1`` at which a tier's conformal quantile function of the ratio is stored."""
MIN_BUY_PROBABILITY = 1e-3
"""``1 - pi`` is floored here in ``m = expected_value / (1 - pi)``."""
METHOD = "zero-mass churn probability + Mondrian (per tier) split-conformal ratio quantiles"


@dataclasses.dataclass(frozen=True)
class IntervalCalibration:
    """What a bundle stores to give intervals (``bundle.json`` under ``intervals``; JSON only).

    ``ratio_knots``: per tier (in ``tier_names`` order), the conformal quantile of ``R = actual / m`` at the
    :data:`RATIO_GRID` levels ``0, 0.01, ..., 1`` (non-decreasing); None when nothing was labeled (a BTYD-only
    version): no value intervals. ``value_cv2``: per tier, the squared coefficient of variation of a customer's
    value at ``V`` (equity).
    ``calibration_rows``: per tier, the buying customers at ``V`` the ratios come from (a tier with fewer than
    the fitting minimum uses every tier's ratios). ``level_log_sd``: the standard deviation of log(level forecast
    / actual) the level estimator showed in its backtest (None: not backtested). ``purchases``: purchase-day
    intervals from the bundle's BG/NBD.
    """

    ratio_knots: tuple[tuple[float, ...], ...] | None
    value_cv2: tuple[float, ...] | None
    calibration_rows: tuple[int, ...] = ()
    pooled_tiers: tuple[str, ...] = ()
    """Tiers whose own ratios were too few: they use every tier's ratios."""
    level_log_sd: float | None = None
    purchases: bool = True
    level: float = INTERVAL_LEVEL
    method: str = METHOD

    def __post_init__(self) -> None:
        if self.ratio_knots is not None:
            for knots in self.ratio_knots:
                if len(knots) != RATIO_GRID or any(b < a for a, b in itertools.pairwise(knots)):
                    raise ValueError(f"interval ratio knots must be {RATIO_GRID} non-decreasing values per tier")
        if self.level != INTERVAL_LEVEL:
            raise ValueError(f"bundle intervals have level {self.level}; this version gives {INTERVAL_LEVEL}")

    @functools.cached_property
    def knots(self) -> np.ndarray:
        """``ratio_knots`` as a ``(tiers, RATIO_GRID)`` float array (built once per bundle)."""
        if self.ratio_knots is None:
            raise ValueError("this interval calibration holds no value ratios (nothing was labeled)")
        return np.asarray(self.ratio_knots, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-native (lists, not tuples): what ``bundle.json`` holds and reads back equal."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IntervalCalibration:
        knots = raw.get("ratio_knots")
        cv2 = raw.get("value_cv2")
        return cls(
            ratio_knots=tuple(tuple(float(v) for v in k) for k in knots) if knots is not None else None,
            value_cv2=tuple(float(v) for v in cv2) if cv2 is not None else None,
            calibration_rows=tuple(int(n) for n in raw.get("calibration_rows", ())),
            pooled_tiers=tuple(raw.get("pooled_tiers", ())),
            level_log_sd=raw.get("level_log_sd"),
            purchases=bool(raw.get("purchases", True)),
            level=float(raw.get("level", INTERVAL_LEVEL)),
            method=str(raw.get("method", METHOD)),
        )


@dataclasses.dataclass(frozen=True)
class Intervals:
    """Per-customer quantiles and 80% intervals (value in ``expected_value``'s units; purchase days as floats
    holding whole numbers). Purchase fields are None when the bundle has no BG/NBD."""

    value_p10: np.ndarray
    value_p50: np.ndarray
    value_p90: np.ndarray
    value_low: np.ndarray
    value_high: np.ndarray
    purchases_p50: np.ndarray | None = None
    purchases_low: np.ndarray | None = None
    purchases_high: np.ndarray | None = None


def interval_levels(churn_probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The quantile levels ``(low, high)`` of each customer's 80% interval (see the module docstring):
    ``(0.1, 0.9)`` when ``pi < 0.1``, else ``(0.1, 0.8)`` (``Q(0.1) = 0`` there)."""
    p = np.asarray(churn_probability, dtype=np.float64)
    equal_tails = p < LOWER_TAIL
    return np.full(p.shape, LOWER_TAIL), np.where(equal_tails, LOWER_TAIL + INTERVAL_LEVEL, INTERVAL_LEVEL)


def promised_coverage(churn_probability: np.ndarray) -> np.ndarray:
    """The probability the model gives each customer's 80% interval: ``max(pi, 0.8)`` (see the module docstring)."""
    return np.maximum(np.asarray(churn_probability, dtype=np.float64), INTERVAL_LEVEL)


def _positive_level(tau: np.ndarray | float, p: np.ndarray) -> np.ndarray:
    """``(tau - pi) / (1 - pi)`` clipped to ``[0, 1]``: the level within the purchase part."""
    return np.clip((tau - p) / np.maximum(1.0 - p, 1e-12), 0.0, 1.0)


def value_quantiles(
    taus: tuple[float, ...],
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    group: np.ndarray,
    knots: np.ndarray,
) -> np.ndarray:
    """``Q_i(tau)`` of future value per customer and level, an ``(n, len(taus))`` array (module docstring): 0 when
    ``tau <= pi_i``, else ``m_i K_g((tau - pi_i) / (1 - pi_i))`` with ``knots[g]`` the tier's ratio quantiles on the
    uniform grid (linear interpolation between grid levels)."""
    p = np.asarray(churn_probability, dtype=np.float64)[:, None]
    m = np.maximum(np.asarray(expected_value, dtype=np.float64)[:, None], 0.0) / np.maximum(
        1.0 - p, MIN_BUY_PROBABILITY
    )
    tau = np.asarray(taus, dtype=np.float64)[None, :]
    width = knots.shape[1]
    position = _positive_level(tau, p) * (width - 1)
    left = np.minimum(position.astype(np.intp), width - 2)  # position >= 0: truncation is the floor
    frac = position - left
    flat = knots.ravel()
    at = np.asarray(group, dtype=np.intp)[:, None] * width + left
    ratio = flat[at] * (1.0 - frac) + flat[at + 1] * frac
    return np.where(tau <= p, 0.0, m * ratio)


def value_quantile(
    tau: float, churn_probability: np.ndarray, expected_value: np.ndarray, group: np.ndarray, knots: np.ndarray
) -> np.ndarray:
    """``Q_i(tau)`` of future value per customer at one level (see :func:`value_quantiles`)."""
    return value_quantiles((tau,), churn_probability, expected_value, group, knots)[:, 0]


def value_intervals(
    churn_probability: np.ndarray, expected_value: np.ndarray, group: np.ndarray, calibration: IntervalCalibration
) -> tuple[np.ndarray, ...]:
    """``(p10, p50, p90, low, high)`` of future value per customer (``group``: tier index per customer)."""
    q = value_quantiles((*QUANTILE_LEVELS, INTERVAL_LEVEL), churn_probability, expected_value, group, calibration.knots)
    p10, p50, p90, p80 = q.T
    _, high_level = interval_levels(churn_probability)
    return p10, p50, p90, p10, np.where(high_level > INTERVAL_LEVEL, p90, p80)


def count_intervals(
    churn_probability: np.ndarray, positive_quantiles: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, ...]:
    """``(p50, low, high)`` of the purchase-day count per customer: at level ``tau``, 0 when ``tau <= pi``, else the
    smallest ``n >= 1`` with ``P(X <= n | X >= 1) >= (tau - pi) / (1 - pi)``, which ``positive_quantiles`` gives for
    an ``(n, 3)`` array of those levels (:func:`serving.btyd.counts.positive_count_quantiles`)."""
    p = np.asarray(churn_probability, dtype=np.float64)[:, None]
    low_level, high_level = interval_levels(p[:, 0])
    tau = np.column_stack([np.full(p.shape[0], 0.5), low_level, high_level])
    counts = positive_quantiles(_positive_level(tau, p))
    return tuple(np.where(tau <= p, 0.0, counts).T)


_Z = NormalDist().inv_cdf(0.5 + INTERVAL_LEVEL / 2.0)


@dataclasses.dataclass(frozen=True)
class EquityMoments:
    """What :func:`equity_interval` needs of a set of customers (its sufficient statistics), in the units of
    ``expected_value``: ``total = sum(max(expected_value, 0))`` and, per tier ``g`` (in ``tier_names`` order),
    ``squares[g] = sum over its customers of max(expected_value, 0)^2`` (units squared).

    Sums over customers, so the moments of disjoint sets add: an engine may compute them per partition or as a
    grouped aggregate (the Spark engine's ``groupBy(tier)`` of ``sum`` and ``sum`` of squares) and never hold the
    customers' values in one place.
    """

    total: float
    squares: tuple[float, ...]


def equity_moments(expected_value: np.ndarray, group: np.ndarray, tiers: int = 0) -> EquityMoments:
    """The :class:`EquityMoments` of these customers (``group``: tier index per customer; ``tiers``: the length of
    ``squares`` at least, so tiers without customers count 0)."""
    ev = np.maximum(np.asarray(expected_value, dtype=np.float64), 0.0)
    squares = np.bincount(np.asarray(group, dtype=np.intp), weights=ev**2, minlength=tiers)
    return EquityMoments(float(ev.sum()), tuple(float(v) for v in squares))


def equity_interval(
    expected_value: np.ndarray,
    group: np.ndarray,
    calibration: IntervalCalibration,
) -> tuple[float, float, float]:
    """``(low, high, total)``: the 80% interval of the sum of future value over these customers, and its center
    ``total = sum(expected_value)`` (same units): :func:`equity_interval_of` their :func:`equity_moments`.

    Assumptions: given the level, customers are independent, customer ``i`` of tier ``g`` with variance
    ``value_cv2[g] * expected_value_i^2``; the level factor is lognormal with log-sd ``calibration.level_log_sd``
    (0 when the level could not be backtested); the sum is lognormal with mean ``total`` and squared coefficient of
    variation ``variance / total^2`` compounded with the level's. The churn probabilities are not needed: the
    point mass at 0 is inside ``value_cv2``. (0, 0, 0) for no customers or no value; NaN bounds when the bundle has
    no value calibration.
    """
    tiers = len(calibration.value_cv2) if calibration.value_cv2 is not None else 0
    return equity_interval_of(equity_moments(expected_value, group, tiers), calibration)


def equity_interval_of(moments: EquityMoments, calibration: IntervalCalibration) -> tuple[float, float, float]:
    """``(low, high, total)`` of :func:`equity_interval` from the customers' :class:`EquityMoments` (the variance of
    the sum is ``sum_g value_cv2[g] * squares[g]``)."""
    total = moments.total
    if total <= 0.0:
        return 0.0, 0.0, 0.0
    if calibration.value_cv2 is None:
        return math.nan, math.nan, total
    cv2 = np.asarray(calibration.value_cv2, dtype=np.float64)
    squares = np.zeros(len(cv2))
    squares[: len(moments.squares)] = moments.squares  # more tiers of customers than of calibration: a ValueError
    variance = float(np.dot(cv2, squares))
    level_sd = float(calibration.level_log_sd or 0.0)
    s2 = math.log1p(variance / total**2) + level_sd**2
    s = math.sqrt(s2)
    center = math.log(total) - s2 / 2.0
    return math.exp(center - _Z * s), math.exp(center + _Z * s), total
