"""Figures of a training run: ROC, calibration, gains and Lorenz curves, feature importance, contributions,
interval coverage, backtest folds and the uplift heads' Qini curves.

Each function builds a new ``matplotlib.figure.Figure`` directly (no pyplot global state) and returns it;
matplotlib is imported inside the functions, so importing this module is cheap. The numbers drawn are
:mod:`training.metrics`' (AUC, ECE, top-decile lift, normalized Gini in the legends) and :mod:`serving.pareto`'s
(the gains and Lorenz curves, ties averaged), so a figure and the metric it illustrates cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serving.pareto import gains_curve
from training.metrics import (
    ArrayLike,
    binary_labels,
    calibration_curve,
    expected_calibration_error,
    metric_label,
    normalized_gini,
    paired,
    roc_auc,
    top_decile_lift,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GRID_ALPHA = 0.3
"""Opacity of every figure's grid lines."""


def _figure(width: float = 6.4, height: float = 4.8) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _diagonal(ax: Axes, label: str, end: float = 1.0, linestyle: str = "--") -> None:
    """The thin grey reference line from ``(0, 0)`` to ``(end, end)`` (random ranking, perfect calibration)."""
    ax.plot([0, end], [0, end], color="grey", linestyle=linestyle, linewidth=1, label=label)


def _finish(ax: Axes, legend: str, **settings: Any) -> None:
    """How a line chart here ends: ``ax.set(**settings)`` (limits, labels, title, aspect), the legend at ``legend``
    (a matplotlib ``loc``) and a light grid."""
    ax.set(**settings)
    ax.legend(loc=legend)
    ax.grid(alpha=GRID_ALPHA)


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
        y, s = paired(y_true, p)
        fpr, tpr = _roc_points(binary_labels(y), s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, s):.3f})")
    _diagonal(ax, "random (AUC 0.5)")
    _finish(
        ax,
        "lower right",
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate (share of non-churners flagged)",
        ylabel="true positive rate (share of churners flagged)",
        title="ROC curve: churn",
        aspect="equal",
    )
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
    _diagonal(ax, "perfectly calibrated")
    _finish(
        ax,
        "upper left",
        xlim=(0, 1),
        ylim=(0, 1.01),
        ylabel="observed churn rate (share of customers)",
        title=f"Calibration: churn probability ({n_bins} equal-width bins)",
    )
    hist.set(xlabel="predicted churn probability", ylabel="customers per bin")
    hist.grid(alpha=GRID_ALPHA)
    return fig


def plot_interval_coverage(reliability: pd.DataFrame, tiers: pd.DataFrame) -> Figure:
    """Coverage of the value intervals at the validation cutoff (cross-fitted, :mod:`training.intervals`).

    Left: per quantile level ``tau``, the share of customers whose actual value is at most their ``Q(tau)``
    (``reliability``: ``tau``, ``observed``, ``promised``), with what calibrated quantiles give (``promised``: above
    the diagonal where the point mass at 0 holds more than ``tau``). Right: per tier, the share inside the 80%
    interval beside its promise (``tiers``: ``tier``, ``customers``, ``coverage``, ``promised``)."""
    fig = _figure(11.0, 4.6)
    left, right = fig.subplots(1, 2)
    left.plot(reliability["tau"], reliability["observed"], marker="o", label="observed")
    left.plot(reliability["tau"], reliability["promised"], linestyle="--", label="calibrated (point mass at 0 held)")
    _diagonal(left, "diagonal", linestyle="-")
    _finish(
        left,
        "upper left",
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="quantile level tau",
        ylabel="share of customers with actual <= Q(tau)",
        title="Value quantiles",
    )
    x = np.arange(len(tiers))
    right.bar(x - 0.2, tiers["coverage"], width=0.4, label="observed")
    right.bar(x + 0.2, tiers["promised"], width=0.4, label="promised")
    right.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="80%")
    labels = [f"{t}\n({n:,})" for t, n in zip(tiers["tier"], tiers["customers"], strict=True)]
    right.set_xticks(x, labels)
    right.set(ylim=(0, 1.05), ylabel="share inside the 80% interval", title="80% interval per tier (customers)")
    right.legend(loc="lower right")
    right.grid(alpha=GRID_ALPHA, axis="y")
    fig.suptitle("Interval coverage at the validation cutoff (cross-fitted)")
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
        y, s = paired(y_true, p)
        binary = binary and bool(np.isin(y, (0.0, 1.0)).all())
        x, share = gains_curve(y, by=s)
        ax.plot(100 * x, 100 * share, label=f"{name} (top-decile lift {top_decile_lift(y, s):.2f})")
        first = y if first is None else first
    _diagonal(ax, "random", end=100)
    if first is not None:
        x, share = gains_curve(first)
        ax.plot(100 * x, 100 * share, color="black", linestyle=":", linewidth=1.5, label="perfect")
    what = "churners captured (% of all churners)" if binary else "value captured (% of total actual value)"
    _finish(
        ax,
        "lower right",
        xlim=(0, 100),
        xlabel=f"customers targeted, highest {'churn ' if binary else ''}score first (%)",
        ylabel=what,
        title="Cumulative gains: churn" if binary else "Cumulative gains: value",
        **({"ylim": (0, 101)} if binary else {}),
    )
    return fig


def plot_lorenz(value_results: Mapping[str, tuple[ArrayLike, ArrayLike]]) -> Figure:
    """Lorenz/Pareto curves of value: share of total future value held by the top x% of customers ranked by each
    model's prediction (normalized Gini in the legend), plus the oracle curve (ranked by the actual value itself)
    and the random diagonal."""
    fig = _figure()
    ax = fig.add_subplot()
    first: np.ndarray | None = None
    for name, (y_true, y_pred) in value_results.items():
        y, s = paired(y_true, y_pred)
        x, share = gains_curve(y, by=s)
        ax.plot(100 * x, 100 * share, label=f"{name} (normalized Gini {normalized_gini(y, s):.3f})")
        first = y if first is None else first
    if first is not None:
        x, share = gains_curve(first)
        ax.plot(100 * x, 100 * share, color="black", linestyle=":", linewidth=1.5, label="oracle (actual order)")
    _diagonal(ax, "random", end=100)
    _finish(
        ax,
        "lower right",
        xlim=(0, 100),
        xlabel="customers, highest predicted value first (%)",
        ylabel="future value captured (% of total)",
        title="Lorenz curve: future value",
    )
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
    ax.grid(axis="x", alpha=GRID_ALPHA)
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
    ax.grid(axis="x", alpha=GRID_ALPHA)
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=cmap), ax=ax, pad=0.01, aspect=40)
    bar.set_ticks([0, 1], labels=["low", "high"])
    bar.set_label("feature value (quantile within feature)")
    return fig


def plot_qini(curves: Mapping[str, tuple[ArrayLike, ArrayLike]], coefficients: Mapping[str, float]) -> Figure:
    """Qini curves of the uplift heads' held-out customers (:func:`training.uplift_metrics.qini_curve`): incremental
    retained customers among the first x% contacted, one line per targeting (``model``, ``risk``; Qini coefficient in
    the legend) and the straight line of random targeting (``random``, when in ``curves``) as the grey reference."""
    fig = _figure()
    ax = fig.add_subplot()
    total = 1.0
    for name, (x, q) in curves.items():
        x, q = np.asarray(x, dtype=np.float64), np.asarray(q, dtype=np.float64)
        total = max(total, float(x[-1]))
        share = 100 * x / max(float(x[-1]), 1.0)
        if name == "random":
            ax.plot(share, q, color="grey", linestyle="--", linewidth=1, label="random (Qini 0)")
            continue
        label = {"model": "uplift model", "risk": "churn risk"}.get(name, name)
        ax.plot(share, q, label=f"{label} (Qini {coefficients.get(name, float('nan')):.3f})")
    ax.axhline(0, color="black", linewidth=0.6)
    _finish(
        ax,
        "lower right",
        xlim=(0, 100),
        xlabel=f"customers contacted, highest score first (% of {total:,.0f} held-out)",
        ylabel="incremental retained customers (treated - scaled control)",
        title="Qini curve: uplift of retention, held-out customers",
    )
    return fig


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
        ax.set(xlabel=f"fold ({fold})", ylabel=metric_label(metric))
        ax.grid(alpha=GRID_ALPHA)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    axes[0].legend(title="model")
    fig.suptitle("Backtest: metric per fold")
    return fig
