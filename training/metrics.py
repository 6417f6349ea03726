"""Quality metrics of the churn and value heads, and the per-bin / per-decile tables they are read from.

Conventions used throughout:

* ``y_true`` for churn is 0/1 (1 = churned, i.e. no purchase in the horizon); ``p_churn`` is a probability.
* ``y_true`` for value is the realised future value in currency units; ``y_pred`` the prediction in the same units.
* Rankings are by score, highest first. Two tie conventions are used:

  - curve-based metrics (normalized Gini, ``top20_capture``, the plotted curves) treat customers with tied scores
    as if ordered at random: they use the expected value over tie orders, obtained by replacing the actuals inside
    a tie group by their group mean (:func:`serving.pareto.ordered_by_score`, the one implementation shared with
    the batch summary and the notebooks). They are invariant to any strictly increasing transform of the score
    and independent of the input order.
  - decile-based metrics (``top_decile_lift``, ``decile_mape``, ``decile_table``) sort by score with a *stable*
    sort, so tied customers keep their input order, and split the sorted rows into 10 near-equal groups
    (``np.array_split``: the first ``n % 10`` deciles get one customer more). Decile 1 holds ``ceil(n / 10)``
    customers. With many tied scores (e.g. an isotonic baseline) these depend on the row order of the input.

* ROC AUC, average precision, the Brier score and log loss are scikit-learn's (same definitions); ECE, the
  tie-aware normalized Gini, the top-decile lift and the decile tables are defined here.
* Nothing is computed at import time; scikit-learn and SciPy are imported inside the functions that use them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from serving.intervals import INTERVAL_LEVEL, promised_coverage
from serving.pareto import ordered_by_score, top_share

ArrayLike = np.ndarray | pd.Series | Sequence[float]

LOG_LOSS_EPS = 1e-15
"""Probabilities are clipped to ``[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]`` for the log loss (a certain mistake costs
``-ln(1e-15)`` = 34.5 nats, not infinity)."""

CHURN_KEYS: tuple[str, ...] = ("auc", "pr_auc", "brier", "log_loss", "ece", "top_decile_lift", "churn_rate")
"""Keys of :func:`churn_metrics`, in order."""
VALUE_KEYS: tuple[str, ...] = (
    "mae",
    "rmse",
    "spearman",
    "normalized_gini",
    "top20_capture",
    "decile_mape",
    "total_ratio",
    "total_pred",
    "total_actual",
)
"""Keys of :func:`value_metrics`, in order."""

COMPARED_CHURN_KEYS: tuple[str, ...] = tuple(f"churn_{k}" for k in CHURN_KEYS if k != "churn_rate")
"""Churn metrics compared between models (model card, comparison table, backtest), as the training pipeline names
them: :data:`CHURN_KEYS` prefixed with ``churn_``, without the churn rate (a property of the data, not a model)."""
COMPARED_VALUE_KEYS: tuple[str, ...] = tuple(
    f"value_{k}" for k in ("normalized_gini", "spearman", "top20_capture", "mae", "rmse", "decile_mape", "total_ratio")
)
"""Value metrics compared between models, ranking quality first: :data:`VALUE_KEYS` prefixed with ``value_``,
without the two sums (currency totals, not quality)."""
INTERVAL_KEYS: tuple[str, ...] = ("coverage", "promised", "coverage_attainable", "coverage_top_tier", "below", "above")
"""Keys of :func:`interval_metrics`, in order."""

METRIC_UNITS: dict[str, str] = {
    "auc": "ROC AUC (0.5 = random)",
    "pr_auc": "average precision",
    "brier": "Brier score (prob.²)",
    "log_loss": "log loss (nats)",
    "ece": "ECE (probability)",
    "top_decile_lift": "lift (x random)",
    "churn_rate": "churn rate (share)",
    "mae": "MAE (currency / customer)",
    "rmse": "RMSE (currency / customer)",
    "spearman": "Spearman rho",
    "normalized_gini": "normalized Gini (1 = perfect)",
    "top20_capture": "share of value in top 20%",
    "decile_mape": "decile MAPE (share)",
    "total_ratio": "sum pred / sum actual",
    "total_pred": "currency",
    "total_actual": "currency",
    "coverage": "share inside the 80% interval",
    "promised": "coverage the intervals promise",
    "coverage_attainable": "coverage where P(no purchase) <= 80%",
    "coverage_top_tier": "coverage in the top tier",
    "below": "share below the interval",
    "above": "share above the interval",
}
"""What each metric of :data:`CHURN_KEYS` and :data:`VALUE_KEYS` measures, with its unit (an axis label)."""


def metric_label(metric: str) -> str:
    """Axis label of a metric named with or without its ``churn_`` / ``value_`` prefix; the name if unknown."""
    base = metric if metric == "churn_rate" else metric.removeprefix("churn_").removeprefix("value_")
    base = base.removeprefix("purchases_").removeprefix("interval_")
    return METRIC_UNITS.get(base, metric)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def paired(y_true: ArrayLike, score: ArrayLike, what: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float64 arrays of equal, non-zero length without NaN/inf (``ValueError`` otherwise,
    naming the second input ``what``)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but {what} has {s.size}")
    if y.size == 0:
        raise ValueError("cannot evaluate on zero rows")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise ValueError(f"y_true and {what} must be finite (no NaN or inf)")
    return y, s


def binary_labels(y: np.ndarray) -> np.ndarray:
    """``y`` itself after checking it holds churn labels (0/1 only; ``ValueError`` otherwise)."""
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("churn labels must be 0/1")
    return y


def _one_class(y: np.ndarray) -> bool:
    """Only churners or only stayers: ranking metrics (AUC, average precision) are undefined."""
    n_pos = y.sum()
    return bool(n_pos == 0 or n_pos == y.size)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else math.nan


def top_decile_lift(y_true: ArrayLike, score: ArrayLike) -> float:
    """Churn rate of decile 1 (the ``ceil(n / 10)`` highest scores, ties kept in input order) / overall churn rate,
    unitless (1 = random); NaN when nobody churned. For values instead of 0/1 labels: the mean value of decile 1
    over the overall mean."""
    y, score = paired(y_true, score)
    rate = y.mean()
    if rate == 0:
        return math.nan
    k = -(-y.size // 10)  # ceil(n / 10) == size of the first np.array_split group
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean() / rate)


def _gini(ordered: np.ndarray) -> float:
    """Kaggle Gini of an already ordered (highest score first) actual vector; NaN when the total is 0.

    sum_k cumulative_share_k / n - (n + 1) / (2n): the area between the gains curve (as a step sum) and the diagonal.
    """
    total = ordered.sum()
    if total == 0:
        return math.nan
    n = ordered.size
    return float(np.cumsum(ordered).sum() / total / n - (n + 1) / (2 * n))


def _deciles(score: np.ndarray, n_groups: int = 10) -> np.ndarray:
    """Decile label per row: 1 = highest scores. Rows sorted by score (stable) and split into near-equal groups."""
    order = np.argsort(-score, kind="stable")
    labels = np.empty(score.size, dtype=np.int64)
    for i, idx in enumerate(np.array_split(order, n_groups), start=1):
        labels[idx] = i
    return labels


# --------------------------------------------------------------------------------------------------------------
# churn metrics
# --------------------------------------------------------------------------------------------------------------


def roc_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve (unitless, 0.5 = random, 1 = perfect): probability that a random churner scores
    higher than a random non-churner, ties counting one half (``sklearn.metrics.roc_auc_score``). NaN when only
    one class is present."""
    y, s = paired(y_true, score)
    if _one_class(binary_labels(y)):
        return math.nan
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def average_precision(y_true: ArrayLike, score: ArrayLike) -> float:
    """Average precision (PR AUC, unitless, baseline = churn rate): sum over distinct thresholds of
    (recall gain) x precision, the step-wise area under the precision-recall curve
    (``sklearn.metrics.average_precision_score``). NaN when only one class is present."""
    y, s = paired(y_true, score)
    if _one_class(binary_labels(y)):
        return math.nan
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s))


def expected_calibration_error(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """ECE (probability units, 0 = perfectly calibrated): count-weighted mean over equal-width probability bins of
    |mean predicted probability - observed churn rate|."""
    table = calibration_curve(y_true, p, n_bins)
    weights = table["count"].to_numpy(dtype=np.float64)
    gaps = np.abs(table["mean_predicted"].to_numpy() - table["observed_rate"].to_numpy())
    return float(np.sum(weights * gaps) / weights.sum())


def churn_metrics(y_true: ArrayLike, p_churn: ArrayLike) -> dict[str, float]:
    """Quality of churn probabilities ``p_churn`` against 0/1 outcomes ``y_true``.

    Keys (:data:`CHURN_KEYS`):

    * ``auc``: ROC AUC, unitless (0.5 random, 1 perfect ranking). NaN if ``y_true`` has a single class.
    * ``pr_auc``: average precision, unitless (baseline = churn rate). NaN if ``y_true`` has a single class.
    * ``brier``: mean squared error of the probability, probability^2 units (0 perfect, 0.25 = always 0.5).
    * ``log_loss``: mean negative log-likelihood in nats, probabilities clipped to [1e-15, 1 - 1e-15].
    * ``ece``: expected calibration error, probability units (10 equal-width bins, weighted by count).
    * ``top_decile_lift``: churn rate among the 10% highest scores / overall churn rate, unitless
      (1 = random, 10 = upper bound when the churn rate is <= 10%); NaN when nobody churned. The top 10% are
      the ``ceil(n / 10)`` highest scores after a stable sort (tied scores keep their input order), i.e. exactly
      decile 1 of :func:`decile_table`.
    * ``churn_rate``: share of churners in ``y_true``.
    """
    from sklearn.metrics import brier_score_loss, log_loss

    y, p = paired(y_true, p_churn, "p_churn")
    y = binary_labels(y)
    if ((p < -1e-9) | (p > 1 + 1e-9)).any():
        raise ValueError("p_churn must be probabilities in [0, 1]")
    p = np.clip(p, 0.0, 1.0)
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    return {
        "auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "brier": float(brier_score_loss(y, p, labels=[0.0, 1.0])),
        "log_loss": float(log_loss(y, clipped, labels=[0.0, 1.0])),
        "ece": expected_calibration_error(y, p),
        "top_decile_lift": top_decile_lift(y, p),
        "churn_rate": float(y.mean()),
    }


# --------------------------------------------------------------------------------------------------------------
# value metrics
# --------------------------------------------------------------------------------------------------------------


def normalized_gini(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Kaggle normalized Gini, unitless: Gini of the actuals ordered by prediction divided by the Gini of the
    actuals ordered by themselves. 1 = perfect ranking, ~0 = random, -1 = reversed. Only the order of the
    predictions matters; tied predictions count as randomly ordered. NaN when the actuals sum to 0 or are all
    equal."""
    y, s = paired(y_true, y_pred, "y_pred")
    best = _gini(np.sort(y)[::-1])
    if math.isnan(best) or best == 0:
        return math.nan
    return _gini(ordered_by_score(y, s)) / best


def value_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Quality of value predictions ``y_pred`` against realised values ``y_true`` (both in currency units).

    Keys (:data:`VALUE_KEYS`):

    * ``mae``: mean absolute error, currency units per customer.
    * ``rmse``: root mean squared error, currency units per customer.
    * ``spearman``: Spearman rank correlation, unitless in [-1, 1]; NaN if either side is constant.
    * ``normalized_gini``: see :func:`normalized_gini` (1 perfect, ~0 random, -1 reversed).
    * ``top20_capture``: share of the total actual value held by the 20% of customers with the highest
      predictions, unitless (0.2 = random, oracle = top-20% share of the actuals):
      ``serving.pareto.top_share(actual, 0.2, by=predicted)``. Ties averaged; for n not divisible by 5 the
      boundary customer counts fractionally.
    * ``decile_mape``: customers split into 10 deciles by prediction; mean over deciles of
      |sum predicted - sum actual| / |sum actual|, unitless (0.1 = 10% off per decile); deciles whose
      actual sum is 0 are skipped; NaN if all are.
    * ``total_ratio``: sum predicted / sum actual, unitless (1 = right overall level); NaN if the actual sum is 0.
    * ``total_pred`` / ``total_actual``: sums, currency units.
    """
    y, s = paired(y_true, y_pred, "y_pred")
    err = s - y
    total_actual, total_pred = float(y.sum()), float(s.sum())
    if np.ptp(y) == 0 or np.ptp(s) == 0:
        spearman = math.nan
    else:
        from scipy.stats import spearmanr

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            spearman = float(spearmanr(y, s).statistic)
    deciles = _deciles(s)
    mapes = []
    for d in np.unique(deciles):
        actual = y[deciles == d].sum()
        if actual != 0:
            with np.errstate(over="ignore"):  # subnormal actual sums give inf, which is the honest answer
                mapes.append(abs(s[deciles == d].sum() - actual) / abs(actual))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "spearman": spearman,
        "normalized_gini": normalized_gini(y, s),
        "top20_capture": top_share(y, 0.2, by=s) if total_actual != 0 else math.nan,
        "decile_mape": float(np.mean(mapes)) if mapes else math.nan,
        "total_ratio": _ratio(total_pred, total_actual),
        "total_pred": total_pred,
        "total_actual": total_actual,
    }


# --------------------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------------------


def calibration_curve(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``n_bins`` equal-width probability bins on [0, 1] (p = 1 falls in the last bin).

    One row per non-empty bin: ``bin`` (0-based index), ``bin_lower``, ``bin_upper``, ``mean_predicted``
    (mean probability in the bin), ``observed_rate`` (share of churners in the bin), ``count`` (customers).
    """
    y, q = paired(y_true, p, "p")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    idx = np.clip(np.floor(q * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=q, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    keep = counts > 0
    bins = np.arange(n_bins)[keep]
    return pd.DataFrame(
        {
            "bin": bins,
            "bin_lower": bins / n_bins,
            "bin_upper": (bins + 1) / n_bins,
            "mean_predicted": sum_p[keep] / counts[keep],
            "observed_rate": sum_y[keep] / counts[keep],
            "count": counts[keep],
        }
    )


def decile_table(
    y_true_value: ArrayLike,
    y_pred_value: ArrayLike,
    churned: ArrayLike | None = None,
    p_churn: ArrayLike | None = None,
) -> pd.DataFrame:
    """One row per decile of predicted value (1 = highest predictions; stable sort, near-equal sizes).

    Columns: ``decile``, ``customers``, ``mean_predicted``, ``sum_predicted``, ``mean_actual``, ``sum_actual``
    (currency units), plus ``predicted_churn_rate`` (mean ``p_churn``) and ``actual_churn_rate`` (share of
    ``churned``) when given. Empty deciles (fewer than 10 customers) are omitted.
    """
    y, s = paired(y_true_value, y_pred_value, "y_pred_value")
    frame = pd.DataFrame({"decile": _deciles(s), "predicted": s, "actual": y})
    extra: dict[str, tuple[str, str]] = {}
    if p_churn is not None:
        frame["p_churn"] = np.asarray(p_churn, dtype=np.float64).ravel()
        extra["predicted_churn_rate"] = ("p_churn", "mean")
    if churned is not None:
        frame["churned"] = np.asarray(churned, dtype=np.float64).ravel()
        extra["actual_churn_rate"] = ("churned", "mean")
    table = frame.groupby("decile", sort=True).agg(
        customers=("predicted", "size"),
        mean_predicted=("predicted", "mean"),
        sum_predicted=("predicted", "sum"),
        mean_actual=("actual", "mean"),
        sum_actual=("actual", "sum"),
        **extra,
    )
    return table.reset_index()


# --------------------------------------------------------------------------------------------------------------
# intervals
# --------------------------------------------------------------------------------------------------------------


def covered(actual: ArrayLike, low: ArrayLike, high: ArrayLike) -> np.ndarray:
    """``low <= actual <= high`` per customer (closed interval, with a relative 1e-9 of slack for float noise)."""
    y = np.asarray(actual, dtype=np.float64)
    slack = 1e-9 * np.maximum(1.0, np.abs(y))
    return (y >= np.asarray(low, dtype=np.float64) - slack) & (y <= np.asarray(high, dtype=np.float64) + slack)


def interval_metrics(
    actual: ArrayLike, low: ArrayLike, high: ArrayLike, p_churn: ArrayLike, top_tier: ArrayLike
) -> dict[str, float]:
    """How 80% prediction intervals ``[low, high]`` cover the realised ``actual`` (value or purchase days).

    Keys (:data:`INTERVAL_KEYS`), shares of customers in [0, 1]:

    * ``coverage``: share with ``low <= actual <= high``;
    * ``promised``: the coverage the intervals promise, the mean of ``max(P(no purchase), 0.8)`` -- with a point
      mass at 0 the smallest interval holding 80% holds the whole mass (:mod:`serving.intervals`), so a calibrated
      model covers ``promised``, which is 0.8 only when every customer may well buy;
    * ``coverage_attainable``: coverage among customers with ``P(no purchase) <= 0.8``, whose interval promises
      exactly 80% (NaN when there are none);
    * ``coverage_top_tier``: coverage among the customers of ``top_tier`` (a boolean mask; NaN when empty);
    * ``below`` / ``above``: shares below ``low`` / above ``high`` (``coverage + below + above = 1``).
    """
    y = np.asarray(actual, dtype=np.float64)
    p = np.asarray(p_churn, dtype=np.float64)
    inside = covered(y, low, high)
    top = np.asarray(top_tier, dtype=bool)
    attainable = p <= INTERVAL_LEVEL

    def share(mask: np.ndarray) -> float:
        return float(inside[mask].mean()) if mask.any() else math.nan

    return {
        "coverage": float(inside.mean()) if y.size else math.nan,
        "promised": float(promised_coverage(p).mean()) if y.size else math.nan,
        "coverage_attainable": share(attainable),
        "coverage_top_tier": share(top),
        "below": float(np.mean(y < np.asarray(low) - 1e-9 * np.maximum(1.0, np.abs(y)))) if y.size else math.nan,
        "above": float(np.mean(y > np.asarray(high) + 1e-9 * np.maximum(1.0, np.abs(y)))) if y.size else math.nan,
    }
