"""Retention ranking: value at risk, value tiers, current x future value segments and reason codes.

Plain functions over arrays, shared by the online service and the batch job.

- *Tier* (customer pyramid): by expected value over the horizon against thresholds fixed at training time,
  e.g. platinum = top 5%, gold = next 15%, silver = next 30%, bronze = the rest of the training population.
- *Segment*: current value (net spend in the last 365 days) x future value (expected value), split at the
  training population's medians: ``star`` (high/high), ``rising`` (low now, high future), ``fading``
  (high now, low future), ``low`` (low/low).
- *Retention priority*: value at risk = P(churn) x expected value, highest first; ties broken by customer id
  so the order is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from serving.model import BundleMeta, ScoringModel

SEGMENTS = ("star", "rising", "fading", "low")
CURRENT_VALUE_FEATURE = "spend_365d"


def assign_tiers(expected_value: np.ndarray, meta: BundleMeta) -> np.ndarray:
    """Tier name per customer: the first (highest) tier whose lower bound the expected value reaches."""
    thresholds = np.asarray(meta.tier_thresholds, dtype=np.float64)  # descending lower bounds
    names = np.asarray(meta.tier_names, dtype=object)
    index = np.searchsorted(-thresholds, -np.asarray(expected_value), side="right")
    return names[np.minimum(index, len(names) - 1)]


def assign_segments(current_value: np.ndarray, expected_value: np.ndarray, meta: BundleMeta) -> np.ndarray:
    high_now = np.nan_to_num(current_value, nan=0.0) >= meta.segment_current_threshold
    high_future = expected_value >= meta.segment_future_threshold
    out = np.where(high_future, np.where(high_now, "star", "rising"), np.where(high_now, "fading", "low"))
    return out.astype(object)


def reason_codes(
    model: ScoringModel, X: np.ndarray, top: int = 3, contributions: np.ndarray | None = None
) -> list[list[dict[str, Any]]]:
    """The ``top`` largest churn-head contributions per customer, in words an agent can read.

    Each reason: ``feature``, ``description``, ``value`` (the feature's value, None when missing),
    ``effect`` ("raises churn risk" / "lowers churn risk") and ``contribution`` (log-odds).
    """
    if len(X) == 0:
        return []
    contrib = (
        model.churn_contributions(X, num_threads=1 if len(X) == 1 else 0) if contributions is None else contributions
    )
    names = model.feature_columns
    descriptions = model.meta.feature_descriptions
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
    out: list[list[dict[str, Any]]] = []
    for row, idx in enumerate(order):
        reasons = []
        for j in idx:
            c = float(contrib[row, j])
            if c == 0.0:
                continue
            value = float(X[row, j])
            reasons.append(
                {
                    "feature": names[j],
                    "description": descriptions.get(names[j], names[j]),
                    "value": None if not np.isfinite(value) else round(value, 4),
                    "effect": "raises churn risk" if c > 0 else "lowers churn risk",
                    "contribution": round(c, 4),
                }
            )
        out.append(reasons)
    return out


def feature_matrix(arrays: dict[str, np.ndarray], columns: Sequence[str]) -> np.ndarray:
    """Stack kernel output arrays into the model's column order; raises KeyError naming a missing feature."""
    missing = [c for c in columns if c not in arrays]
    if missing:
        raise KeyError(f"features missing for the model: {', '.join(missing)}")
    if not columns:
        return np.empty((0, 0))
    return np.column_stack([np.asarray(arrays[c], dtype=np.float64) for c in columns])


def score_table(
    model: ScoringModel,
    customer_ids: np.ndarray,
    X: np.ndarray,
    *,
    reasons: int = 3,
    num_threads: int = 0,
) -> pd.DataFrame:
    """Score, tier, segment and explain customers; rows in input order (rank with :func:`rank`)."""
    scores = model.score(X, num_threads=num_threads)
    current = X[:, model.feature_columns.index(CURRENT_VALUE_FEATURE)]
    table = pd.DataFrame(
        {
            "customer_id": pd.array(np.asarray(customer_ids, dtype=object), dtype="str"),
            "churn_probability": scores.churn_probability,
            "expected_value": scores.expected_value,
            "value_at_risk": scores.value_at_risk,
            "tier": assign_tiers(scores.expected_value, model.meta),
            "segment": assign_segments(current, scores.expected_value, model.meta),
        }
    )
    if reasons:
        table["reasons"] = reason_codes(model, X, top=reasons)
    return table


def rank(table: pd.DataFrame) -> pd.DataFrame:
    """Sort by value at risk (highest first, ties by customer id) and number ``retention_rank`` from 1."""
    ordered = table.sort_values(["value_at_risk", "customer_id"], ascending=[False, True], kind="stable")
    ordered = ordered.reset_index(drop=True)
    ordered.insert(1, "retention_rank", np.arange(1, len(ordered) + 1, dtype=np.int64))
    return ordered


def pareto_share(expected_value: np.ndarray, top_share: float = 0.2) -> float:
    """Share of total expected value held by the top ``top_share`` of customers (the Pareto view)."""
    values = np.sort(np.asarray(expected_value, dtype=np.float64))[::-1]
    total = values.sum()
    if total <= 0 or len(values) == 0:
        return 0.0
    k = max(1, int(np.ceil(top_share * len(values))))
    return float(values[:k].sum() / total)
