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

Real logs put optima on the boundary (a wholesaler: ``a -> 0``, ``b`` in the thousands, "nobody ever leaves")
or make the likelihood flat. Fits therefore optimise log-parameters within :data:`PARAM_BOUNDS` from several
fixed starts, keep the best likelihood and never fail on such data: boundary optima, non-convergence and flat
likelihoods are reported in a :class:`FitDiagnostics` (``BTYDModel.diagnostics``, serialised by ``to_dict``)
and emitted through the :mod:`warnings` module as :class:`BTYDFitWarning`, with the parameters in the
message. Predictions stay finite at the boundary. ``ValueError`` is raised only for invalid input or when
nothing can be fitted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, special

__all__ = [
    "PARAM_BOUNDS",
    "BGNBDParams",
    "BTYDFitWarning",
    "BTYDModel",
    "FitDiagnostics",
    "GammaGammaParams",
    "bgnbd_log_likelihood",
    "conditional_expected_spend",
    "expected_purchases",
    "fit_bgnbd",
    "fit_bgnbd_with_diagnostics",
    "fit_gamma_gamma",
    "fit_gamma_gamma_with_diagnostics",
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


# ----------------------------------------------------------------------------------------------------------
# robust maximum likelihood: bounded multi-start search and its diagnostics
# ----------------------------------------------------------------------------------------------------------

PARAM_BOUNDS: tuple[float, float] = (1e-6, 1e6)
"""Bounds of every fitted parameter in the optimiser's *scaled* units (time divided by the mean customer age,
money divided by the mean spend; shapes ``r``, ``a``, ``b``, ``p``, ``q`` are unit-free). In the returned
units the BG/NBD ``alpha`` lies in ``[1e-6, 1e6] x mean age`` days and the Gamma-Gamma ``v`` in
``[1e-6, 1e6] x mean spend`` currency units."""

_LOG_BOUNDS = (math.log(PARAM_BOUNDS[0]), math.log(PARAM_BOUNDS[1]))
_MAX_STARTS = 4  # starting points tried at most (the first two suffice when they agree)
_GTOL = 1e-5  # "small" gradient: max |d mean-NLL / d log-parameter| per customer
_BOUNDARY_NATS = 1.92  # moving a parameter to its bound costs less than this total log-likelihood: boundary
_NEAR_BOUND = math.log(10.0)  # ... or the parameter is within a factor 10 of the bound
_FLAT_NATS = 0.1  # starts within this total log-likelihood of the best are "equally good"
_FLAT_REL = math.log(1.1)  # ... and a flat likelihood if they disagree by more than 10% in a parameter


class BTYDFitWarning(UserWarning):
    """Emitted (through :mod:`warnings`) when a BTYD fit is on the boundary, did not converge or has a flat
    likelihood. The parameters are returned anyway; the same text is in :attr:`FitDiagnostics.warnings`."""


@dataclass(frozen=True)
class FitDiagnostics:
    """How a maximum-likelihood fit went. The parameters are returned whatever this says.

    ``converged``
        the best start's optimiser reported success, or its projected gradient (per customer, w.r.t. the
        log-parameters) is below ``1e-5``;
    ``boundary``
        parameters whose optimum is at the edge of :data:`PARAM_BOUNDS`, as ``"name->0"`` / ``"name->inf"``
        (e.g. ``"a->0"``: customers (almost) never drop out);
    ``flat``
        parameters that differ by more than 10% between starts whose log-likelihoods are within 0.1 of the
        best: the data do not identify them;
    ``starts``
        number of starting points optimised;
    ``log_likelihood``
        total log-likelihood at the returned parameters (nats; minus ``n x penalty`` if penalised);
    ``start_log_likelihoods``
        the same at the end of each start, in order (``None`` for a start that failed);
    ``warnings``
        human-readable sentences, each with the fitted parameters (also emitted as :class:`BTYDFitWarning`).
    """

    converged: bool = True
    boundary: tuple[str, ...] = ()
    flat: tuple[str, ...] = ()
    starts: int = 0
    log_likelihood: float = math.nan
    start_log_likelihoods: tuple[float | None, ...] = ()
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (non-finite numbers become ``None``)."""

        def num(v: float | None) -> float | None:
            return float(v) if v is not None and math.isfinite(v) else None

        return {
            "converged": bool(self.converged),
            "boundary": list(self.boundary),
            "flat": list(self.flat),
            "starts": int(self.starts),
            "log_likelihood": num(self.log_likelihood),
            "start_log_likelihoods": [num(v) for v in self.start_log_likelihoods],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitDiagnostics:
        ll = d.get("log_likelihood")
        return cls(
            converged=bool(d.get("converged", True)),
            boundary=tuple(d.get("boundary", ())),
            flat=tuple(d.get("flat", ())),
            starts=int(d.get("starts", 0)),
            log_likelihood=math.nan if ll is None else float(ll),
            start_log_likelihoods=tuple(None if v is None else float(v) for v in d.get("start_log_likelihoods", ())),
            warnings=tuple(d.get("warnings", ())),
        )


def _emit(messages: tuple[str, ...]) -> None:
    """The one place fit warnings leave the module: :mod:`warnings`, category :class:`BTYDFitWarning`, attributed
    to the caller of the public fit function."""
    for message in messages:
        warnings.warn(message, BTYDFitWarning, stacklevel=5)


@dataclass(frozen=True)
class _Run:
    """End point of one local optimisation (log-parameters ``z``, objective ``value``)."""

    z: np.ndarray
    value: float
    converged: bool


def _projected_gradient(z: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Gradient with the components pushing out of the box ``_LOG_BOUNDS`` at an active bound set to 0."""
    lo, hi = _LOG_BOUNDS
    out = np.where((z <= lo + 1e-9) & (grad > 0), 0.0, grad)
    return np.where((z >= hi - 1e-9) & (out < 0), 0.0, out)


def _local_fit(fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], z0: np.ndarray) -> _Run:
    """Bounded L-BFGS-B over the log-parameters with the analytic gradient; if it neither reports success
    nor reaches a small gradient, bounded Nelder-Mead (value only, capped) and L-BFGS-B again from there."""
    bounds = [_LOG_BOUNDS] * z0.size
    z0 = np.clip(z0, *_LOG_BOUNDS)

    def lbfgsb(start: np.ndarray) -> _Run:
        try:
            res = optimize.minimize(
                fun_grad,
                start,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
            )
        except (FloatingPointError, ValueError, ArithmeticError):
            return _Run(start, math.inf, False)
        if not np.isfinite(res.fun):
            return _Run(res.x, math.inf, False)
        small = float(np.max(np.abs(_projected_gradient(res.x, res.jac)))) < _GTOL
        return _Run(res.x, float(res.fun), bool(res.success) or small)

    run = lbfgsb(z0)
    if run.converged:
        return run
    res_nm = optimize.minimize(
        lambda z: fun_grad(z)[0],
        run.z if np.isfinite(run.value) else z0,
        method="Nelder-Mead",
        bounds=bounds,
        options={"maxfev": 300 * z0.size, "xatol": 1e-8, "fatol": 1e-12, "adaptive": True},
    )
    if not np.isfinite(res_nm.fun):
        return run
    polished = lbfgsb(res_nm.x)
    if polished.value <= min(run.value, float(res_nm.fun)):
        return polished
    if res_nm.fun < run.value:
        return _Run(res_nm.x, float(res_nm.fun), False)
    return run


def _agree(u: _Run, v: _Run, n: float) -> bool:
    """Two end points are the same optimum: equally good and every parameter within 10%."""
    return abs(u.value - v.value) * n < _FLAT_NATS and float(np.max(np.abs(u.z - v.z))) < _FLAT_REL


def _multistart(
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], starts: list[np.ndarray], n: float
) -> tuple[_Run, list[_Run]]:
    """Optimise from each start in order (deterministic) and return ``(best, all runs)``. Stops after the
    second start if both converged to the same optimum; otherwise every start is tried."""
    runs: list[_Run] = []
    for z0 in starts:
        runs.append(_local_fit(fun_grad, np.asarray(z0, dtype=np.float64)))
        if len(runs) == 2 and runs[0].converged and runs[1].converged and _agree(runs[0], runs[1], n):
            break
    best = min(runs, key=lambda run: run.value)
    if not np.isfinite(best.value):
        raise RuntimeError("maximum-likelihood optimisation failed: non-finite log-likelihood from every start")
    return best, runs


def _boundary(fun: Callable[[np.ndarray], float], best: _Run, names: tuple[str, ...], n: float) -> tuple[str, ...]:
    """Parameters at a bound: within a factor 10 of it, or setting that parameter alone to the bound lowers
    the total log-likelihood by less than 1.92 nats (the 95% likelihood-ratio cut-off of one parameter)."""
    found = []
    for i, name in enumerate(names):
        for bound, label in zip(_LOG_BOUNDS, ("0", "inf"), strict=True):
            z = best.z.copy()
            z[i] = bound
            if abs(best.z[i] - bound) < _NEAR_BOUND or (fun(z) - best.value) * n < _BOUNDARY_NATS:
                found.append(f"{name}->{label}")
                break
    return tuple(found)


def _flat(best: _Run, runs: list[_Run], names: tuple[str, ...], boundary: tuple[str, ...], n: float) -> tuple[str, ...]:
    """Parameters (not already at a bound) that differ by more than 10% between equally good starts."""
    at_bound = {b.split("->")[0] for b in boundary}
    good = [run for run in runs if (run.value - best.value) * n < _FLAT_NATS]
    spread = np.ptp(np.array([run.z for run in good]), axis=0) if len(good) > 1 else np.zeros(len(names))
    return tuple(name for name, s in zip(names, spread, strict=True) if s > _FLAT_REL and name not in at_bound)


def _diagnose(
    model: str,
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    best: _Run,
    runs: list[_Run],
    names: tuple[str, ...],
    n: float,
    describe: str,
    meanings: dict[str, str],
    extra: tuple[str, ...] = (),
    ll_offset: float = 0.0,
) -> FitDiagnostics:
    """Diagnostics of a multi-start fit; every warning is also emitted as a :class:`BTYDFitWarning`.

    ``describe`` is the fitted parameters as text (in the caller's units), ``meanings`` maps
    ``"name->0"``/``"name->inf"`` to what that boundary says about the customers, ``extra`` are further
    model-specific warnings. ``ll_offset`` converts the optimiser's log-likelihood (rescaled units) to the
    caller's units (the log-Jacobian of the rescaling)."""
    boundary = _boundary(lambda z: fun_grad(z)[0], best, names, n)
    flat = _flat(best, runs, names, boundary, n)
    messages = []
    for b in boundary:
        what = meanings.get(b, "the parameter is at the edge of its allowed range")
        messages.append(f"{model} fit: boundary optimum {b.replace('->', ' -> ')}: {what} ({describe})")
    if flat:
        messages.append(
            f"{model} fit: flat likelihood: starts reached different {', '.join(flat)} at the same likelihood, "
            f"the data do not identify them ({describe})"
        )
    if not best.converged:
        messages.append(
            f"{model} fit did not converge (gradient not small after {len(runs)} starts); "
            f"returning the best parameters found ({describe})"
        )
    messages.extend(f"{model} fit: {e} ({describe})" for e in extra)
    _emit(tuple(messages))
    return FitDiagnostics(
        converged=best.converged,
        boundary=boundary,
        flat=flat,
        starts=len(runs),
        log_likelihood=-best.value * n + ll_offset,
        start_log_likelihoods=tuple(-run.value * n + ll_offset if np.isfinite(run.value) else None for run in runs),
        warnings=tuple(messages),
    )


_BGNBD_NAMES = ("r", "alpha", "a", "b")
_BGNBD_MEANINGS = {
    "r->0": "purchase rates are extremely heterogeneous (most customers almost never buy, a few buy a lot)",
    "r->inf": "purchase rates are (almost) the same for every customer",
    "alpha->0": "the purchase-rate prior is extremely diffuse",
    "alpha->inf": "purchase rates are (almost) the same for every customer or vanishingly small",
    "a->0": "the fit says customers (almost) never drop out",
    "a->inf": "the fit says customers (almost) always drop out right after a repeat purchase",
    "b->0": "the fit says customers (almost) always drop out right after a repeat purchase",
    "b->inf": "the dropout probability after a purchase is (almost) 0: customers (almost) never drop out",
}


def fit_bgnbd_with_diagnostics(
    frequency: ArrayLike,
    recency: ArrayLike,
    T: ArrayLike,
    *,
    penalizer: float = 0.0,
    max_starts: int = _MAX_STARTS,
) -> tuple[BGNBDParams, FitDiagnostics]:
    """Maximum-likelihood BG/NBD fit and its :class:`FitDiagnostics`. Time in DAYS (the returned ``alpha`` is
    a rate in days).

    ``frequency`` = repeat purchase days, ``recency`` = days from first to last purchase, ``T`` = days from
    first purchase to the cutoff (may be 0). The objective is the mean negative log-likelihood per customer
    plus ``penalizer * (r^2 + a^2 + b^2)`` (``alpha`` carries the time unit and is not penalised). It is
    minimised over log-parameters within :data:`PARAM_BOUNDS` (time rescaled by the mean age) by bounded
    L-BFGS-B with the analytic gradient (Nelder-Mead fallback), from up to ``max_starts`` fixed starting
    points (the first two suffice when they reach the same optimum); the best likelihood wins, after
    aggregating identical ``(frequency, recency, T)`` rows.

    A boundary optimum (e.g. ``a -> 0``: nobody ever drops out, as on real wholesale logs), non-convergence
    or a flat likelihood is not an error: the parameters are returned, described in the diagnostics and
    emitted as :class:`BTYDFitWarning` (with the parameters in the message).

    Raises ``ValueError`` for empty input, NaN/inf/negative values, non-integer ``frequency``,
    ``recency > T``, ``recency > 0`` with ``frequency == 0``, a negative ``penalizer``, ``max_starts < 1``, or
    when nobody made a repeat purchase (the MLE does not exist then)."""
    x, tx, big_t = _check_summary(frequency, recency, T)
    if not (math.isfinite(penalizer) and penalizer >= 0):
        raise ValueError(f"penalizer must be finite and >= 0, got {penalizer!r}")
    if max_starts < 1:
        raise ValueError(f"max_starts must be >= 1, got {max_starts!r}")
    if not (x > 0).any():
        raise ValueError("cannot fit BG/NBD: no customer has a repeat purchase (all frequency == 0)")
    (ux, utx, ut), w = _aggregate(x, tx, big_t)
    scale = max(_dot(w, ut) / float(w.sum()), 1.0)  # internal time unit: the mean age, for conditioning
    utx, ut = utx / scale, ut / scale
    data = _BGNBDData(ux, utx, ut, w)

    # starts (r, a, b), each with alpha matched to the naive purchase rate (in scaled time): the classical
    # default, CDNOW-like heterogeneity, little dropout with homogeneous rates, heavy dropout
    rate = max(_dot(w, ux) / max(_dot(w, ut), 1e-12), 1e-6)
    starts = [
        np.log([r0, r0 / rate, a0, b0])
        for r0, a0, b0 in ((1.0, 1.0, 3.0), (0.25, 0.8, 2.5), (4.0, 0.1, 20.0), (1.0, 3.0, 1.0))
    ]

    def fun_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        return _bgnbd_nll_and_grad(z, data, penalizer)

    best, runs = _multistart(fun_grad, starts[:max_starts], data.n)
    r, alpha, a, b = np.exp(best.z)
    params = BGNBDParams(r=float(r), alpha=float(alpha * scale), a=float(a), b=float(b))
    describe = f"r={params.r:.4g}, alpha={params.alpha:.4g} days, a={params.a:.4g}, b={params.b:.4g}"
    # each repeat purchase day contributes one density factor in time: log-Jacobian -log(scale) back to days
    ll_offset = -math.log(scale) * _dot(w, ux)
    diagnostics = _diagnose(
        "BG/NBD", fun_grad, best, runs, _BGNBD_NAMES, data.n, describe, _BGNBD_MEANINGS, ll_offset=ll_offset
    )
    return params, diagnostics


def fit_bgnbd(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike, *, penalizer: float = 0.0, max_starts: int = _MAX_STARTS
) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters (time in DAYS); see :func:`fit_bgnbd_with_diagnostics`, whose
    warnings are emitted as :class:`BTYDFitWarning`."""
    return fit_bgnbd_with_diagnostics(frequency, recency, T, penalizer=penalizer, max_starts=max_starts)[0]


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


_CLOSED_FORM_MAX = 1e3  # a or b above this: expected purchases by quadrature (closed form cancels)


def _tanh_sinh_rule(step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tanh-sinh (double-exponential) rule on ``(0, 1)``: nodes ``u``, ``1 - u`` (accurate near 1) and
    weights summing to 1. Insensitive to endpoint singularities of the integrand."""
    tau = np.arange(-3.2, 3.2 + step / 2, step)
    s = math.pi / 2 * np.sinh(tau)
    weights = step * math.pi / 4 * np.cosh(tau) / np.cosh(s) ** 2
    return special.expit(2.0 * s), special.expit(-2.0 * s), weights / weights.sum()


def _expected_purchases_quadrature(
    params: BGNBDParams, t: np.ndarray, x: np.ndarray, big_t: np.ndarray, step: float = 0.1
) -> np.ndarray:
    """``E[Y(t) | alive, data] = E_p[(1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p]`` with
    ``p ~ Beta(a, b+x)`` (the posterior given alive; the integrand tends to ``(r+x) t/(alpha+T)`` as
    ``p -> 0``), integrated over the Beta quantile ``p = F^-1(u)`` by a tanh-sinh rule in ``u``, per
    distinct ``x``. Valid for every ``a, b > 0`` including the boundary optima (``a -> 0``, ``b`` or ``a``
    huge), where the Gauss-Jacobi nodes and the hyp2f1 closed form break down; relative error about 1e-7
    with the default ``step``."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    u, one_minus_u, wq = _tanh_sinh_rule(step)
    lower = u <= 0.5
    out = np.empty_like(t, dtype=np.float64)
    for xv in np.unique(x):
        m = x == xv
        # upper half through the reflected Beta(b+x, a), so that p close to 1 keeps its precision
        pq = np.where(
            lower,
            special.betaincinv(a, b + xv, np.where(lower, u, 0.5)),
            1.0 - special.betaincinv(b + xv, a, np.where(lower, 0.5, one_minus_u)),
        )
        pq = np.nan_to_num(pq, nan=0.0)[None, :]
        ratio = (t[m] / (alpha + big_t[m]))[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(pq > 0, -np.expm1(-(r + xv) * np.log1p(pq * ratio)) / pq, (r + xv) * ratio)
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
    for large frequency (the original series blows up like ``(1-z)^-(x+...)``). Near ``a = 1`` (0/0), for
    ``a`` or ``b`` above 1e3 (boundary optima, where the closed form cancels catastrophically) or if the closed
    form is not finite, the equivalent one-dimensional integral over the posterior dropout probability is
    used (:func:`_expected_purchases_quadrature`)."""
    x, tx, big_t = _check_summary(frequency, recency, T, allow_empty=True)
    tt = _check_horizon(t, x.size).astype(np.float64)
    if tt.size != x.size:
        raise ValueError(f"t must be a scalar or have one value per customer ({x.size}), got {tt.size}")
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    p_alive = probability_alive(params, x, tx, big_t)
    if abs(a - 1.0) < 1e-6 or max(a, b) > _CLOSED_FORM_MAX:
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
    frequency: ArrayLike, monetary: ArrayLike, *, max_starts: int = _MAX_STARTS
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
    sum_xlogxm = _dot(x, np.log(x * ms))
    nxf = nx.astype(np.float64)

    def fun_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        return _gg_nll_and_grad(z, xu, xinv, nxf, x, ms, sum_xlogxm)

    best, runs = _multistart(fun_grad, starts[:max_starts], float(x.size))
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
    diagnostics = _diagnose(
        "Gamma-Gamma", fun_grad, best, runs, _GG_NAMES, n, describe, _GG_MEANINGS, extra, -math.log(scale) * n
    )
    return params, diagnostics


def fit_gamma_gamma(frequency: ArrayLike, monetary: ArrayLike, *, max_starts: int = _MAX_STARTS) -> GammaGammaParams:
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


# ----------------------------------------------------------------------------------------------------------
# the combined model
# ----------------------------------------------------------------------------------------------------------


def _spend_fallback(x: np.ndarray, m: np.ndarray) -> tuple[GammaGammaParams, FitDiagnostics]:
    """Stand-in spend model when Gamma-Gamma cannot be fitted (fewer than 2 repeat buyers with positive
    spend): ``q = 1`` selects "no shrinkage" in :func:`conditional_expected_spend` (repeat buyers keep their
    own mean spend, others get the mean positive repeat spend, or 0 if there is none)."""
    ok = (x > 0) & np.isfinite(m) & (m > 0)
    mean = float(m[ok].mean()) if ok.any() else 0.0
    message = (
        f"Gamma-Gamma not fitted: {int(ok.sum())} customer(s) with a repeat purchase and positive spend (need 2); "
        f"expected spend = own mean spend for repeat buyers, {mean:.4g} for the others (p=1, q=1, v=1)"
    )
    _emit((message,))
    return GammaGammaParams(p=1.0, q=1.0, v=1.0, mean_monetary=mean), FitDiagnostics(
        converged=False, starts=0, warnings=(message,)
    )


@dataclass
class BTYDModel:
    """BG/NBD (purchases and dropout) + Gamma-Gamma (spend per purchase). Time unit: days; money:
    currency units.

    ``diagnostics`` maps ``"bgnbd"`` / ``"gamma_gamma"`` to the :class:`FitDiagnostics` of :meth:`fit`
    (empty for a model built from parameters or loaded from a dict written before diagnostics existed)."""

    bgnbd: BGNBDParams
    gamma_gamma: GammaGammaParams
    time_unit: str = "days"
    diagnostics: dict[str, FitDiagnostics] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every fit warning of both models (empty if the fits were clean)."""
        return tuple(w for d in self.diagnostics.values() for w in d.warnings)

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
        """Fit both models on the BTYD summary (days, currency units) of customers with >= 1 purchase.

        Boundary optima, non-convergence and flat likelihoods are warnings (:class:`BTYDFitWarning`, and
        :attr:`warnings` / :attr:`diagnostics`), never errors. Raises ``ValueError`` on invalid input or
        when nobody made a repeat purchase (no BG/NBD). If BG/NBD can be fitted but Gamma-Gamma cannot
        (fewer than 2 repeat buyers with positive spend) the model degrades instead of raising: churn and
        purchase predictions stay BG/NBD's, spend is not shrunk (see :func:`_spend_fallback`), and a warning
        says so."""
        x, tx, big_t = _check_summary(frequency, recency, T)
        m = _as_1d("monetary", monetary)
        if m.size != x.size:
            raise ValueError(f"monetary must have one value per customer ({x.size}), got {m.size}")
        bgnbd, bgnbd_diag = fit_bgnbd_with_diagnostics(x, tx, big_t, penalizer=penalizer)
        if int(((x > 0) & np.isfinite(m) & (m > 0)).sum()) >= 2:
            gamma_gamma, gg_diag = fit_gamma_gamma_with_diagnostics(x, m)
        else:
            gamma_gamma, gg_diag = _spend_fallback(x, m)
        return cls(bgnbd=bgnbd, gamma_gamma=gamma_gamma, diagnostics={"bgnbd": bgnbd_diag, "gamma_gamma": gg_diag})

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
        """JSON-serialisable ``{"time_unit", "bgnbd": {...}, "gamma_gamma": {...}, "diagnostics": {...}}``
        (``diagnostics``: ``{"bgnbd": FitDiagnostics.to_dict(), "gamma_gamma": ...}``, possibly empty)."""
        return {
            "time_unit": self.time_unit,
            "bgnbd": self.bgnbd.to_dict(),
            "gamma_gamma": self.gamma_gamma.to_dict(),
            "diagnostics": {k: v.to_dict() for k, v in self.diagnostics.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BTYDModel:
        """Inverse of :meth:`to_dict`; dicts without ``diagnostics`` (older models) load with none."""
        unit = d.get("time_unit", "days")
        if unit != "days":
            raise ValueError(f"unsupported time_unit {unit!r} (expected 'days')")
        return cls(
            bgnbd=BGNBDParams.from_dict(d["bgnbd"]),
            gamma_gamma=GammaGammaParams.from_dict(d["gamma_gamma"]),
            time_unit=unit,
            diagnostics={k: FitDiagnostics.from_dict(v) for k, v in (d.get("diagnostics") or {}).items()},
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
