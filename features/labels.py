"""Labels for a cutoff and a horizon, and the plan of training cutoffs.

For a cutoff day ``D`` and a horizon of ``H`` days the label window is the days ``D+1 .. D+H`` (``(D, D+H]``):

- ``churned`` = 1 when the customer makes no purchase (transaction with ``amount >= 0``) in the window;
- ``future_value`` = net spend (purchases minus refunds, currency units) in the window.

Labels are defined for the customers the kernel returns at ``D`` (any transaction on or before ``D``) and read
nothing on or before ``D``.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from features.contract import ContractError
from features.kernel import PreparedTransactions, date_to_day, day_to_date


def labels_at(
    prep: PreparedTransactions, cutoff: dt.date | str, horizon_days: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(customer_ids, {"churned": 0/1 int, "future_value": float})`` in the kernel's customer order."""
    if horizon_days < 1:
        raise ContractError(f"horizon must be at least 1 day, got {horizon_days}")
    n = prep.n_customers
    cutoff_day = date_to_day(cutoff)
    present = np.bincount(prep.code[prep.day <= cutoff_day], minlength=n) > 0
    window = (prep.day > cutoff_day) & (prep.day <= cutoff_day + horizon_days)
    code, amount = prep.code[window], prep.amount[window]
    purchases = np.bincount(code[amount >= 0], minlength=n)
    future_value = np.bincount(code, weights=amount, minlength=n).astype(np.float64)
    index = np.flatnonzero(present)
    return prep.customers[index], {
        "churned": (purchases[index] == 0).astype(np.int8),
        "future_value": future_value[index],
    }


def cutoff_plan(
    as_of: dt.date | str,
    horizon_days: int,
    *,
    first_date: dt.date | str,
    step_days: int = 30,
    max_cutoffs: int = 12,
    min_history_days: int = 90,
) -> list[dt.date]:
    """Training cutoffs, oldest first, so that no label window passes the as-of date.

    The latest cutoff is ``as_of - horizon_days``; earlier ones step back by ``step_days`` while at least
    ``min_history_days`` of history precede them, up to ``max_cutoffs`` cutoffs. Raises ``ValueError`` when the
    data does not hold even one cutoff (history too short for the horizon).
    """
    last = date_to_day(as_of) - horizon_days
    earliest = date_to_day(first_date) + min_history_days
    days = [last - i * step_days for i in range(max_cutoffs) if last - i * step_days >= earliest]
    if not days:
        needed = day_to_date(earliest + horizon_days)
        raise ContractError(
            f"not enough history for a {horizon_days}-day horizon: the as-of date must be on or after {needed} "
            f"({min_history_days} days of history + the horizon after the first transaction)"
        )
    return [day_to_date(d) for d in reversed(days)]
