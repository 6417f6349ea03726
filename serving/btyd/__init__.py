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

The package, one reason to change per module:

* :mod:`serving.btyd.bgnbd`: BG/NBD likelihood and fit, P(alive), P(no purchase) (one horizon or a grid),
  expected purchases (quadrature);
* :mod:`serving.btyd.gamma_gamma`: Gamma-Gamma likelihood and fit, expected spend per purchase;
* :mod:`serving.btyd.fitting`: bounded multi-start maximum likelihood, :class:`FitDiagnostics`,
  :class:`BTYDFitWarning`;
* :mod:`serving.btyd.model`: :class:`BTYDModel`, both fitted together, its predictions and serialisation;
* :mod:`serving.btyd.arrays`: input arrays shared by the above.

Every public name is re-exported here (``from serving.btyd import BTYDModel``). Simulators of both models, for
tests and benchmarks, live in ``tests/btyd_simulate.py``, outside the package.
"""

from serving.btyd.bgnbd import (
    BGNBDParams,
    bgnbd_log_likelihood,
    expected_purchases,
    fit_bgnbd,
    fit_bgnbd_with_diagnostics,
    probability_alive,
    probability_no_purchase,
    probability_no_purchase_curve,
)
from serving.btyd.fitting import PARAM_BOUNDS, BTYDFitWarning, FitDiagnostics
from serving.btyd.gamma_gamma import (
    GammaGammaParams,
    conditional_expected_spend,
    fit_gamma_gamma,
    fit_gamma_gamma_with_diagnostics,
    gamma_gamma_log_likelihood,
)
from serving.btyd.model import BTYDModel

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
    "probability_no_purchase_curve",
]
