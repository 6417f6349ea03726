"""Record each batch scoring run in MLflow (experiment ``retention-scoring``): input, model version, row counts,
timing, customer equity with its 80% interval, data quality and the drift report."""

from __future__ import annotations

import warnings
from typing import Any

SCORING_EXPERIMENT = "retention-scoring"


def record_run(summary: Any, *, source: str, model: str, engine: str) -> str:
    import mlflow

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.set_experiment(SCORING_EXPERIMENT)
        with mlflow.start_run(run_name=f"score-{summary.as_of}") as run:
            mlflow.log_params(
                {
                    "source": source,
                    "output": summary.output,
                    "model": model,
                    "model_version": summary.model_version,
                    "as_of": summary.as_of,
                    "engine": engine,
                    "partitions": summary.partitions,
                    "horizon_days": summary.horizon_days,
                }
            )
            mlflow.log_metrics(
                {
                    "customers_scored": summary.customers_scored,
                    "rows_written": summary.rows_written,
                    "seconds": summary.seconds,
                    "top20_value_share": summary.top20_value_share,
                    "equity": summary.equity,
                    **{k: v for k in ("equity_low", "equity_high") if (v := getattr(summary, k)) is not None},
                    "rows_read": summary.report.rows_read,
                    "rows_broken": summary.report.rows_broken,
                    "max_psi": max(summary.psi.values(), default=0.0),
                    **{f"psi_{k}": v for k, v in summary.psi.items()},
                }
            )
            mlflow.log_dict(summary.to_dict(), "scoring_summary.json")
            mlflow.set_tag("drift_warning", str(bool(summary.drift_warnings)))
    return run.info.run_id
