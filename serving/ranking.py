"""The retention order: value at risk, highest first, on exact values; ties by customer id.

One ordering for every path: the nightly list (local and Spark), ``/rank`` and notebooks all call
:func:`rank_order`, always on unrounded values, so near-ties come out in the same order everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["rank_frame", "rank_order"]


def rank_order(value_at_risk: np.ndarray, customer_ids: np.ndarray) -> np.ndarray:
    """Positions in retention order: value at risk descending (exact), then customer id ascending (code points).

    NaN values at risk (never produced by the scorer) would sort last.
    """
    risk = np.asarray(value_at_risk, dtype=np.float64)
    if len(risk) == 0:
        return np.empty(0, dtype=np.intp)
    id_codes, _ = pd.factorize(pd.Series(np.asarray(customer_ids, dtype=object), dtype="str"), sort=True)
    return np.lexsort((id_codes, np.nan_to_num(-risk, nan=np.inf)))


def rank_frame(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (one row per customer with ``value_at_risk`` and ``customer_id``) in retention order, numbered
    ``retention_rank`` from 1 as its second column."""
    order = rank_order(table["value_at_risk"].to_numpy(), table["customer_id"].to_numpy(dtype=object))
    ordered = table.iloc[order].reset_index(drop=True)
    ordered.insert(1, "retention_rank", np.arange(1, len(ordered) + 1, dtype=np.int64))
    return ordered
