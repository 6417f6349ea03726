"""THE scoring function: customers' feature rows in, every output out, as arrays.

:func:`score_customers` is the one place a customer is scored, tiered, segmented and explained. The online
service serialises JSON rows from its result (:func:`json_rows`), the nightly job and the Spark engine write
columns from it (:func:`output_columns`), the MLflow pyfunc returns a frame from it; ranking orders it on exact
values (:func:`serving.ranking.rank_order`). Rounding happens only when JSON is written.

- *Tier* (customer pyramid): by expected value over the horizon against thresholds fixed at training time,
  e.g. platinum = top 5%, gold = next 15%, silver = next 30%, bronze = the rest of the training population.
- *Segment*: current value (net spend in the last 365 days) x future value (expected value), split at the
  training population's medians: ``star`` (high/high), ``rising`` (low now, high future), ``fading``
  (high now, low future), ``low`` (low/low).
- *Intervals*: ``value_p10/p50/p90`` and the 80% interval ``value_low``/``value_high`` of future value (same units as
  ``expected_value``), ``purchases_p50/low/high`` of the number of purchase days in the horizon
  (:mod:`serving.intervals`); None (JSON ``null``, empty columns) for a bundle without intervals.
- *Timing*: ``purchase_within_<d>d`` = P(a purchase within d days after the as-of date) for the days of
  :data:`serving.timing.TIMING_DAYS` (NaN / ``null`` beyond the horizon) and ``expected_days_to_next_purchase``
  given one within the horizon (:mod:`serving.timing`); None for a bundle without BG/NBD.
- *Expected profit* (always): ``expected_value`` under the run's :class:`serving.economics.Economics` (margin,
  cost to serve per order, cost per refund), currency units over the horizon, may be negative
  (:func:`serving.economics.expected_profit`); equal to ``expected_value`` under the default economics.
- *Uplift* (optional, last of the :data:`OPTIONAL_FIELDS`): the change in P(a purchase within the horizon) a
  retention contact causes, from the bundle's uplift heads (:attr:`serving.model.Scores.uplift`); None (JSON
  ``null``, NaN columns) for a bundle without them.
- *Scorecard* (optional, after ``uplift``): ``contribution_score``, ``loyalty_score``, ``potential_score`` and
  ``composite_score`` (0-100) and ``scorecard_tier`` (the tier by the composite, the alternative to ``tier``) against
  the bundle's training reference (:mod:`serving.scorecard`, composite weights :class:`ScorecardWeights`, default
  1/3 each); None (JSON ``null``, NaN / empty columns) for a bundle trained before the scorecard.
- *Reasons*: the churn head's largest contributions (log-odds, TreeSHAP) per customer, largest absolute first
  (stable order), zero contributions left out; coded as (feature index, feature value, contribution) arrays and
  rendered as JSON objects or as text, from the same arrays. Each reason names its churn-cause family and a
  plain-language fact from the value (:mod:`serving.causes`); ``churn_cause`` = the family of the customer's largest
  reason that raises churn risk (None when no reason raises it or the customer was scored without reasons).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from serving.causes import fact, facts, family_of, family_text
from serving.economics import Economics, expected_profit
from serving.model import BundleMeta, ScoringModel, tier_index
from serving.scorecard import SCORECARD_FIELDS, SCORECARD_TIER, ScorecardReference, ScorecardWeights, score_scorecard
from serving.timing import TIMING_DAYS, TimingScores

__all__ = [
    "CAUSE_FIELD",
    "CURRENT_VALUE_FEATURE",
    "INTERVAL_FIELDS",
    "JSON_DECIMALS",
    "OPTIONAL_FIELDS",
    "REASONS",
    "SCORECARD_FIELDS",
    "SCORECARD_TIER",
    "SEGMENTS",
    "TIMING_FIELDS",
    "UPLIFT_FIELD",
    "ScoredBatch",
    "assign_segments",
    "assign_tiers",
    "churn_causes",
    "feature_matrix",
    "json_rows",
    "output_columns",
    "reason_objects",
    "reason_text_columns",
    "score_customers",
    "timing_columns",
    "top_reasons",
]

SEGMENTS = ("star", "rising", "fading", "low")
CURRENT_VALUE_FEATURE = "spend_365d"
REASONS = 3
"""Reasons per customer in every output (``reason_1..3`` columns, three JSON objects at most)."""
INTERVAL_FIELDS = (
    "value_p10",
    "value_p50",
    "value_p90",
    "value_low",
    "value_high",
    "purchases_p50",
    "purchases_low",
    "purchases_high",
)
"""The interval outputs (:class:`serving.intervals.Intervals`' fields), in output order, after ``segment``."""
TIMING_FIELDS = (*(f"purchase_within_{d}d" for d in TIMING_DAYS), "expected_days_to_next_purchase")
"""The timing outputs (:class:`serving.timing.TimingScores`), in output order, after the intervals: one column per
day of :data:`serving.timing.TIMING_DAYS` whatever the horizon (NaN beyond it), so every model writes the same
columns."""
UPLIFT_FIELD = "uplift"
"""The uplift output (treated minus control P(a purchase within the horizon), in [-1, 1]), the last optional one."""
OPTIONAL_FIELDS = (*INTERVAL_FIELDS, *TIMING_FIELDS, UPLIFT_FIELD, *SCORECARD_FIELDS)
"""Per-customer float outputs a bundle may lack (None in a :class:`ScoredBatch`, ``null`` in JSON, NaN columns):
intervals, timing, uplift, then the scorecard's scores; ``scorecard_tier`` (text) follows them."""
CAUSE_FIELD = "churn_cause"
"""The family of a customer's largest reason that raises churn risk (:func:`churn_causes`), after the reasons."""
JSON_DECIMALS = {
    "churn_probability": 6,
    "expected_value": 4,
    "value_at_risk": 4,
    "expected_profit": 4,
    UPLIFT_FIELD: 6,
    "reason": 4,
    **{f: 4 if f.startswith("value_") else 0 for f in INTERVAL_FIELDS},
    **{f: 6 for f in TIMING_FIELDS[:-1]},
    "expected_days_to_next_purchase": 2,
    **dict.fromkeys(SCORECARD_FIELDS, 2),
}
"""Decimals kept when a value is written as JSON (ranking and files use the exact values); purchase days are
whole numbers."""
RAISES, LOWERS = "raises churn risk", "lowers churn risk"


def assign_tiers(expected_value: np.ndarray, meta: BundleMeta) -> np.ndarray:
    """Tier name per customer: the first (highest) tier whose lower bound the expected value reaches."""
    return np.asarray(meta.tier_names, dtype=object)[tier_index(expected_value, meta.tier_thresholds)]


def assign_segments(current_value: np.ndarray, expected_value: np.ndarray, meta: BundleMeta) -> np.ndarray:
    """Segment per customer from current value (missing counts as 0) and expected value, see the module doc."""
    high_now = np.nan_to_num(current_value, nan=0.0) >= meta.segment_current_threshold
    high_future = expected_value >= meta.segment_future_threshold
    out = np.where(high_future, np.where(high_now, "star", "rising"), np.where(high_now, "fading", "low"))
    return out.astype(object)


def feature_matrix(arrays: dict[str, np.ndarray], columns: Sequence[str], n: int) -> np.ndarray:
    """Kernel output arrays (``n`` customers each) stacked in the model's column order, float64 (n x columns).

    A model column the arrays do not hold (a feature this kernel version does not compute) is all missing (NaN),
    which the heads score as LightGBM's missing value -- the same on every path.
    """
    if not columns:
        return np.empty((n, 0))
    return np.column_stack(
        [np.asarray(arrays[c], dtype=np.float64) if c in arrays else np.full(n, np.nan) for c in columns]
    )


def top_reasons(contributions: np.ndarray, X: np.ndarray, top: int = REASONS) -> tuple[np.ndarray, ...]:
    """The ``top`` largest contributions per row as coded arrays ``(feature, value, contribution, count)``.

    ``feature`` (n x top, int): column index, largest absolute contribution first (stable order for ties), zero
    contributions left out and the later ones moved up; ``value``: the feature's value there (NaN = missing);
    ``contribution``: log-odds (0 past the row's last reason); ``count`` (n): reasons per row.
    """
    n = len(X)
    k = min(top, X.shape[1]) if X.ndim == 2 else 0
    if n == 0 or k == 0:
        empty = np.zeros((n, k))
        return empty.astype(np.intp), empty, empty, np.zeros(n, dtype=np.intp)
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    c = np.take_along_axis(contributions, order, axis=1)
    shift = np.argsort(c == 0.0, axis=1, kind="stable")
    order = np.take_along_axis(order, shift, axis=1)
    c = np.take_along_axis(c, shift, axis=1)
    values = np.ascontiguousarray(np.take_along_axis(X, order, axis=1), dtype=np.float64)
    return order, values, c, np.count_nonzero(c != 0.0, axis=1)


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredBatch:
    """Every output for a set of customers, in input order, exact (unrounded).

    Probabilities are P(no purchase in the next ``horizon_days`` after the as-of date); values are expected net
    spend over that horizon in the data's currency (discounted and after margin as the bundle says); value at
    risk = churn probability x expected value; expected profit = expected value under the run's economics
    (:func:`serving.economics.expected_profit`, same units, may be negative). Reasons are coded (see
    :func:`top_reasons`). The :data:`INTERVAL_FIELDS` are None when the bundle has no interval calibration (and the
    purchase fields when it has no BG/NBD), the :data:`TIMING_FIELDS` when it has no BG/NBD, ``uplift`` when it has
    no uplift heads.
    """

    customer_id: np.ndarray
    churn_probability: np.ndarray
    expected_value: np.ndarray
    value_at_risk: np.ndarray
    expected_profit: np.ndarray
    tier: np.ndarray
    segment: np.ndarray
    reason_feature: np.ndarray
    reason_value: np.ndarray
    reason_contribution: np.ndarray
    reason_count: np.ndarray
    feature_names: tuple[str, ...]
    feature_descriptions: tuple[str, ...]
    feature_families: tuple[str, ...] = ()
    """Each feature's churn-cause family (:func:`serving.causes.family_of`; filled from the names when empty)."""
    value_p10: np.ndarray | None = None
    value_p50: np.ndarray | None = None
    value_p90: np.ndarray | None = None
    value_low: np.ndarray | None = None
    value_high: np.ndarray | None = None
    purchases_p50: np.ndarray | None = None
    purchases_low: np.ndarray | None = None
    purchases_high: np.ndarray | None = None
    purchase_within_7d: np.ndarray | None = None
    purchase_within_14d: np.ndarray | None = None
    purchase_within_30d: np.ndarray | None = None
    purchase_within_60d: np.ndarray | None = None
    purchase_within_90d: np.ndarray | None = None
    expected_days_to_next_purchase: np.ndarray | None = None
    uplift: np.ndarray | None = None
    contribution_score: np.ndarray | None = None
    loyalty_score: np.ndarray | None = None
    potential_score: np.ndarray | None = None
    composite_score: np.ndarray | None = None
    scorecard_tier: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.feature_families) != len(self.feature_names):
            object.__setattr__(self, "feature_families", tuple(family_of(n) for n in self.feature_names))

    def __len__(self) -> int:
        return len(self.customer_id)

    def take(self, index: np.ndarray) -> ScoredBatch:
        """The customers at ``index`` (positions), in that order."""
        per_customer = {
            f.name: getattr(self, f.name)[index]
            for f in dataclasses.fields(self)
            if f.name not in _PER_BATCH and getattr(self, f.name) is not None
        }
        return dataclasses.replace(self, **per_customer)


_PER_BATCH = ("feature_names", "feature_descriptions", "feature_families")


def timing_columns(timing: TimingScores | None) -> dict[str, np.ndarray]:
    """:data:`TIMING_FIELDS` from a model's timing scores (NaN for a day beyond the horizon); empty for None."""
    if timing is None:
        return {}
    n = len(timing.expected_days_to_next)
    index = {d: j for j, d in enumerate(timing.days)}
    out = {
        f"purchase_within_{d}d": timing.purchase_within[:, index[d]] if d in index else np.full(n, np.nan)
        for d in TIMING_DAYS
    }
    out["expected_days_to_next_purchase"] = timing.expected_days_to_next
    return out


def score_customers(
    model: ScoringModel,
    customer_ids: Sequence[Any] | np.ndarray,
    X: np.ndarray,
    *,
    reasons: int = REASONS,
    num_threads: int = 0,
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> ScoredBatch:
    """Score, tier, segment and explain customers (rows of ``X`` in the model's feature order), in input order.

    ``reasons=0`` skips the churn head's contributions (the costly part: TreeSHAP); ``num_threads`` is
    LightGBM's (0 = its default, 1 for single-row latency). ``economics``: what ``expected_profit`` subtracts
    (:class:`serving.economics.Economics`; None = the default: expected profit = expected value).
    ``scorecard_weights``: the composite's (:class:`serving.scorecard.ScorecardWeights`; None = 1/3 each).
    """
    ids = np.asarray(customer_ids, dtype=object)
    scores = model.score(X, num_threads=num_threads)
    current = X[:, model.feature_columns.index(CURRENT_VALUE_FEATURE)] if len(X) else np.empty(0)
    if reasons and len(X):
        contributions = model.churn_contributions(X, num_threads=num_threads)
        coded = top_reasons(contributions, X, reasons)
    else:
        coded = top_reasons(np.empty((len(X), 0)), np.empty((len(X), 0)), 0)
    descriptions = model.meta.feature_descriptions
    intervals = {f: getattr(scores.intervals, f) for f in INTERVAL_FIELDS} if scores.intervals is not None else {}
    intervals.update(timing_columns(scores.timing))
    if scores.uplift is not None:
        intervals[UPLIFT_FIELD] = np.asarray(scores.uplift, dtype=np.float64)
    profit = expected_profit(scores.expected_value, X, model.feature_columns, model.meta, economics)
    reference = ScorecardReference.from_dict(model.meta.scorecard) if model.meta.scorecard is not None else None
    intervals.update(
        score_scorecard(
            reference,
            X,
            model.feature_columns,
            scores.churn_probability,
            scores.expected_value,
            model.meta.margin,
            scorecard_weights,
        )
    )
    return ScoredBatch(
        customer_id=ids,
        churn_probability=scores.churn_probability,
        expected_value=scores.expected_value,
        value_at_risk=scores.value_at_risk,
        expected_profit=profit,
        tier=assign_tiers(scores.expected_value, model.meta),
        segment=assign_segments(current, scores.expected_value, model.meta),
        reason_feature=coded[0],
        reason_value=coded[1],
        reason_contribution=coded[2],
        reason_count=coded[3],
        feature_names=tuple(model.feature_columns),
        feature_descriptions=tuple(descriptions.get(c, c) for c in model.feature_columns),
        **intervals,
    )


def churn_causes(batch: ScoredBatch) -> np.ndarray:
    """:data:`CAUSE_FIELD` per customer: the family of the first (largest) of their reasons whose contribution raises
    churn risk; None when none does (or the batch was scored without reasons)."""
    n = len(batch)
    out = np.full(n, None, dtype=object)
    if batch.reason_feature.ndim != 2 or not batch.reason_feature.shape[1] or not n:
        return out
    raising = batch.reason_contribution > 0
    first = np.argmax(raising, axis=1)
    has = raising[np.arange(n), first]
    feature = batch.reason_feature[np.arange(n), first]
    families = np.asarray(batch.feature_families, dtype=object)
    out[has] = families[feature[has]]
    return out


def reason_fact(batch: ScoredBatch, j: int, value: float) -> str:
    """The plain-language fact of feature ``j`` at ``value`` (:func:`serving.causes.fact`)."""
    return fact(batch.feature_names[j], value, batch.feature_descriptions[j])


def reason_objects(batch: ScoredBatch, row: int) -> list[dict[str, Any]]:
    """One customer's reasons as JSON objects: ``feature``, ``description``, ``value`` (None when missing),
    ``effect`` ("raises churn risk" / "lowers churn risk"), ``contribution`` (log-odds), values rounded, ``cause``
    (the feature's churn-cause family, :mod:`serving.causes`) and ``fact`` (plain language, from the exact value)."""
    decimals = JSON_DECIMALS["reason"]
    out = []
    for k in range(int(batch.reason_count[row])):
        j = int(batch.reason_feature[row, k])
        value = float(batch.reason_value[row, k])
        c = float(batch.reason_contribution[row, k])
        out.append(
            {
                "feature": batch.feature_names[j],
                "description": batch.feature_descriptions[j],
                "value": round(value, decimals) if math.isfinite(value) else None,
                "effect": RAISES if c > 0 else LOWERS,
                "contribution": round(c, decimals),
                "cause": batch.feature_families[j],
                "fact": reason_fact(batch, j, value),
            }
        )
    return out


def _json_number(value: float, decimals: int) -> float | int | None:
    """``value`` rounded for JSON (an int for 0 decimals); None when it is not finite."""
    if not math.isfinite(value):
        return None
    return round(value) if decimals == 0 else round(value, decimals)


def json_rows(batch: ScoredBatch, *, reasons: bool = True) -> list[dict[str, Any]]:
    """One JSON object per customer (input order), values rounded to :data:`JSON_DECIMALS`; ``expected_profit``
    after ``value_at_risk``, the :data:`OPTIONAL_FIELDS` after ``segment`` (``null`` when the batch has none, or
    for a NaN), then ``scorecard_tier`` and, with ``reasons``, ``churn_cause`` and the reasons."""
    p = JSON_DECIMALS
    intervals = [(f, getattr(batch, f)) for f in OPTIONAL_FIELDS]
    causes = churn_causes(batch)
    rows = []
    for i in range(len(batch)):
        row = {
            "customer_id": str(batch.customer_id[i]),
            "churn_probability": round(float(batch.churn_probability[i]), p["churn_probability"]),
            "expected_value": round(float(batch.expected_value[i]), p["expected_value"]),
            "value_at_risk": round(float(batch.value_at_risk[i]), p["value_at_risk"]),
            "expected_profit": round(float(batch.expected_profit[i]), p["expected_profit"]),
            "tier": str(batch.tier[i]),
            "segment": str(batch.segment[i]),
        }
        for field, values in intervals:
            row[field] = None if values is None else _json_number(float(values[i]), p[field])
        row[SCORECARD_TIER] = None if batch.scorecard_tier is None else batch.scorecard_tier[i]
        if reasons:
            row[CAUSE_FIELD] = causes[i]
            row["reasons"] = reason_objects(batch, i)
        rows.append(row)
    return rows


def _fact_texts(batch: ScoredBatch) -> pa.Array:
    """:func:`reason_fact` of every (row, reason) slot, row-major, as Arrow text: each distinct (feature, exact value)
    pair formatted once (-0.0 and NaNs kept apart by their bits), feature by feature."""
    feature = batch.reason_feature.reshape(-1).astype(np.int64)
    values = np.ascontiguousarray(batch.reason_value, dtype=np.float64).reshape(-1)
    bits = values.view(np.int64)
    order = np.lexsort((bits, feature))
    feature_sorted, bits_sorted = feature[order], bits[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (feature_sorted[1:] != feature_sorted[:-1]) | (bits_sorted[1:] != bits_sorted[:-1])
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    first = order[new]
    distinct_feature, distinct_value = feature[first], values[first]
    starts = np.flatnonzero(np.r_[True, distinct_feature[1:] != distinct_feature[:-1]])
    texts: list[str] = []
    for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(first)], strict=True):
        j = int(distinct_feature[a])
        texts += facts(batch.feature_names[j], distinct_value[a:b].tolist(), batch.feature_descriptions[j])
    return pa.array(texts, type=pa.large_string()).take(pa.array(inverse))


def reason_text(fact_text: str, family: str, effect: str) -> str:
    """A reason as text: ``"<fact> — <family> (<effect>)"``, e.g. ``"no purchase for 143 days — engagement fading
    (raises churn risk)"`` (:func:`serving.causes.family_text`)."""
    return f"{fact_text} — {family_text(family)} ({effect})"


def reason_text_columns(batch: ScoredBatch, top: int = REASONS) -> dict[str, pd.api.extensions.ExtensionArray]:
    """``reason_1..top`` text columns, :func:`reason_text` of each reason's fact, family and effect, None past a
    row's last reason.

    The same reasons, order and facts as :func:`reason_objects`, built column-wise (Arrow) for millions of rows.
    """
    n, k = batch.reason_feature.shape if batch.reason_feature.ndim == 2 else (len(batch), 0)
    out: dict[str, pd.api.extensions.ExtensionArray] = {}
    if n and k:
        family = pa.array([f" — {family_text(f)}" for f in batch.feature_families], type=pa.large_string())
        effect = pa.array([f" ({LOWERS})", f" ({RAISES})"], type=pa.large_string())
        fact_text = _fact_texts(batch)
        for r in range(k):
            text = pc.binary_join_element_wise(
                fact_text.take(pa.array(np.arange(r, n * k, k))),
                family.take(pa.array(batch.reason_feature[:, r])),
                effect.take(pa.array((batch.reason_contribution[:, r] > 0).astype(np.int8))),
                pa.scalar("", type=pa.large_string()),
            )
            text = pc.if_else(pa.array(batch.reason_count > r), text, pa.nulls(n, type=pa.large_string()))
            out[f"reason_{r + 1}"] = pd.array(text, dtype="str")
    for r in range(len(out), top):
        out[f"reason_{r + 1}"] = pd.array([None] * n, dtype="str")
    return out


def output_columns(batch: ScoredBatch, *, reasons: int = REASONS) -> pd.DataFrame:
    """The batch as the nightly list's columns (input order, exact values): id, scores (expected profit after the
    value at risk), tier, segment, the :data:`OPTIONAL_FIELDS` (float64, NaN when the batch has none),
    ``scorecard_tier`` (text, empty when the batch has none), ``reason_1..reasons`` text columns and ``churn_cause``
    (all empty when the batch was scored without reasons)."""
    frame = pd.DataFrame(
        {
            "customer_id": pd.array(batch.customer_id, dtype="str"),
            "churn_probability": batch.churn_probability,
            "expected_value": batch.expected_value,
            "value_at_risk": batch.value_at_risk,
            "expected_profit": batch.expected_profit,
            "tier": pd.array(batch.tier, dtype="str"),
            "segment": pd.array(batch.segment, dtype="str"),
            **{
                f: np.full(len(batch), np.nan) if getattr(batch, f) is None else getattr(batch, f)
                for f in OPTIONAL_FIELDS
            },
            SCORECARD_TIER: pd.array(
                [None] * len(batch) if batch.scorecard_tier is None else batch.scorecard_tier, dtype="str"
            ),
        }
    )
    for name, texts in reason_text_columns(batch, reasons).items():
        frame[name] = texts
    frame[CAUSE_FIELD] = pd.array(churn_causes(batch), dtype="str")
    return frame
