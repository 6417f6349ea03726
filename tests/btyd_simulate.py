"""Simulators of the BTYD models, for tests and benchmarks only (they are not part of the ``serving`` package):
draw customer summaries from known BG/NBD and Gamma-Gamma parameters, to check that fits recover them."""

from __future__ import annotations

import numpy as np

from serving.btyd import BGNBDParams, GammaGammaParams
from serving.btyd.arrays import ArrayLike, as_1d

# Published CDNOW estimates (Fader, Hardie & Lee 2005): alpha = 4.414 weeks = 30.9 days.
CDNOW = BGNBDParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
OTHER = BGNBDParams(r=1.2, alpha=60.0, a=2.0, b=5.0)
CDNOW_GG = GammaGammaParams(p=6.25, q=3.74, v=15.44)


def ages(n: int, seed: int) -> np.ndarray:
    """Days each of ``n`` customers has been observed since the first purchase: uniform on 90 .. 730."""
    return np.random.default_rng(seed).integers(90, 731, n).astype(np.float64)


def simulate_bgnbd(
    params: BGNBDParams, n_customers: int, T: ArrayLike, seed: int | np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate ``(frequency, recency, T)`` of ``n_customers`` BG/NBD customers observed for ``T`` days
    (scalar or one per customer) after their first purchase at day 0.

    ``lambda ~ Gamma(r, scale=1/alpha)``, ``p ~ Beta(a, b)``; purchases are Poisson(lambda) while alive and
    the customer drops out with probability ``p`` right after each repeat purchase. Exact and vectorised:
    with ``K ~ Geometric(p)`` purchases before dropout and ``N ~ Poisson(lambda T)`` arrivals in
    ``(0, T]``, ``frequency = min(K, N)`` and, the ``N`` arrivals being uniform on ``(0, T]``, the last
    observed purchase is their ``frequency``-th order statistic, ``T * Beta(x, N - x + 1)``."""
    rng = np.random.default_rng(seed)
    big_t = np.broadcast_to(np.asarray(T, dtype=np.float64), (n_customers,)).copy()
    if (~np.isfinite(big_t)).any() or (big_t < 0).any():
        raise ValueError("T must be finite and non-negative")
    lam = rng.gamma(params.r, 1.0 / params.alpha, n_customers)
    p = np.clip(rng.beta(params.a, params.b, n_customers), 1e-12, 1.0)
    k = rng.geometric(p)
    n = rng.poisson(lam * big_t)
    x = np.minimum(k, n)
    pos = x > 0
    frac = rng.beta(np.where(pos, x, 1), np.where(pos, n - x + 1, 1))
    recency = np.where(pos, big_t * frac, 0.0)
    return x.astype(np.float64), recency, big_t


def simulate_gamma_gamma(
    params: GammaGammaParams, frequency: ArrayLike, seed: int | np.random.Generator | None = None
) -> np.ndarray:
    """Simulate the mean spend over ``frequency`` purchases (0 where ``frequency == 0``):
    ``nu ~ Gamma(q, scale=1/v)``; the sum of ``x`` spends ``~ Gamma(p x, scale=1/nu)``."""
    rng = np.random.default_rng(seed)
    x = as_1d("frequency", frequency)
    nu = rng.gamma(params.q, 1.0 / params.v, x.size)
    pos = x > 0
    total = rng.gamma(np.where(pos, params.p * x, 1.0), 1.0 / nu)
    return np.where(pos, total / np.where(pos, x, 1.0), 0.0)
