"""The combined BTYD model: BG/NBD (purchases and dropout) + Gamma-Gamma (spend per purchase), fitted together,
predicting per customer over a horizon, and serialised to a JSON-able dict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.btyd.arrays import ArrayLike, as_1d
from serving.btyd.bgnbd import (
    BGNBDParams,
    check_summary,
    expected_purchases,
    fit_bgnbd_with_diagnostics,
    probability_alive,
    probability_no_purchase,
)
from serving.btyd.fitting import FitDiagnostics, emit
from serving.btyd.gamma_gamma import GammaGammaParams, conditional_expected_spend, fit_gamma_gamma_with_diagnostics


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
    emit((message,))
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
        x, tx, big_t = check_summary(frequency, recency, T)
        m = as_1d("monetary", monetary)
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
        x, tx, big_t = check_summary(frequency, recency, T, allow_empty=True)
        m = as_1d("monetary", monetary)
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
