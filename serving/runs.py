"""Record each batch scoring run and each retention plan in MLflow.

Scoring runs (experiment ``retention-scoring``, :func:`record_run`): input, model version, row counts, timing,
customer equity with its 80% interval, unprofitable customers, data quality, the drift report, the summary as
``scoring_summary.json`` and the HTML run report (:mod:`serving.report`) as ``report.html`` when the summary holds
the scored population (a summary from before the population block gets no report).

Plan runs (experiment ``retention-plans``, :func:`record_plan_run`): the budget, the offers and the economics as
parameters (and ``economics.json``), the plan totals as metrics (spend, expected saved value, expected net benefit,
ROI, customers contacted, sleeping dogs...), the plan as ``plan.json`` and the HTML report with its plan section as
``report.html``; with the scoring summary the plan was made from, its input, model version and as-of date too.

MLflow and the report's matplotlib are imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = [
    "PLAN_EXPERIMENT",
    "REPORT_ARTIFACT",
    "SCORING_EXPERIMENT",
    "record_plan_run",
    "record_run",
    "scoring_report",
]

SCORING_EXPERIMENT = "retention-scoring"
PLAN_EXPERIMENT = "retention-plans"
REPORT_ARTIFACT = "report.html"
"""The HTML report's name among a run's artifacts."""


def scoring_report(summary: Any) -> str | None:
    """The HTML report of a scoring run (:func:`serving.report.render_report` of the summary, a
    :class:`~serving.batch.JobSummary` or its dict), or None when the summary has no scored population to draw (an
    engine or summary from before the population block)."""
    from serving.report import render_report, report_title

    data = _as_dict(summary)
    if not data.get("population"):
        return None
    return render_report(data, title=report_title(data))


def record_run(summary: Any, *, source: str, model: str, engine: str, report_html: str | None = None) -> str:
    """Record a scoring run (a :class:`serving.batch.JobSummary`) in :data:`SCORING_EXPERIMENT`; its run id.

    ``report_html``: the report already rendered for this run (the command line writes it beside the output too),
    logged as :data:`REPORT_ARTIFACT`; None renders it here (:func:`scoring_report`).
    """
    import mlflow

    data = summary.to_dict()
    html = report_html if report_html is not None else scoring_report(data)
    unprofitable = (data.get("population") or {}).get("unprofitable")
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
                    **(
                        {
                            "unprofitable_customers": unprofitable["customers"],
                            "unprofitable_expected_profit": unprofitable["expected_profit"],
                        }
                        if unprofitable
                        else {}
                    ),
                    "rows_read": summary.report.rows_read,
                    "rows_broken": summary.report.rows_broken,
                    "max_psi": max(summary.psi.values(), default=0.0),
                    **{f"psi_{k}": v for k, v in summary.psi.items()},
                }
            )
            mlflow.log_dict(data, "scoring_summary.json")
            if html is not None:
                mlflow.log_text(html, REPORT_ARTIFACT)
            mlflow.set_tag("drift_warning", str(bool(summary.drift_warnings)))
    return run.info.run_id


def _as_dict(value: Any) -> dict[str, Any]:
    """An object with ``to_dict()`` (Offer, Economics, JobSummary, Plan) or a mapping, as a plain dict."""
    return dict(value.to_dict()) if hasattr(value, "to_dict") else dict(value)


def record_plan_run(
    plan: Any,
    *,
    budget: float,
    offers: Sequence[Any],
    economics: Any,
    source: str,
    model: str,
    summary: Any = None,
    output: str | None = None,
    report_html: str | None = None,
) -> str:
    """Record a retention plan in :data:`PLAN_EXPERIMENT`; its run id.

    ``plan``: ``serving.plan.Plan`` or its ``to_dict()`` (``totals``, ``budget_curve``, ``offers``). ``budget``: the
    plan's budget (currency units). ``offers``: the offers it chose from (``Offer`` objects or their dicts).
    ``economics``: ``Economics`` or its dict. ``source`` / ``model``: the input and the model the customers were
    scored with. ``summary``: the scoring run's :class:`~serving.batch.JobSummary` (or its dict) when the plan
    scored them (its output, model version and as-of are logged, and the report draws its population); None
    otherwise. ``output``: where the plan was written (logged as ``output``, in place of the summary's: a plan run
    scores into a temporary file). ``report_html``: the report already rendered (else rendered here with the plan
    section).

    Parameters: ``source``, ``model``, ``budget``, ``offers`` (names), ``economics.<field>`` (``bundle`` for a value
    the bundle gives); metrics: every numeric plan total; artifacts ``plan.json``, ``economics.json`` (with the
    offers' full terms) and :data:`REPORT_ARTIFACT`; tag ``uplift_source``.
    """
    import mlflow

    from serving.report import render_report, report_title

    plan_dict = _as_dict(plan)
    summary_dict = _as_dict(summary) if summary is not None else {}
    if output is not None:
        summary_dict["output"] = output
    economics_dict = _as_dict(economics)
    offer_dicts = [_as_dict(o) for o in offers]
    html = report_html
    if html is None:
        html = render_report(summary_dict, plan=plan_dict, title=report_title(summary_dict, plan=plan_dict))
    totals = plan_dict.get("totals") or {}
    params: dict[str, Any] = {
        "source": source,
        "model": model,
        "budget": budget,
        "offers": ",".join(str(o.get("name", "")) for o in offer_dicts),
        **{f"economics.{k}": "bundle" if v is None else v for k, v in economics_dict.items() if k != "offers"},
    }
    for key in ("output", "model_version", "as_of", "horizon_days"):
        if summary_dict.get(key) is not None:
            params[key] = summary_dict[key]
    metrics = {
        k: float(v)
        for k, v in totals.items()
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and k != "budget"  # numpy numbers too
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.set_experiment(PLAN_EXPERIMENT)
        with mlflow.start_run(run_name=f"plan-{summary_dict.get('as_of', 'unscored')}") as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            mlflow.log_dict(plan_dict, "plan.json")
            mlflow.log_dict({**economics_dict, "offers": offer_dicts}, "economics.json")
            mlflow.log_text(html, REPORT_ARTIFACT)
            mlflow.set_tag("uplift_source", str(totals.get("uplift_source", "")))
    return run.info.run_id
