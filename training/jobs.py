"""Training jobs behind the CLI: train (+ log, register, gate), backtest, and the classical BTYD fit.

Tracking goes to ``MLFLOW_TRACKING_URI`` when set, else to MLflow's default local store; nothing is configured
at import time. Every run logs its :class:`~training.config.TrainingConfig` whole (``training_config.json``,
read back by :func:`logged_config`) and flattened (``config.*`` params). The model name and the experiment default
to :attr:`retention.settings.Settings.model_name` (``RETENTION_MODEL_NAME``, ``retention``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.campaigns import CampaignReport
from features.contract import ContractError, DataQualityReport
from features.events import EventReport
from features.kernel import PreparedTransactions, compute_features, date_to_day, day_to_date, index_transactions
from features.labels import labels_at
from retention import progress
from retention.settings import get_settings
from serving.intervals import equity_interval
from serving.model import tier_index
from training import baselines, registry, report
from training.config import TrainingConfig, training_config
from training.intervals import purchase_days
from training.metrics import INTERVAL_KEYS, interval_metrics
from training.pipeline import PRODUCT, all_metrics, fit_pipeline
from training.uplift import UpliftFit

CONFIG_ARTIFACT = "training_config.json"
"""The run artifact holding the whole training config (:meth:`TrainingConfig.to_dict`)."""


@dataclasses.dataclass
class TrainSummary:
    run_id: str
    model_name: str
    version: str
    decision: registry.GateDecision
    metrics: dict[str, dict[str, float]]
    comparison: str
    uplift: dict[str, Any] | None = None
    """The uplift heads' verdict and held-out Qini coefficients (:func:`training.registry.uplift_verdict`); None
    when trained without a campaign log."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "version": self.version,
            "promoted": self.decision.promoted,
            "decision": self.decision.reason,
            "metrics": self.metrics,
            "uplift": self.uplift,
        }


def _log_config(config: TrainingConfig) -> None:
    """The whole config as ``training_config.json`` and one ``config.*`` param per value, in the active run."""
    import mlflow

    mlflow.log_dict(config.to_dict(), CONFIG_ARTIFACT)
    mlflow.log_params(config.flat_params())


def logged_config(run_id: str) -> TrainingConfig:
    """The training config a run logged (``runs:/<run_id>/training_config.json``), as a :class:`TrainingConfig`."""
    import mlflow

    return TrainingConfig.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{CONFIG_ARTIFACT}"))


def train(
    transactions: pd.DataFrame,
    quality: DataQualityReport,
    *,
    as_of: dt.date,
    source: str,
    config: TrainingConfig | None = None,
    experiment: str | None = None,
    model_name: str | None = None,
    force: bool = False,
    campaigns: pd.DataFrame | None = None,
    campaign_quality: CampaignReport | None = None,
    events: pd.DataFrame | None = None,
    event_quality: EventReport | None = None,
    **choices: Any,
) -> TrainSummary:
    """Train both heads at ``as_of``, log everything to MLflow, register a version and apply the gate.

    ``config`` holds the training choices (default: today's); ``choices`` change single fields of it
    (``horizon_days=90``, ``seed=1``). ``model_name`` and ``experiment`` default to the settings' model name.
    ``force`` makes the new version champion whatever its metrics. ``campaigns``: a campaign log prepared by
    :func:`features.campaigns.prepare_campaigns` (``campaign_quality`` its report, logged as
    ``campaign_quality.json``): the version then gets uplift heads (:mod:`training.uplift`), their held-out metrics
    (``uplift_*``), Qini plot (``report/qini.png``) and ``uplift.json`` are logged beside the two heads'.
    ``events``: customer events prepared by :func:`features.events.prepare_events` (``event_quality`` its report,
    logged as ``event_quality.json``), indexed with the transactions: the heads then train on the event features of
    :mod:`features.event_features` too (the version's feature list says so); the events of customers without a
    transaction are counted (``events_unmatched`` param).
    """
    import mlflow

    config = training_config(config, **choices)
    model_name = model_name or get_settings().model_name
    horizon_days = config.horizon_days
    prep = index_transactions(transactions, events=events)
    result = fit_pipeline(prep, as_of, config=config, campaigns=campaigns)
    mlflow.set_experiment(experiment or get_settings().model_name)
    with mlflow.start_run(run_name=f"train-{as_of}-h{horizon_days}") as run:
        _log_config(config)
        mlflow.log_params(
            {
                "as_of": str(as_of),
                "horizon_days": horizon_days,
                "cutoffs": ",".join(str(c) for c in result.plan.cutoffs),
                "validation_cutoff": str(result.plan.validation_cutoff),
                "validation_scheme": result.plan.scheme,
                "churn_head": result.choice["churn_head"],
                "value_head": result.choice["value_head"],
                "level_source": result.choice["level_source"],
                "churn_rate_source": result.choice["churn_rate_source"],
                "training_rows": result.training_rows,
                "level_factor": round(result.model.meta.level_factor, 6),
                **{k: _param(v) for k, v in result.selection.items() if not isinstance(v, dict)},
                **{f"churn_{k}": v for k, v in result.selection.get("churn_params", {}).items()},
                **{f"value_{k}": v for k, v in result.selection.get("value_params", {}).items()},
                **{f"btyd_{k}": v for k, v in _flat(result.btyd_params).items() if not k.startswith("diagnostics")},
            }
        )
        mlflow.log_dict({"choice": result.choice, "warnings": result.warnings}, "choice.json")
        mlflow.log_dict(result.btyd_params, "btyd.json")
        for model, values in result.metrics.items():
            mlflow.log_metrics({f"{model}_{k}": float(v) for k, v in values.items() if np.isfinite(v)})
        dataset = mlflow.data.from_pandas(transactions.head(10_000), source=source, name="transactions")
        mlflow.log_input(dataset, context="training")
        mlflow.log_dict(quality.to_dict(), "data_quality.json")
        if result.uplift is not None:
            _log_uplift(result.uplift, campaign_quality)
        if prep.events is not None:
            _log_events(prep, event_quality)
        with tempfile.TemporaryDirectory() as tmp, progress.step("writing plots and model card"):
            folder = report.write_artifacts(result, Path(tmp) / "report", quality)
            mlflow.log_artifacts(str(folder), artifact_path="report")
        with progress.step("registering the model version"):
            version = registry.log_bundle(result.model, model_name, result.population)
        registry.set_alias(model_name, registry.CHALLENGER, version)
        v = result.valid_features
        labels = [v[c].to_numpy() if c in v else np.zeros(0) for c in ("churned", "future_value")]
        validation = {
            "validation_cutoff": str(result.plan.validation_cutoff),
            "horizon_days": horizon_days,
            "validation_scheme": result.plan.scheme,
        }
        decision = registry.gate(
            model_name, result.metrics.get(PRODUCT), v, *labels, force=force, validation=validation,
            uplift_trusted=result.model.meta.uplift_trusted,
        )  # fmt: skip
        record = registry.champion_record(model_name, decision.champion_version) if decision.champion_version else None
        decision.uplift = registry.uplift_verdict(result.model.meta.uplift, (record or {}).get("params"))
        if decision.promoted:
            registry.set_alias(model_name, registry.CHAMPION, version)
        mlflow.log_dict(decision.to_dict(), "promotion.json")
        mlflow.set_tags({"promoted": str(decision.promoted), "model_version": version})
    return TrainSummary(
        run.info.run_id,
        model_name,
        version,
        decision,
        result.metrics,
        report.comparison_markdown(result.metrics, result.choice),
        decision.uplift,
    )


def _log_uplift(fit: UpliftFit, campaign_quality: CampaignReport | None) -> None:
    """The uplift heads' params, held-out metrics (``uplift_*``, finite ones), ``uplift.json`` (their bundle
    metadata) and the campaign log's quality report, in the active run."""
    import mlflow

    meta = fit.meta
    mlflow.log_params(
        {
            "uplift_learner": meta["learner"],
            "uplift_campaigns": ",".join(meta["campaign_ids"]),
            "uplift_trusted": meta["trusted"],
            "uplift_risk_source": meta["risk_source"],
            **{f"{k}_rounds": v for k, v in meta["rounds"].items()},
        }
    )
    mlflow.log_metrics({k: float(v) for k, v in fit.metrics.items() if np.isfinite(v)})
    mlflow.log_dict(meta, "uplift.json")
    mlflow.set_tag("uplift_trusted", str(meta["trusted"]))
    if campaign_quality is not None:
        mlflow.log_dict(campaign_quality.to_dict(), "campaign_quality.json")


def _log_events(prep: PreparedTransactions, event_quality: EventReport | None) -> None:
    """The event log's use in the active run: events indexed, events (and customers) without a transaction, and the
    event log's quality report."""
    import mlflow

    index = prep.events
    if index.unmatched_events:
        progress.warn(
            f"{index.unmatched_events:,} event(s) of {index.unmatched_customers:,} customer(s) without a transaction"
            " were left out (check that both logs use the same customer ids)"
        )
    mlflow.log_params(
        {
            "events_indexed": len(index),
            "events_unmatched": index.unmatched_events,
            "events_unmatched_customers": index.unmatched_customers,
        }
    )
    if event_quality is not None:
        mlflow.log_dict(event_quality.to_dict(), "event_quality.json")


def _param(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}_"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fold_dates(as_of: dt.date, horizon_days: int, folds: int, step_days: int) -> list[dt.date]:
    """Backtest as-of dates, oldest first: the latest is ``as_of - H`` so its labels are known at ``as_of``."""
    last = date_to_day(as_of) - horizon_days
    return [day_to_date(last - i * step_days) for i in reversed(range(folds))]


def group_rows(
    as_of: dt.date,
    model: str,
    churned: np.ndarray,
    actual: np.ndarray,
    churn_probability: np.ndarray,
    expected_value: np.ndarray,
    groups: Mapping[str, np.ndarray],
    extra: Callable[[np.ndarray], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One backtest row per customer group with at least two customers: ``as_of``, ``model``, ``customers``,
    ``group``, the churn / value metrics of :func:`training.pipeline.all_metrics` on the group's rows, and
    ``extra(mask)`` (the product's interval columns and choices)."""
    rows = []
    for group, mask in groups.items():
        if mask.sum() < 2:
            continue
        metrics = all_metrics(churned[mask], churn_probability[mask], actual[mask], expected_value[mask])
        more = extra(mask) if extra is not None else {}
        rows.append({"as_of": as_of, "model": model, "customers": int(mask.sum()), "group": group, **metrics, **more})
    return rows


def evaluate_fold(
    prep: PreparedTransactions,
    fold_as_of: dt.date,
    horizon_days: int | None = None,
    seed: int | None = None,
    *,
    config: TrainingConfig | None = None,
) -> pd.DataFrame:
    """Train the whole pipeline with data up to ``fold_as_of`` and score the next ``horizon_days``.

    One row per (model, customer group): the product's ``model`` (with the heads and level source it chose),
    ``btyd`` (BG/NBD + Gamma-Gamma fitted at ``fold_as_of``), ``naive`` and ``population_average`` (each group's
    mean churn and value at ``fold_as_of - H``; absent when nothing is labeled there), for ``all`` customers and
    apart for ``one_time`` buyers (one purchase day by ``fold_as_of``) and ``repeat`` buyers: population averages
    hide how differently models do on them. ``horizon_days`` and ``seed`` (when given) replace the config's.

    The product's rows also hold its intervals' out-of-time coverage (:func:`interval_columns`) and, as
    ``validation_interval_*``, their cross-fitted coverage at the fold's own validation cutoff (the same for every
    group).
    """
    config = training_config(config, horizon_days=horizon_days, seed=seed)
    horizon_days = config.horizon_days
    result = fit_pipeline(prep, fold_as_of, config=config)
    test = compute_features(prep, fold_as_of)
    _, labels = labels_at(prep, fold_as_of, horizon_days)
    churned, actual = labels["churned"], labels["future_value"]
    X = test[list(result.model.feature_columns)].to_numpy(dtype=np.float64)
    scores = result.model.score(X)
    scale = result.model.meta.margin * result.model.meta.discount_factor
    revenue = scores.expected_value / scale
    intervals = interval_columns(result.model, scores, actual, purchase_days(prep, fold_as_of, horizon_days))
    at_v = {f"validation_{k}": v for k, v in result.metrics.get(PRODUCT, {}).items() if k.startswith("interval_")}
    btyd = baselines.fit_btyd(test)
    btyd_churn, btyd_value = baselines.btyd_predict(btyd, test, horizon_days)
    naive_train = result.valid_features if len(result.valid_features) else None
    groups = baselines.customer_groups(test)
    product_extra = {k: v for k, v in result.choice.items() if not k.startswith("why")}
    rows = group_rows(
        fold_as_of, PRODUCT, churned, actual, scores.churn_probability, revenue, groups,
        extra=lambda mask: intervals(mask) | at_v | product_extra,
    )  # fmt: skip
    for model, p, value in (
        ("btyd", btyd_churn, btyd_value),
        ("naive", baselines.naive_churn(naive_train, test), baselines.naive_value(test, horizon_days)),
        *baselines.population_average_scores(prep, fold_as_of, horizon_days, test),
    ):
        rows += group_rows(fold_as_of, model, churned, actual, p, value, groups)
    return pd.DataFrame(rows)


INTERVAL_COLUMNS = (
    *(f"interval_{k}" for k in INTERVAL_KEYS),
    "interval_coverage_attainable_at_actual_level",
    "interval_coverage_top_tier_at_actual_level",
    *(f"purchases_interval_{k}" for k in INTERVAL_KEYS),
    "equity_low",
    "equity_high",
    "equity_covered",
)
"""The product's interval columns in a backtest table (see :func:`interval_columns`)."""


def interval_columns(model, scores, actual: np.ndarray, purchases: np.ndarray):
    """A function of a customer mask giving the product's interval columns (:data:`INTERVAL_COLUMNS`) for those
    customers, from the scores of ``model`` (a :class:`serving.model.ScoringModel`) at a fold's as-of date and the
    fold's actual next-H-day values (revenue) and purchase days.

    Intervals are scored in ``expected_value``'s units and compared with revenue after dividing by margin x
    discount, like the expected value. ``interval_*``: :func:`training.metrics.interval_metrics` of the value
    intervals (top tier = the bundle's first tier); ``purchases_interval_*``: the same for purchase days;
    ``equity_low`` / ``equity_high``: the 80% interval of the group's total (revenue,
    :func:`serving.intervals.equity_interval`) and ``equity_covered`` whether the actual total lies inside (1/0).
    Diagnostic, not a product figure: ``interval_coverage_attainable_at_actual_level`` and
    ``interval_coverage_top_tier_at_actual_level`` are the same coverages with every interval divided by the fold's
    level error (total predicted / total actual over all customers, known only afterwards): what is left of a miss
    once the level forecast is taken out. Columns are NaN when the model has no such intervals."""
    meta = model.meta
    scale = meta.margin * meta.discount_factor
    found = scores.intervals
    tiers = tier_index(scores.expected_value, meta.tier_thresholds)
    p = scores.churn_probability
    total_actual = float(actual.sum())
    level = float(scores.expected_value.sum()) / scale / total_actual if total_actual > 0 else float("nan")

    def columns(mask: np.ndarray) -> dict[str, float]:
        out = dict.fromkeys(INTERVAL_COLUMNS, float("nan"))
        if found is None or not mask.any():
            return out
        top = tiers[mask] == 0
        if np.isfinite(found.value_low).all():
            low, high = found.value_low[mask] / scale, found.value_high[mask] / scale
            out.update({f"interval_{k}": v for k, v in interval_metrics(actual[mask], low, high, p[mask], top).items()})
            if np.isfinite(level) and level > 0:
                rescaled = interval_metrics(actual[mask], low / level, high / level, p[mask], top)
                for k in ("coverage_attainable", "coverage_top_tier"):
                    out[f"interval_{k}_at_actual_level"] = rescaled[k]
        if found.purchases_low is not None:
            counts = interval_metrics(
                purchases[mask], found.purchases_low[mask], found.purchases_high[mask], p[mask], top
            )
            out.update({f"purchases_interval_{k}": v for k, v in counts.items()})
        if model.intervals is not None and model.intervals.value_cv2 is not None:
            low, high, _ = equity_interval(scores.expected_value[mask], tiers[mask], model.intervals)
            total = float(actual[mask].sum())
            out.update(
                equity_low=low / scale,
                equity_high=high / scale,
                equity_covered=float(low / scale <= total <= high / scale),
            )
        return out

    return columns


def backtest(
    transactions: pd.DataFrame,
    *,
    as_of: dt.date,
    folds: int,
    step_days: int = 30,
    experiment: str | None = None,
    log: bool = True,
    config: TrainingConfig | None = None,
    **choices: Any,
) -> pd.DataFrame:
    """Rolling-origin backtest: one full training run per fold (``folds`` of them, ``step_days`` apart, the latest
    at ``as_of - H``), scored on the fold's next horizon. ``config`` / ``choices`` as in :func:`train`."""
    if folds < 1:
        raise ContractError(f"--folds must be at least 1, got {folds}")
    config = training_config(config, **choices)
    horizon_days = config.horizon_days
    prep = index_transactions(transactions)
    dates = fold_dates(as_of, horizon_days, folds, step_days)
    table = pd.concat(
        [evaluate_fold(prep, d, config=config) for d in progress.track(dates, "backtest folds", total=len(dates))],
        ignore_index=True,
    )
    if log:
        import mlflow

        mlflow.set_experiment(experiment or get_settings().model_name)
        with mlflow.start_run(run_name=f"backtest-{as_of}-h{horizon_days}-k{folds}"):
            _log_config(config)
            mlflow.log_params(
                {"as_of": str(as_of), "horizon_days": horizon_days, "folds": folds, "step_days": step_days}
            )
            for i, d in enumerate(dates):
                for _, row in table[(table["as_of"] == d) & (table["group"] == "all")].iterrows():
                    keys = report.CHURN_KEYS + report.VALUE_KEYS + (INTERVAL_COLUMNS if row["model"] == PRODUCT else ())
                    values = {f"{row['model']}_{k}": float(row[k]) for k in keys}
                    mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)}, step=i)
            mlflow.log_table(table.assign(as_of=table["as_of"].astype(str)), "backtest.json")
            mlflow.log_text(report.backtest_markdown(table), "backtest.md")
    return table


def fit_btyd_only(transactions: pd.DataFrame, as_of: dt.date) -> dict[str, Any]:
    """BG/NBD + Gamma-Gamma parameters at ``as_of`` (time unit: days) with the customers they were fitted on."""
    features = compute_features(index_transactions(transactions), as_of)
    model = baselines.fit_btyd(features)
    buyers = int((features["n_purchase_days"] > 0).sum())
    repeat = int((features["btyd_frequency"] > 0).sum())
    return {
        "as_of": str(as_of),
        "time_unit": "days",
        "customers": buyers,
        "repeat_customers": repeat,
        **model.to_dict(),
    }
