"""Analysis over frames, for the notebooks and reports: customer summaries, weekly activity, cohort retention,
value concentration (Pareto/Lorenz), recency x frequency tables, backtest and validation frames reshaped for
plotting, tier/segment summaries, reason tables, and their plots.

Nothing here trains or scores: the functions take the frames the other packages produce (transactions, the
kernel's features, a training run's validation frame or backtest table, scored customers) and summarise them, so
the notebooks hold no feature or model logic of their own. The module does not import :mod:`training` (training
does not depend on it either); value concentration is :mod:`serving.pareto`'s, the one implementation.

Conventions, as in the rest of the project:

* Dates are UTC calendar days; only transactions on or before ``as_of`` are read.
* A *purchase* is a transaction with ``amount >= 0`` (zero included); a *refund* has ``amount < 0``.
* Money is in the input's currency unit.
* Plot functions build ``matplotlib.figure.Figure`` objects directly (no pyplot global state) and return them,
  like :mod:`training.plots`; matplotlib is imported inside them, so importing this module is cheap.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.contract import to_date
from features.kernel import compute_features
from serving import pareto

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ArrayLike = np.ndarray | pd.Series | Sequence[float]

DAYS_PER_MONTH = 365.25 / 12
RECENCY_EDGES_DAYS: tuple[int, ...] = (0, 14, 30, 60, 90, 180, 365)
"""Lower bounds of the recency buckets (days since last purchase); the last bucket is open-ended."""
FREQUENCY_EDGES: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 40)
"""Lower bounds of the frequency buckets (distinct purchase days); the last bucket is open-ended."""
SEGMENTS: tuple[str, ...] = ("star", "rising", "fading", "low")


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _purchases(transactions: pd.DataFrame, as_of: dt.date | str | None) -> pd.DataFrame:
    """Purchases (``amount >= 0``) on or before ``as_of`` with a naive UTC ``day`` column (midnight)."""
    day = transactions["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    keep = transactions["amount"].to_numpy(dtype=np.float64) >= 0
    if as_of is not None:
        keep &= (day <= pd.Timestamp(to_date(as_of))).to_numpy()
    return pd.DataFrame({"customer_id": transactions["customer_id"].to_numpy()[keep], "day": day.to_numpy()[keep]})


def _bucket_labels(edges: Sequence[int], unit: str = "") -> list[str]:
    labels = []
    for lo, hi in zip(edges, [*edges[1:], None], strict=True):
        if hi is None:
            labels.append(f"{lo}+{unit}")
        elif hi - lo == 1:
            labels.append(f"{lo}{unit}")
        else:
            labels.append(f"{lo}-{hi - 1}{unit}")
    return labels


def _buckets(values: np.ndarray, edges: Sequence[int], labels: list[str]) -> pd.Categorical:
    """Bucket label per value (``edges`` are inclusive lower bounds, last bucket open); NaN below the first edge."""
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1
    codes = np.where(np.isfinite(values) & (index >= 0), index, -1)
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def _period_ordinal(days: pd.Series | pd.DatetimeIndex, freq: str) -> np.ndarray:
    """Calendar period number of each day: months (``"M"``) or quarters (``"Q"``) since year 0."""
    days = pd.DatetimeIndex(days)
    if freq == "M":
        return days.year.to_numpy() * 12 + days.month.to_numpy() - 1
    if freq == "Q":
        return days.year.to_numpy() * 4 + (days.month.to_numpy() - 1) // 3
    raise ValueError(f"freq must be 'M' (months) or 'Q' (quarters), got {freq!r}")


def _period_label(ordinal: int, freq: str) -> str:
    if freq == "M":
        return f"{ordinal // 12}-{ordinal % 12 + 1:02d}"
    return f"{ordinal // 4}-Q{ordinal % 4 + 1}"


# --------------------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------------------


def customer_summary(transactions: pd.DataFrame, as_of: dt.date | str, min_tenure_days: int = 30) -> pd.DataFrame:
    """One row per customer at ``as_of``, from the feature kernel: what each customer looks like today.

    Columns: ``customer_id``, ``tenure_days`` (days since first transaction), ``recency_days`` (days since last
    purchase, NaN without one), ``n_purchase_days``, ``net_spend`` (purchases minus refunds to date),
    ``spend_365d`` (net spend of the last 365 days), ``mean_amount`` (average purchase) and
    ``purchases_per_month``: distinct purchase days per 30.44 days of tenure (``n_purchase_days /
    (tenure_days + 1)``, the as-of day included). Customers younger than ``min_tenure_days`` get NaN there: one
    purchase on a customer's second day is not a rate of 15 a month.
    """
    features = compute_features(transactions, as_of)
    tenure = features["tenure_days"].to_numpy(dtype=np.float64)
    rate = features["n_purchase_days"].to_numpy(dtype=np.float64) / (tenure + 1.0) * DAYS_PER_MONTH
    out = features[
        ["customer_id", "tenure_days", "recency_days", "n_purchase_days", "net_spend", "spend_365d", "mean_amount"]
    ].copy()
    out["purchases_per_month"] = np.where(tenure >= min_tenure_days, rate, np.nan)
    return out.reset_index(drop=True)


def weekly_activity(transactions: pd.DataFrame, as_of: dt.date | str) -> pd.DataFrame:
    """Activity per calendar week (Monday to Sunday, UTC) up to ``as_of``: complete weeks only.

    Columns: ``week`` (the Monday, ``datetime64``), ``revenue`` (net amount: purchases minus refunds),
    ``purchases`` (transactions with ``amount >= 0``), ``active_customers`` (customers with a purchase that
    week) and ``new_customers`` (customers whose first purchase falls in that week).
    """
    as_of_day = pd.Timestamp(to_date(as_of))
    day = transactions["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    week = day - pd.to_timedelta(day.dt.weekday, unit="D")
    last_week = as_of_day - pd.Timedelta(days=as_of_day.weekday())
    if as_of_day.weekday() != 6:  # the as-of week is not over yet
        last_week -= pd.Timedelta(days=7)
    in_range = (day <= as_of_day).to_numpy()
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    revenue = pd.Series(amount[in_range]).groupby(week.to_numpy()[in_range]).sum()
    purchases = _purchases(transactions, as_of)
    purchases["week"] = purchases["day"] - pd.to_timedelta(purchases["day"].dt.weekday, unit="D")
    first = purchases.groupby("customer_id")["week"].min()
    weeks = pd.date_range(week[in_range].min(), last_week, freq="7D", name="week")
    out = pd.DataFrame(
        {
            "revenue": revenue.reindex(weeks, fill_value=0.0),
            "purchases": purchases.groupby("week").size().reindex(weeks, fill_value=0),
            "active_customers": purchases.groupby("week")["customer_id"].nunique().reindex(weeks, fill_value=0),
            "new_customers": first.value_counts().reindex(weeks, fill_value=0),
        },
        index=weeks,
    )
    return out.astype({"purchases": "int64", "active_customers": "int64", "new_customers": "int64"}).reset_index()


def cohort_retention(transactions: pd.DataFrame, as_of: dt.date | str, freq: str = "M") -> pd.DataFrame:
    """Cohort retention matrix: share of each acquisition cohort that purchases again k periods later.

    A customer's *cohort* is the calendar month (``freq="M"``) or quarter (``"Q"``) of their first purchase.
    Cell ``[cohort, k]`` is the share of the cohort's customers with at least one purchase in the k-th period
    after it (k = 0 is the acquisition period, always 1.0). Only complete periods (ending on or before
    ``as_of``) are shown: cells not yet fully observed are NaN, and cohorts acquired in an incomplete period are
    left out.

    Returns one row per cohort (index ``cohort``, e.g. ``"2023-01"`` or ``"2023-Q1"``, oldest first) with the
    cohort size in the first column ``customers`` and the shares in integer columns ``0, 1, 2, ...``.
    """
    as_of_date = to_date(as_of)
    assert as_of_date is not None
    purchases = _purchases(transactions, as_of_date)
    if purchases.empty:
        raise ValueError("no purchase on or before the as-of date")
    ordinal = _period_ordinal(purchases["day"], freq)
    as_of_ordinal, next_ordinal = _period_ordinal(
        pd.DatetimeIndex([as_of_date, as_of_date + dt.timedelta(days=1)]), freq
    )
    last_complete = as_of_ordinal if next_ordinal != as_of_ordinal else as_of_ordinal - 1
    frame = pd.DataFrame({"customer_id": purchases["customer_id"].to_numpy(), "period": ordinal})
    frame["cohort"] = frame.groupby("customer_id")["period"].transform("min")
    frame = frame[frame["cohort"] <= last_complete].drop_duplicates(["customer_id", "period"])
    if frame.empty:
        raise ValueError(f"no cohort with a complete {'month' if freq == 'M' else 'quarter'} before {as_of_date}")
    frame["age"] = frame["period"] - frame["cohort"]
    sizes = frame[frame["age"] == 0].groupby("cohort").size()
    active = frame.groupby(["cohort", "age"]).size().unstack(fill_value=0)
    ages = np.arange(int(last_complete - sizes.index.min()) + 1)
    shares = active.reindex(index=sizes.index, columns=ages, fill_value=0).div(sizes, axis=0).astype("float64")
    observed = (sizes.index.to_numpy()[:, None] + ages[None, :]) <= last_complete
    shares = shares.where(observed)
    shares.columns = [int(a) for a in ages]
    shares.insert(0, "customers", sizes.astype("int64"))
    shares.index = pd.Index([_period_label(int(c), freq) for c in sizes.index], name="cohort")
    return shares


def lorenz_curve(values: ArrayLike) -> pd.DataFrame:
    """Pareto/Lorenz curve of customer value: share of the total held by the top x% of customers.

    Customers are sorted by value, highest first. Negative values (customers who refunded more than they bought)
    and NaN count as 0. Returns ``customer_share`` and ``value_share``, both from 0 to 1, n + 1 rows starting at
    (0, 0); ``value_share`` is all NaN when the total is 0.
    """
    x, share = pareto.gains_curve(_clipped(values))
    return pd.DataFrame({"customer_share": x, "value_share": share})


def top_share(values: ArrayLike, share: float = 0.2) -> float:
    """Share of the total value held by the top ``share`` of customers (the Pareto "top 20% hold X%"), unitless.

    :func:`serving.pareto.top_share` of the values with negatives and NaN counted as 0 (as :func:`lorenz_curve`):
    read off the curve by linear interpolation, so a fractional boundary customer counts fractionally and the
    figure agrees with ``value_top20_capture`` of :func:`training.metrics.value_metrics` for the oracle order.
    NaN when the total is 0.
    """
    return pareto.top_share(_clipped(values), share)


def _clipped(values: ArrayLike) -> np.ndarray:
    """Values as float64 with negatives and NaN set to 0 (refunds beyond purchases and unknowns hold no value)."""
    return np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=0.0), 0.0, None)


def recency_frequency_table(
    features: pd.DataFrame,
    value: str | None = None,
    *,
    recency_edges: Sequence[int] = RECENCY_EDGES_DAYS,
    frequency_edges: Sequence[int] = FREQUENCY_EDGES,
    min_customers: int = 1,
) -> pd.DataFrame:
    """Recency x frequency table of customers: rows = days since last purchase, columns = purchase days.

    ``features`` holds ``recency_days`` and ``n_purchase_days`` (the kernel's features, e.g. from
    :func:`features.kernel.compute_features` or :func:`training.dataset.build_dataset`). Without ``value`` each
    cell counts customers (0 when empty); with ``value`` (a column name, e.g. ``"churned"`` or
    ``"future_value"``) it is that column's mean, NaN for cells with fewer than ``min_customers`` customers.
    Customers without a purchase (no recency) are left out. Buckets are labelled by their inclusive day ranges.
    """
    recency_labels = _bucket_labels(recency_edges, " d")
    frequency_labels = _bucket_labels(frequency_edges)
    recency = _buckets(features["recency_days"].to_numpy(dtype=np.float64), recency_edges, recency_labels)
    frequency = _buckets(features["n_purchase_days"].to_numpy(dtype=np.float64), frequency_edges, frequency_labels)
    frame = pd.DataFrame({"recency": recency, "frequency": frequency})
    if value is not None:
        frame["value"] = features[value].to_numpy(dtype=np.float64)
    frame = frame.dropna(subset=["recency", "frequency"])
    groups = frame.groupby(["recency", "frequency"], observed=False)
    counts = groups.size().unstack("frequency").reindex(index=recency_labels, columns=frequency_labels)
    counts = counts.fillna(0).astype("int64")
    if value is None:
        table = counts
    else:
        means = groups["value"].mean().unstack("frequency").reindex(index=recency_labels, columns=frequency_labels)
        table = means.where(counts >= max(min_customers, 1)).astype("float64")
    table.index.name = "days since last purchase"
    table.columns.name = "purchase days"
    return table


def backtest_summary(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of each metric over the backtest folds: rows = metrics, columns = models (in order of appearance).

    ``table`` is what :func:`training.jobs.backtest` returns (one row per fold and model); ``metrics`` defaults to
    every numeric column but ``customers``.
    """
    if metrics is None:
        metrics = [c for c in table.columns if c != "customers" and pd.api.types.is_numeric_dtype(table[c])]
    models = list(pd.unique(table["model"]))
    means = table.groupby("model", sort=False)[list(metrics)].mean()
    out = means.T.reindex(columns=models)
    out.index.name = "metric"
    out.columns.name = None
    return out


def model_results(validation: pd.DataFrame, kind: str = "churn") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{model: (actual, prediction)}`` from a validation frame, ready for the :mod:`training.plots` figures.

    ``validation`` is :attr:`training.pipeline.PipelineResult.validation` (labels ``churned`` / ``future_value``
    and one ``<model>_churn`` / ``<model>_value`` column per model). ``kind`` is ``"churn"`` (churn labels and
    probabilities) or ``"value"`` (future value and predicted value).
    """
    if kind not in ("churn", "value"):
        raise ValueError(f"kind must be 'churn' or 'value', got {kind!r}")
    label = validation["churned" if kind == "churn" else "future_value"].to_numpy(dtype=np.float64)
    suffix = f"_{kind}"
    return {
        c.removesuffix(suffix): (label, validation[c].to_numpy(dtype=np.float64))
        for c in validation.columns
        if c.endswith(suffix) and c != "future_value"
    }


def tier_summary(scores: pd.DataFrame, tiers: Sequence[str] | None = None) -> pd.DataFrame:
    """Per value tier: customers, mean churn probability, expected value and value at risk (sums and shares).

    ``scores`` has ``tier``, ``churn_probability``, ``expected_value`` and ``value_at_risk`` columns (e.g.
    :func:`serving.ranking.score_table`). ``tiers`` fixes the row order (e.g. ``model.meta.tier_names``, highest
    first); tiers without customers get zero rows.
    """
    order = list(tiers) if tiers is not None else list(pd.unique(scores["tier"]))
    groups = scores.groupby("tier")
    out = pd.DataFrame(
        {
            "customers": groups.size(),
            "mean_churn_probability": groups["churn_probability"].mean(),
            "expected_value": groups["expected_value"].sum(),
            "value_at_risk": groups["value_at_risk"].sum(),
        }
    ).reindex(order)
    out[["customers", "expected_value", "value_at_risk"]] = out[
        ["customers", "expected_value", "value_at_risk"]
    ].fillna(0)
    out["customers"] = out["customers"].astype("int64")
    out.insert(1, "customer_share", out["customers"] / max(len(scores), 1))
    out["expected_value_share"] = out["expected_value"] / _nonzero(scores["expected_value"].sum())
    out["value_at_risk_share"] = out["value_at_risk"] / _nonzero(scores["value_at_risk"].sum())
    out.index.name = "tier"
    return out


def _nonzero(total: float) -> float:
    return float(total) if total else math.nan


def segment_matrix(
    scores: pd.DataFrame,
    value: str | None = "value_at_risk",
    *,
    tiers: Sequence[str] | None = None,
    segments: Sequence[str] = SEGMENTS,
) -> pd.DataFrame:
    """Tier x segment matrix: the sum of ``value`` per cell, or the number of customers when ``value`` is None.

    Rows follow ``tiers`` (default: order of appearance), columns ``segments``; empty cells are 0.
    """
    order = list(tiers) if tiers is not None else list(pd.unique(scores["tier"]))
    groups = scores.groupby(["tier", "segment"])
    cells = groups.size() if value is None else groups[value].sum()
    table = cells.unstack("segment").reindex(index=order, columns=list(segments)).fillna(0)
    if value is None:
        table = table.astype("int64")
    table.index.name = "tier"
    table.columns.name = "segment"
    return table


def reasons_frame(customer_ids: Sequence[str], reasons: Sequence[Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """Reason codes (as :func:`serving.ranking.reason_codes` returns them) as one row per customer and reason.

    Columns: ``customer_id``, ``reason`` (1 = largest contribution), ``feature``, ``description``, ``value``,
    ``effect``, ``contribution`` (log-odds of churn).
    """
    ids = list(customer_ids)
    if len(ids) != len(reasons):
        raise ValueError(f"{len(ids)} customer ids but {len(reasons)} reason lists")
    rows = [
        {"customer_id": str(cid), "reason": k, **{key: r.get(key) for key in _REASON_KEYS}}
        for cid, customer_reasons in zip(ids, reasons, strict=True)
        for k, r in enumerate(customer_reasons, start=1)
    ]
    return pd.DataFrame(rows, columns=["customer_id", "reason", *_REASON_KEYS])


_REASON_KEYS = ("feature", "description", "value", "effect", "contribution", "cause", "fact")


# --------------------------------------------------------------------------------------------------------------
# plots (each returns a new matplotlib Figure; nothing touches pyplot's global state)
# --------------------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_distributions(summary: pd.DataFrame) -> Figure:
    """Histograms of the purchase rate (purchase days per month) and of net spend to date (log scale), with
    medians, from :func:`customer_summary`."""
    fig = _figure(11.0, 4.0)
    left, right = fig.subplots(1, 2)
    rate = summary["purchases_per_month"].to_numpy(dtype=np.float64)
    rate = rate[np.isfinite(rate)]
    left.hist(rate, bins=40, color="tab:blue", alpha=0.85)
    if rate.size:
        left.axvline(np.median(rate), color="black", linestyle="--", label=f"median {np.median(rate):.2f}")
        left.legend()
    left.set(
        xlabel="purchase days per month of tenure",
        ylabel="customers",
        title=f"Purchase rate ({rate.size:,} customers)",
    )
    spend = summary["net_spend"].to_numpy(dtype=np.float64)
    positive = spend[spend > 0]
    if positive.size:
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40)
        right.hist(positive, bins=bins, color="tab:green", alpha=0.85)
        right.axvline(np.median(positive), color="black", linestyle="--", label=f"median {np.median(positive):,.0f}")
        right.legend()
    right.set_xscale("log")
    right.set(
        xlabel="net spend to date (currency, log scale)",
        ylabel="customers",
        title=f"Spend per customer ({(spend <= 0).sum():,} at or below 0 not shown)",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return fig


def plot_weekly_activity(weekly: pd.DataFrame) -> Figure:
    """Weekly revenue (top) and active / new customers (bottom) from :func:`weekly_activity`."""
    fig = _figure(11.0, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(weekly["week"], weekly["revenue"], color="tab:green")
    top.set(ylabel="net revenue per week", title="Weekly activity")
    bottom.plot(weekly["week"], weekly["active_customers"], label="active customers (made a purchase)")
    bottom.plot(weekly["week"], weekly["new_customers"], label="new customers (first purchase)")
    bottom.set(ylabel="customers per week", xlabel="week (Monday, UTC)")
    bottom.legend(loc="upper left")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return fig


def plot_cohort_retention(table: pd.DataFrame, max_cohorts_labelled: int = 6) -> Figure:
    """Cohort retention curves (left: one line per cohort, darker = older, and the customer-weighted mean in
    black) and the same matrix as a heat map (right), from :func:`cohort_retention`."""
    from matplotlib import colormaps

    shares = table.drop(columns="customers")
    ages = np.asarray(shares.columns, dtype=np.int64)
    values = shares.to_numpy(dtype=np.float64)
    sizes = table["customers"].to_numpy(dtype=np.float64)
    fig = _figure(12.0, 4.8)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1, 1.15)})
    cmap = colormaps["viridis"]
    n = len(table)
    step = max(1, math.ceil(n / max_cohorts_labelled))
    for i, (label, row) in enumerate(zip(table.index, values, strict=True)):
        keep = np.isfinite(row) & (ages > 0)
        left.plot(
            ages[keep],
            row[keep],
            color=cmap(i / max(n - 1, 1)),
            alpha=0.7,
            linewidth=1,
            label=str(label) if i % step == 0 else None,
        )
    observed = np.isfinite(values)
    weights = np.where(observed, sizes[:, None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nansum(np.nan_to_num(values) * weights, axis=0) / weights.sum(axis=0)
    keep = np.isfinite(mean) & (ages > 0)
    left.plot(ages[keep], mean[keep], color="black", linewidth=2.5, label="all cohorts (weighted)")
    left.set(
        xlabel="periods since first purchase",
        ylabel="share of cohort purchasing",
        title="Cohort retention curves",
        ylim=(0, None),
    )
    left.legend(fontsize="small", title="cohort")
    left.grid(alpha=0.3)
    image = right.imshow(np.ma.masked_invalid(values), aspect="auto", cmap="YlGnBu", vmin=0, vmax=1)
    right.set_yticks(range(n), [f"{label} ({int(s):,})" for label, s in zip(table.index, sizes, strict=True)])
    right.tick_params(axis="y", labelsize="small")
    right.set(xlabel="periods since first purchase", title="Retention matrix (cohort, customers)")
    fig.colorbar(image, ax=right, label="share of cohort purchasing")
    return fig


def plot_lorenz_curves(
    values: Mapping[str, ArrayLike], share: float = 0.2, title: str = "Pareto / Lorenz curve of customer value"
) -> Figure:
    """Pareto/Lorenz curves of one or more value measures (e.g. net spend to date, spend in the last year, value
    at risk), with the share held by the top ``share`` of customers in the legend and the equality diagonal."""
    fig = _figure(6.4, 5.2)
    ax = fig.add_subplot()
    for name, v in values.items():
        curve = lorenz_curve(v)
        held = top_share(v, share)
        ax.plot(
            100 * curve["customer_share"],
            100 * curve["value_share"],
            label=f"{name}: top {share:.0%} hold {held:.0%}",
        )
    ax.plot([0, 100], [0, 100], color="grey", linestyle="--", linewidth=1, label="equal value")
    ax.axvline(100 * share, color="grey", linewidth=0.8)
    ax.set(
        xlim=(0, 100),
        ylim=(0, 101),
        xlabel="customers, highest value first (%)",
        ylabel="share of total value (%)",
        title=title,
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_heatmap(
    table: pd.DataFrame,
    *,
    title: str,
    colorbar_label: str,
    fmt: str = "{:,.0f}",
    cmap: str = "YlOrRd",
) -> Figure:
    """Annotated heat map of a 2-D table (e.g. :func:`recency_frequency_table` or :func:`segment_matrix`);
    NaN cells are left blank."""
    from matplotlib import colormaps

    values = table.to_numpy(dtype=np.float64)
    fig = _figure(max(5.5, 0.95 * values.shape[1] + 3.0), max(3.0, 0.5 * values.shape[0] + 1.6))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(values)
    image = ax.imshow(masked, aspect="auto", cmap=colormaps[cmap])
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize="small",
                color="white" if v > middle else "black",
            )
    ax.set_xticks(range(values.shape[1]), [str(c) for c in table.columns])
    ax.set_yticks(range(values.shape[0]), [str(r) for r in table.index])
    ax.set(xlabel=str(table.columns.name or ""), ylabel=str(table.index.name or ""), title=title)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return fig
