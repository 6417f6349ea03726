"""The contribution x loyalty x potential scorecard: three 0-100 scores per customer, a composite and its tiers.

Banks and retailers rank customers on what they bring now, how attached they are and what they may bring; each
score here is a number from 0 (lowest) to 100 (highest), measured against the *training reference*: the training
population at the bundle's as-of date (:class:`ScorecardReference`, stored in ``bundle.json`` as
``BundleMeta.scorecard``, plain JSON).

- ``contribution_score``: current net value after margin = ``spend_365d`` (net spend in the last 365 days, missing
  counts as 0) x the bundle's ``margin``, as a percentile of the reference (:func:`percentile_score`).
- ``potential_score``: ``expected_value`` (expected future value over the horizon, from the value head) as a
  percentile of the reference.
- ``loyalty_score``: 100 x a weighted mean (:data:`LOYALTY_WEIGHTS`) of components in [0, 1]:
  ``retention`` = 1 - churn probability (0.5); ``tenure`` = the percentile of ``tenure_days`` / 100 (0.2);
  ``repurchase`` = the percentile of the repeat purchase days ``btyd_frequency`` / 100 (0.15); ``service`` (0.15,
  only for a model trained with customer events): the mean of ``complaints`` = 1 / (1 + ``complaints_30d`` +
  ``unresolved_complaints``; a missing count is 0: no complaint on record) and ``satisfaction`` = the percentile of
  ``mean_rating`` among the reference's rated customers / 100 (left out for a customer never rated), of whichever
  features the model has. A component the bundle or the customer lacks is left out and the weights of the others
  are renormalised. More churn risk never raises it; more tenure, repeat purchases,
  satisfaction and fewer complaints never lower it.
- ``composite_score``: the weighted mean of the three with :class:`ScorecardWeights` (default 1/3 each; a run
  passes its own, e.g. from ``contribution=0.5,loyalty=0.25,potential=0.25``, see :meth:`ScorecardWeights.parse`).
- ``scorecard_tier``: the bundle's tier names by the composite, the alternative to tiers by expected value: the
  first tier whose lower bound the composite reaches; the bounds are the training population's composite quantiles
  at the training tiers' cumulative top shares, under the reference's weights (the default ones), so under those
  weights the tiers hold the training shares (top 5%, next 15%, ...); under other weights the same bounds apply.

Weights come from the run: :func:`serving.scoring.score_customers` (``scorecard_weights=``), the batch job and the
Spark engine (``run_score_job`` / ``run_spark_job(scorecard_weights=)``, part of the job key when not the default)
and the online scorer (``OnlineScorer(scorecard_weights=)``); None everywhere means the default 1/3 each. Text
(a setting or a command-line option) is read by :meth:`ScorecardWeights.parse`: ``contribution=2,loyalty=1,
potential=1`` or a JSON object; a bad text is a :class:`~features.contract.ContractError` (one sentence).

Percentiles (:func:`percentile_score`): the reference holds :data:`REFERENCE_POINTS` quantiles (0%, 1%, ..., 100%)
of each measure; a value's score is linear between the quantiles around it, 0 below the lowest and 100 above the
highest, and the middle of the tied range when it equals a quantile that repeats (many customers at 0 spend score
alike). It never decreases as the value grows.

A bundle without a reference (trained before the scorecard) scores every field as None (``null`` in JSON, NaN /
empty columns); a missing score (e.g. no reference for a measure) makes the composite and its tier missing too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from features.contract import ContractError

__all__ = [
    "DEFAULT_WEIGHTS",
    "LOYALTY_WEIGHTS",
    "REFERENCE_POINTS",
    "SCORECARD_FIELDS",
    "SCORECARD_TIER",
    "ScorecardReference",
    "ScorecardWeights",
    "composite_score",
    "contribution_value",
    "fit_reference",
    "loyalty_score",
    "percentile_score",
    "reference_quantiles",
    "score_scorecard",
    "scorecard_tiers",
    "weights_of_settings",
]

SCORECARD_FIELDS = ("contribution_score", "loyalty_score", "potential_score", "composite_score")
"""The float outputs of the scorecard (0-100), in output order."""
SCORECARD_TIER = "scorecard_tier"
"""The text output: the tier by the composite."""
REFERENCE_POINTS = 101
"""Quantiles per measure in the reference: 0%, 1%, ..., 100%."""
LOYALTY_WEIGHTS = {"retention": 0.5, "tenure": 0.2, "repurchase": 0.15, "service": 0.15}
"""Weights of the loyalty components (renormalised over the components a customer has)."""
CURRENT_VALUE = "spend_365d"
TENURE, REPURCHASE = "tenure_days", "btyd_frequency"
COMPLAINTS, UNRESOLVED, RATING = "complaints_30d", "unresolved_complaints", "mean_rating"


@dataclasses.dataclass(frozen=True)
class ScorecardWeights:
    """Weights of the composite (non-negative, not all 0; used as shares of their sum)."""

    contribution: float = 1.0 / 3.0
    loyalty: float = 1.0 / 3.0
    potential: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        values = (self.contribution, self.loyalty, self.potential)
        if not all(math.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
            raise ContractError(
                f"scorecard weights must be non-negative numbers, not all 0, got contribution {self.contribution},"
                f" loyalty {self.loyalty}, potential {self.potential}"
            )

    def shares(self) -> tuple[float, float, float]:
        """The weights divided by their sum (contribution, loyalty, potential)."""
        total = self.contribution + self.loyalty + self.potential
        return self.contribution / total, self.loyalty / total, self.potential / total

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def parse(cls, text: str | Mapping[str, Any]) -> ScorecardWeights:
        """Weights from ``"contribution=1,loyalty=2,potential=1"``, a JSON object or a mapping (names left out
        weigh 0 when any is given); :class:`ContractError` (one sentence) otherwise."""
        if isinstance(text, str):
            stripped = text.strip()
            try:
                raw: Any = (
                    json.loads(stripped)
                    if stripped.startswith("{")
                    else dict(p.split("=", 1) for p in stripped.split(",") if p.strip())
                )
            except ValueError as exc:
                raise ContractError(f"scorecard weights '{text}' are not name=number pairs or a JSON object") from exc
        else:
            raw = dict(text)
        raw = {str(k).strip(): v for k, v in raw.items()} if isinstance(raw, dict) else raw
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names) if isinstance(raw, dict) else []
        if not isinstance(raw, dict) or unknown or not raw:
            raise ContractError(
                f"scorecard weights take {', '.join(sorted(names))}, got {', '.join(unknown) or 'nothing'}"
            )
        try:
            values = {str(k).strip(): float(v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise ContractError(f"scorecard weights must be numbers, got {raw}") from exc
        return cls(**{n: values.get(n, 0.0) for n in names})


DEFAULT_WEIGHTS = ScorecardWeights()


def reference_quantiles(values: np.ndarray) -> tuple[float, ...]:
    """:data:`REFERENCE_POINTS` quantiles of the finite values (empty when there is none)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return ()
    return tuple(float(q) for q in np.quantile(finite, np.linspace(0.0, 1.0, REFERENCE_POINTS)))


def percentile_score(values: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """0-100 score of each value against reference quantiles at equally spaced probabilities (see the module doc):
    linear between quantiles, the middle of a tied run at a repeated quantile, 0 / 100 outside; NaN stays NaN (and
    everything is NaN without quantiles)."""
    x = np.asarray(values, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64)
    if not len(q):
        return np.full(x.shape, np.nan)
    prob = np.linspace(0.0, 100.0, len(q)) if len(q) > 1 else np.array([50.0])
    unique = np.unique(q)
    low = prob[np.searchsorted(q, unique, side="left")]
    high = prob[np.searchsorted(q, unique, side="right") - 1]
    i = np.searchsorted(unique, x, side="left")
    inside = np.minimum(i, len(unique) - 1)
    exact = unique[inside] == x
    prev = np.maximum(i - 1, 0)
    span = unique[inside] - unique[prev]
    between = high[prev] + (low[inside] - high[prev]) * np.divide(
        x - unique[prev], span, out=np.zeros_like(x), where=span > 0
    )
    out = np.where(
        exact, (low[inside] + high[inside]) / 2.0, np.where(i == 0, 0.0, np.where(i >= len(unique), 100.0, between))
    )
    return np.where(np.isnan(x), np.nan, out)


def _column(X: np.ndarray, columns: Sequence[str], name: str) -> np.ndarray | None:
    return X[:, list(columns).index(name)] if name in columns else None


def contribution_value(X: np.ndarray, columns: Sequence[str], margin: float) -> np.ndarray:
    """Current net value after margin per row: ``spend_365d`` (missing = 0) x ``margin``; NaN without the feature."""
    spend = _column(X, columns, CURRENT_VALUE)
    if spend is None:
        return np.full(len(X), np.nan)
    return np.nan_to_num(spend, nan=0.0) * margin


@dataclasses.dataclass(frozen=True)
class ScorecardReference:
    """The training population's quantiles (:data:`REFERENCE_POINTS` each; empty: no such measure) and the
    composite's tier bounds (see the module doc), JSON in ``bundle.json``.

    ``contribution``: of ``spend_365d`` x margin (currency units); ``potential``: of ``expected_value``;
    ``tenure``: of ``tenure_days``; ``repurchase``: of ``btyd_frequency``; ``rating``: of ``mean_rating`` among
    rated customers (empty without event features); ``tier_names`` / ``tier_bounds``: composite lower bounds per
    tier, highest first (empty: no ``scorecard_tier``); ``weights``: the composite weights the bounds were fitted
    under."""

    contribution: tuple[float, ...]
    potential: tuple[float, ...]
    tenure: tuple[float, ...] = ()
    repurchase: tuple[float, ...] = ()
    rating: tuple[float, ...] = ()
    tier_names: tuple[str, ...] = ()
    tier_bounds: tuple[float, ...] = ()
    weights: dict[str, float] = dataclasses.field(default_factory=DEFAULT_WEIGHTS.to_dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScorecardReference:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (dict(v) if k == "weights" else tuple(v)) for k, v in raw.items() if k in fields})


def loyalty_score(
    churn_probability: np.ndarray, X: np.ndarray, columns: Sequence[str], reference: ScorecardReference
) -> np.ndarray:
    """0-100 loyalty per row (see the module doc): a weighted mean of retention, tenure, repurchase and service."""
    n = len(churn_probability)
    parts: list[tuple[float, np.ndarray]] = [("retention", 1.0 - np.asarray(churn_probability, dtype=np.float64))]
    for name, feature, quantiles in (
        ("tenure", TENURE, reference.tenure),
        ("repurchase", REPURCHASE, reference.repurchase),
    ):
        values = _column(X, columns, feature)
        if values is not None and quantiles:
            parts.append((name, percentile_score(values, quantiles) / 100.0))
    service = _service(X, columns, reference)
    if service is not None:
        parts.append(("service", service))
    total = np.zeros(n)
    weight = np.zeros(n)
    for name, values in parts:
        w = LOYALTY_WEIGHTS[name]
        ok = np.isfinite(values)
        total += np.where(ok, w * np.nan_to_num(values), 0.0)
        weight += np.where(ok, w, 0.0)
    return np.divide(100.0 * total, weight, out=np.full(n, np.nan), where=weight > 0)


def _service(X: np.ndarray, columns: Sequence[str], reference: ScorecardReference) -> np.ndarray | None:
    """The service component (mean of complaints and satisfaction where present; NaN where neither), None when the
    model has no event features."""
    complaints = [c for c in (_column(X, columns, COMPLAINTS), _column(X, columns, UNRESOLVED)) if c is not None]
    rating = _column(X, columns, RATING)
    subs = []
    if complaints:
        count = np.sum([np.nan_to_num(c, nan=0.0) for c in complaints], axis=0)
        subs.append(1.0 / (1.0 + np.maximum(count, 0.0)))
    if rating is not None and reference.rating:
        subs.append(percentile_score(rating, reference.rating) / 100.0)
    if not subs:
        return None
    stacked = np.vstack(subs)
    ok = np.isfinite(stacked)
    count = ok.sum(axis=0)
    return np.divide(np.where(ok, stacked, 0.0).sum(axis=0), count, out=np.full(len(X), np.nan), where=count > 0)


def composite_score(
    contribution: np.ndarray, loyalty: np.ndarray, potential: np.ndarray, weights: ScorecardWeights = DEFAULT_WEIGHTS
) -> np.ndarray:
    """The weighted mean of the three scores (:meth:`ScorecardWeights.shares`); NaN when any is NaN."""
    a, b, c = weights.shares()
    return a * np.asarray(contribution) + b * np.asarray(loyalty) + c * np.asarray(potential)


def scorecard_tiers(composite: np.ndarray, reference: ScorecardReference) -> np.ndarray | None:
    """Tier name per row by the composite (the first tier whose lower bound it reaches, the last below every bound),
    None for a missing composite; None (no output) when the reference holds no bounds."""
    if not reference.tier_bounds:
        return None
    bounds = np.asarray(reference.tier_bounds, dtype=np.float64)
    x = np.asarray(composite, dtype=np.float64)
    index = np.minimum(np.searchsorted(-bounds, -np.nan_to_num(x, nan=0.0), side="left"), len(bounds) - 1)
    names = np.asarray(reference.tier_names, dtype=object)[index]
    names[np.isnan(x)] = None
    return names


def score_scorecard(
    reference: ScorecardReference | None,
    X: np.ndarray,
    columns: Sequence[str],
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    margin: float,
    weights: ScorecardWeights | None = None,
) -> dict[str, np.ndarray]:
    """Every scorecard output for the rows of ``X`` (model column order): :data:`SCORECARD_FIELDS` (float64) and
    :data:`SCORECARD_TIER` (object, when the reference has bounds); empty without a reference."""
    if reference is None:
        return {}
    contribution = percentile_score(contribution_value(X, columns, margin), reference.contribution)
    potential = percentile_score(expected_value, reference.potential)
    loyalty = loyalty_score(churn_probability, X, columns, reference)
    composite = composite_score(contribution, loyalty, potential, weights or DEFAULT_WEIGHTS)
    out = dict(zip(SCORECARD_FIELDS, (contribution, loyalty, potential, composite), strict=True))
    tiers = scorecard_tiers(composite, reference)
    if tiers is not None:
        out[SCORECARD_TIER] = tiers
    return out


def fit_reference(
    X: np.ndarray,
    columns: Sequence[str],
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    margin: float,
    tier_names: Sequence[str] = (),
    tier_top_shares: Sequence[float] = (),
) -> ScorecardReference:
    """The reference of a training population at the as-of date (rows of ``X`` with their scored churn probability
    and expected value): the quantiles of each measure, then the composite's tier bounds at the cumulative
    ``tier_top_shares`` (one fewer than ``tier_names``; the last bound is 0) under the default weights."""
    rated = _column(X, columns, RATING)
    reference = ScorecardReference(
        contribution=reference_quantiles(contribution_value(X, columns, margin)),
        potential=reference_quantiles(expected_value),
        tenure=reference_quantiles(_column(X, columns, TENURE) if TENURE in columns else np.empty(0)),
        repurchase=reference_quantiles(_column(X, columns, REPURCHASE) if REPURCHASE in columns else np.empty(0)),
        rating=reference_quantiles(rated if rated is not None else np.empty(0)),
    )
    if not tier_names or len(X) == 0:
        return reference
    composite = score_scorecard(reference, X, columns, churn_probability, expected_value, margin)["composite_score"]
    finite = composite[np.isfinite(composite)]
    if not len(finite):
        return reference
    bounds = (*(float(np.quantile(finite, 1.0 - s)) for s in tier_top_shares), 0.0)
    return dataclasses.replace(reference, tier_names=tuple(tier_names), tier_bounds=bounds)


def weights_of_settings(settings: Any = None) -> ScorecardWeights | None:
    """The composite's weights of this process: ``RETENTION_SCORECARD_WEIGHTS`` when set (parsed by
    :meth:`ScorecardWeights.parse`), else None (1/3 each)."""
    if settings is None:
        from retention.settings import get_settings

        settings = get_settings()
    text = getattr(settings, "scorecard_weights", None)
    return ScorecardWeights.parse(text) if text else None
