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
the as-of date) and keeps the one with the smallest mean absolute log error; ``btyd_rebased``, which needs two
labeled horizons to be backtested, is also taken when it cannot be backtested but every estimator that can missed by
more than 10%; when none can be backtested it keeps ``btyd_rebased`` if the history allows it, else ``btyd``. No
single estimator holds the level on every scenario of the quality scoreboard (benchmarks/results/quality.md);
choosing by backtest does best there.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from features.kernel import PreparedTransactions

ESTIMATORS = ("btyd_rebased", "btyd", "run_rate", "seasonal_run_rate")
"""In order of preference when nothing can be backtested or errors tie."""
SOURCES = ("auto", *ESTIMATORS)
"""Values of ``--level-source``: ``auto`` chooses by backtest, the others force one estimator."""
REBASE_ABOVE_ERROR = 0.10
"""When ``btyd_rebased`` cannot be backtested, it is still preferred over estimators whose backtest error exceeds
this (BTYD off by more than 10% is a bias worth correcting)."""
BACKTEST_CUTOFFS = 3
"""How many of the latest labeled cutoffs the estimators are backtested on."""
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


def choose(
    requested: str,
    at_as_of: dict[str, float],
    backtests: list[tuple[dict[str, float], float]],
) -> LevelChoice:
    """Pick the level estimator: ``requested`` if forced, else the best by backtest.

    ``at_as_of``: :func:`estimates` at the as-of date. ``backtests``: for each backtested cutoff, its estimates and
    the actual total of its next H days.
    """
    if requested not in SOURCES:
        raise ValueError(f"--level-source must be one of {', '.join(SOURCES)}, got '{requested}'")
    errors: dict[str, list[float]] = {}
    for found, actual in backtests:
        for name, value in found.items():
            if value > 0 and actual > 0:
                errors.setdefault(name, []).append(abs(math.log(value / actual)))
    mean_errors = {name: float(np.mean(e)) for name, e in errors.items()}
    eligible = {n: e for n, e in mean_errors.items() if n in at_as_of}
    if requested != "auto":
        if requested not in at_as_of:
            raise ValueError(f"--level-source {requested} needs more history than this log has")
        source, why = requested, f"level: {requested}, as requested"
    elif (
        "btyd_rebased" in at_as_of
        and "btyd_rebased" not in eligible
        and eligible.get("btyd", 0.0) > math.log(1.0 + REBASE_ABOVE_ERROR)
        and min(eligible.values(), default=np.inf) > math.log(1.0 + REBASE_ABOVE_ERROR)
    ):
        source = "btyd_rebased"
        errors_text = ", ".join(f"{n} {e:.3f}" for n, e in eligible.items())
        why = (
            f"level: btyd_rebased; it cannot be backtested on this history, and every estimator that can missed by"
            f" more than {REBASE_ABOVE_ERROR:.0%} (mean |log error| {errors_text})"
        )
    else:
        if eligible:
            source = min(eligible, key=lambda n: (eligible[n], ESTIMATORS.index(n)))
            detail = ", ".join(f"{n} {e:.3f}" for n, e in sorted(eligible.items()))
            why = f"level: {source}, the smallest mean |log error| backtested at {len(backtests)} cutoff(s) ({detail})"
        else:
            source = next(n for n in ESTIMATORS if n in at_as_of)
            why = f"level: {source}, no estimator could be backtested on this history"
    return LevelChoice(source, at_as_of[source], dict(at_as_of), mean_errors, why)
