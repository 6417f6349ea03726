"""BG/NBD's distribution of the number of purchase days in ``(T, T + t]``, given a customer's history.

Given alive at ``T`` the BG/NBD posterior of a customer with ``x`` repeat purchase days is ``lambda ~ Gamma(r + x,
alpha + T)`` and ``p ~ Beta(a, b + x)`` (the likelihood of her data is ``lambda^x exp(-lambda T) (1 - p)^x``), and the
process after ``T`` is BG/NBD again with those parameters. So ``P(X = n | alive)`` is FHL 2005 eq. 8 with
``r' = r + x``, ``alpha' = alpha + T``, ``a' = a``, ``b' = b + x``::

    P(X = n | alive) = B(a', b' + n) / B(a', b') * NB(n)
                       + 1{n > 0} B(a' + 1, b' + n - 1) / B(a', b') * (1 - sum_{j < n} NB(j))

where ``NB(j) = Gamma(r' + j) / (Gamma(r') j!) (alpha' / (alpha' + t))^r' (t / (alpha' + t))^j`` is the negative
binomial count of a customer who never drops out. A dead customer buys nothing, so ``P(alive)`` only moves mass to
``n = 0``: the distribution of the count *given at least one purchase* does not depend on ``P(alive)`` (nor on the
recency), which is what :func:`positive_count_cdf` returns -- the product joins it to its own calibrated
P(no purchase) (:mod:`serving.intervals`).

Counts are purchase *days* (BTYD's frequency unit), so a window of ``t`` days holds at most ``t`` of them: the
distribution is evaluated on ``0..t`` and the last cell takes the rest of the mass.
"""

from __future__ import annotations

import numpy as np

from serving.btyd.arrays import ArrayLike, as_1d
from serving.btyd.bgnbd import BGNBDParams

__all__ = ["alive_count_pmf", "cdf_quantiles", "count_grid", "positive_count_cdf", "positive_count_quantiles"]

_TAIL_SDS = 12.0
"""The grid reaches the never-dropping-out (negative binomial) count's mean + 12 standard deviations + 8: BG/NBD's
count is stochastically smaller than that count, so the mass beyond is negligible (and a window of ``t`` days
never holds more than ``t`` purchase days)."""
_BLOCK_CELLS = 1 << 20
"""Customers x counts per block of the grid computation (bounds memory in batch scoring)."""


def count_grid(params: BGNBDParams, frequency: np.ndarray, T: np.ndarray, t: float) -> int:
    """The largest count the grid needs for these customers over ``t`` days (at most ``t``, at least 1)."""
    if frequency.size == 0:
        return 1
    rate_t = (params.r + frequency) * t / (params.alpha + T)  # never-dropping-out mean
    sd = np.sqrt(rate_t * (1.0 + t / (params.alpha + T)))
    top = float(np.max(rate_t + _TAIL_SDS * sd)) + 8.0
    return int(max(1, min(int(np.ceil(t)), int(np.ceil(top)))))


def alive_count_pmf(params: BGNBDParams, frequency: ArrayLike, T: ArrayLike, t: float, n_max: int) -> np.ndarray:
    """``P(X = n | alive at T)`` for ``n = 0..n_max`` (an ``(customers, n_max + 1)`` array) over ``t`` days after
    ``T`` (days); ``frequency`` = repeat purchase days by ``T``. Rows sum to 1 up to the mass above ``n_max``."""
    x = as_1d("frequency", frequency)[:, None]
    big_t = as_1d("T", T)[:, None]
    n = np.arange(n_max + 1, dtype=np.float64)[None, :]
    r, a, b = params.r + x, params.a, params.b + x
    log_z = np.log(t) - np.log(params.alpha + big_t + t)
    log_1mz = np.log(params.alpha + big_t) - np.log(params.alpha + big_t + t)
    # log NB(n) = r' log(1 - z) + sum_{k < n} [log(r' + k) - log(k + 1) + log z]
    with np.errstate(divide="ignore", invalid="ignore"):
        nb_steps = np.log(r + n[:, :-1]) - np.log(n[:, :-1] + 1.0) + log_z
    log_nb = r * log_1mz + np.concatenate([np.zeros_like(x), np.cumsum(nb_steps, axis=1)], axis=1)
    nb = np.exp(log_nb)
    # log B(a, b + n) / B(a, b) = sum_{k < n} log((b + k) / (a + b + k))
    steps = np.log(b + n[:, :-1]) - np.log(a + b + n[:, :-1])
    log_ratio = np.concatenate([np.zeros_like(x), np.cumsum(steps, axis=1)], axis=1)
    stays = np.exp(log_ratio) * nb
    # 1{n>0} a / (a + b + n - 1) * B(a, b + n - 1) / B(a, b) * (1 - sum_{j<n} NB(j))
    tail = 1.0 - np.cumsum(nb, axis=1)[:, :-1]
    drops = a / (a + b + n[:, 1:] - 1.0) * np.exp(log_ratio[:, :-1]) * np.clip(tail, 0.0, 1.0)
    pmf = stays
    pmf[:, 1:] += drops
    return np.clip(pmf, 0.0, 1.0)


def _positive_cdf(params: BGNBDParams, x: np.ndarray, big_t: np.ndarray, t: float, n_max: int) -> np.ndarray:
    """:func:`positive_count_cdf` of one block of customers on ``0..n_max``."""
    pmf = alive_count_pmf(params, x, big_t, t, n_max)
    positive = np.cumsum(pmf[:, 1:], axis=1)
    mass = 1.0 - pmf[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf = np.where(mass > 1e-300, positive / mass, 1.0)
    cdf = np.minimum(np.maximum.accumulate(np.nan_to_num(cdf, nan=1.0), axis=1), 1.0)
    cdf[:, -1] = 1.0
    return np.concatenate([np.zeros((x.size, 1)), cdf], axis=1)


def positive_count_cdf(params: BGNBDParams, frequency: ArrayLike, T: ArrayLike, t: float) -> np.ndarray:
    """``P(X <= n | X >= 1)`` for ``n = 0..N`` (column 0 is 0; the last column is 1: the grid's last cell takes the
    mass above it), an ``(customers, N + 1)`` array with ``N`` = :func:`count_grid`. A customer whose
    ``P(X >= 1 | alive)`` underflows gets the limit of a vanishing purchase rate: exactly one purchase day."""
    x = as_1d("frequency", frequency)
    big_t = as_1d("T", T)
    return _positive_cdf(params, x, big_t, t, count_grid(params, x, big_t, t))


def cdf_quantiles(cdf: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Per row of ``cdf`` (``P(X <= n | X >= 1)`` on ``n = 0..N``) and column of ``beta`` (``(rows, k)`` levels):
    the smallest ``n >= 1`` with ``cdf[n] >= beta`` (a relative 1e-12 of slack for rounding), as floats."""
    below = cdf[:, None, :] < beta[:, :, None] - 1e-12
    return np.maximum(np.sum(below, axis=2), 1).astype(np.float64)


def positive_count_quantiles(
    params: BGNBDParams, frequency: ArrayLike, T: ArrayLike, t: float, beta: np.ndarray
) -> np.ndarray:
    """:func:`cdf_quantiles` of :func:`positive_count_cdf` at the levels ``beta`` (``(customers, k)``), computed in
    blocks of customers, so a batch never holds the whole ``customers x counts`` distribution."""
    x = as_1d("frequency", frequency)
    big_t = as_1d("T", T)
    beta = np.asarray(beta, dtype=np.float64)
    if beta.ndim != 2 or beta.shape[0] != x.size:
        raise ValueError(f"beta must have one row of levels per customer ({x.size}), got shape {beta.shape}")
    n_max = count_grid(params, x, big_t, t)
    out = np.empty(beta.shape)
    rows = max(1, _BLOCK_CELLS // ((n_max + 1) * max(beta.shape[1], 1)))
    for start in range(0, x.size, rows):
        block = slice(start, start + rows)
        out[block] = cdf_quantiles(_positive_cdf(params, x[block], big_t[block], t, n_max), beta[block])
    return out
