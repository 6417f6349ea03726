"""Evaluation of the churn and value heads: metrics, tables and plots.

Conventions used throughout:

* ``y_true`` for churn is 0/1 (1 = churned, i.e. no purchase in the horizon); ``p_churn`` is a probability.
* ``y_true`` for value is the realised future value in currency units; ``y_pred`` the prediction in the same units.
* Rankings are by score, highest first. Two tie conventions are used:

  - curve-based metrics (normalized Gini, ``gains_curve``, ``top20_capture``, the plotted curves) treat customers
    with tied scores as if ordered at random: they use the expected value over tie orders, obtained by replacing
    the actuals inside a tie group by their group mean. They are invariant to any strictly increasing transform of
    the score and independent of the input order.
  - decile-based metrics (``top_decile_lift``, ``decile_mape``, ``decile_table``) sort by score with a *stable*
    sort, so tied customers keep their input order, and split the sorted rows into 10 near-equal groups
    (``np.array_split``: the first ``n % 10`` deciles get one customer more). Decile 1 holds ``ceil(n / 10)``
    customers. With many tied scores (e.g. an isotonic baseline) these depend on the row order of the input.
* Nothing is computed at import time; matplotlib is imported inside the plot functions, which build
  ``matplotlib.figure.Figure`` objects directly (no pyplot global state) and return them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ArrayLike = np.ndarray | pd.Series | Sequence[float]

LOG_LOSS_EPS = 1e-15
CHURN_KEYS = ("auc", "pr_auc", "brier", "log_loss", "ece", "top_decile_lift", "churn_rate")
VALUE_KEYS = (
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


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _pair(y_true: ArrayLike, score: ArrayLike, what: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as 1-D float64 arrays of equal, non-zero length without NaN/inf."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} values but {what} has {s.size}")
    if y.size == 0:
        raise ValueError("cannot evaluate on zero rows")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise ValueError(f"y_true and {what} must be finite (no NaN or inf)")
    return y, s


def _binary(y: np.ndarray) -> np.ndarray:
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("churn labels must be 0/1")
    return y


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 else math.nan


def _ordered_actual(y_true: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Actuals sorted by score, highest first, with every tie group of scores replaced by its mean actual.

    The result is the expected ordered vector when ties are broken at random, so every linear functional of it
    (cumulative sums, Gini numerator, top-k sums at group boundaries) is tie-order free.
    """
    order = np.argsort(-score, kind="stable")
    s, y = score[order], y_true[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    if starts.size == s.size:  # no ties
        return y
    sums = np.add.reduceat(y, starts)
    counts = np.diff(np.r_[starts, s.size])
    return np.repeat(sums / counts, counts)


def _share_at(y_true: np.ndarray, score: np.ndarray, fraction: float) -> float:
    """Share of ``sum(y_true)`` held by the top ``fraction`` of rows by score (linear interpolation between rows)."""
    x, share = gains_curve(y_true, score)
    return float(np.interp(fraction, x, share))


def _top_decile_lift(y: np.ndarray, score: np.ndarray) -> float:
    """Churn rate of decile 1 (the ``ceil(n / 10)`` highest scores, ties kept in input order) / overall churn rate."""
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
    higher than a random non-churner, ties counting one half. NaN when only one class is present."""
    y, s = _pair(y_true, score)
    y = _binary(y)
    n_pos = y.sum()
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: ArrayLike, score: ArrayLike) -> float:
    """Average precision (PR AUC, unitless, baseline = churn rate): sum over distinct thresholds of
    (recall gain) x precision, the step-wise area under the precision-recall curve (same as scikit-learn).
    NaN when only one class is present."""
    y, s = _pair(y_true, score)
    y = _binary(y)
    n_pos = y.sum()
    if n_pos == 0 or n_pos == y.size:
        return math.nan
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_group = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[last_of_group]
    predicted = last_of_group + 1.0
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def expected_calibration_error(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """ECE (probability units, 0 = perfectly calibrated): count-weighted mean over equal-width probability bins of
    |mean predicted probability - observed churn rate|."""
    table = calibration_curve(y_true, p, n_bins)
    weights = table["count"].to_numpy(dtype=np.float64)
    gaps = np.abs(table["mean_predicted"].to_numpy() - table["observed_rate"].to_numpy())
    return float(np.sum(weights * gaps) / weights.sum())


def churn_metrics(y_true: ArrayLike, p_churn: ArrayLike) -> dict[str, float]:
    """Quality of churn probabilities ``p_churn`` against 0/1 outcomes ``y_true``.

    Keys:

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
    y, p = _pair(y_true, p_churn, "p_churn")
    y = _binary(y)
    if ((p < -1e-9) | (p > 1 + 1e-9)).any():
        raise ValueError("p_churn must be probabilities in [0, 1]")
    p = np.clip(p, 0.0, 1.0)
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    rate = float(y.mean())
    return {
        "auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))),
        "ece": expected_calibration_error(y, p),
        "top_decile_lift": _top_decile_lift(y, p),
        "churn_rate": rate,
    }


# --------------------------------------------------------------------------------------------------------------
# value metrics
# --------------------------------------------------------------------------------------------------------------


def normalized_gini(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Kaggle normalized Gini, unitless: Gini of the actuals ordered by prediction divided by the Gini of the
    actuals ordered by themselves. 1 = perfect ranking, ~0 = random, -1 = reversed. Only the order of the
    predictions matters. NaN when the actuals sum to 0 or are all equal."""
    y, s = _pair(y_true, y_pred, "y_pred")
    best = _gini(np.sort(y)[::-1])
    if math.isnan(best) or best == 0:
        return math.nan
    return _gini(_ordered_actual(y, s)) / best


def value_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Quality of value predictions ``y_pred`` against realised values ``y_true`` (both in currency units).

    Keys:

    * ``mae``: mean absolute error, currency units per customer.
    * ``rmse``: root mean squared error, currency units per customer.
    * ``spearman``: Spearman rank correlation, unitless in [-1, 1]; NaN if either side is constant.
    * ``normalized_gini``: see :func:`normalized_gini` (1 perfect, ~0 random, -1 reversed).
    * ``top20_capture``: share of the total actual value held by the 20% of customers with the highest
      predictions, unitless (0.2 = random, oracle = top-20% share of the actuals). Ties averaged; for n not
      divisible by 5 the boundary customer counts fractionally.
    * ``decile_mape``: customers split into 10 deciles by prediction; mean over deciles of
      |sum predicted - sum actual| / |sum actual|, unitless (0.1 = 10% off per decile); deciles whose
      actual sum is 0 are skipped; NaN if all are.
    * ``total_ratio``: sum predicted / sum actual, unitless (1 = right overall level); NaN if the actual sum is 0.
    * ``total_pred`` / ``total_actual``: sums, currency units.
    """
    y, s = _pair(y_true, y_pred, "y_pred")
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
        "top20_capture": _share_at(y, s, 0.2) if total_actual != 0 else math.nan,
        "decile_mape": float(np.mean(mapes)) if mapes else math.nan,
        "total_ratio": _ratio(total_pred, total_actual),
        "total_pred": total_pred,
        "total_actual": total_actual,
    }


# --------------------------------------------------------------------------------------------------------------
# curves and tables
# --------------------------------------------------------------------------------------------------------------


def gains_curve(y_true: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gains: ``(share_of_customers, share_of_total)``, both of length n + 1 starting at (0, 0).

    Customers are ordered by ``score`` (highest first, ties averaged); ``share_of_total[k]`` is the share of
    ``sum(y_true)`` held by the first k of them: churners captured for 0/1 churn labels, value captured
    (Lorenz/Pareto curve of actual ordered by prediction) for values. Pass ``score=y_true`` for the oracle curve.
    All NaN shares when ``sum(y_true) == 0``.
    """
    y, s = _pair(y_true, score)
    x = np.arange(y.size + 1) / y.size
    total = y.sum()
    cum = np.r_[0.0, np.cumsum(_ordered_actual(y, s))]
    share = cum / total if total != 0 else np.full_like(cum, np.nan)
    return x, share


def calibration_curve(y_true: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """Reliability table over ``n_bins`` equal-width probability bins on [0, 1] (p = 1 falls in the last bin).

    One row per non-empty bin: ``bin`` (0-based index), ``bin_lower``, ``bin_upper``, ``mean_predicted``
    (mean probability in the bin), ``observed_rate`` (share of churners in the bin), ``count`` (customers).
    """
    y, q = _pair(y_true, p, "p")
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
    y, s = _pair(y_true_value, y_pred_value, "y_pred_value")
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


def comparison_table(metrics_by_model: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> pd.DataFrame:
    """Rows = metric ``keys`` (in the given order), columns = models; a metric a model lacks is NaN."""
    return pd.DataFrame(
        {model: [float(m.get(k, math.nan)) for k in keys] for model, m in metrics_by_model.items()},
        index=pd.Index(list(keys), name="metric"),
    )


def _cell(value: object, floatfmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "nan"
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """GitHub-flavoured Markdown table of ``df``. A named or non-default index becomes the first column;
    floats use ``floatfmt``, integers are printed as is, NaN as ``nan``; numeric columns are right-aligned."""
    frame = df
    if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    headers = [_cell(str(c), floatfmt) for c in frame.columns]
    rows = [[_cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False, name=None)]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# --------------------------------------------------------------------------------------------------------------
# plots (each returns a new matplotlib Figure; nothing touches pyplot's global state)
# --------------------------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 4.8) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _roc_points(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, starting at (0, 0) and ending at (1, 1)."""
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[last]
    fp = last + 1 - tp
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_roc(results: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> Figure:
    """ROC curves of churn probabilities: one line per model (AUC in the legend) plus the random diagonal."""
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot()
    for name, (y_true, p) in results.items():
        y, s = _pair(y_true, p)
        fpr, tpr = _roc_points(_binary(y), s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random (AUC 0.5)")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (share of non-churners flagged)",
        ylabel="true positive rate (share of churners flagged)",
        title="ROC curve: churn",
    )
    ax.set_aspect("equal")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_calibration(results: Mapping[str, tuple[ArrayLike, ArrayLike]], n_bins: int = 10) -> Figure:
    """Reliability diagram: observed churn rate vs mean predicted probability per equal-width bin, one line per
    model (ECE in the legend) plus the perfect-calibration diagonal; a lower panel shows customers per bin."""
    fig = _figure(5.6, 6.4)
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    width = 1.0 / n_bins / max(len(results), 1)
    for i, (name, (y_true, p)) in enumerate(results.items()):
        table = calibration_curve(y_true, p, n_bins)
        ece = expected_calibration_error(y_true, p, n_bins)
        ax.plot(table["mean_predicted"], table["observed_rate"], marker="o", label=f"{name} (ECE {ece:.3f})")
        hist.bar(table["bin_lower"] + (i + 0.5) * width, table["count"], width=width, label=name)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        ylabel="observed churn rate (share of customers)",
        title=f"Calibration: churn probability ({n_bins} equal-width bins)",
    )
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    hist.set(xlabel="predicted churn probability", ylabel="customers per bin")
    hist.grid(alpha=0.3)
    return fig


def plot_gains(results: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> Figure:
    """Cumulative gains of churn scores: share of all churners found in the top x% of customers, one line per model
    (top-decile lift in the legend) plus the random diagonal and the perfect curve (of the first model's labels).

    Non-binary ``y_true`` (values) are accepted too: the curves are then the share of total value captured."""
    fig = _figure()
    ax = fig.add_subplot()
    first: np.ndarray | None = None
    binary = True
    for name, (y_true, p) in results.items():
        y, s = _pair(y_true, p)
        binary = binary and bool(np.isin(y, (0.0, 1.0)).all())
        x, share = gains_curve(y, s)
        ax.plot(100 * x, 100 * share, label=f"{name} (top-decile lift {_top_decile_lift(y, s):.2f})")
        first = y if first is None else first
    ax.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1, label="random")
    if first is not None:
        x, share = gains_curve(first, first)
        ax.plot(100 * x, 100 * share, color="black", linestyle=":", linewidth=1.5, label="perfect")
    what = "churners captured (% of all churners)" if binary else "value captured (% of total actual value)"
    ax.set(
        xlim=(0, 100),
        xlabel=f"customers targeted, highest {'churn ' if binary else ''}score first (%)",
        ylabel=what,
        title="Cumulative gains: churn" if binary else "Cumulative gains: value",
    )
    if binary:
        ax.set_ylim(0, 101)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_lorenz(value_results: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> Figure:
    """Lorenz/Pareto curves of value: share of total future value held by the top x% of customers ranked by each
    model's prediction (normalized Gini in the legend), plus the oracle curve (ranked by the actual value itself)
    and the random diagonal."""
    fig = _figure()
    ax = fig.add_subplot()
    first: np.ndarray | None = None
    for name, (y_true, y_pred) in value_results.items():
        y, s = _pair(y_true, y_pred)
        x, share = gains_curve(y, s)
        ax.plot(100 * x, 100 * share, label=f"{name} (normalized Gini {normalized_gini(y, s):.3f})")
        first = y if first is None else first
    if first is not None:
        x, share = gains_curve(first, first)
        ax.plot(100 * x, 100 * share, color="black", linestyle=":", linewidth=1.5, label="oracle (actual order)")
    ax.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1, label="random")
    ax.set(
        xlim=(0, 100),
        xlabel="customers, highest predicted value first (%)",
        ylabel="future value captured (% of total)",
        title="Lorenz curve: future value",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_feature_importance(
    names: Sequence[str], importances: ArrayLike, top: int = 20, xlabel: str = "importance (total gain)"
) -> Figure:
    """Horizontal bar chart of the ``top`` features by importance, largest on top."""
    values = np.asarray(importances, dtype=np.float64).ravel()
    if len(names) != values.size:
        raise ValueError(f"{len(names)} names but {values.size} importances")
    order = np.argsort(-values, kind="stable")[:top][::-1]
    fig = _figure(7.0, max(2.5, 0.3 * order.size + 1.2))
    ax = fig.add_subplot()
    ax.barh([str(names[i]) for i in order], values[order], color="tab:blue")
    ax.set(xlabel=xlabel, title=f"Feature importance (top {order.size})")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _swarm_offsets(x: np.ndarray, n_bins: int = 60, width: float = 0.4) -> np.ndarray:
    """Vertical offsets that spread points like a beeswarm: points sharing an x bin are fanned out symmetrically,
    with the spread proportional to the bin's count relative to the most crowded bin (deterministic)."""
    if x.size == 0:
        return x
    lo, hi = float(x.min()), float(x.max())
    idx = (
        np.zeros(x.size, dtype=np.int64)
        if hi == lo
        else np.minimum(((x - lo) / (hi - lo) * n_bins).astype(int), n_bins - 1)
    )
    counts = np.bincount(idx, minlength=n_bins)
    order = np.argsort(idx, kind="stable")
    rank = np.empty(x.size, dtype=np.float64)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank[order] = np.arange(x.size) - np.repeat(starts, counts)
    c = counts[idx].astype(np.float64)
    # alternate above/below the axis: 0, +1, -1, +2, -2, ... scaled into [-1, 1] of the bin's share
    signed = np.where(rank % 2 == 0, rank / 2, -(rank + 1) / 2)
    spread = width * c / counts.max()
    return np.where(c > 1, signed / np.maximum(c / 2, 1) * spread, 0.0)


def plot_shap_summary(
    contributions: ArrayLike,
    feature_values: ArrayLike,
    names: Sequence[str],
    top: int = 15,
    xlabel: str = "contribution to churn log-odds",
) -> Figure:
    """Beeswarm-like summary of per-customer feature contributions (e.g. LightGBM ``pred_contrib``).

    ``contributions`` is [n, k] (a trailing bias column, k + 1, is dropped), ``feature_values`` is [n, k].
    The ``top`` features by mean |contribution| are shown, most important on top; each dot is a customer at its
    contribution on x, coloured by the quantile of its feature value within that feature (blue low, red high,
    grey missing).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    contrib = np.asarray(contributions, dtype=np.float64)
    values = np.asarray(feature_values, dtype=np.float64)
    k = len(names)
    if contrib.ndim != 2 or values.ndim != 2:
        raise ValueError("contributions and feature_values must be 2-D [n, k]")
    if contrib.shape[1] == k + 1:
        contrib = contrib[:, :k]
    if contrib.shape != values.shape or contrib.shape[1] != k:
        raise ValueError(f"shapes {contrib.shape} and {values.shape} do not match {k} names")
    mean_abs = np.abs(contrib).mean(axis=0) if contrib.shape[0] else np.zeros(k)
    chosen = np.argsort(-mean_abs, kind="stable")[:top]
    cmap = colormaps["coolwarm"]
    fig = _figure(8.0, max(3.0, 0.42 * chosen.size + 1.5))
    ax = fig.add_subplot()
    for row, j in enumerate(chosen[::-1]):
        x = contrib[:, j]
        v = values[:, j]
        finite = np.isfinite(v)
        quantile = np.full(v.size, np.nan)
        if finite.sum() > 1:
            from scipy.stats import rankdata

            quantile[finite] = (rankdata(v[finite]) - 1) / (finite.sum() - 1)
        elif finite.any():
            quantile[finite] = 0.5
        colours = np.where(np.isnan(quantile)[:, None], np.array([[0.6, 0.6, 0.6, 0.8]]), cmap(np.nan_to_num(quantile)))
        ax.scatter(x, row + _swarm_offsets(x), c=colours, s=6, linewidths=0, rasterized=True)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(chosen.size), [str(names[j]) for j in chosen[::-1]])
    ax.set_ylim(-0.7, chosen.size - 0.3)
    ax.set(xlabel=xlabel, title=f"Feature contributions (top {chosen.size} by mean |contribution|)")
    ax.grid(axis="x", alpha=0.3)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, pad=0.01, aspect=40)
    bar.set_ticks([0, 1], labels=["low", "high"])
    bar.set_label("feature value (quantile within feature)")
    return fig


METRIC_UNITS = {
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
}


def _metric_label(metric: str) -> str:
    base = metric.removeprefix("churn_").removeprefix("value_") if metric != "churn_rate" else metric
    return METRIC_UNITS.get(base, metric)


def plot_backtest(table: pd.DataFrame, metrics: Sequence[str] | None = None, fold_column: str | None = None) -> Figure:
    """Backtest metrics per fold: one panel per metric, one line per model.

    ``table`` has a fold column (``fold``, or ``as_of`` as written by the backtest job), a ``model`` column and one
    numeric column per metric. ``metrics`` defaults to every numeric column except the fold and ``customers``.
    """
    fold = fold_column or ("fold" if "fold" in table.columns else "as_of")
    if fold not in table.columns or "model" not in table.columns:
        raise ValueError("table needs a fold column ('fold' or 'as_of') and a 'model' column")
    if metrics is None:
        skip = {fold, "model", "customers"}
        metrics = [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])]
    metrics = list(metrics)
    if not metrics:
        raise ValueError("no metric columns to plot")
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(4.6 * cols, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    folds = list(pd.unique(table[fold]))
    positions = {f: i for i, f in enumerate(sorted(folds))}
    for ax, metric in zip(axes, metrics, strict=False):
        for model, part in table.groupby("model", sort=False):
            part = part.sort_values(fold)
            ax.plot([positions[f] for f in part[fold]], part[metric], marker="o", label=str(model))
        ax.set_title(metric)
        ax.set_xticks(range(len(positions)), [str(f) for f in positions], rotation=30, ha="right")
        ax.set(xlabel=f"fold ({fold})", ylabel=_metric_label(metric))
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    axes[0].legend(title="model")
    fig.suptitle("Backtest: metric per fold")
    return fig
