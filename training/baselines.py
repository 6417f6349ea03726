"""Baselines the product's heads must beat, scored at a cutoff from the kernel's features only.

- ``naive``: churn = empirical churn rate by days since last purchase (isotonic in recency, fitted on the
  training rows; an unfitted recency rule when there are none); value = net spend of the last 365 days, scaled
  to the horizon (``spend_365d x H / 365``).
- ``btyd``: BG/NBD (purchase rate and dropout) + Gamma-Gamma (spend per purchase day) fitted by maximum
  likelihood on the BTYD summary at the cutoff (time unit: days). Churn = P(no purchase in the next H days),
  value = expected purchases x expected spend. Customers without any purchase yet get churn 1 and value 0.
- ``population_average`` (:func:`population_average`): what "one-time buyers usually do" says. A customer scored at
  the cutoff ``D`` for ``H`` days gets the mean churn label and the mean future value (net spend in the window,
  currency units) of the customers of their *group* at the training cutoff ``D - H``, measured over that cutoff's
  own ``H``-day window ``(D - H, D]`` -- the latest outcome fully known at ``D``. Groups (:data:`GROUPS`, by
  purchase days at the customer's cutoff): ``no_purchase`` (only refunds so far), ``one_time`` (one purchase
  day), ``repeat`` (two or more). A group nobody was in at ``D - H`` gets the mean of all customers there. Within
  a group every customer gets the same score, so its churn AUC is 0.5 and its Spearman undefined: to beat it a
  model must rank, and its MAE is what a constant costs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import warnings

import numpy as np
import pandas as pd

from features.kernel import PreparedTransactions, compute_features, date_to_day, day_to_date
from features.labels import labels_at
from serving.btyd import BTYDFitWarning, BTYDModel
from serving.model import BTYD_COLUMNS, BUYER_COLUMN, btyd_scores

POPULATION_AVERAGE = "population_average"
"""The baseline's name in backtest tables (the ``model`` column)."""
GROUPS: tuple[str, ...] = ("no_purchase", "one_time", "repeat")
"""Customer groups by purchase days at their cutoff: 0, 1, 2 or more (:func:`purchase_group`)."""


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


def purchase_group(frame: pd.DataFrame) -> np.ndarray:
    """Each row's index into :data:`GROUPS`: 0 without a purchase day, 1 with one, 2 with two or more."""
    days = frame[BUYER_COLUMN].to_numpy(dtype=np.float64)
    return np.minimum(days, 2).astype(np.int64)


def customer_groups(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Boolean masks of the backtest's customer groups: ``all``, ``one_time`` (one purchase day at the cutoff) and
    ``repeat`` (two or more)."""
    group = purchase_group(frame)
    return {"all": np.ones(len(frame), dtype=bool), "one_time": group == 1, "repeat": group == 2}


@dataclasses.dataclass(frozen=True)
class PopulationAverage:
    """Mean churn label and mean future value per :data:`GROUPS` entry at one labeled cutoff (see the module)."""

    cutoff: dt.date | None
    """The labeled cutoff the means come from (None: nothing could be labeled)."""
    horizon_days: int
    churn: tuple[float, ...]
    """Mean churn label (share without a purchase in the window) per group; the overall mean for empty groups."""
    value: tuple[float, ...]
    """Mean future value (currency units over the window) per group; the overall mean for empty groups."""
    customers: tuple[int, ...]
    """Customers per group at ``cutoff``."""

    @classmethod
    def fit(cls, labeled: pd.DataFrame, cutoff: dt.date | None, horizon_days: int) -> PopulationAverage:
        """From feature rows with their ``churned`` and ``future_value`` labels (one cutoff, ``horizon_days``)."""
        group = purchase_group(labeled)
        churned = labeled["churned"].to_numpy(dtype=np.float64)
        value = labeled["future_value"].to_numpy(dtype=np.float64)
        counts = np.bincount(group, minlength=len(GROUPS))
        overall = (churned.mean(), value.mean()) if len(labeled) else (np.nan, np.nan)

        def means(y: np.ndarray, fallback: float) -> tuple[float, ...]:
            sums = np.bincount(group, weights=y, minlength=len(GROUPS))
            return tuple(float(sums[g] / counts[g]) if counts[g] else float(fallback) for g in range(len(GROUPS)))

        return cls(cutoff, horizon_days, means(churned, overall[0]), means(value, overall[1]), tuple(map(int, counts)))

    def predict(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(churn_probability, expected_value)`` of every row of ``frame`` (NaN when nothing was labeled)."""
        group = purchase_group(frame)
        return np.asarray(self.churn)[group], np.asarray(self.value)[group]


def fit_population_average(prep: PreparedTransactions, as_of: dt.date, horizon_days: int) -> PopulationAverage:
    """:class:`PopulationAverage` at the training cutoff ``as_of - horizon_days`` (labels end on ``as_of``)."""
    cutoff = day_to_date(date_to_day(as_of) - horizon_days)
    frame = compute_features(prep, cutoff)
    _, labels = labels_at(prep, cutoff, horizon_days)
    labeled = frame.assign(churned=labels["churned"], future_value=labels["future_value"])
    return PopulationAverage.fit(labeled, cutoff if len(frame) else None, horizon_days)


def population_average(
    prep: PreparedTransactions, as_of: dt.date, horizon_days: int, frame: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """``(churn_probability, expected_value)`` of the ``population_average`` baseline for the feature rows ``frame``
    at ``as_of``: their group's means at ``as_of - horizon_days`` (see the module docstring)."""
    return fit_population_average(prep, as_of, horizon_days).predict(frame)


def population_average_scores(
    prep: PreparedTransactions, as_of: dt.date, horizon_days: int, frame: pd.DataFrame
) -> tuple[tuple[str, np.ndarray, np.ndarray], ...]:
    """``((POPULATION_AVERAGE, churn_probability, expected_value),)`` for the rows of ``frame``, or ``()`` when nobody
    could be labeled at ``as_of - horizon_days``: an entry for a backtest's list of models."""
    fitted = fit_population_average(prep, as_of, horizon_days)
    if fitted.cutoff is None:
        return ()
    return ((POPULATION_AVERAGE, *fitted.predict(frame)),)
