"""Training rows from stacked cutoffs: features at each cutoff joined with the labels of the next H days.

The validation split is temporal and mirrors deployment: a model deployed at ``as_of`` was trained on cutoffs
whose label windows ended by ``as_of``, i.e. cutoffs ``<= as_of - H``, and scores ``as_of``. So the validation
cutoff is ``V = as_of - H`` (the latest cutoff of the plan) and the selection model trains on cutoffs
``<= V - H``, whose labels were all known at ``V``. Nothing is ever split at random.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd

from features.contract import ContractError
from features.kernel import PreparedTransactions, compute_features, date_to_day, day_to_date
from features.labels import cutoff_plan, labels_at

LABEL_COLUMNS = ("churned", "future_value")


def build_dataset(prep: PreparedTransactions, cutoffs: list[dt.date], horizon_days: int) -> pd.DataFrame:
    """Features and labels for every (customer, cutoff): the kernel's columns plus ``churned``, ``future_value``."""
    frames = []
    for cutoff in cutoffs:
        frame = compute_features(prep, cutoff)
        ids, labels = labels_at(prep, cutoff, horizon_days)
        if not np.array_equal(ids, frame["customer_id"].to_numpy(dtype=object)):
            raise AssertionError("labels and features disagree on the customers at a cutoff")
        for name in LABEL_COLUMNS:
            frame[name] = labels[name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@dataclasses.dataclass(frozen=True)
class TemporalPlan:
    """Cutoffs for one training run at ``as_of`` (all dates are UTC days)."""

    as_of: dt.date
    horizon_days: int
    cutoffs: tuple[dt.date, ...]

    @property
    def validation_cutoff(self) -> dt.date:
        return self.cutoffs[-1]

    @property
    def selection_cutoffs(self) -> tuple[dt.date, ...]:
        """Cutoffs whose labels were known at the validation cutoff (``<= V - H``)."""
        last = date_to_day(self.validation_cutoff) - self.horizon_days
        return tuple(c for c in self.cutoffs if date_to_day(c) <= last)


def plan_training(
    prep: PreparedTransactions,
    as_of: dt.date,
    horizon_days: int,
    *,
    step_days: int = 30,
    max_cutoffs: int = 12,
) -> TemporalPlan:
    """The cutoff plan for a training run; raises ContractError when history is too short to validate."""
    first = day_to_date(int(prep.day.min()))
    cutoffs = tuple(cutoff_plan(as_of, horizon_days, first_date=first, step_days=step_days, max_cutoffs=max_cutoffs))
    plan = TemporalPlan(as_of, horizon_days, cutoffs)
    if not plan.selection_cutoffs:
        raise ContractError(
            f"not enough history to train and validate a {horizon_days}-day horizon at {as_of}: "
            f"need training cutoffs at least {horizon_days} days before the validation cutoff "
            f"{plan.validation_cutoff}; use a later --as-of or a shorter --horizon-days"
        )
    return plan
