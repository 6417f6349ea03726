"""Value concentration, computed one way everywhere: the gains (Lorenz/Pareto) curve and the top-share figure.

"The top 20% of customers hold 61% of the value" in a batch summary, a notebook, the data report and the
``value_top20_capture`` metric of a backtest all come from :func:`top_share`; the curves they plot from
:func:`gains_curve`. Customers are ordered by a score, highest first; customers whose scores tie count as their
tie group's mean, so the figures do not depend on the order ties happen to come in; a fractional boundary
customer counts fractionally (linear interpolation between customers).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["gains_curve", "ordered_by_score", "top_share"]


def _finite_pair(values: ArrayLike, by: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    s = v if by is None else np.asarray(by, dtype=np.float64).ravel()
    if v.shape != s.shape:
        raise ValueError(f"values has {v.size} entries but the score has {s.size}")
    if v.size == 0:
        raise ValueError("no values: the curve of zero customers is undefined")
    if not (np.isfinite(v).all() and np.isfinite(s).all()):
        raise ValueError("values and score must be finite (no NaN or inf)")
    return v, s


def ordered_by_score(values: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``values`` sorted by ``score`` (highest first), every tie group of scores replaced by its mean value.

    The result is the expected ordered vector when ties are broken at random, so every linear functional of it
    (cumulative sums, a Gini numerator, top-k sums) does not depend on the order of tied rows.
    """
    order = np.argsort(-score, kind="stable")
    s, v = score[order], values[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    if starts.size == s.size:  # no ties
        return v
    sums = np.add.reduceat(v, starts)
    counts = np.diff(np.r_[starts, s.size])
    return np.repeat(sums / counts, counts)


def gains_curve(values: ArrayLike, by: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gains ``(share_of_customers, share_of_total)``, both n + 1 long and starting at (0, 0).

    Customers are ordered by ``by`` (default: the values themselves, the Lorenz/Pareto curve), highest first;
    ``share_of_total[k]`` is the share of ``sum(values)`` held by the first k: churners captured for 0/1 labels,
    value captured for amounts. All NaN when ``sum(values) == 0``.
    """
    v, s = _finite_pair(values, by)
    x = np.arange(v.size + 1) / v.size
    total = v.sum()
    cumulative = np.r_[0.0, np.cumsum(ordered_by_score(v, s))]
    share = cumulative / total if total != 0 else np.full_like(cumulative, np.nan)
    return x, share


def top_share(values: ArrayLike, share: float = 0.2, by: ArrayLike | None = None) -> float:
    """Share of ``sum(values)`` held by the top ``share`` of customers ordered by ``by`` (default: by value).

    ``top_share(expected_value)`` is the Pareto figure ("the top 20% hold X%"); ``top_share(actual, 0.2,
    by=predicted)`` is the value a model's top 20% captures. Read off :func:`gains_curve` by linear
    interpolation; NaN when the total is 0.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share must be in [0, 1], got {share}")
    x, curve = gains_curve(values, by)
    return float(np.interp(share, x, curve))
