"""Artifacts of a training run: plots, decile table, comparison table and the model card, written to a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import DataQualityReport
from training import evaluate
from training.pipeline import PipelineResult

MODELS = ("lightgbm", "btyd", "naive")
CHURN_KEYS = (
    "churn_auc",
    "churn_pr_auc",
    "churn_brier",
    "churn_log_loss",
    "churn_ece",
    "churn_top_decile_lift",
)
VALUE_KEYS = (
    "value_normalized_gini",
    "value_spearman",
    "value_top20_capture",
    "value_mae",
    "value_rmse",
    "value_decile_mape",
    "value_total_ratio",
)
SHAP_SAMPLE = 2_000


def comparison_markdown(metrics: dict[str, dict[str, float]]) -> str:
    table = evaluate.comparison_table({m: metrics[m] for m in MODELS if m in metrics}, CHURN_KEYS + VALUE_KEYS)
    return evaluate.to_markdown_table(table)


def write_artifacts(result: PipelineResult, folder: Path, report: DataQualityReport | None = None) -> Path:
    """Write every plot and table of a run into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    v = result.validation
    churned = v["churned"].to_numpy()
    actual = v["future_value"].to_numpy()
    churn_results = {m: (churned, v[f"{m}_churn"].to_numpy()) for m in MODELS}
    value_results = {m: (actual, v[f"{m}_value"].to_numpy()) for m in MODELS}
    figures = {
        "roc.png": evaluate.plot_roc(churn_results),
        "calibration.png": evaluate.plot_calibration(churn_results),
        "gains_churn.png": evaluate.plot_gains(churn_results),
        "lorenz_value.png": evaluate.plot_lorenz(value_results),
        "feature_importance.png": evaluate.plot_feature_importance(
            result.importance["feature"].tolist(), result.importance["churn_gain"].to_numpy()
        ),
    }
    sample = result.valid_features.head(SHAP_SAMPLE)
    X = sample[list(result.model.feature_columns)].to_numpy(dtype=np.float64)
    figures["shap_summary_churn.png"] = evaluate.plot_shap_summary(
        result.model.churn_contributions(X), X, list(result.model.feature_columns)
    )
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    evaluate.decile_table(actual, v["lightgbm_value"].to_numpy(), churned, v["lightgbm_churn"].to_numpy()).to_csv(
        folder / "deciles.csv", index=False
    )
    result.importance.to_csv(folder / "feature_importance.csv", index=False)
    (folder / "comparison.md").write_text(comparison_markdown(result.metrics) + "\n")
    (folder / "model_card.md").write_text(model_card(result, report))
    if report is not None:
        (folder / "data_quality.json").write_text(report.to_json())
    return folder


def model_card(result: PipelineResult, report: DataQualityReport | None = None) -> str:
    meta = result.model.meta
    plan = result.plan
    lines = [
        "# Model card: retention churn + future value",
        "",
        "## What it predicts",
        f"- `churn_probability`: probability of **no purchase in the {meta.horizon_days} days after the as-of date**"
        " (isotonic-calibrated LightGBM).",
        f"- `expected_value`: expected net revenue over the next {meta.horizon_days} days (LightGBM, Tweedie loss),"
        f" x level factor {meta.level_factor:.3f} x margin {meta.margin:g}, discounted at {meta.discount_rate:.1%}"
        " a year to the as-of date.",
        "- `value_at_risk` = churn_probability x expected_value: the default retention priority.",
        "",
        "## Data",
        f"- Trained as of {meta.trained_as_of} on {result.training_rows:,} (customer, cutoff) rows at"
        f" {len(plan.cutoffs)} cutoffs from {plan.cutoffs[0]} to {plan.cutoffs[-1]}.",
        f"- Validation: cutoff {plan.validation_cutoff} ({result.selection['validation_rows']:,} customers), models"
        f" for validation trained on cutoffs up to {plan.selection_cutoffs[-1]} only (temporal, never random).",
    ]
    if report is not None:
        lines.append(
            f"- Input: {report.rows_read:,} rows, {report.rows_valid:,} valid, {report.rows_broken:,} broken,"
            f" {report.customers:,} customers, {report.first_date} .. {report.last_date}."
        )
    lines += [
        "",
        "## Validation against baselines",
        "",
        comparison_markdown(result.metrics),
        "",
        "## Tiers (expected value lower bounds, currency units)",
        *[f"- {n}: >= {t:,.2f}" for n, t in zip(meta.tier_names, meta.tier_thresholds, strict=True)],
        "",
        "## Intended use",
        "- Rank existing customers for retention offers by value at risk; show the agent the top reasons.",
        "- Non-contractual retail: churn is inferred from silence, not observed cancellation.",
        "",
        "## Limits",
        "- Customers with no transaction on or before the as-of date cannot be scored.",
        "- The value level is extrapolated one horizon ahead from the latest validation cutoff; a sudden shift"
        " after the as-of date is not foreseen. Watch `value_total_ratio` in backtests.",
        "- Reasons are LightGBM contributions (log-odds) of the churn head: associations, not causes.",
    ]
    return "\n".join(lines) + "\n"


LEVEL_TOLERANCE = 0.10
"""The level a forecast must hold in every backtest fold: total predicted / total actual within 1 +- 10%."""


def backtest_markdown(table: pd.DataFrame) -> str:
    """Every metric side by side for each fold (rows = metrics, columns = models), then the level summary."""
    parts = []
    for as_of, fold in table.groupby("as_of", sort=True):
        by_model = {row["model"]: row for _, row in fold.iterrows()}
        metrics = {m: {k: float(by_model[m][k]) for k in CHURN_KEYS + VALUE_KEYS} for m in MODELS if m in by_model}
        customers = int(fold["customers"].iloc[0])
        parts.append(f"### fold as of {as_of} ({customers:,} customers)\n\n{comparison_markdown(metrics)}")
    level = table.pivot(index="as_of", columns="model", values="value_total_ratio")
    level = level[[m for m in MODELS if m in level.columns]]
    level.index = level.index.astype(str)
    ok = ((level["lightgbm"] - 1.0).abs() <= LEVEL_TOLERANCE) if "lightgbm" in level else None
    summary = level.reset_index()
    if ok is not None:
        summary["lightgbm_within_10pct"] = ok.to_numpy()
    parts.append("### level: total predicted / total actual value per fold\n\n" + evaluate.to_markdown_table(summary))
    return "\n\n".join(parts)
