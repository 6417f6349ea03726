"""Purchase timing: P(a purchase within d days) and the expected days to the next purchase, per customer.

Time semantics: ``d`` counts whole UTC days after the as-of (scoring cutoff) date, so "within d days" is the
window ``(as_of, as_of + d]`` of the labels (``d == horizon_days`` is the churn label's window).

Shape and level come from two sources:

* **shape**: BG/NBD's closed-form survival ``S_btyd(d)`` = P(no purchase in ``(T, T + d]``)
  (:func:`serving.btyd.probability_no_purchase_curve`);
* **level**: the product's calibrated churn probability ``c`` = P(no purchase within ``horizon_days``), from
  whichever head the bundle uses (LightGBM, hybrid or BTYD).

They are joined by proportional hazards on BTYD's shape: ``S(d) = S_btyd(d) ** k`` with
``k = log(c) / log(S_btyd(H))``, i.e. ``S(d) = c ** rho(d)`` with ``rho(d) = log S_btyd(d) / log S_btyd(H)``, which
rises from 0 to 1 on ``0 <= d <= H``. So ``S(H) == c`` exactly, and with a BTYD head (``c == S_btyd(H)``,
``k == 1``) the curve is BG/NBD's own. Where BTYD gives no shape (summary not finite: customers without a purchase
day, whose summary the caller sets to NaN; or ``S_btyd(H)`` equal to 0 or 1 in floating point) the hazard is
constant: ``rho(d) = d / H``, ``S(d) = c ** (d / H)``.

``expected_days_to_next`` is E[days to the next purchase | a purchase within H]
``= integral_0^H (S(t) - S(H)) dt / (1 - S(H))``, integrated by the trapezoid rule on the whole days
``t = 0, 1, ..., H`` (with ``S(0) = 1``); it lies in ``[0, H]`` and is NaN where ``c == 1``. The rule's resolution
is one day: a customer certain to buy at once (``c == 0``) gets 0.5 days, and on smooth BG/NBD curves its bias
is far below a day (checked against simulated purchase times in the tests).

Pure NumPy, vectorised over customers (a Python loop only over blocks of :data:`_BLOCK_CELLS` cells, to bound
memory in batch scoring).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from serving.btyd import BTYDModel, probability_no_purchase_curve

__all__ = ["TIMING_DAYS", "TimingScores", "timing_grid", "timing_scores"]

TIMING_DAYS: tuple[int, ...] = (7, 14, 30, 60, 90)
"""Default grid of horizons (days after the as-of date); only ``d <= horizon_days`` are used, and
``horizon_days`` itself is always included."""

_BLOCK_CELLS = 1 << 20  # customers x days cells per block (a few float64 arrays of 8 MiB each)


@dataclasses.dataclass(frozen=True)
class TimingScores:
    """Purchase timing of ``n`` customers.

    ``days``
        the grid actually used: sorted, distinct, each in ``1 .. horizon_days``, the last ``== horizon_days``
        (whole days after the as-of date);
    ``purchase_within``
        ``(n, len(days))``: P(at least one purchase within ``d`` days after the as-of date), non-decreasing
        along ``days``; the last column is ``1 - churn_probability``;
    ``expected_days_to_next``
        ``(n,)``: expected days from the as-of date to the next purchase GIVEN a purchase within the horizon,
        in ``[0, horizon_days]``; NaN where P(purchase within the horizon) is 0.
    """

    days: tuple[int, ...]
    purchase_within: np.ndarray
    expected_days_to_next: np.ndarray


def timing_grid(horizon_days: int, days: Sequence[int] = TIMING_DAYS) -> tuple[int, ...]:
    """The grid used for ``horizon_days``: the whole days of ``days`` that are ``<= horizon_days``, plus
    ``horizon_days``, sorted. ``ValueError`` for a horizon below 1 day or a grid value that is not a whole number
    of days >= 1."""
    return _grid(horizon_days, tuple(days))[0]


@functools.lru_cache(maxsize=64)
def _grid(horizon_days: int, days: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """``(grid, its column indices in the daily arrays, the days 1 .. H as floats)``; cached (read-only arrays),
    since every request of a server uses the same horizon and grid."""
    if isinstance(horizon_days, bool) or int(horizon_days) != horizon_days or horizon_days < 1:
        raise ValueError(f"horizon_days must be a whole number of days >= 1, got {horizon_days!r}")
    horizon = int(horizon_days)
    grid = {horizon}
    for d in days:
        if isinstance(d, bool) or not np.isfinite(d) or int(d) != d or d < 1:
            raise ValueError(f"timing days must be whole numbers of days >= 1, got {d!r}")
        if d <= horizon:
            grid.add(int(d))
    ordered = tuple(sorted(grid))
    cols = np.asarray(ordered, dtype=np.intp) - 1
    t = np.arange(1.0, horizon + 1.0)
    cols.flags.writeable = t.flags.writeable = False
    return ordered, cols, t


def _check_inputs(summary: np.ndarray, churn_probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(summary, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 4:
        raise ValueError(
            "summary must be an (n, 4) array of btyd_frequency, btyd_recency, btyd_T, btyd_monetary; "
            f"got shape {s.shape}"
        )
    c = np.asarray(churn_probability, dtype=np.float64).reshape(-1)
    if c.size != s.shape[0]:
        raise ValueError(f"churn_probability must have one value per customer ({s.shape[0]}), got {c.size}")
    if not np.all((c >= 0.0) & (c <= 1.0)):  # False for NaN too
        raise ValueError("churn_probability must lie in [0, 1] (no NaN)")
    return s, c


def _rho(btyd: BTYDModel, summary: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``rho(t)`` on the days ``t = 1 .. H`` for each customer: ``log S_btyd(t) / log S_btyd(H)`` where BTYD gives a
    shape, ``t / H`` otherwise; ``(n, H)``, in ``[0, 1]``, non-decreasing in ``t``, last column exactly 1."""
    has_shape = np.isfinite(summary[:, :3]).all(axis=1)
    if not has_shape.any():
        return np.broadcast_to(t / t[-1], (summary.shape[0], t.size))
    rows = summary if has_shape.all() else summary[has_shape]
    s_btyd = probability_no_purchase_curve(btyd.bgnbd, t, rows[:, 0], rows[:, 1], rows[:, 2])  # in [0, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_s = np.log(s_btyd)
        shaped = np.minimum(log_s / log_s[:, -1:], 1.0)  # NaN where S_btyd(H) is 0 or 1: no shape
    ok = np.isfinite(shaped[:, -1])
    shaped = np.maximum.accumulate(shaped, axis=1)  # guards rounding: rho never decreases
    if ok.all() and rows is summary:
        return shaped
    rho = np.empty((summary.shape[0], t.size))
    rho[:] = t / t[-1]
    rho[np.flatnonzero(has_shape)[ok]] = shaped[ok]
    return rho


def _block_scores(
    btyd: BTYDModel, summary: np.ndarray, churn: np.ndarray, t: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(purchase_within at the day columns cols, expected_days_to_next)`` for one block of customers."""
    rho = _rho(btyd, summary, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        # log(c), with c == 0 as a huge finite negative number: S(t) = 0 wherever rho(t) > 0, and no inf * 0
        log_c = np.maximum(np.log(churn), -1e300)[:, None]
        surv = np.exp(log_c * rho[:, :-1])  # S(t) = c ** rho(t) on t = 1 .. H-1
        # trapezoid on t = 0..H of S(t) - S(H): weight 1/2 on t = 0 (value 1 - c), 1 on t = 1..H-1, and 0 at
        # t = H; S(t) - S(H) = S(t) (1 - c ** (1 - rho(t))) keeps its digits when c is close to 1
        gaps = surv * -np.expm1(log_c * (1.0 - rho[:, :-1]))
        # 0/0 = NaN exactly where c == 1 (then S(t) == 1 and every gap is 0); min/max keep the NaN
        expected = np.minimum(np.maximum((0.5 * (1.0 - churn) + gaps.sum(axis=1)) / (1.0 - churn), 0.0), t[-1])
    within = 1.0 - np.concatenate((surv, churn[:, None]), axis=1)[:, cols]  # S(H) is c itself
    return np.maximum.accumulate(within, axis=1), expected


def timing_scores(
    btyd: BTYDModel,
    summary: np.ndarray,
    churn_probability: np.ndarray,
    horizon_days: int,
    days: Sequence[int] = TIMING_DAYS,
) -> TimingScores:
    """Purchase timing of ``n`` customers over the next ``horizon_days`` days after the as-of date.

    ``summary``: ``(n, 4)`` float array of the BTYD summary in the order of ``serving.model.BTYD_COLUMNS``
    (``btyd_frequency``, ``btyd_recency`` and ``btyd_T`` in days, ``btyd_monetary`` in currency units, unused
    here); a row with a non-finite frequency, recency or T (set NaN for customers without a purchase day) gets a
    constant hazard. ``churn_probability``: ``(n,)`` calibrated P(no purchase in the next ``horizon_days``) of the
    product's churn head, in ``[0, 1]``. ``days``: the grid (whole days >= 1; see :func:`timing_grid`).

    Returns :class:`TimingScores` with ``purchase_within[:, -1] == 1 - churn_probability`` (to rounding). Raises
    ``ValueError`` for bad shapes, a churn probability outside ``[0, 1]`` or NaN, a bad grid, or a finite
    summary that BG/NBD rejects (negative, recency > T, non-integer frequency)."""
    grid, cols, t = _grid(horizon_days, tuple(days))
    horizon = grid[-1]
    s, c = _check_inputs(summary, churn_probability)
    n = s.shape[0]
    if n * horizon <= _BLOCK_CELLS:  # the online case: one block, no copies
        within, expected = _block_scores(btyd, s, c, t, cols)
        return TimingScores(days=grid, purchase_within=within, expected_days_to_next=expected)
    within = np.empty((n, len(grid)))
    expected = np.empty(n)
    step = max(1, _BLOCK_CELLS // horizon)
    for start in range(0, n, step):
        block = slice(start, start + step)
        within[block], expected[block] = _block_scores(btyd, s[block], c[block], t, cols)
    return TimingScores(days=grid, purchase_within=within, expected_days_to_next=expected)
