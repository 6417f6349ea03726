"""Artifacts of a training run: plots, decile table, comparison table and the model card, written to a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import DataQualityReport
from training import plots
from training.metrics import COMPARED_CHURN_KEYS, COMPARED_VALUE_KEYS, decile_table
from training.pipeline import LEVEL_TOLERANCE, PRODUCT, PipelineResult
from training.tables import comparison_table, to_markdown_table
from training.uplift import LEARNERS, TARGETINGS
from training.uplift_metrics import UPLIFT_AT

MODELS = (PRODUCT, "lightgbm", "hybrid", "btyd", "naive")
"""Columns of the comparison: the product's model (the chosen heads), each candidate head kind, and naive."""
COMPARED_KEYS = COMPARED_CHURN_KEYS + COMPARED_VALUE_KEYS
"""Rows of every comparison (model card, backtest), churn then value: :mod:`training.metrics`' lists."""
CHURN_KEYS = COMPARED_CHURN_KEYS  # the same list under its former name (training.jobs reads report.CHURN_KEYS)
VALUE_KEYS = COMPARED_VALUE_KEYS  # idem
SHAP_SAMPLE = 2_000


def comparison_markdown(metrics: dict[str, dict[str, float]], choice: dict[str, str] | None = None) -> str:
    """Every metric side by side (rows = metrics, columns = models), then what was chosen and why."""
    if not metrics:
        table_text = "No validation: no cutoff could be labeled, so this BTYD-only version was not compared."
    else:
        table = comparison_table({m: metrics[m] for m in MODELS if m in metrics}, COMPARED_KEYS)
        table_text = to_markdown_table(table)
    if not choice:
        return table_text
    lines = [
        f"- validation scheme: {choice['validation_scheme']}",
        f"- {choice['why_churn']}",
        f"- {choice['why_value']}",
        f"- {choice['why_level']}",
        f"- {choice['why_churn_rate']}",
    ]
    return table_text + "\n\n" + "\n".join(lines)


def write_artifacts(result: PipelineResult, folder: Path, report: DataQualityReport | None = None) -> Path:
    """Write every plot and table of a run into ``folder`` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    v = result.validation
    figures = {}
    if len(v):
        churned = v["churned"].to_numpy()
        actual = v["future_value"].to_numpy()
        churn_results = {m: (churned, v[f"{m}_churn"].to_numpy()) for m in MODELS}
        value_results = {m: (actual, v[f"{m}_value"].to_numpy()) for m in MODELS}
        figures = {
            "roc.png": plots.plot_roc(churn_results),
            "calibration.png": plots.plot_calibration(churn_results),
            "gains_churn.png": plots.plot_gains(churn_results),
            "lorenz_value.png": plots.plot_lorenz(value_results),
            "feature_importance.png": plots.plot_feature_importance(
                result.importance["feature"].tolist(), result.importance["churn_gain"].to_numpy()
            ),
        }
        if result.interval_checks:
            checks = result.interval_checks
            figures["interval_coverage.png"] = plots.plot_interval_coverage(checks["reliability"], checks["tiers"])
            checks["tiers"].to_csv(folder / "interval_coverage.csv", index=False)
        decile_table(actual, v[f"{PRODUCT}_value"].to_numpy(), churned, v[f"{PRODUCT}_churn"].to_numpy()).to_csv(
            folder / "deciles.csv", index=False
        )
    if result.uplift is not None:
        figures["qini.png"] = plots.plot_qini(result.uplift.curves, qini_coefficients(result.uplift.metrics))
        (folder / "uplift.md").write_text(uplift_markdown(result.uplift.metrics) + "\n")
    sample = result.population.head(SHAP_SAMPLE)
    X = sample[list(result.model.feature_columns)].to_numpy(dtype=np.float64)
    figures["shap_summary_churn.png"] = plots.plot_shap_summary(
        result.model.churn_contributions(X), X, list(result.model.feature_columns)
    )
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    result.importance.to_csv(folder / "feature_importance.csv", index=False)
    (folder / "comparison.md").write_text(comparison_markdown(result.metrics, result.choice) + "\n")
    (folder / "model_card.md").write_text(model_card(result, report))
    if report is not None:
        (folder / "data_quality.json").write_text(report.to_json())
    return folder


HEAD_TEXT = {
    "lightgbm": "LightGBM",
    "hybrid": "LightGBM trees correcting the BG/NBD + Gamma-Gamma prediction (BTYD offset)",
    "btyd": "BG/NBD + Gamma-Gamma",
}


def model_card(result: PipelineResult, report: DataQualityReport | None = None) -> str:
    meta = result.model.meta
    plan = result.plan
    choice = result.choice
    lines = [
        "# Model card: retention churn + future value",
        "",
        "## What it predicts",
        f"- `churn_probability`: probability of **no purchase in the {meta.horizon_days} days after the as-of date**"
        f" ({HEAD_TEXT[meta.churn_head]}, isotonic-calibrated).",
        f"- `expected_value`: expected net revenue over the next {meta.horizon_days} days"
        f" ({HEAD_TEXT[meta.value_head]}), x level factor {meta.level_factor:.3f} (source: {meta.level_source})"
        f" x margin {meta.margin:g}, discounted at {meta.discount_rate:.1%} a year to the as-of date.",
        "- `value_at_risk` = churn_probability x expected_value: the default retention priority.",
        *interval_card(result),
        *uplift_card(result),
        "",
        "## Data",
    ]
    if plan.cutoffs:
        lines.append(
            f"- Trained as of {meta.trained_as_of} on {result.training_rows:,} (customer, cutoff) rows at"
            f" {len(plan.cutoffs)} cutoffs from {plan.cutoffs[0]} to {plan.cutoffs[-1]}."
        )
    else:
        lines.append(f"- Fitted as of {meta.trained_as_of} on {len(result.population):,} customers (BTYD only).")
    lines.append(f"- Validation scheme: {plan.describe()}.")
    if report is not None:
        lines.append(
            f"- Input: {report.rows_read:,} rows, {report.rows_valid:,} valid, {report.rows_broken:,} broken,"
            f" {report.customers:,} customers, {report.first_date} .. {report.last_date}."
        )
    lines += [
        "",
        "## Validation against baselines",
        "",
        comparison_markdown(result.metrics, choice),
        "",
    ]
    if result.warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in result.warnings], ""]
    lines += [
        "## Tiers (expected value lower bounds, currency units)",
        *[f"- {n}: >= {t:,.2f}" for n, t in zip(meta.tier_names, meta.tier_thresholds, strict=True)],
        "",
        "## Intended use",
        "- Rank existing customers for retention offers by value at risk; show the agent the top reasons.",
        "- Non-contractual retail: churn is inferred from silence, not observed cancellation.",
        "",
        "## Limits",
        "- Customers with no transaction on or before the as-of date cannot be scored.",
        "- The value level is extrapolated one horizon ahead (from BTYD's forecast or the latest validation window);"
        " a sudden shift after the as-of date is not foreseen, nor a season the history does not cover."
        " Watch `value_total_ratio` in backtests.",
        "- Reasons are contributions (log-odds) to the churn head: LightGBM's for its trees, and for a BTYD prior how"
        " far each BTYD summary feature alone moves it from the population median: associations, not causes.",
    ]
    return "\n".join(lines) + "\n"


def qini_coefficients(metrics: dict[str, float]) -> dict[str, float]:
    """``{targeting: held-out Qini coefficient}`` from the uplift metrics (``uplift_qini_<targeting>``)."""
    return {name: metrics[f"uplift_qini_{name}"] for name in TARGETINGS}


def uplift_markdown(metrics: dict[str, float]) -> str:
    """The held-out uplift comparison: rows = Qini coefficient and uplift at 10/20/30 %, columns = targetings."""
    rows = {
        "qini": "uplift_qini_{}",
        **{f"uplift_at_{round(100 * k)}": f"uplift_{{}}_at_{round(100 * k)}" for k in UPLIFT_AT},
    }
    table = pd.DataFrame(
        {name: [metrics.get(key.format(name), np.nan) for key in rows.values()] for name in TARGETINGS},
        index=list(rows),
    )
    table.index.name = "metric"
    return to_markdown_table(table.reset_index())


LEARNER_TEXT = {
    "t_learner": "a T-learner (LightGBM heads of P(retained) for the contacted and the control customers)",
    "x_learner": "an X-learner (LightGBM heads of the effects imputed on each arm from the other arm's P(retained))",
}


def uplift_card(result: PipelineResult) -> list[str]:
    """The model card's lines on the uplift heads: what ``uplift`` is, the held-out comparison and the verdict."""
    fit = result.uplift
    if fit is None:
        return []
    meta, m = fit.meta, fit.metrics
    risk = "the churn head at each cutoff" if meta["risk_source"] == "churn_head" else "1 - the control head"
    verdict = (
        "trusted: `uplift` is scored"
        if fit.trusted
        else "**not trusted**: `uplift` is not scored (None), a plan falls back to the assumed save rate"
    )
    others = ", ".join(f"{name} {m[f'uplift_qini_{name}']:.4f}" for name in LEARNERS if f"uplift_qini_{name}" in m)
    return [
        f"- `uplift`: P(a purchase in the next {meta['horizon_days']} days | contacted) - P(... | not contacted),"
        f" {LEARNER_TEXT[meta['learner']]} fitted on the campaigns {', '.join(meta['campaign_ids'])}"
        f" (cutoffs {meta['first_cutoff']} .. {meta['last_cutoff']}; held-out Qini of the learners: {others});"
        " negative = a sleeping dog.",
        f"- Held out: {int(m['uplift_holdout_rows']):,} campaign rows of {meta['holdout_share']:.0%} of the customers."
        f" Qini coefficient: model {m['uplift_qini_model']:.4f}, churn-risk targeting ({risk})"
        f" {m['uplift_qini_risk']:.4f}, random 0 (95% quantile {m['uplift_qini_random_p95']:.4f}); {verdict}.",
        "",
        uplift_markdown(m),
    ]


def interval_card(result: PipelineResult) -> list[str]:
    """The model card's lines on the intervals: what they are, and their cross-fitted coverage at ``V``."""
    calibration = result.model.intervals
    if calibration is None:
        return []
    lines = [
        "- `value_p10/p50/p90`, `value_low`..`value_high` (80% interval) and `purchases_p50/low/high`: quantiles of"
        " future value (P(no purchase) as a point mass at 0, per-tier conformal ratios from the validation cutoff)"
        " and of purchase days (BG/NBD given a purchase); the 80% interval holds max(P(no purchase), 80%).",
    ]
    if calibration.ratio_knots is None:
        lines.append("- No value intervals: nothing was labeled to calibrate them on (purchase days only).")
    if calibration.pooled_tiers:
        lines.append(
            f"- Tiers calibrated on every tier's ratios (too few buyers): {', '.join(calibration.pooled_tiers)}."
        )
    m = result.metrics.get(PRODUCT, {})
    if "interval_coverage" in m:
        lines.append(
            f"- Interval coverage at the validation cutoff (cross-fitted): {m['interval_coverage']:.1%} of customers"
            f" (promised {m['interval_promised']:.1%}); {m['interval_coverage_attainable']:.1%} where P(no purchase)"
            f" <= 80%; top tier {m['interval_coverage_top_tier']:.1%}."
        )
    return lines


INTERVAL_SUMMARY = (
    "interval_coverage",
    "interval_promised",
    "interval_coverage_attainable",
    "interval_coverage_top_tier",
    "purchases_interval_coverage",
    "purchases_interval_promised",
    "equity_actual",
    "equity_low",
    "equity_high",
    "equity_covered",
)
"""Columns of the backtest's interval summary (:func:`training.jobs.interval_columns`; ``equity_actual`` is the
fold's ``value_total_actual``)."""


def backtest_markdown(table: pd.DataFrame) -> str:
    """Every metric side by side for each fold (rows = metrics, columns = models), the one-time and repeat buyers
    apart, then the level summary (total predicted / total actual, within ``LEVEL_TOLERANCE``)."""
    parts = []
    for (as_of, group), fold in table.groupby(["as_of", "group"], sort=True):
        by_model = {row["model"]: row for _, row in fold.iterrows()}
        metrics = {m: {k: float(by_model[m][k]) for k in COMPARED_KEYS} for m in MODELS if m in by_model}
        customers = int(fold["customers"].iloc[0])
        heading = f"### fold as of {as_of}, {group.replace('_', '-')} customers ({customers:,})"
        chosen = by_model.get(PRODUCT)
        note = ""
        if chosen is not None and "churn_head" in fold.columns:
            note = (
                f"\n\nmodel = churn head {chosen['churn_head']}, value head {chosen['value_head']}, level source"
                f" {chosen['level_source']}, validation scheme {chosen['validation_scheme']}"
            )
        parts.append(f"{heading}\n\n{comparison_markdown(metrics)}{note}")
    everyone = table[table["group"] == "all"]
    level = everyone.pivot(index="as_of", columns="model", values="value_total_ratio")
    level = level[[m for m in MODELS if m in level.columns]]
    level.index = level.index.astype(str)
    summary = level.reset_index()
    for m in (PRODUCT, "btyd"):
        if m in level:
            summary[f"{m}_within_{LEVEL_TOLERANCE:.0%}"] = ((level[m] - 1.0).abs() <= LEVEL_TOLERANCE).to_numpy()
    parts.append("### level: total predicted / total actual value per fold\n\n" + to_markdown_table(summary))
    product = everyone[everyone["model"] == PRODUCT].rename(columns={"value_total_actual": "equity_actual"})
    present = [c for c in INTERVAL_SUMMARY if c in product.columns]
    if present and product[present].notna().any().any():
        intervals = product[["as_of", "customers", *present]].assign(as_of=product["as_of"].astype(str))
        parts.append(
            "### intervals: coverage of the 80% intervals per fold (all customers)\n\n"
            "Coverage = share of customers whose actual value (purchase days) lies inside their interval; promised ="
            " mean of max(P(no purchase), 0.8), what calibrated intervals hold with a point mass at 0; equity = the"
            " 80% interval of the total and whether the actual total lies inside (1/0).\n\n"
            + to_markdown_table(intervals.reset_index(drop=True))
        )
    return "\n\n".join(parts)
