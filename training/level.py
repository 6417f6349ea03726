"""The level: how much the whole customer base will spend over the next H days, and which estimate to trust.

Ranking and level are different problems (shared/notes/real-data.md): the heads rank customers, and the total
forecast is then set by an estimator that extrapolates. Three estimators of the total net spend in ``(c, c + H]``
of the customers present at cutoff ``c``, each using only transactions on or before ``c``:

- ``btyd``: BG/NBD + Gamma-Gamma fitted at ``c`` (its sum of expected values). Extrapolates an ageing base from
  each customer's own purchase history; blind to seasons and to rates that decay with age.
- ``btyd_rebased``: the same total times BTYD's own bias one horizon earlier, ``actual(c - H) / btyd(c - H)``
  (BTYD fitted at ``c - H``, whose next H days are known at ``c``): BTYD's extrapolation with the error it has
  been making carried forward. Needs a labeled cutoff at ``c - H``.
- ``run_rate``: the spend of the last H days, ``S(c - H, c]``, times the *spend retention* measured one horizon
  earlier, ``rho(c - H)``, where ``rho(d) = S(d, d + H] of customers present at d / S(d - H, d]``. Carries the
  recent pace of decay (or growth) forward; needs ``2H`` days of history.
- ``seasonal_run_rate``: ``S(c - H, c]`` times the spend retention of the same season one year earlier,
  ``rho(c - 365)``: a November peak follows the pattern of last November. Needs a year plus ``2H`` days.

``choose`` backtests every estimator at the latest labeled cutoffs (where the actual next-H-day total is known by
the as-of date) and keeps the one with the smallest mean absolute log error -- except that ``seasonal_run_rate``
wins whenever it backtests within 10% (the latest windows may lie in another season than the one ahead);
``btyd_rebased``, which needs two labeled horizons to be backtested, is also taken when it cannot be backtested but
every estimator that can missed by more than 10% (both 10% are fields of :class:`training.config.TrainingConfig`:
``seasonal_within``, ``level_rebase_above``); when none can be backtested it keeps ``btyd_rebased`` if the
history allows it, else ``btyd``. No single estimator holds the level on every scenario of the quality scoreboard
(benchmarks/results/quality.md); choosing by backtest does best there.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from features.kernel import PreparedTransactions
from training.config import DEFAULT_CONFIG

ESTIMATORS = ("btyd_rebased", "btyd", "run_rate", "seasonal_run_rate")
"""In order of preference when nothing can be backtested or errors tie."""
SOURCES = ("auto", *ESTIMATORS)
"""Values of ``--level-source``: ``auto`` chooses by backtest, the others force one estimator."""
YEAR_DAYS = 365


def spend(prep: PreparedTransactions, after: int, until: int, present_at: int | None = None) -> float:
    """Net spend (currency units) on days ``(after, until]``; only customers with a transaction by ``present_at``."""
    window = (prep.day > after) & (prep.day <= until)
    if present_at is not None:
        first = np.full(prep.n_customers, np.iinfo(np.int64).max)
        np.minimum.at(first, prep.code, prep.day.astype(np.int64))
        window &= first[prep.code] <= present_at
    return float(prep.amount[window].sum())


def spend_retention(prep: PreparedTransactions, day: int, horizon_days: int) -> float | None:
    """``rho(day)``: next-H-day spend of the customers present at ``day`` / the spend of the H days before it.

    None when the history does not reach back ``H`` days before ``day`` or that spend is not positive.
    """
    if day - horizon_days < int(prep.day.min()):
        return None
    before = spend(prep, day - horizon_days, day)
    if before <= 0:
        return None
    return spend(prep, day, day + horizon_days, present_at=day) / before


@dataclasses.dataclass(frozen=True)
class Totals:
    """At one labeled cutoff: the actual total of the next H days and BTYD's total forecast (currency units)."""

    actual: float
    btyd: float


def estimates(
    prep: PreparedTransactions, cutoff: int, horizon_days: int, btyd_total: float, one_horizon_earlier: Totals | None
) -> dict[str, float]:
    """Every estimator's total forecast for ``(cutoff, cutoff + H]`` (only those the history allows).

    ``one_horizon_earlier``: the totals at the labeled cutoff ``cutoff - H``, if there is one.
    """
    out = {"btyd": btyd_total}
    if one_horizon_earlier is not None and one_horizon_earlier.btyd > 0 and one_horizon_earlier.actual > 0:
        out["btyd_rebased"] = btyd_total * one_horizon_earlier.actual / one_horizon_earlier.btyd
    recent = spend(prep, cutoff - horizon_days, cutoff)
    for name, anchor in (("run_rate", cutoff - horizon_days), ("seasonal_run_rate", cutoff - YEAR_DAYS)):
        rho = spend_retention(prep, anchor, horizon_days)
        if rho is not None and recent > 0:
            out[name] = recent * rho
    return out


@dataclasses.dataclass(frozen=True)
class LevelChoice:
    """The chosen estimator, its total at the as-of date and the backtest behind the choice."""

    source: str
    total: float
    estimates: dict[str, float]
    """Every estimator's total at the as-of date (currency units)."""
    backtest_errors: dict[str, float]
    """Mean |log(forecast / actual)| over the backtested cutoffs, per estimator that could be backtested."""
    why: str


def log_error(forecast: float, actual: float) -> float | None:
    """``|log(forecast / actual)|`` for totals; None when either is not positive."""
    return abs(math.log(forecast / actual)) if forecast > 0 and actual > 0 else None


def logit_error(forecast: float, actual: float) -> float | None:
    """``|logit(forecast) - logit(actual)|`` for rates; None outside (0, 1)."""
    if not (0 < forecast < 1 and 0 < actual < 1):
        return None
    return abs(logit(forecast) - logit(actual))


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def choose(
    requested: str,
    at_as_of: dict[str, float],
    backtests: list[tuple[dict[str, float], float]],
    *,
    what: str = "level",
    order: tuple[str, ...] = ESTIMATORS,
    error=log_error,
    rebase_above: float | None = DEFAULT_CONFIG.level_rebase_above,
    seasonal: str | None = "seasonal_run_rate",
    seasonal_within: float = DEFAULT_CONFIG.seasonal_within,
) -> LevelChoice:
    """Pick an estimator: ``requested`` if forced, else the best by backtest.

    ``at_as_of``: every estimator's value at the as-of date. ``backtests``: for each backtested cutoff, the
    estimators' values there and the actual value of its next H days. ``order``: preference when nothing can be
    backtested or errors tie. ``rebase_above``: take ``btyd_rebased`` (when it cannot be backtested) over
    estimators whose backtest error all exceed ``log(1 + rebase_above)``; None: never. ``seasonal``: the estimator
    that follows last year's season; it is taken whenever its backtest error is at most ``log(1 + seasonal_within)``
    (|log ratio| for totals, |logit difference| for rates) even if another backtests better, because the backtested
    windows are the latest ones and may lie in another season than the window ahead (a summer backtest says nothing
    about the November peak that last year's season foresees).
    """
    if requested != "auto" and requested not in order:
        raise ValueError(
            f"--{what.replace(' ', '-')}-source must be one of auto, {', '.join(order)}, got '{requested}'"
        )
    errors: dict[str, list[float]] = {}
    for found, actual in backtests:
        for name, value in found.items():
            e = error(value, actual)
            if e is not None:
                errors.setdefault(name, []).append(e)
    mean_errors = {name: float(np.mean(e)) for name, e in errors.items()}
    eligible = {n: e for n, e in mean_errors.items() if n in at_as_of}
    threshold = math.log(1.0 + rebase_above) if rebase_above is not None else np.inf
    within = math.log(1.0 + seasonal_within)
    if requested != "auto":
        if requested not in at_as_of:
            raise ValueError(f"--{what.replace(' ', '-')}-source {requested} needs more history than this log has")
        source, why = requested, f"{what}: {requested}, as requested"
    elif (
        "btyd_rebased" in at_as_of
        and "btyd_rebased" not in eligible
        and eligible.get("btyd", 0.0) > threshold
        and min(eligible.values(), default=np.inf) > threshold
    ):
        source = "btyd_rebased"
        errors_text = ", ".join(f"{n} {e:.3f}" for n, e in eligible.items())
        why = (
            f"{what}: btyd_rebased; it cannot be backtested on this history, and every estimator that can missed by"
            f" more than {rebase_above:.0%} (mean backtest error {errors_text})"
        )
    elif seasonal is not None and seasonal in eligible and eligible[seasonal] <= within:
        source = seasonal
        detail = ", ".join(f"{n} {e:.3f}" for n, e in sorted(eligible.items()))
        why = (
            f"{what}: {seasonal}, last year's season backtested within {within:.3f} at {len(backtests)}"
            f" cutoff(s), and the window ahead may be in another season than those ({detail})"
        )
    elif eligible:
        source = min(eligible, key=lambda n: (eligible[n], order.index(n)))
        detail = ", ".join(f"{n} {e:.3f}" for n, e in sorted(eligible.items()))
        why = f"{what}: {source}, the smallest mean backtest error at {len(backtests)} cutoff(s) ({detail})"
    elif at_as_of:
        source = next(n for n in order if n in at_as_of)
        why = f"{what}: {source}, no estimator could be backtested on this history"
    else:
        return LevelChoice("none", math.nan, {}, {}, f"{what}: none, the history allows no estimate")
    return LevelChoice(source, at_as_of[source], dict(at_as_of), mean_errors, why)


# ----------------------------------------------------------------------------------------------------------------
# the churn rate: the same idea for P(no purchase in the next H days)
# ----------------------------------------------------------------------------------------------------------------

CHURN_ESTIMATORS = ("recent", "btyd_rebased", "btyd", "seasonal")
"""Estimators of the churn rate of the next H days (share of present customers with no purchase):

- ``recent``: the rate observed at ``c - H`` (whose window ended by ``c``): what a calibration fitted one horizon
  earlier carries forward. Chosen, the model's calibrated probabilities are left as they are.
- ``btyd_rebased``: BTYD's mean P(no purchase) at ``c``, shifted in log-odds by BTYD's error at ``c - H``.
- ``btyd``: BTYD's mean P(no purchase) at ``c`` as it is.
- ``seasonal``: the recent rate shifted in log-odds by last year's change over the same season,
  ``logit(rate(c - 365)) - logit(rate(c - H - 365))``.
Chosen like the level; otherwise the calibrated probabilities are shifted by one log-odds constant so that their
mean at the as-of date is the chosen rate (the ranking is untouched).
"""


def churn_rate(prep: PreparedTransactions, day: int, horizon_days: int) -> float | None:
    """Share of the customers present at ``day`` with no purchase in ``(day, day + H]`` (None before any data)."""
    present = np.zeros(prep.n_customers, dtype=bool)
    present[prep.code[prep.day <= day]] = True
    if not present.any():
        return None
    bought = np.zeros(prep.n_customers, dtype=bool)
    window = (prep.day > day) & (prep.day <= day + horizon_days) & (prep.amount >= 0)
    bought[prep.code[window]] = True
    return float(1.0 - bought[present].mean())


def churn_estimates(
    prep: PreparedTransactions, cutoff: int, horizon_days: int, btyd_mean: float, btyd_mean_earlier: float | None
) -> dict[str, float]:
    """Every churn-rate estimator for ``(cutoff, cutoff + H]`` that the history allows (labels known at ``cutoff``)."""
    out: dict[str, float] = {}
    earlier = cutoff - horizon_days
    if earlier < int(prep.day.min()):
        return out
    recent = churn_rate(prep, earlier, horizon_days)
    if recent is None or not 0 < recent < 1:
        return out
    out["recent"] = recent
    if 0 < btyd_mean < 1:
        out["btyd"] = btyd_mean
    if btyd_mean_earlier is not None and 0 < btyd_mean < 1 and 0 < btyd_mean_earlier < 1:
        out["btyd_rebased"] = _expit(logit(btyd_mean) + logit(recent) - logit(btyd_mean_earlier))
    if earlier - YEAR_DAYS >= int(prep.day.min()):
        then, before = (
            churn_rate(prep, cutoff - YEAR_DAYS, horizon_days),
            churn_rate(prep, earlier - YEAR_DAYS, horizon_days),
        )
        if then is not None and before is not None and 0 < then < 1 and 0 < before < 1:
            out["seasonal"] = _expit(logit(recent) + logit(then) - logit(before))
    return out


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def choose_churn_rate(
    requested: str,
    at_as_of: dict[str, float],
    backtests: list[tuple[dict[str, float], float]],
    *,
    seasonal_within: float = DEFAULT_CONFIG.seasonal_within,
) -> LevelChoice:
    """The churn-rate estimator, chosen by backtest (log-odds error), ``recent`` when nothing can be backtested;
    ``seasonal`` wins within ``log(1 + seasonal_within)`` like the level's seasonal estimator."""
    return choose(
        requested,
        at_as_of,
        backtests,
        what="churn rate",
        order=CHURN_ESTIMATORS,
        error=logit_error,
        rebase_above=None,
        seasonal="seasonal",
        seasonal_within=seasonal_within,
    )


def shift_to_mean(p: np.ndarray, target: float) -> float:
    """The log-odds shift ``d`` with ``mean(expit(logit(p) + d)) == target`` (bisection; ``p`` in (0, 1))."""
    z = np.log(np.clip(p, 1e-9, 1 - 1e-9)) - np.log1p(-np.clip(p, 1e-9, 1 - 1e-9))
    lo, hi = -20.0, 20.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(np.mean(1.0 / (1.0 + np.exp(-(z + mid))))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
