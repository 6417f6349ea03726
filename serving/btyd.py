"""Classical BTYD ("buy till you die") customer-lifetime-value models, fitted by maximum likelihood.

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a customer
  buys at Poisson rate ``lambda ~ Gamma(r, alpha)`` (shape ``r``, *rate* ``alpha``); after every repeat
  purchase she drops out for good with probability ``p ~ Beta(a, b)``.
* **Gamma-Gamma** (Fader, Hardie & Lee 2005b, "RFM and CLV"): the spend of each purchase is
  ``Gamma(p, nu)`` with a per-customer rate ``nu ~ Gamma(q, v)``; spend is independent of the purchase
  process.

Units: every time quantity (``recency``, ``T``, ``t``, ``horizon_days``, and therefore the BG/NBD ``alpha``,
a rate-parameter in days) is in **days**; money (``monetary``, the Gamma-Gamma ``v``, expected spend and
value) is in **currency units**.

Inputs follow the usual BTYD summary of a customer at a cutoff date:

``frequency``
    number of *repeat* purchase days (distinct purchase days minus one);
``recency``
    days between the first and the last purchase (0 when ``frequency == 0``);
``T``
    days between the first purchase and the cutoff (the customer's age; may be 0);
``monetary``
    average spend per repeat purchase day.

Only NumPy/SciPy are used (no ``lifetimes``/``pymc``).  Identical ``(frequency, recency, T)`` triples are
aggregated with weights before optimising, so a million customers fit in about a second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

__all__ = [
    "BGNBDParams",
    "BTYDModel",
    "GammaGammaParams",
    "bgnbd_log_likelihood",
    "conditional_expected_spend",
    "expected_purchases",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood",
    "probability_alive",
    "probability_no_purchase",
    "simulate_bgnbd",
    "simulate_gamma_gamma",
]

ArrayLike = Any  # anything np.asarray accepts


# ----------------------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD parameters. ``r`` shape and ``alpha`` rate (in DAYS) of the Gamma prior on the purchase rate
    (mean purchase rate ``r / alpha`` purchases per day); ``a``, ``b`` of the Beta prior on the dropout
    probability after each purchase."""

    r: float
    alpha: float
    a: float
    b: float

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BGNBDParams:
        return cls(r=float(d["r"]), alpha=float(d["alpha"]), a=float(d["a"]), b=float(d["b"]))


@dataclass(frozen=True)
class GammaGammaParams:
    """Gamma-Gamma parameters: spend per purchase ``~ Gamma(p, nu)`` (shape ``p``), ``nu ~ Gamma(q, v)``
    (shape ``q``, rate ``v`` in CURRENCY units). The population mean spend per purchase is
    ``p * v / (q - 1)`` (finite only for ``q > 1``).

    ``mean_monetary`` is the sample mean of ``monetary`` over the customers the model was fitted on; it is
    the fallback population mean when ``q <= 1`` (NaN if unknown)."""

    p: float
    q: float
    v: float
    mean_monetary: float = math.nan

    def to_dict(self) -> dict[str, float | None]:
        mm = float(self.mean_monetary)
        return {
            "p": float(self.p),
            "q": float(self.q),
            "v": float(self.v),
            "mean_monetary": mm if math.isfinite(mm) else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GammaGammaParams:
        mm = d.get("mean_monetary")
        mean_monetary = math.nan if mm is None else float(mm)
        return cls(p=float(d["p"]), q=float(d["q"]), v=float(d["v"]), mean_monetary=mean_monetary)

    @property
    def population_mean(self) -> float:
        """Expected spend per purchase of a random customer, ``p v / (q - 1)``; ``mean_monetary`` if q <= 1."""
        if self.q > 1.0:
            return self.p * self.v / (self.q - 1.0)
        return float(self.mean_monetary)


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------


def _as_1d(name: str, values: ArrayLike) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _check_integer_frequency(x: np.ndarray) -> np.ndarray:
    """``frequency`` counts repeat purchase days: reject non-integer values (up to float noise of 1e-6) and
    return it rounded to exact integers (as float64)."""
    rounded = np.round(x)
    off = np.abs(x - rounded) > 1e-6
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"frequency must be integer-valued (number of repeat purchase days); customer {i} has {x[i]!r}"
        )
    return rounded


def _check_summary(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, allow_empty: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and broadcast a BTYD summary; raise ``ValueError`` with a clear message if invalid."""
    x = _as_1d("frequency", frequency)
    tx = _as_1d("recency", recency)
    big_t = _as_1d("T", T)
    try:
        x, tx, big_t = np.broadcast_arrays(x, tx, big_t)
    except ValueError as exc:
        raise ValueError(
            f"frequency, recency and T must have the same length, got {x.size}, {tx.size}, {big_t.size}"
        ) from exc
    if x.size == 0 and not allow_empty:
        raise ValueError("empty input: need at least one customer (frequency, recency, T)")
    for name, arr in (("frequency", x), ("recency", tx), ("T", big_t)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise ValueError(f"{name} contains {int(bad.sum())} NaN/infinite value(s)")
        if (arr < 0).any():
            raise ValueError(f"{name} must be non-negative (min {arr.min()!r})")
    x = _check_integer_frequency(x)
    tol = 1e-9 * np.maximum(1.0, big_t)
    if (tx > big_t + tol).any():
        i = int(np.argmax(tx - big_t))
        raise ValueError(f"recency must be <= T (customer {i}: recency={tx[i]!r} > T={big_t[i]!r})")
    if ((x == 0) & (tx > 0)).any():
        raise ValueError("recency must be 0 for customers with frequency 0 (no repeat purchase)")
    return x, np.minimum(tx, big_t), big_t.astype(np.float64, copy=True)


# ----------------------------------------------------------------------------------------------------------
# BG/NBD
# ----------------------------------------------------------------------------------------------------------


def _bgnbd_terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A1 + A2, A3, A4)`` of the BG/NBD log-likelihood; ``A4 = -inf`` where ``x == 0``."""
    a12 = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
    )
    a3 = -(r + x) * np.log(alpha + big_t)
    pos = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            pos,
            math.log(a) - np.log(np.where(pos, b + x - 1.0, 1.0)) - (r + x) * np.log(alpha + tx),
            -np.inf,
        )
    return a12, a3, a4


def bgnbd_log_likelihood(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood ``log L(r, alpha, a, b | x, t_x, T)`` (FHL 2005, eq. 6).

    ``L = B(a, b+x)/B(a, b) * Gamma(r+x) alpha^r / Gamma(r) * [ (alpha+T)^-(r+x)
    + 1{x>0} a/(b+x-1) (alpha+t_x)^-(r+x) ]`` with time in days."""
    x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
    a12, a3, a4 = _bgnbd_terms(params.r, params.alpha, params.a, params.b, x, tx, big_t)
    return a12 + np.logaddexp(a3, a4)


def _dot(u: np.ndarray, v: np.ndarray) -> float:
    """Inner product without BLAS (whose thread pool is slow and erratic on busy machines)."""
    return float(np.einsum("i,i->", u, v))


class _BGNBDData:
    """Aggregated BG/NBD data, laid out so that one objective evaluation costs few passes over the rows.

    Terms depending on ``x`` only are evaluated once per distinct frequency, terms depending on ``T`` only
    (the whole likelihood of one-time buyers) once per distinct age, and the logs and reciprocals of
    ``alpha + T`` / ``alpha + t_x`` once per distinct value (at most a few thousand for whole days), then
    gathered; only the repeat buyers' mixing term needs per-row transcendental functions."""

    def __init__(self, x: np.ndarray, tx: np.ndarray, big_t: np.ndarray, w: np.ndarray) -> None:
        self.n = float(w.sum())
        self.xu, xinv = np.unique(x, return_inverse=True)
        self.wx = np.bincount(xinv, weights=w, minlength=self.xu.size)  # total weight per distinct frequency
        self.tu, tinv = np.unique(big_t, return_inverse=True)
        self.w_t = np.bincount(tinv, weights=w, minlength=self.tu.size)  # sum of w per distinct T
        self.wx_t = np.bincount(tinv, weights=w * x, minlength=self.tu.size)  # sum of w x per distinct T
        pos = x > 0
        self.w_p, self.x_p = w[pos], x[pos]
        self.xinv_p, self.tinv_p = xinv[pos], tinv[pos]
        self.txu, self.txinv_p = np.unique(tx[pos], return_inverse=True)
        self.bx1 = np.where(self.xu > 0, self.xu - 1.0, 0.0)  # x - 1 per distinct frequency (0 for x == 0)


def _bgnbd_nll_and_grad(log_params: np.ndarray, d: _BGNBDData, penalizer: float) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood (+ penalty) and its gradient w.r.t. the log-parameters.

    Per customer ``ll = A12(x) - (r+x) log(alpha+T) + 1{x>0} softplus(u)`` with
    ``u = log(a/(b+x-1)) + (r+x) (log(alpha+T) - log(alpha+t_x))`` (``u`` is the log-odds of "dropped out
    right after the last purchase" vs "alive at T"; ``expit(u)`` is its posterior probability ``s``)."""
    with np.errstate(over="ignore", under="ignore"):
        r, alpha, a, b = np.exp(np.clip(log_params, -30.0, 30.0))
    xu, wx = d.xu, d.wx
    # terms depending on x only: evaluated on the distinct frequencies, summed with their total weights
    a12 = (
        special.gammaln(r + xu)
        - special.gammaln(r)
        + r * math.log(alpha)
        + special.betaln(a, b + xu)
        - special.betaln(a, b)
    )
    # -(r + x) log(alpha + T), summed over everybody through the per-T weight sums
    log_atu = np.log(alpha + d.tu)
    inv_atu = 1.0 / (alpha + d.tu)
    sum_w_lat = _dot(d.w_t, log_atu)
    a3 = -(r * sum_w_lat + _dot(d.wx_t, log_atu))
    # repeat buyers: the mixing term
    with np.errstate(divide="ignore"):
        cxu = math.log(a) - np.log(b + d.bx1)
    rx = r + d.x_p
    dlt = log_atu[d.tinv_p] - np.log(alpha + d.txu)[d.txinv_p]  # log(alpha+T) - log(alpha+t_x) >= 0
    u = cxu[d.xinv_p] + rx * dlt
    softplus = np.logaddexp(0.0, u)
    value = -(_dot(wx, a12) + a3 + _dot(d.w_p, softplus)) / d.n + penalizer * (r * r + a * a + b * b)
    if not np.isfinite(value):
        return math.inf, np.zeros(4)
    ws = d.w_p * special.expit(u)  # weight x posterior P(dropped out at t_x)
    sum_ws = float(ws.sum())
    psi_ab = special.digamma(a + b)
    psi_abx = special.digamma(a + b + xu)
    d_r = _dot(wx, special.digamma(r + xu) - special.digamma(r) + math.log(alpha)) - sum_w_lat + _dot(ws, dlt)
    d_alpha = float(wx.sum()) * r / alpha - (r * _dot(d.w_t, inv_atu) + _dot(d.wx_t, inv_atu))
    d_alpha += _dot(ws * rx, inv_atu[d.tinv_p] - (1.0 / (alpha + d.txu))[d.txinv_p])
    d_a = _dot(wx, (psi_ab - psi_abx)) + sum_ws / a
    ws_x = np.bincount(d.xinv_p, weights=ws, minlength=xu.size)
    d_b = _dot(wx, special.digamma(b + xu) - special.digamma(b) + psi_ab - psi_abx) - _dot(ws_x, 1.0 / (b + d.bx1))
    grad = np.array([d_r, d_alpha, d_a, d_b]) / d.n
    theta = np.array([r, alpha, a, b])
    grad = -grad * theta + penalizer * 2.0 * theta * theta * np.array([1.0, 0.0, 1.0, 1.0])
    return value, grad


def _aggregate(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of the columns ``cols`` with their counts (as float weights)."""
    n = cols[0].size
    if all(np.array_equal(c, np.floor(c)) for c in cols):
        # integer-valued (the usual case: days): one int64 key per row, 1-D unique is ~20x faster
        sizes = [int(c.max()) + 1 for c in cols]
        if math.prod(sizes) < 2**62:
            key = np.zeros(n, dtype=np.int64)
            for c, size in zip(cols, sizes, strict=True):
                key = key * size + c.astype(np.int64)
            ukey, counts = np.unique(key, return_counts=True)
            out = []
            for size in reversed(sizes):
                out.append((ukey % size).astype(np.float64))
                ukey = ukey // size
            return out[::-1], counts.astype(np.float64)
    order = np.lexsort(cols[::-1])
    srt = [c[order] for c in cols]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any([s[1:] != s[:-1] for s in srt], axis=0)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    return [s[starts] for s in srt], counts


def _minimize(fun_grad, x0: np.ndarray) -> optimize.OptimizeResult:
    """L-BFGS-B with the analytic gradient; Nelder-Mead (value only) if it fails."""
    best: optimize.OptimizeResult | None = None
    try:
        res = optimize.minimize(
            fun_grad, x0, jac=True, method="L-BFGS-B", options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9}
        )
        if np.isfinite(res.fun):
            best = res
            # "ABNORMAL" line-search ends are common at the optimum of a flat ridge: accept a tiny gradient
            if res.success or float(np.max(np.abs(res.jac))) < 1e-6:
                return res
    except (FloatingPointError, ValueError, ArithmeticError):
        pass
    start = best.x if best is not None else x0
    res_nm = optimize.minimize(
        lambda z: fun_grad(z)[0],
        start,
        method="Nelder-Mead",
        options={"maxiter": 20_000, "xatol": 1e-8, "fatol": 1e-12, "adaptive": True},
    )
    if best is None or (np.isfinite(res_nm.fun) and res_nm.fun <= best.fun):
        best = res_nm
    if not np.isfinite(best.fun):
        raise RuntimeError("maximum-likelihood optimisation failed: non-finite log-likelihood")
    return best


def fit_bgnbd(frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, penalizer: float = 0.0) -> BGNBDParams:
    """Maximum-likelihood BG/NBD fit. Time in DAYS (the returned ``alpha`` is a rate in days).

    ``frequency`` = repeat purchase days, ``recency`` = days from first to last purchase, ``T`` = days from
    first purchase to the cutoff (may be 0). The objective is the mean negative log-likelihood per customer
    plus ``penalizer * (r^2 + a^2 + b^2)`` (``alpha`` carries the time unit and is not penalised). It is
    minimised over log-parameters with L-BFGS-B and the analytic gradient (Nelder-Mead fallback), after
    aggregating identical ``(frequency, recency, T)`` rows and rescaling time by the mean age.

    Raises ``ValueError`` for empty input, NaN/inf/negative values, non-integer ``frequency``,
    ``recency > T``, ``recency > 0`` with ``frequency == 0``, a negative ``penalizer``, or when nobody made a
    repeat purchase (the MLE does not exist then)."""
    x, tx, big_t = _check_summary(frequency, recency, T)
    if not (math.isfinite(penalizer) and penalizer >= 0):
        raise ValueError(f"penalizer must be finite and >= 0, got {penalizer!r}")
    if not (x > 0).any():
        raise ValueError("cannot fit BG/NBD: no customer has a repeat purchase (all frequency == 0)")
    (ux, utx, ut), w = _aggregate(x, tx, big_t)
    scale = max(_dot(w, ut) / float(w.sum()), 1.0)  # internal time unit: the mean age, for conditioning
    utx, ut = utx / scale, ut / scale
    data = _BGNBDData(ux, utx, ut, w)

    # start: r = 1, alpha matched to the naive purchase rate, a = 1, b = 3 (in scaled time)
    rate = _dot(w, ux) / max(_dot(w, ut), 1e-12)
    r0, a0, b0 = 1.0, 1.0, 3.0
    alpha0 = r0 / max(rate, 1e-6)
    x0 = np.log([r0, alpha0, a0, b0])
    res = _minimize(lambda z: _bgnbd_nll_and_grad(z, data, penalizer), x0)
    r, alpha, a, b = np.exp(res.x)
    return BGNBDParams(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))


def probability_alive(params: BGNBDParams, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> np.ndarray:
    """P(customer still alive at ``T``) = ``1 / (1 + 1{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x))``.

    Equals 1 for ``frequency == 0``: in BG/NBD dropout can only happen right after a *repeat* purchase, so a
    one-time buyer is always alive no matter how long ago she bought. This is the known flaw of BG/NBD for
    one-time buyers (the Pareto/NBD and MBG/NBD do not have it); their churn probability still grows with
    ``T`` through the purchase-rate posterior (see :func:`probability_no_purchase`)."""
    x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    pos = x > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds_dead = (r + x) * (np.log(alpha + big_t) - np.log(alpha + tx)) + np.log(
            a / np.where(pos, b + x - 1.0, 1.0)
        )
    return np.where(pos, special.expit(-log_odds_dead), 1.0)


def _check_horizon(t: ArrayLike, n: int) -> np.ndarray:
    tt = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise ValueError("horizon t must be finite and non-negative (days)")
    return np.broadcast_to(tt, (n,)) if tt.ndim == 0 else _as_1d("t", tt)


def _expected_purchases_quadrature(
    params: BGNBDParams, t: np.ndarray, x: np.ndarray, big_t: np.ndarray, n_nodes: int = 64
) -> np.ndarray:
    """``E[Y(t) | alive, data] = E_p[(1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p]`` with
    ``p ~ Beta(a, b+x)`` (the posterior given alive), by Gauss-Jacobi quadrature per distinct ``x``.
    Valid for every ``a > 0`` (the hyp2f1 closed form is singular at ``a = 1``)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    out = np.empty_like(t, dtype=np.float64)
    for xv in np.unique(x):
        m = x == xv
        u, wq = special.roots_jacobi(n_nodes, b + xv - 1.0, a - 1.0)
        pq = (1.0 + u) / 2.0
        wq = wq / wq.sum()
        at = (alpha + big_t[m])[:, None]
        tt = t[m][:, None]
        g = -np.expm1(-(r + xv) * np.log1p(pq[None, :] * tt / at)) / pq[None, :]
        out[m] = g @ wq
    return out


def expected_purchases(
    params: BGNBDParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """Conditional expected number of purchases in ``(T, T + t]`` (``t`` in DAYS, scalar or per customer).

    FHL 2005 eq. 10: ``E[Y(t) | x, t_x, T] = (a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x)
    2F1(r+x, b+x; a+b+x-1; z)] / [1 + 1{x>0} a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)]``,
    ``z = t/(alpha+T+t)``. The hypergeometric term is evaluated via Euler's transformation,
    ``(1-z)^(r+x) 2F1(r+x, b+x; c; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z)``, which stays finite and accurate
    for large frequency (the original series blows up like ``(1-z)^-(x+...)``). Near ``a = 1`` (0/0) or if
    the closed form is not finite, the equivalent one-dimensional integral is used
    (Gauss-Jacobi quadrature over the posterior dropout probability)."""
    x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
    tt = _check_horizon(t, x.size).astype(np.float64)
    if tt.size != x.size:
        raise ValueError(f"t must be a scalar or have one value per customer ({x.size}), got {tt.size}")
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    p_alive = probability_alive(params, x, tx, big_t)
    if abs(a - 1.0) < 1e-6:
        cond = _expected_purchases_quadrature(params, tt, x, big_t)
    else:
        c = a + b + x - 1.0
        z = tt / (alpha + big_t + tt)
        with np.errstate(all="ignore"):
            hyp = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
            second = -np.expm1((a - 1.0) * np.log1p(-z)) + (1.0 - hyp) * np.power(1.0 - z, a - 1.0)
            cond = c / (a - 1.0) * second
        bad = ~np.isfinite(cond) | (cond < 0)
        if bad.any():
            cond[bad] = _expected_purchases_quadrature(params, tt[bad], x[bad], big_t[bad])
    return np.where(tt > 0, p_alive * cond, 0.0)


def probability_no_purchase(
    params: BGNBDParams, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> np.ndarray:
    """P(no purchase in ``(T, T + t]``), ``t`` in DAYS — the churn probability over the horizon.

    A customer dead at ``T`` never buys again. Given alive at ``T`` the posterior purchase rate is
    ``Gamma(r + x, alpha + T)`` and, since dropout happens only right *after* a purchase, she makes no
    purchase in ``t`` with probability ``E[exp(-lambda t)] = ((alpha+T)/(alpha+T+t))^(r+x)``. Hence
    ``1 - P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))``.

    This is exact under BG/NBD, not a lower bound on churn: dropout inside the window can only follow a
    purchase in the window, so it never turns "buys" into "does not buy". The posterior
    ``Gamma(r + x, alpha + T)`` holds because, given alive at ``T``, the likelihood of the data in ``lambda``
    is ``lambda^x exp(-lambda T)``. (Checked against a purchase-by-purchase simulation in the tests.)"""
    x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
    tt = _check_horizon(t, x.size)
    p_alive = probability_alive(params, x, tx, big_t)
    p_buy_if_alive = -np.expm1(-(params.r + x) * np.log1p(tt / (params.alpha + big_t)))
    return 1.0 - p_alive * p_buy_if_alive


# ----------------------------------------------------------------------------------------------------------
# Gamma-Gamma
# ----------------------------------------------------------------------------------------------------------


def _check_monetary(frequency: ArrayLike, monetary: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _as_1d("frequency", frequency)
    m = _as_1d("monetary", monetary)
    if x.size != m.size:
        raise ValueError(f"frequency and monetary must have the same length, got {x.size} and {m.size}")
    if (~np.isfinite(x)).any() or (x < 0).any():
        raise ValueError("frequency must be finite and non-negative")
    return _check_integer_frequency(x), m


def _gg_terms(p: float, q: float, v: float, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(x * m + v)
    )


def gamma_gamma_log_likelihood(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> np.ndarray:
    """Per-customer log-density of the observed mean spend ``monetary`` over ``frequency`` purchases
    (customers with ``frequency > 0`` and ``monetary > 0``; NaN elsewhere)."""
    x, m = _check_monetary(frequency, monetary)
    ok = (x > 0) & np.isfinite(m) & (m > 0)
    out = np.full(x.size, np.nan)
    out[ok] = _gg_terms(params.p, params.q, params.v, x[ok], m[ok])
    return out


def _gg_nll_and_grad(
    log_params: np.ndarray,
    xu: np.ndarray,
    xinv: np.ndarray,
    nx: np.ndarray,
    x: np.ndarray,
    m: np.ndarray,
    sum_xlogxm: float,
) -> tuple[float, np.ndarray]:
    """Mean negative Gamma-Gamma log-likelihood and gradient w.r.t. log-parameters; ``xu``/``nx`` are the
    distinct frequencies and their counts, ``sum_xlogxm = sum(x log(x m))``."""
    with np.errstate(over="ignore", under="ignore"):
        p, q, v = np.exp(np.clip(log_params, -30.0, 30.0))
    n = float(x.size)
    pxu = p * xu
    log_xmv = np.log(x * m + v)
    wl = _dot(p * x + q, log_xmv)
    # sum of: gammaln(px+q) - gammaln(px) - gammaln(q) + q log v + (px-1) log m + px log x - (px+q) log(xm+v)
    ll = (
        _dot(nx, special.gammaln(pxu + q) - special.gammaln(pxu))
        - n * (special.gammaln(q) - q * math.log(v))
        + p * sum_xlogxm
        - float(np.log(m).sum())
        - float(wl)
    )
    value = -ll / n
    if not np.isfinite(value):
        return math.inf, np.zeros(3)
    psi = special.digamma(pxu + q)
    d_p = _dot((nx * xu), (psi - special.digamma(pxu))) + sum_xlogxm - _dot(x, log_xmv)
    d_q = _dot(nx, psi) - n * (special.digamma(q) - math.log(v)) - float(log_xmv.sum())
    d_v = n * q / v - float(((p * x + q) / (x * m + v)).sum())
    grad = -np.array([d_p * p, d_q * q, d_v * v]) / n
    return value, grad


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma fit on customers with ``frequency > 0`` and ``monetary > 0`` (money
    in currency units; ``monetary`` = mean spend over the ``frequency`` repeat purchases). Others (one-time
    buyers, non-positive or missing net spend) are ignored. Optimised over log-parameters (L-BFGS-B,
    Nelder-Mead fallback) with money rescaled by its mean for conditioning.

    Raises ``ValueError`` on empty input, negative or non-integer ``frequency``, mismatched lengths, or
    fewer than 2 usable customers."""
    x, m = _check_monetary(frequency, monetary)
    if x.size == 0:
        raise ValueError("empty input: need at least one customer (frequency, monetary)")
    ok = (x > 0) & np.isfinite(m) & (m > 0)
    if ok.sum() < 2:
        raise ValueError(
            f"cannot fit Gamma-Gamma: need >= 2 customers with frequency > 0 and monetary > 0, got {ok.sum()}"
        )
    x, m = x[ok], m[ok]
    scale = float(m.mean())
    ms = m / scale
    # start: method of moments on the between-customer dispersion of the mean spend
    p0, q0 = 2.0, 3.0
    v0 = (q0 - 1.0) / p0  # population mean (scaled) = 1
    xu, xinv, nx = np.unique(x, return_inverse=True, return_counts=True)
    sum_xlogxm = _dot(x, np.log(x * ms))
    res = _minimize(
        lambda z: _gg_nll_and_grad(z, xu, xinv, nx.astype(np.float64), x, ms, sum_xlogxm), np.log([p0, q0, v0])
    )
    p, q, v = np.exp(res.x)
    return GammaGammaParams(p=float(p), q=float(q), v=float(v * scale), mean_monetary=scale)


def conditional_expected_spend(params: GammaGammaParams, frequency: ArrayLike, monetary: ArrayLike) -> np.ndarray:
    """Posterior expected spend per purchase (currency units):
    ``(v + x m) p / (p x + q - 1)`` = a frequency-weighted blend of the customer's own mean ``m`` and the
    population mean ``p v / (q - 1)``, which is returned for ``frequency == 0`` (``monetary`` ignored there,
    may be NaN). If the fitted ``q <= 1`` the population mean is infinite; the fallback is then no shrinkage:
    the customer's own ``monetary`` for ``frequency > 0`` and the sample mean of ``monetary`` (stored at fit
    time, else computed from the positive values passed) for ``frequency == 0``."""
    x, m = _check_monetary(frequency, monetary)
    p, q, v = params.p, params.q, params.v
    pos = x > 0
    if pos.any() and (~np.isfinite(m[pos])).any():
        raise ValueError("monetary must be finite for customers with frequency > 0")
    if q > 1.0:
        with np.errstate(invalid="ignore"):
            cond = (v + x * np.where(pos, m, 0.0)) * p / (p * x + q - 1.0)
        return np.where(pos, cond, p * v / (q - 1.0))
    pop = params.mean_monetary
    if not math.isfinite(pop):
        good = pos & (m > 0)
        pop = float(m[good].mean()) if good.any() else math.nan
    return np.where(pos, m, pop)


# ----------------------------------------------------------------------------------------------------------
# the combined model
# ----------------------------------------------------------------------------------------------------------


@dataclass
class BTYDModel:
    """BG/NBD (purchases and dropout) + Gamma-Gamma (spend per purchase). Time unit: days; money:
    currency units."""

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    time_unit: str = "days"

    @classmethod
    def fit(
        cls,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        monetary: ArrayLike,
        *,
        penalizer: float = 0.0,
    ) -> BTYDModel:
        """Fit both models on the BTYD summary (days, currency units) of customers with >= 1 purchase."""
        x, tx, big_t = _check_summary(frequency, recency, T)
        m = _as_1d("monetary", monetary)
        if m.size != x.size:
            raise ValueError(f"monetary must have one value per customer ({x.size}), got {m.size}")
        return cls(
            bgnbd=fit_bgnbd(x, tx, big_t, penalizer=penalizer),
            gamma_gamma=fit_gamma_gamma(x, m),
        )

    def predict(
        self,
        frequency: ArrayLike,
        recency: ArrayLike,
        T: ArrayLike,
        monetary: ArrayLike,
        horizon_days: float,
    ) -> dict[str, np.ndarray]:
        """Per-customer predictions over the next ``horizon_days`` days after the cutoff:

        ``expected_purchases``
            conditional expected number of purchases (days) in ``(T, T + horizon]``;
        ``p_alive``
            P(alive at the cutoff) (1 for one-time buyers, see :func:`probability_alive`);
        ``churn_probability``
            P(no purchase in the horizon), see :func:`probability_no_purchase`;
        ``expected_spend``
            expected spend per purchase (currency units);
        ``expected_value``
            ``expected_purchases * expected_spend``: undiscounted currency over the horizon.

        Negative or missing ``monetary`` of repeat buyers is replaced by the population mean spend."""
        x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
        m = _as_1d("monetary", monetary)
        if m.size != x.size:
            raise ValueError(f"monetary must have one value per customer ({x.size}), got {m.size}")
        if not (math.isfinite(horizon_days) and horizon_days >= 0):
            raise ValueError(f"horizon_days must be finite and >= 0, got {horizon_days!r}")
        # Gamma-Gamma is defined for positive spend only: treat non-positive/missing as "no spend info"
        x_spend = np.where((x > 0) & np.isfinite(m) & (m > 0), x, 0.0)
        spend = conditional_expected_spend(self.gamma_gamma, x_spend, np.where(x_spend > 0, m, 0.0))
        n_buy = expected_purchases(self.bgnbd, horizon_days, x, tx, big_t)
        return {
            "expected_purchases": n_buy,
            "p_alive": probability_alive(self.bgnbd, x, tx, big_t),
            "churn_probability": np.clip(probability_no_purchase(self.bgnbd, horizon_days, x, tx, big_t), 0, 1),
            "expected_spend": spend,
            "expected_value": n_buy * spend,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"time_unit", "bgnbd": {...}, "gamma_gamma": {...}}``."""
        return {
            "time_unit": self.time_unit,
            "bgnbd": self.bgnbd.to_dict(),
            "gamma_gamma": self.gamma_gamma.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BTYDModel:
        unit = d.get("time_unit", "days")
        if unit != "days":
            raise ValueError(f"unsupported time_unit {unit!r} (expected 'days')")
        return cls(
            bgnbd=BGNBDParams.from_dict(d["bgnbd"]),
            gamma_gamma=GammaGammaParams.from_dict(d["gamma_gamma"]),
            time_unit=unit,
        )


# ----------------------------------------------------------------------------------------------------------
# simulation
# ----------------------------------------------------------------------------------------------------------


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
    x = _as_1d("frequency", frequency)
    nu = rng.gamma(params.q, 1.0 / params.v, x.size)
    pos = x > 0
    total = rng.gamma(np.where(pos, params.p * x, 1.0), 1.0 / nu)
    return np.where(pos, total / np.where(pos, x, 1.0), 0.0)
