"""Gamma-Gamma (Fader, Hardie & Lee 2005b, "RFM and CLV"): spend per purchase.

The spend of each purchase is ``Gamma(p, nu)`` with a per-customer rate ``nu ~ Gamma(q, v)`` (``v`` in currency
units); spend is independent of the purchase process. This module holds the likelihood, the maximum-likelihood fit
and the posterior expected spend per purchase. Money is in currency units throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from serving.btyd.arrays import ArrayLike, as_1d, check_integer_frequency, dot
from serving.btyd.fitting import MAX_STARTS, FitDiagnostics, diagnose, multistart


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


def _check_monetary(frequency: ArrayLike, monetary: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = as_1d("frequency", frequency)
    m = as_1d("monetary", monetary)
    if x.size != m.size:
        raise ValueError(f"frequency and monetary must have the same length, got {x.size} and {m.size}")
    if (~np.isfinite(x)).any() or (x < 0).any():
        raise ValueError("frequency must be finite and non-negative")
    return check_integer_frequency(x), m


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
    wl = dot(p * x + q, log_xmv)
    # sum of: gammaln(px+q) - gammaln(px) - gammaln(q) + q log v + (px-1) log m + px log x - (px+q) log(xm+v)
    ll = (
        dot(nx, special.gammaln(pxu + q) - special.gammaln(pxu))
        - n * (special.gammaln(q) - q * math.log(v))
        + p * sum_xlogxm
        - float(np.log(m).sum())
        - float(wl)
    )
    value = -ll / n
    if not np.isfinite(value):
        return math.inf, np.zeros(3)
    psi = special.digamma(pxu + q)
    d_p = dot((nx * xu), (psi - special.digamma(pxu))) + sum_xlogxm - dot(x, log_xmv)
    d_q = dot(nx, psi) - n * (special.digamma(q) - math.log(v)) - float(log_xmv.sum())
    d_v = n * q / v - float(((p * x + q) / (x * m + v)).sum())
    grad = -np.array([d_p * p, d_q * q, d_v * v]) / n
    return value, grad


_GG_NAMES = ("p", "q", "v")
_GG_MEANINGS = {
    "p->0": "the spend of a customer's purchases is extremely variable",
    "p->inf": "every purchase of a customer has (almost) the same amount",
    "q->0": "customers' mean spends are extremely heterogeneous (population mean spend infinite)",
    "q->inf": "customers' mean spends are (almost) the same",
    "v->0": "the spend-rate prior is extremely concentrated near 0",
    "v->inf": "customers' mean spends are (almost) the same or vanishingly small",
}


def fit_gamma_gamma_with_diagnostics(
    frequency: ArrayLike, monetary: ArrayLike, *, max_starts: int = MAX_STARTS
) -> tuple[GammaGammaParams, FitDiagnostics]:
    """Maximum-likelihood Gamma-Gamma fit and its :class:`FitDiagnostics`, on customers with
    ``frequency > 0`` and ``monetary > 0`` (money in currency units; ``monetary`` = mean spend over the
    ``frequency`` repeat purchases). Others (one-time buyers, non-positive or missing net spend) are ignored.
    Optimised over log-parameters within :data:`PARAM_BOUNDS` (money rescaled by its mean) from up to
    ``max_starts`` fixed starts, as :func:`fit_bgnbd_with_diagnostics`; boundary optima, non-convergence, a
    flat likelihood and ``q <= 1`` (infinite population mean spend) are warnings, not errors.

    Raises ``ValueError`` on empty input, negative or non-integer ``frequency``, mismatched lengths,
    ``max_starts < 1``, or fewer than 2 usable customers."""
    x, m = _check_monetary(frequency, monetary)
    if x.size == 0:
        raise ValueError("empty input: need at least one customer (frequency, monetary)")
    if max_starts < 1:
        raise ValueError(f"max_starts must be >= 1, got {max_starts!r}")
    ok = (x > 0) & np.isfinite(m) & (m > 0)
    if ok.sum() < 2:
        raise ValueError(
            f"cannot fit Gamma-Gamma: need >= 2 customers with frequency > 0 and monetary > 0, got {ok.sum()}"
        )
    x, m = x[ok], m[ok]
    scale = float(m.mean())
    ms = m / scale
    # starts (p, q), each with v matching the (scaled) population mean p v / (q - 1) = 1
    starts = [np.log([p0, q0, (q0 - 1.0) / p0]) for p0, q0 in ((2.0, 3.0), (1.0, 10.0), (10.0, 1.5), (0.5, 2.0))]
    xu, xinv, nx = np.unique(x, return_inverse=True, return_counts=True)
    sum_xlogxm = dot(x, np.log(x * ms))
    nxf = nx.astype(np.float64)

    def fun_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        return _gg_nll_and_grad(z, xu, xinv, nxf, x, ms, sum_xlogxm)

    best, runs = multistart(fun_grad, starts[:max_starts], float(x.size))
    p, q, v = np.exp(best.z)
    params = GammaGammaParams(p=float(p), q=float(q), v=float(v * scale), mean_monetary=scale)
    describe = f"p={params.p:.4g}, q={params.q:.4g}, v={params.v:.4g}"
    extra = ()
    if params.q <= 1.0:
        extra = (
            f"q <= 1: the population mean spend p v / (q - 1) is infinite; one-time buyers get the sample "
            f"mean spend {scale:.4g} and repeat buyers their own mean spend",
        )
    n = float(x.size)  # one density factor in money per customer: log-Jacobian -log(scale) back to currency
    diagnostics = diagnose(
        "Gamma-Gamma", fun_grad, best, runs, _GG_NAMES, n, describe, _GG_MEANINGS, extra, -math.log(scale) * n
    )
    return params, diagnostics


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike, *, max_starts: int = MAX_STARTS) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters (currency units); see
    :func:`fit_gamma_gamma_with_diagnostics`, whose warnings are emitted as :class:`BTYDFitWarning`."""
    return fit_gamma_gamma_with_diagnostics(frequency, monetary, max_starts=max_starts)[0]


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
