"""The new-customer forecast: what a customer acquired today through a channel is worth, from recent cohorts.

For marketing's acquisition budget: the expected net value of one new customer, per acquisition channel (or
category, or for everyone), read off the customers acquired recently enough to be representative and long enough
ago that their whole first ``H`` days are observed by the as-of date.

Semantics (all dates are whole UTC days, money in the data's currency, net of refunds, before margin and
discounting):

* **acquired** = the customer's *first purchase day* ``a`` (first transaction with ``amount >= 0``; a refund before
  it does not acquire anyone). The acquisition **channel** / **category** is that of the first purchase day's
  largest purchase (ties: the name with the smallest fixed code), the kernel's ``first_channel_code`` /
  ``first_category_code`` (:mod:`features.kernel`), shown by name; a purchase without one is ``(missing)``.
* **value over H days** = ``first_purchase_value + next_value``: the net spend on the acquisition day itself (the
  first basket, **included**) plus the net spend in the ``H`` days after it, ``(a, a + H]`` (the window of the
  churn / value labels at cutoff ``a``). Both parts are reported, so either reading is at hand.
  ``repeat_rate`` = share of the cohort with another purchase in ``(a, a + H]``.
* **cohort** = customers acquired in the ``cohort_days`` days ending on ``as_of - H`` (so ``a + H <= as_of``:
  their window is fully observed). The 365-day figures come from their own cohort, the ``cohort_days`` days ending
  on ``as_of - 365``, when the data reaches back that far (else missing).
* **interval**: a normal (CLT) interval of the cohort mean at ``confidence`` (mean +- z x standard deviation /
  sqrt(n), sample standard deviation): it is about the *average* new customer, not one customer; with heavy-tailed
  spend and small cohorts it is optimistic.
* **seasonality**: a cohort's value is what its own weeks of acquisition brought; a customer acquired on the
  as-of date meets other seasons. The frame's ``attrs["caveat"]`` says which acquisition days were used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from statistics import NormalDist

import numpy as np
import pandas as pd

from features.contract import ContractError
from features.kernel import (
    PreparedTransactions,
    compute_feature_arrays,
    date_to_day,
    day_to_date,
    index_transactions,
)
from training.tables import to_markdown_table

BY_OPTIONS: tuple[str, ...] = ("channel", "category", "all")
"""What the forecast is split by: the acquisition channel, the first purchase's category, or nobody."""
ALL = "all"
MISSING = "(missing)"
LONG_HORIZON_DAYS = 365
COLUMNS: tuple[str, ...] = (
    "group",
    "customers",
    "cohort_share",
    "acquired_from",
    "acquired_to",
    "first_purchase_value",
    "next_value",
    "value",
    "value_low",
    "value_high",
    "repeat_rate",
    "customers_365d",
    "value_365d",
    "value_365d_low",
    "value_365d_high",
)
"""The forecast's columns: ``group`` (channel / category name or ``all``), then per cohort its size, share of the
whole cohort, acquisition days, mean first-day value, mean value in the ``H`` days after, mean value over ``H``
(their sum) with its interval, repeat rate, and the same over 365 days from the 365-day cohort."""


@dataclasses.dataclass(frozen=True)
class _Cohort:
    """Acquisition days ``[first, last]`` (UTC day numbers) and the window length after acquisition."""

    first: int
    last: int
    horizon_days: int


def _interval(values: np.ndarray, z: float) -> tuple[float, float, float]:
    """``(mean, low, high)``; the interval is NaN below two values."""
    if not len(values):
        return np.nan, np.nan, np.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    half = z * float(values.std(ddof=1)) / np.sqrt(len(values))
    return mean, mean - half, mean + half


def _acquisition(prep: PreparedTransactions, as_of_day: int, by: str) -> tuple[np.ndarray, np.ndarray]:
    """Per customer code: the acquisition day (-1: no purchase by ``as_of``) and the group name (object array)."""
    n = prep.n_customers
    _, arrays = compute_feature_arrays(prep, day_to_date(as_of_day))
    present = np.flatnonzero(np.bincount(prep.code[prep.day <= as_of_day], minlength=n) > 0)  # the arrays' order
    buyer = arrays["n_purchase_days"] > 0
    acquired = np.full(n, -1, dtype=np.int64)
    acquired[present[buyer]] = as_of_day - arrays["btyd_T"][buyer].astype(np.int64)
    group = np.full(n, ALL, dtype=object)
    if by != ALL:
        keys, names = getattr(prep, f"{by}_keys"), getattr(prep, f"{by}_names")
        name_of = {float(k): str(v) for k, v in zip(keys, names, strict=True) if np.isfinite(k)}
        codes = pd.Series(arrays[f"first_{by}_code"])
        group[present] = codes.map(name_of).fillna(MISSING).to_numpy(dtype=object)
    return acquired, group


def _window_values(
    prep: PreparedTransactions, acquired: np.ndarray, horizon_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer code: net spend on the acquisition day, net spend in ``(a, a + H]`` and whether a purchase
    falls in that window (``a`` = ``acquired``; customers with ``acquired < 0`` get zeros)."""
    n = prep.n_customers
    a = acquired[prep.code]
    known = a >= 0
    on_day = known & (prep.day == a)
    after = known & (prep.day > a) & (prep.day <= a + horizon_days)
    first = np.bincount(prep.code[on_day], weights=prep.amount[on_day], minlength=n)
    following = np.bincount(prep.code[after], weights=prep.amount[after], minlength=n)
    repeat = np.bincount(prep.code[after & (prep.amount >= 0)], minlength=n) > 0
    return first, following, repeat


def _cohort(as_of_day: int, horizon_days: int, cohort_days: int) -> _Cohort:
    last = as_of_day - horizon_days
    return _Cohort(last - cohort_days + 1, last, horizon_days)


def _check(horizon_days: int, by: str, cohort_days: int, confidence: float) -> None:
    if horizon_days < 1:
        raise ContractError(f"the horizon must be at least 1 day, got {horizon_days}")
    if cohort_days < 1:
        raise ContractError(f"the cohort must span at least 1 day, got {cohort_days}")
    if by not in BY_OPTIONS:
        raise ContractError(f"by must be one of {', '.join(BY_OPTIONS)}, got '{by}'")
    if not 0 < confidence < 1:
        raise ContractError(f"the confidence must be between 0 and 1, got {confidence}")


def acquisition_forecast(
    data: pd.DataFrame | PreparedTransactions,
    as_of: dt.date | str,
    horizon_days: int = 90,
    by: str = "channel",
    *,
    cohort_days: int = 90,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Expected net value of a customer acquired on ``as_of``, per acquisition ``by`` group, from recent cohorts.

    Args:
        data: contract-clean transactions (:func:`features.contract.prepare_transactions`) or their kernel index;
            rows after ``as_of`` are ignored.
        as_of: UTC day, included: the last day whose outcomes are known.
        horizon_days: H, days after the acquisition day (see the module docstring for the exact window).
        by: ``channel`` (the acquisition channel), ``category`` (the first purchase's) or ``all``. Without that
            column in the data the forecast is for ``all`` and ``attrs["caveat"]`` says so.
        cohort_days: how many acquisition days make the cohort (the latest whose H days are observed).
        confidence: of the interval of each mean (CLT).

    Returns:
        One row per group (most customers first) and an ``all`` row last, columns :data:`COLUMNS`; dates in
        ``acquired_from`` / ``acquired_to``, money in currency units, rates in [0, 1]. ``attrs``: ``as_of``,
        ``horizon_days``, ``by``, ``cohort_days``, ``confidence`` and ``caveat`` (the seasonality note).
        Raises :class:`ContractError` for bad arguments or when nobody was acquired in the cohort's days.
    """
    _check(horizon_days, by, cohort_days, confidence)
    prep = data if isinstance(data, PreparedTransactions) else index_transactions(data)
    as_of_day = date_to_day(as_of)
    notes = []
    if by != ALL and getattr(prep, by) is None:
        notes.append(f"The data has no {by} column: the forecast is for all new customers.")
        by = ALL
    acquired, group = _acquisition(prep, as_of_day, by)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)

    cohort = _cohort(as_of_day, horizon_days, cohort_days)
    in_cohort = (acquired >= cohort.first) & (acquired <= cohort.last)
    if not in_cohort.any():
        buyers = acquired[acquired >= 0]
        since = f"the first purchase is on {day_to_date(buyers.min())}" if len(buyers) else "nobody bought anything"
        raise ContractError(
            f"nobody was acquired between {day_to_date(cohort.first)} and {day_to_date(cohort.last)}, the "
            f"{cohort_days} days whose {horizon_days}-day window ends by {day_to_date(as_of_day)} ({since}): use a "
            "later as-of date, a shorter --horizon-days or a longer --cohort-days"
        )
    first, following, repeat = _window_values(prep, acquired, horizon_days)
    long_cohort = _cohort(as_of_day, LONG_HORIZON_DAYS, cohort_days)
    in_long = (acquired >= long_cohort.first) & (acquired <= long_cohort.last)
    long_first, long_following, _ = _window_values(prep, acquired, LONG_HORIZON_DAYS)
    long_value = long_first + long_following

    names = pd.Series(group[in_cohort]).value_counts(sort=True)
    order = sorted(names.index, key=lambda g: (-names[g], g)) if by != ALL else []
    rows = []
    for name in [*order, ALL]:
        chosen = group == name if name != ALL else np.ones(len(group), dtype=bool)
        members, long_members = in_cohort & chosen, in_long & chosen
        value, low, high = _interval(first[members] + following[members], z)
        value_365, low_365, high_365 = _interval(long_value[long_members], z)
        rows.append(
            {
                "group": name,
                "customers": int(members.sum()),
                "cohort_share": float(members.sum() / in_cohort.sum()),
                "acquired_from": day_to_date(cohort.first),
                "acquired_to": day_to_date(cohort.last),
                "first_purchase_value": float(first[members].mean()),
                "next_value": float(following[members].mean()),
                "value": value,
                "value_low": low,
                "value_high": high,
                "repeat_rate": float(repeat[members].mean()),
                "customers_365d": int(long_members.sum()),
                "value_365d": value_365,
                "value_365d_low": low_365,
                "value_365d_high": high_365,
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs.update(
        as_of=day_to_date(as_of_day),
        horizon_days=horizon_days,
        by=by,
        cohort_days=cohort_days,
        confidence=confidence,
        caveat=_caveat(cohort, long_cohort, in_long.any(), as_of_day, notes),
    )
    return table


def _caveat(cohort: _Cohort, long_cohort: _Cohort, has_long: bool, as_of_day: int, notes: list[str]) -> str:
    """The seasonality note: which acquisition days the figures come from, and what that means for today."""

    def span(c: _Cohort) -> str:
        return f"{day_to_date(c.first)} .. {day_to_date(c.last)}"

    text = [
        f"H-day values come from customers acquired {span(cohort)}: their first purchase day and the "
        f"{cohort.horizon_days} days after it, in the season those weeks met. A customer acquired on "
        f"{day_to_date(as_of_day)} meets other weeks of the year: read the figures with the seasonal pattern in mind.",
        f"365-day values come from customers acquired {span(long_cohort)}."
        if has_long
        else "365-day values: the data does not reach back far enough (missing).",
        "Values are net spend (refunds included) before margin and discounting; intervals are for the mean.",
        *notes,
    ]
    return " ".join(text)


def render_forecast(table: pd.DataFrame) -> str:
    """The forecast as a Markdown table (money and rates to 2 decimals, NaN shown as ``nan``) with its caveat."""
    return f"{to_markdown_table(table, floatfmt=',.2f')}\n\n{table.attrs.get('caveat', '')}"


def forecast_json(table: pd.DataFrame) -> str:
    """The forecast as one JSON object: its ``attrs`` (dates as ``YYYY-MM-DD``) and ``rows`` (NaN as null)."""
    import json

    rows = json.loads(table.to_json(orient="records", date_format="iso"))
    for row in rows:
        for key in ("acquired_from", "acquired_to"):
            row[key] = row[key][:10] if row[key] else row[key]
    head = {k: str(v) if isinstance(v, dt.date) else v for k, v in table.attrs.items()}
    return json.dumps({**head, "rows": rows}, indent=2)
