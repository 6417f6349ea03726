"""Churn and customer-lifetime-value scoring: the public Python API, ``import retention as rt``.

::

    import retention as rt

    transactions, quality = rt.read_transactions("transactions.parquet", as_of="2024-12-30")
    print(quality.render())
    result = rt.fit(transactions, "2024-12-30", horizon_days=90)        # in memory; rt.train also logs + registers
    scored = rt.score(result.model, transactions, "2024-12-30")         # or rt.score(rt.load_model(), ...)
    retention_list = rt.rank(scored, top_k=100)
    print(f"top 20% hold {rt.top_share(scored.expected_value):.0%} of the expected value")

Entry points (each documented in :mod:`retention.api`): :func:`read_transactions`, :func:`features`,
:func:`labels`, :func:`fit`, :func:`train`, :func:`backtest`, :func:`fit_btyd`, :func:`load_model`,
:func:`score`, :func:`rank`, :func:`reasons`, :func:`top_share`, :func:`acquisition_forecast` (the value of a
new customer); modules ``rt.settings`` (runtime settings, every ``RETENTION_*`` variable) and ``rt.analysis``
(tables and plots for notebooks). Dates are ``"YYYY-MM-DD"`` or :class:`datetime.date`, whole UTC days,
included; horizons are days after the cutoff; data is a DataFrame or a path / URL.

Importing this package is cheap: the API (and through it pandas, LightGBM, MLflow) is imported on first
attribute access (PEP 562), so ``import retention.settings`` or ``retention.progress`` -- what the service and the
CLI import -- loads nothing else. The CLI is ``retention`` (:mod:`retention.cli`, ``python -m retention``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retention import analysis, settings
    from retention.api import (
        ContractError,
        DataQualityReport,
        acquisition_forecast,
        backtest,
        features,
        fit,
        fit_btyd,
        labels,
        load_model,
        plan,
        rank,
        read_transactions,
        reasons,
        score,
        top_share,
        train,
    )

__all__ = [
    "ContractError",
    "DataQualityReport",
    "acquisition_forecast",
    "analysis",
    "backtest",
    "features",
    "fit",
    "fit_btyd",
    "labels",
    "load_model",
    "plan",
    "rank",
    "read_transactions",
    "reasons",
    "score",
    "settings",
    "top_share",
    "train",
]
_MODULES = ("analysis", "settings")
"""Submodules loaded on first access; every other name of ``__all__`` is :mod:`retention.api`'s (its ``__all__``),
listed here so that ``import retention`` does not load it."""


def __getattr__(name: str) -> Any:
    """Load :mod:`retention.api` (or a submodule) the first time one of its names is asked for."""
    if name in _MODULES:
        value = importlib.import_module(f"retention.{name}")
    elif name in __all__:
        value = getattr(importlib.import_module("retention.api"), name)
    else:
        raise AttributeError(f"module 'retention' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (loaded or not) and the module's dunder attributes."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
