"""Training rows from stacked cutoffs, and the validation scheme a history allows.

Each row is a (customer, cutoff): the kernel's features at the cutoff, the labels of the next H days
(``churned``, ``future_value``) and the BG/NBD + Gamma-Gamma prediction made *at that cutoff* from a fit on that
cutoff's summaries only (``btyd_churn``, ``btyd_value``): the prior a hybrid head learns corrections to.

Validation mirrors deployment wherever the history allows it. A model deployed at ``as_of`` was trained on
cutoffs whose label windows ended by ``as_of`` and scores ``as_of``; so the validation cutoff is
``V = as_of - H`` (the latest labeled cutoff) and, in the ``temporal`` scheme, the selection models train on
cutoffs ``<= V - H`` (their labels were all known at ``V``). When the history is too short for that, the
``customer_grouped`` scheme trains the selection models on half of the customers (a stable hash of the id) at
every labeled cutoff and validates on the other half at ``V``: nothing is split at random, no validation
customer is ever trained on, but the training label windows overlap ``V``'s in time, so it is optimistic
about drift -- it is named in the comparison report, the model card and the MLflow params. When no cutoff can
be labeled at all the scheme is ``none`` and the version is BTYD-only (see :mod:`training.pipeline`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib

import numpy as np
import pandas as pd

from features.kernel import PreparedTransactions, compute_features, date_to_day, day_to_date
from features.labels import MIN_HISTORY_DAYS, cutoff_plan, labels_at
from retention import progress
from training import baselines
from training.config import DEFAULT_CONFIG, TrainingConfig

LABEL_COLUMNS = ("churned", "future_value")
PRIOR_COLUMNS = ("btyd_churn", "btyd_value")
SCHEMES = ("temporal", "customer_grouped", "none")


def build_dataset(prep: PreparedTransactions, cutoffs: list[dt.date], horizon_days: int) -> pd.DataFrame:
    """Features, labels and the BTYD prior for every (customer, cutoff).

    A cutoff where BG/NBD + Gamma-Gamma cannot be fitted (no repeat purchase yet) or predicts non-finite values is
    left out with a warning.
    """
    frames = []
    for cutoff in cutoffs:
        frame = compute_features(prep, cutoff)
        ids, labels = labels_at(prep, cutoff, horizon_days)
        if not np.array_equal(ids, frame["customer_id"].to_numpy(dtype=object)):
            raise AssertionError("labels and features disagree on the customers at a cutoff")
        for name in LABEL_COLUMNS:
            frame[name] = labels[name]
        try:
            prior = baselines.fit_btyd(frame)
        except ValueError as exc:
            progress.warn(f"cutoff {cutoff} left out: BG/NBD + Gamma-Gamma cannot be fitted there ({exc})")
            continue
        frame["btyd_churn"], frame["btyd_value"] = baselines.btyd_predict(prior, frame, horizon_days)
        if not np.isfinite(frame[list(PRIOR_COLUMNS)].to_numpy()).all():
            progress.warn(f"cutoff {cutoff} left out: BG/NBD + Gamma-Gamma predictions there are not finite ({prior})")
            continue
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def customer_half(ids: pd.Series, bit: int = 0) -> np.ndarray:
    """A stable 0/1 split of customers by bit ``bit`` of a CRC-32 of their id (same customer, same half, always).

    Bit 0 splits the validation rows for cross-fitting; bit 1 splits the customers of the ``customer_grouped``
    scheme, so the two splits are independent.
    """
    return np.fromiter(((zlib.crc32(str(i).encode()) >> bit) & 1 for i in ids), dtype=np.int8, count=len(ids))


@dataclasses.dataclass(frozen=True)
class TrainingPlan:
    """Labeled cutoffs of one training run at ``as_of`` (all dates are UTC days) and its validation scheme."""

    as_of: dt.date
    horizon_days: int
    cutoffs: tuple[dt.date, ...]
    min_history_days: int = MIN_HISTORY_DAYS

    @property
    def validation_cutoff(self) -> dt.date | None:
        """``as_of - H``, the latest labeled cutoff (None when nothing can be labeled)."""
        return self.cutoffs[-1] if self.cutoffs else None

    @property
    def temporal_cutoffs(self) -> tuple[dt.date, ...]:
        """Cutoffs whose labels were known at the validation cutoff (``<= V - H``)."""
        if not self.cutoffs:
            return ()
        last = date_to_day(self.cutoffs[-1]) - self.horizon_days
        return tuple(c for c in self.cutoffs if date_to_day(c) <= last)

    @property
    def scheme(self) -> str:
        """``temporal`` when a cutoff ``<= V - H`` exists, else ``customer_grouped``, else ``none``."""
        if self.temporal_cutoffs:
            return "temporal"
        return "customer_grouped" if self.cutoffs else "none"

    @property
    def selection_cutoffs(self) -> tuple[dt.date, ...]:
        """The cutoffs the selection models train on (all labeled cutoffs in the customer-grouped scheme)."""
        return self.temporal_cutoffs if self.scheme == "temporal" else self.cutoffs

    def describe(self) -> str:
        """One sentence for the console, the model card and the comparison report."""
        if self.scheme == "temporal":
            return (
                f"temporal: selection models trained on cutoffs up to {self.temporal_cutoffs[-1]} and validated on"
                f" cutoff {self.validation_cutoff}, whose labels they never saw"
            )
        if self.scheme == "customer_grouped":
            return (
                f"customer-grouped (fallback): no cutoff lies a whole horizon before the validation cutoff"
                f" {self.validation_cutoff}, so the selection models train on half of the customers at"
                f" {len(self.cutoffs)} cutoff(s) and are validated on the other half at {self.validation_cutoff};"
                " label windows overlap in time, so drift is under-tested"
            )
        first = day_to_date(date_to_day(self.as_of) - self.horizon_days - self.min_history_days)
        return (
            f"none: no cutoff can be labeled ({self.horizon_days}-day horizon + {self.min_history_days} days of history"
            f" need a first transaction on or before {first}); BTYD-only version, not validated"
        )


def plan_training(
    prep: PreparedTransactions,
    as_of: dt.date,
    horizon_days: int | None = None,
    *,
    config: TrainingConfig = DEFAULT_CONFIG,
) -> TrainingPlan:
    """The cutoff plan of a training run; it never refuses (see :attr:`TrainingPlan.scheme`).

    Cutoffs every ``config.cutoff_step_days``, at most ``config.max_cutoffs``, each with ``config.min_history_days``
    of history; ``horizon_days`` (when given) replaces the config's horizon.
    """
    config = config.replace(horizon_days=horizon_days)
    cutoffs = cutoff_plan(
        as_of,
        config.horizon_days,
        first_date=day_to_date(int(prep.day.min())),
        step_days=config.cutoff_step_days,
        max_cutoffs=config.max_cutoffs,
        min_history_days=config.min_history_days,
    )
    return TrainingPlan(as_of, config.horizon_days, tuple(cutoffs), config.min_history_days)
