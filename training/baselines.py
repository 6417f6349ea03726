"""Baselines the product's heads must beat, scored at a cutoff from the kernel's features only.

- ``naive``: churn = empirical churn rate by days since last purchase (isotonic in recency, fitted on the
  training rows; an unfitted recency rule when there are none); value = net spend of the last 365 days, scaled
  to the horizon (``spend_365d x H / 365``).
- ``btyd``: BG/NBD (purchase rate and dropout) + Gamma-Gamma (spend per purchase day) fitted by maximum
  likelihood on the BTYD summary at the cutoff (time unit: days). Churn = P(no purchase in the next H days),
  value = expected purchases x expected spend. Customers without any purchase yet get churn 1 and value 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from serving.btyd import BTYDFitWarning, BTYDModel
from serving.model import BTYD_COLUMNS, BUYER_COLUMN, btyd_scores


def naive_churn(train: pd.DataFrame | None, frame: pd.DataFrame) -> np.ndarray:
    """Churn rate by days since last purchase, fitted on labeled ``train`` rows; without any (a history too short
    to label a cutoff) the unfitted rule ``recency / (recency + 30)`` keeps the ranking by recency."""
    from sklearn.isotonic import IsotonicRegression

    def recency(f: pd.DataFrame) -> np.ndarray:
        return np.nan_to_num(f["recency_days"].to_numpy(dtype=np.float64), nan=1e6)

    if train is None:
        r = recency(frame)
        return r / (r + 30.0)

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(recency(train), train["churned"].to_numpy(dtype=np.float64))
    return iso.predict(recency(frame))


def naive_value(frame: pd.DataFrame, horizon_days: int) -> np.ndarray:
    return np.clip(frame["spend_365d"].to_numpy(dtype=np.float64), 0.0, None) * horizon_days / 365.0


def btyd_summary(frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(frame[c].to_numpy(dtype=np.float64) for c in BTYD_COLUMNS)


def fit_btyd(frame: pd.DataFrame) -> BTYDModel:
    """Fit BG/NBD + Gamma-Gamma on customers with at least one purchase (``n_purchase_days > 0``).

    Fit warnings (boundary optimum, flat likelihood, non-convergence) are not printed here: they are in
    ``model.warnings``, and the caller says which ones matter (the training run reports those at the as-of date).
    """
    buyers = frame[frame[BUYER_COLUMN].to_numpy() > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BTYDFitWarning)
        return BTYDModel.fit(*btyd_summary(buyers))


def btyd_predict(model: BTYDModel, frame: pd.DataFrame, horizon_days: int) -> tuple[np.ndarray, np.ndarray]:
    """``(churn_probability, expected_value)`` over the next ``horizon_days`` for every row of ``frame``."""
    columns = [*BTYD_COLUMNS, BUYER_COLUMN]
    return btyd_scores(model, frame[columns].to_numpy(dtype=np.float64), columns, horizon_days)
