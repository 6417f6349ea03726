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


MIN_HISTORY_DAYS = 30
"""Days of history (after the first transaction) a training cutoff needs before it; ``--min-history-days``.
The default of :class:`training.config.TrainingConfig`, like the two below."""
CUTOFF_STEP_DAYS = 30
"""Days between two training cutoffs."""
MAX_CUTOFFS = 12
"""Training cutoffs kept at most (the latest ones)."""


def cutoff_plan(
    as_of: dt.date | str,
    horizon_days: int,
    *,
    first_date: dt.date | str,
    step_days: int = CUTOFF_STEP_DAYS,
    max_cutoffs: int = MAX_CUTOFFS,
    min_history_days: int = MIN_HISTORY_DAYS,
) -> list[dt.date]:
    """Labeled training cutoffs, oldest first, so that no label window passes the as-of date.

    The latest cutoff is exactly ``V = as_of - horizon_days``. Earlier ones are ``V - k * step_days`` inside
    ``(V - H, V)`` (their label windows overlap V's) and ``V - H - k * step_days`` (labels known at ``V``, the
    cutoffs a strictly temporal validation trains on), every one with at least ``min_history_days`` of history
    before it; the ``max_cutoffs`` latest are kept. Empty when not even ``V`` has that much history: nothing can
    be labeled, and only an unsupervised (BTYD) model can be fitted.
    """
    if min_history_days < 0:
        raise ContractError(f"--min-history-days must be at least 0, got {min_history_days}")
    if step_days < 1 or max_cutoffs < 1:
        raise ContractError("the cutoff step and the number of cutoffs must be at least 1")
    v = date_to_day(as_of) - horizon_days
    earliest = date_to_day(first_date) + min_history_days
    overlapping = range(v, v - horizon_days, -step_days)
    before = range(v - horizon_days, v - horizon_days - max_cutoffs * step_days, -step_days)
    days = sorted({d for d in (*overlapping, *before) if d >= earliest})[-max_cutoffs:]
    return [day_to_date(d) for d in days]
