"""retention.analysis, the helpers behind the notebooks and reports, on small hand-made logs whose answers are known."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from features.kernel import compute_features
from retention import analysis


def log(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """A contract frame from (customer_id, UTC timestamp, amount) rows."""
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"])
    frame["customer_id"] = frame["customer_id"].astype("str")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype("datetime64[ns, UTC]")
    frame["amount"] = frame["amount"].astype("float64")
    return frame


# a: joins in January, buys again in February and April; b: joins in January, never again;
# c: joins in February, buys again in March; d: joins in April (incomplete month on 2024-04-15);
# e: only a refund in January (no purchase: not in any cohort); b's refund in February is not a purchase.
TX = log(
    [
        ("a", "2024-01-05", 10.0),
        ("a", "2024-02-10", 20.0),
        ("a", "2024-04-02", 30.0),
        ("b", "2024-01-31T23:30:00", 100.0),
        ("b", "2024-02-03", -40.0),
        ("c", "2024-02-01", 5.0),
        ("c", "2024-03-20", 5.0),
        ("d", "2024-04-10", 50.0),
        ("e", "2024-01-20", -5.0),
        ("a", "2024-05-01", 99.0),  # after the as-of date: never read
    ]
)
AS_OF = "2024-04-15"


def test_cohort_retention_counts_repeat_purchasers_in_complete_months() -> None:
    table = analysis.cohort_retention(TX, AS_OF)
    assert list(table.index) == ["2024-01", "2024-02"], "April is not complete, d's cohort is left out"
    assert table.loc["2024-01", "customers"] == 2 and table.loc["2024-02", "customers"] == 1
    jan = table.loc["2024-01"]
    assert jan[0] == 1.0 and jan[1] == 0.5 and jan[2] == 0.0, "a buys in Feb; nobody in Mar; b's refund is no purchase"
    feb = table.loc["2024-02"]
    assert feb[0] == 1.0 and feb[1] == 1.0 and math.isnan(feb[2]), "April is still open on 2024-04-15"
    assert list(table.columns) == ["customers", 0, 1, 2]


def test_cohort_retention_counts_the_last_day_of_a_month_as_complete() -> None:
    table = analysis.cohort_retention(TX, "2024-03-31")
    assert list(table.index) == ["2024-01", "2024-02"], "nobody's first purchase is in March"
    assert table.loc["2024-01", 2] == 0.0 and table.loc["2024-02", 1] == 1.0, "March is complete on its last day"
    assert list(table.columns) == ["customers", 0, 1, 2]
    quarterly = analysis.cohort_retention(TX, "2024-03-31", freq="Q")
    assert list(quarterly.index) == ["2024-Q1"] and quarterly.loc["2024-Q1", "customers"] == 3
    with pytest.raises(ValueError, match="freq"):
        analysis.cohort_retention(TX, AS_OF, freq="W")


def test_lorenz_curve_and_top_share() -> None:
    values = [50.0, 30.0, 10.0, 10.0, 0.0, -20.0, np.nan, 0.0, 0.0, 0.0]
    curve = analysis.lorenz_curve(values)
    assert len(curve) == 11 and curve.iloc[0].tolist() == [0.0, 0.0] and curve.iloc[-1].tolist() == [1.0, 1.0]
    assert analysis.top_share(values, 0.1) == pytest.approx(0.5)
    assert analysis.top_share(values, 0.2) == pytest.approx(0.8), "negative and missing values count as 0"
    assert analysis.top_share(values, 0.15) == pytest.approx(0.65), "interpolated between customers"
    assert analysis.top_share([1.0] * 10, 0.2) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        analysis.top_share(values, 1.5)


def test_recency_frequency_table_counts_and_means() -> None:
    features = pd.DataFrame(
        {
            "recency_days": [0, 13, 14, 400, np.nan, 45],
            "n_purchase_days": [1, 1, 3, 50, 0, 2],
            "churned": [0, 1, 1, 1, 1, 0],
        }
    )
    counts = analysis.recency_frequency_table(features)
    assert counts.loc["0-13 d", "1"] == 2 and counts.loc["14-29 d", "3-4"] == 1
    assert counts.loc["365+ d", "40+"] == 1 and counts.loc["30-59 d", "2"] == 1
    assert counts.to_numpy().sum() == 5, "the customer without a purchase is left out"
    assert list(counts.columns) == ["1", "2", "3-4", "5-9", "10-19", "20-39", "40+"]
    rates = analysis.recency_frequency_table(features, "churned")
    assert rates.loc["0-13 d", "1"] == 0.5 and math.isnan(rates.loc["60-89 d", "1"])
    assert analysis.recency_frequency_table(features, "churned", min_customers=2).notna().to_numpy().sum() == 1


def test_customer_summary_and_weekly_activity() -> None:
    summary = analysis.customer_summary(TX, AS_OF, min_tenure_days=30).set_index("customer_id")
    assert summary.loc["a", "n_purchase_days"] == 3 and summary.loc["a", "net_spend"] == 60.0
    assert summary.loc["b", "net_spend"] == 60.0, "net of b's refund"
    assert summary.loc["a", "purchases_per_month"] == pytest.approx(3 / (summary.loc["a", "tenure_days"] + 1) * 30.4375)
    assert math.isnan(summary.loc["d", "purchases_per_month"]), "younger than 30 days"

    weekly = analysis.weekly_activity(TX, AS_OF)
    assert weekly["week"].iloc[0] == pd.Timestamp("2024-01-01"), "the Monday of the first purchase's week"
    assert weekly["week"].iloc[-1] == pd.Timestamp("2024-04-08"), "the as-of week (from Monday 04-15) is open"
    assert (weekly["week"].dt.weekday == 0).all()
    assert weekly["revenue"].sum() == pytest.approx(TX["amount"].iloc[:9].sum())
    assert weekly["new_customers"].sum() == 4 and weekly["purchases"].sum() == 7
    jan29 = weekly.set_index("week").loc[pd.Timestamp("2024-01-29")]
    assert jan29["active_customers"] == 2 and jan29["revenue"] == 100.0 - 40.0 + 5.0


def test_backtest_summary_and_model_results() -> None:
    table = pd.DataFrame(
        {
            "as_of": ["d1", "d1", "d2", "d2"],
            "model": ["lightgbm", "naive", "lightgbm", "naive"],
            "customers": [10, 10, 12, 12],
            "churn_auc": [0.8, 0.6, 0.9, 0.7],
        }
    )
    summary = analysis.backtest_summary(table)
    assert list(summary.columns) == ["lightgbm", "naive"] and list(summary.index) == ["churn_auc"]
    assert summary.loc["churn_auc", "lightgbm"] == pytest.approx(0.85)

    validation = pd.DataFrame(
        {"churned": [1, 0], "future_value": [0.0, 5.0], "a_churn": [0.9, 0.1], "a_value": [1.0, 4.0]}
    )
    churn = analysis.model_results(validation, "churn")
    assert list(churn) == ["a"] and churn["a"][0].tolist() == [1.0, 0.0] and churn["a"][1].tolist() == [0.9, 0.1]
    assert analysis.model_results(validation, "value")["a"][0].tolist() == [0.0, 5.0]


def test_tier_and_segment_summaries_and_reasons() -> None:
    scores = pd.DataFrame(
        {
            "customer_id": ["1", "2", "3", "4"],
            "churn_probability": [0.1, 0.5, 0.9, 0.3],
            "expected_value": [100.0, 50.0, 10.0, 40.0],
            "value_at_risk": [10.0, 25.0, 9.0, 12.0],
            "tier": ["gold", "gold", "bronze", "silver"],
            "segment": ["star", "rising", "low", "star"],
        }
    )
    tiers = analysis.tier_summary(scores, ["platinum", "gold", "silver", "bronze"])
    assert list(tiers.index) == ["platinum", "gold", "silver", "bronze"]
    assert tiers.loc["platinum", "customers"] == 0 and tiers.loc["gold", "customers"] == 2
    assert tiers.loc["gold", "value_at_risk"] == 35.0 and tiers["value_at_risk_share"].sum() == pytest.approx(1.0)
    assert tiers.loc["gold", "mean_churn_probability"] == pytest.approx(0.3)
    counts = analysis.segment_matrix(scores, None, tiers=["gold", "silver", "bronze"])
    assert counts.loc["gold", "star"] == 1 and counts.loc["bronze", "fading"] == 0 and counts.to_numpy().sum() == 4
    assert analysis.segment_matrix(scores, tiers=["gold"]).loc["gold", "rising"] == 25.0

    reasons = [
        [
            {
                "feature": "recency_days",
                "description": "days",
                "value": 3.0,
                "effect": "lowers",
                "contribution": -1.0,
                "cause": "engagement",
                "fact": "last purchase 3 days ago",
            }
        ],
        [],
    ]
    frame = analysis.reasons_frame(["1", "2"], reasons)
    assert frame.to_dict("records") == [
        {
            "customer_id": "1",
            "reason": 1,
            "feature": "recency_days",
            "description": "days",
            "value": 3.0,
            "effect": "lowers",
            "contribution": -1.0,
            "cause": "engagement",
            "fact": "last purchase 3 days ago",
        }
    ]
    with pytest.raises(ValueError):
        analysis.reasons_frame(["1"], reasons)


def test_plots_return_figures() -> None:
    summary = analysis.customer_summary(TX, AS_OF)
    features = compute_features(TX, AS_OF)
    figures = [
        analysis.plot_distributions(summary),
        analysis.plot_weekly_activity(analysis.weekly_activity(TX, AS_OF)),
        analysis.plot_cohort_retention(analysis.cohort_retention(TX, AS_OF)),
        analysis.plot_lorenz_curves({"net spend": summary["net_spend"]}),
        analysis.plot_heatmap(analysis.recency_frequency_table(features), title="t", colorbar_label="customers"),
    ]
    for fig in figures:
        assert isinstance(fig, Figure) and fig.axes


def test_analysis_imports_neither_training_nor_the_cli() -> None:
    """Analysis serves notebooks and reports: importing it must not pull in training or the command line."""
    code = (
        "import sys, retention.analysis; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training' or m == 'retention.cli'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
