"""Uplift metrics of a targeting score on a randomized campaign: the Qini curve, its coefficient and uplift at k.

A campaign with a held-out control group gives, per customer, an outcome ``y`` (1 = retained: a purchase within
the horizon after the send day), the arm ``treatment`` (1 contacted, 0 control) and a targeting ``score`` (the
model's uplift, a churn risk, anything: higher = contact first). Nobody's individual effect is observed; what the
campaign measures is the difference between the arms among the customers a score ranks first.

- :func:`qini_curve`: for the ``k`` customers with the highest scores, the *incremental* retained customers
  ``Q(k) = R_T(k) - R_C(k) x N_T(k) / N_C(k)`` (``R``: retained customers of the arm among the first ``k``, ``N``:
  customers of the arm among them; ``Q = 0`` while no control customer is among them), Radcliffe's Qini curve.
  Customers with tied scores enter together (the curve has a point at the end of each tie group and is linear in
  between), so the curve does not depend on the input order of ties.
- :func:`qini_coefficient`: the area between the curve and the straight line of random targeting (from ``(0, 0)``
  to ``(n, Q(n))``), divided by the same area of the perfect curve (treated responders first, control responders
  last); 0 = no better than random (in expectation), 1 = perfect, negative = worse than random.
- :func:`uplift_at_k`: the retention rate of the treated minus that of the control among the top ``k`` share of
  customers (``int(n x k)`` of them, ties in input order: a stable sort), in retention-probability points.
- :func:`random_qini`: the Qini coefficient that random targeting reaches by chance on these customers (a quantile
  over seeded random orders), the bar a model must clear before its ranking is trusted.

These are the definitions of scikit-uplift (``sklift.metrics.qini_curve``, ``qini_auc_score`` with
``negative_effect=True``, ``uplift_at_k`` with ``strategy="overall"``): identical values on the same inputs
(checked against scikit-uplift 0.5.1 when this module was written). They are implemented here rather than imported
because scikit-uplift does not fit the stack: its last release (0.5.1, 2022) imports
``sklearn.utils.check_matplotlib_support`` (gone from scikit-learn 1.9: ``sklift.viz`` fails to import) and its
metrics use ``sklearn.utils.extmath.stable_cumsum`` (deprecated in 1.8, removed in 1.10); causalml (0.18) installs
but brings xgboost, a 350 MB CUDA library, numba, shap and statsmodels for what is a few lines of NumPy here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from training.metrics import ArrayLike

__all__ = [
    "UPLIFT_AT",
    "qini_coefficient",
    "qini_curve",
    "random_qini",
    "uplift_at_k",
    "uplift_checked",
    "uplift_metrics",
]

UPLIFT_AT: tuple[float, ...] = (0.1, 0.2, 0.3)
"""The shares of customers ``k`` at which :func:`uplift_at_k` is reported (10, 20 and 30 %)."""


def uplift_checked(y: ArrayLike, treatment: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three inputs as 1-D float64 arrays after checking them (``ValueError`` otherwise): equal non-zero
    lengths, ``y`` and ``treatment`` 0/1, both arms present, a finite score."""
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (y, treatment, score)]
    y_, t_, s_ = arrays
    if not y_.size == t_.size == s_.size:
        raise ValueError(f"y has {y_.size} values, treatment {t_.size} and the score {s_.size}")
    if y_.size == 0:
        raise ValueError("cannot evaluate uplift on zero rows")
    for name, a in (("y", y_), ("treatment", t_)):
        if not np.isin(a, (0.0, 1.0)).all():
            raise ValueError(f"{name} must be 0/1")
    if t_.all() or not t_.any():
        raise ValueError("uplift needs both arms: treated (1) and control (0) customers")
    if not np.isfinite(s_).all():
        raise ValueError("the score must be finite (no NaN or inf)")
    return y_, t_, s_


def _curve(y: np.ndarray, t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-s, kind="stable")
    s = s[order]
    return _ordered_curve(y[order], t[order], np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1])


def _ordered_curve(y: np.ndarray, t: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve of customers already in targeting order, at the positions ``ends`` (tie groups' last rows)."""
    n_t = np.cumsum(t)[ends]
    r_t = np.cumsum(y * t)[ends]
    r_c = np.cumsum(y * (1.0 - t))[ends]
    n = ends + 1.0
    n_c = n - n_t
    q = r_t - r_c * np.divide(n_t, n_c, out=np.zeros_like(n_t), where=n_c > 0)
    return np.r_[0.0, n], np.r_[0.0, q]


def qini_curve(y: ArrayLike, treatment: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(customers targeted, incremental retained customers)`` at ``(0, 0)`` and at the end of every tie group of
    the score, highest score first (module docstring); both float64, as long as the distinct scores + 1."""
    return _curve(*uplift_checked(y, treatment, score))


def _area_above_random(x: np.ndarray, q: np.ndarray) -> float:
    return float(np.trapezoid(q, x) - 0.5 * x[-1] * q[-1])


def qini_coefficient(y: ArrayLike, treatment: ArrayLike, score: ArrayLike) -> float:
    """Area between the Qini curve and random targeting over the same area of the perfect curve (module docstring):
    0 random, 1 perfect; NaN when the perfect curve is no better than random (nobody retained)."""
    y_, t_, s_ = uplift_checked(y, treatment, score)
    perfect = _area_above_random(*_curve(y_, t_, y_ * t_ - y_ * (1.0 - t_)))
    if perfect <= 0:
        return math.nan
    return _area_above_random(*_curve(y_, t_, s_)) / perfect


def uplift_at_k(y: ArrayLike, treatment: ArrayLike, score: ArrayLike, k: float) -> float:
    """Retention rate of the treated minus that of the control among the ``int(n x k)`` highest scores (ties in
    input order), ``0 < k <= 1``; NaN when that top holds no customer of one arm."""
    y_, t_, s_ = uplift_checked(y, treatment, score)
    if not 0 < k <= 1:
        raise ValueError(f"k must be a share in (0, 1], got {k}")
    top = np.argsort(-s_, kind="stable")[: int(y_.size * k)]
    treated, control = top[t_[top] == 1], top[t_[top] == 0]
    if not treated.size or not control.size:
        return math.nan
    return float(y_[treated].mean() - y_[control].mean())


def random_qini(
    y: ArrayLike, treatment: ArrayLike, *, draws: int = 200, quantile: float = 0.95, seed: int = 0
) -> float:
    """The ``quantile`` of the Qini coefficient over ``draws`` random orders of the customers (seeded): what random
    targeting reaches by chance here. Its expectation is 0; a ranking whose coefficient exceeds the 95% quantile beats
    random at the 5% level (a one-sided permutation test)."""
    y_, t_, _ = uplift_checked(y, treatment, np.zeros(np.size(y)))
    perfect = _area_above_random(*_curve(y_, t_, y_ * t_ - y_ * (1.0 - t_)))
    if perfect <= 0 or not draws:
        return math.nan
    rng = np.random.default_rng(seed)
    every = np.arange(y_.size)
    values = []
    for _ in range(draws):
        order = rng.permutation(y_.size)  # a random order has no ties: a curve point per customer
        values.append(_area_above_random(*_ordered_curve(y_[order], t_[order], every)) / perfect)
    return float(np.quantile(values, quantile))


def uplift_metrics(
    y: ArrayLike, treatment: ArrayLike, score: ArrayLike, shares: Sequence[float] = UPLIFT_AT
) -> dict[str, float]:
    """``qini`` (:func:`qini_coefficient`) and ``uplift_at_<pct>`` (:func:`uplift_at_k` at each share, e.g.
    ``uplift_at_10`` for 10 %) of one targeting score."""
    out = {"qini": qini_coefficient(y, treatment, score)}
    out.update({f"uplift_at_{round(100 * k)}": uplift_at_k(y, treatment, score, k) for k in shares})
    return out
