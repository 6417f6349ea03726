"""Robust maximum likelihood for the BTYD models: bounded multi-start search over log-parameters and its diagnostics.

Real logs put optima on the boundary (a wholesaler: ``a -> 0``, ``b`` in the thousands, "nobody ever leaves") or
make the likelihood flat. The fits (:mod:`serving.btyd.bgnbd`, :mod:`serving.btyd.gamma_gamma`) therefore optimise
log-parameters within :data:`PARAM_BOUNDS` from several fixed starts with :func:`multistart`, keep the best
likelihood and never fail on such data: :func:`diagnose` reports boundary optima, non-convergence and flat
likelihoods in a :class:`FitDiagnostics` and emits them as :class:`BTYDFitWarning`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

PARAM_BOUNDS: tuple[float, float] = (1e-6, 1e6)
"""Bounds of every fitted parameter in the optimiser's *scaled* units (time divided by the mean customer age,
money divided by the mean spend; shapes ``r``, ``a``, ``b``, ``p``, ``q`` are unit-free). In the returned
units the BG/NBD ``alpha`` lies in ``[1e-6, 1e6] x mean age`` days and the Gamma-Gamma ``v`` in
``[1e-6, 1e6] x mean spend`` currency units."""

_LOG_BOUNDS = (math.log(PARAM_BOUNDS[0]), math.log(PARAM_BOUNDS[1]))
MAX_STARTS = 4
"""Starting points tried at most by a fit (the first two suffice when they agree)."""
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


def emit(messages: tuple[str, ...]) -> None:
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


def multistart(
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


def diagnose(
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
    emit(tuple(messages))
    return FitDiagnostics(
        converged=best.converged,
        boundary=boundary,
        flat=flat,
        starts=len(runs),
        log_likelihood=-best.value * n + ll_offset,
        start_log_likelihoods=tuple(-run.value * n + ll_offset if np.isfinite(run.value) else None for run in runs),
        warnings=tuple(messages),
    )
