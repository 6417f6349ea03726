"""The public Python API, ``import retention as rt``: a thin facade over the packages that do the work.

Every function here calls the same code as the CLI, the nightly job and the service, and adds no logic of its own
beyond turning its arguments into what that code takes:

=====================================  ====================================================================
``rt.read_transactions``               :func:`features.contract.prepare_transactions` (after
                                       :func:`features.sources.read_table` for a path or URL)
``rt.features``                        :func:`features.kernel.compute_features`
``rt.labels``                          :func:`features.labels.labels_at`
``rt.fit``                             :func:`training.pipeline.fit_pipeline` (no MLflow)
``rt.train``                           :func:`training.jobs.train` (fit + log to MLflow + register + gate)
``rt.backtest``                        :func:`training.jobs.backtest`
``rt.fit_btyd``                        :func:`training.baselines.fit_btyd` (BG/NBD + Gamma-Gamma)
``rt.load_model``                      :func:`serving.loader.load_model`
``rt.score``                           :func:`serving.scoring.score_customers` (-> :class:`ScoredBatch`,
                                       or :func:`serving.scoring.output_columns` as a frame)
``rt.plan``                            :func:`serving.plan.make_plan` on :func:`score`'s customers (whom to
                                       contact with which offer within a budget)
``rt.rank``                            :func:`serving.ranking.rank_frame`
``rt.reasons``                         :func:`serving.scoring.reason_objects` as rows
                                       (:func:`retention.analysis.reasons_frame`)
``rt.top_share``                       :func:`serving.pareto.top_share`, the one top-share figure
``rt.acquisition_forecast``            :func:`training.acquisition.acquisition_forecast` (value of a new customer)
=====================================  ====================================================================

Conventions of every entry point:

* **Dates** (``as_of``, ``cutoff``) are ``"YYYY-MM-DD"`` strings or :class:`datetime.date` objects (a datetime
  counts as its UTC calendar day). A date is a whole UTC calendar day and is *included*: features at ``D`` read
  every transaction whose UTC day is ``<= D`` and nothing later.
* **Horizons** are whole days *after* the cutoff: labels and predictions for a horizon ``H`` cover the days
  ``D+1 .. D+H`` (the window ``(D, D+H]``); churn = no purchase (``amount >= 0``) in that window.
* **Data** is a pandas DataFrame or a location: a ``.csv`` / ``.parquet`` file, a directory of Parquet files or
  a SQLAlchemy URL with ``?table=`` / ``?query=`` (see :mod:`features.sources`). Either way it goes through the
  input contract (:func:`read_transactions` with its defaults: the columns ``customer_id``, ``timestamp``,
  ``amount`` and the optional ones; lines of one order summed). The contract leaves its own output unchanged,
  so the frame :func:`read_transactions` returns (read with any options) can be passed to every other function.
* **Money** is in the data's currency unit; probabilities are in [0, 1]; time quantities are in days.

Heavy dependencies (LightGBM, MLflow, the training package) are imported on first use, inside the functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Union, overload

import numpy as np
import pandas as pd

from features.contract import MIN_DATE, ContractError, DataQualityReport, prepare_transactions, to_date
from features.kernel import compute_feature_arrays, compute_features, index_transactions
from features.labels import labels_at
from serving.pareto import top_share

if TYPE_CHECKING:
    from serving.btyd import BTYDModel
    from serving.economics import Economics, Offer
    from serving.model import ScoringModel
    from serving.plan import Plan
    from serving.scoring import ScoredBatch
    from training.config import TrainingConfig
    from training.jobs import TrainSummary
    from training.pipeline import PipelineResult

__all__ = [
    "ContractError",
    "DataQualityReport",
    "acquisition_forecast",
    "backtest",
    "features",
    "fit",
    "fit_btyd",
    "labels",
    "load_model",
    "plan",
    "rank",
    "read_transactions",
    "reasons",
    "score",
    "top_share",
    "train",
]

DateLike = str | dt.date
"""A UTC calendar day: ``"YYYY-MM-DD"`` or a :class:`datetime.date` (a datetime counts as its UTC day)."""
Source = pd.DataFrame | str | os.PathLike[str]
"""Transactions: a DataFrame, or a file / directory / SQL URL read by :func:`features.sources.read_table`."""
EconomicsLike = Union["Economics", Mapping[str, Any], str, os.PathLike[str], None]
"""Economics: an :class:`serving.economics.Economics`, its JSON object as a dict, a JSON file, or None for
``RETENTION_ECONOMICS`` (unset: no costs, expected profit = expected value)."""
IN_MEMORY_SOURCE = "in-memory DataFrame"
"""The ``source`` logged to MLflow for a model trained on a DataFrame rather than a file."""


def _day(value: DateLike, what: str = "as-of date") -> dt.date:
    """The UTC calendar day of a date argument; :class:`ContractError` naming it when it is missing or not a date."""
    day = to_date(value)
    if day is None:
        raise ContractError(f"the {what} is required (YYYY-MM-DD)")
    return day


def _days(cutoffs: DateLike | Iterable[DateLike]) -> list[dt.date]:
    """One cutoff or several, as UTC calendar days in the given order."""
    if isinstance(cutoffs, str | dt.date):
        return [_day(cutoffs, "cutoff")]
    return [_day(c, "cutoff") for c in cutoffs]


def read_transactions(
    data: Source,
    *,
    as_of: DateLike | None = None,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = MIN_DATE,
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Read transactions and apply the input contract: ``(transactions, data-quality report)``.

    Args:
        data: a DataFrame of input rows (lines), or a ``.csv`` / ``.parquet`` file, a directory of Parquet files
            or a SQL URL (``sqlite:///tx.db?table=transactions``).
        as_of: UTC day, included; rows of later days are counted (``after_as_of``) and left out. None keeps them.
        columns: input column per contract column (``{"customer_id": "cust", "timestamp": "ts"}``).
        strict: raise :class:`ContractError` when any row breaks a rule (or the input looks like order lines).
        normalize_float_ids: read ids an export turned into floats (``"17850.0"``) as ``"17850"``.
        min_date: rows before this UTC day are ``implausible_timestamp`` (default 1990-01-01; None: no floor).

    Returns:
        One row per order: ``customer_id`` (str), ``timestamp`` (datetime64[ns, UTC], the order's earliest
        line), ``amount`` (float64, currency units; negative = refund) and the optional columns present, with the
        :class:`~features.contract.DataQualityReport` (``report.render()`` prints it). Raises
        :class:`ContractError` when the input cannot be used at all.
    """
    as_of_day = None if as_of is None else _day(as_of)
    if isinstance(data, pd.DataFrame):
        return prepare_transactions(
            data,
            columns=columns,
            as_of=as_of_day,
            strict=strict,
            normalize_float_ids=normalize_float_ids,
            min_date=min_date,
        )
    from features.sources import load_transactions

    return load_transactions(
        data,
        columns=columns,
        as_of=None if as_of_day is None else str(as_of_day),
        strict=strict,
        normalize_float_ids=normalize_float_ids,
        min_date=min_date,
    )


def _transactions(data: Source, as_of: dt.date | None = None) -> pd.DataFrame:
    """The contract's transactions of ``data`` (:func:`read_transactions` with its defaults), report dropped."""
    return read_transactions(data, as_of=as_of)[0]


def features(data: Source, cutoffs: DateLike | Iterable[DateLike]) -> pd.DataFrame:
    """Point-in-time features: one row per (customer, cutoff), for every customer with a transaction by the cutoff.

    Args:
        data: transactions (see the module docstring).
        cutoffs: one UTC day or several; each is included (transactions of the cutoff day count).

    Returns:
        ``customer_id`` (str), ``cutoff`` (:class:`datetime.date`) and the features of
        :data:`features.kernel.FEATURE_DESCRIPTIONS` (durations in days, money in currency units; ``NaN`` where a
        feature is undefined, e.g. no purchase yet). Rows are ordered by cutoff, then by customer.
    """
    return compute_features(_transactions(data), _days(cutoffs))


def labels(data: Source, cutoff: DateLike, horizon_days: int) -> pd.DataFrame:
    """What happened after ``cutoff``: one row per customer with a transaction on or before it.

    Args:
        data: transactions (see the module docstring); they must reach ``cutoff + horizon_days`` for the labels
            to be complete (nothing checks it).
        cutoff: UTC day, included in the history; the label window starts the day after.
        horizon_days: H >= 1, the window's length in days: the days ``cutoff+1 .. cutoff+H``.

    Returns:
        ``customer_id`` (str), ``cutoff`` (:class:`datetime.date`), ``churned`` (int8: 1 when the customer made no
        purchase -- transaction with ``amount >= 0`` -- in the window) and ``future_value`` (float64: net spend in
        the window, purchases minus refunds, currency units), in the customer order of :func:`features`.
    """
    day = _day(cutoff, "cutoff")
    ids, values = labels_at(index_transactions(_transactions(data)), day, horizon_days)
    frame = pd.DataFrame({"customer_id": pd.array(ids, dtype="str"), **values})
    frame.insert(1, "cutoff", day)
    return frame


def fit(
    data: Source,
    as_of: DateLike,
    *,
    horizon_days: int | None = None,
    config: TrainingConfig | None = None,
    **choices: Any,
) -> PipelineResult:
    """Train one model version at ``as_of`` in memory (no MLflow): the whole run behind ``retention train``.

    Args:
        data: transactions (see the module docstring); rows after ``as_of`` are left out.
        as_of: UTC day, included: the last day of history; every label window ends on or before it and the
            version's first scores are at it.
        horizon_days: H in days after a cutoff (churn = no purchase in the next H days); default: the config's (90).
        config: the training choices (:class:`training.config.TrainingConfig`; default: its defaults).
        **choices: single config fields to change (``seed=1``, ``tune=5``).

    Returns:
        :class:`training.pipeline.PipelineResult`: ``model`` (a :class:`~serving.model.ScoringModel` for
        :func:`score`), the plan, validation rows and ``metrics`` at the validation cutoff ``as_of - H`` for the
        product, each candidate head and the baselines, the choices with why, and the config used.
    """
    from training.pipeline import fit_pipeline

    day = _day(as_of)
    return fit_pipeline(index_transactions(_transactions(data, day)), day, horizon_days, config=config, **choices)


def train(
    data: Source,
    as_of: DateLike,
    *,
    horizon_days: int | None = None,
    config: TrainingConfig | None = None,
    experiment: str | None = None,
    model_name: str | None = None,
    force: bool = False,
    campaigns: Source | None = None,
    **choices: Any,
) -> TrainSummary:
    """Train at ``as_of``, log the run to MLflow, register a version and apply the champion gate (``retention train``).

    Tracking goes to ``MLFLOW_TRACKING_URI`` (else MLflow's local default). ``model_name`` and ``experiment``
    default to :attr:`retention.settings.Settings.model_name`; ``force`` makes the new version champion whatever
    its metrics. ``data``, ``as_of``, ``horizon_days``, ``config`` and ``choices`` as in :func:`fit`.
    ``campaigns``: a campaign log with a held-out control group (a file, SQL URL or frame of
    :func:`features.campaigns.prepare_campaigns`' input columns): the version also gets uplift heads
    (``retention train --campaigns``).

    Returns:
        :class:`training.jobs.TrainSummary`: run id, model name, version, the gate's decision and the metrics.
    """
    from training.jobs import train as train_job

    day = _day(as_of)
    transactions, quality = read_transactions(data, as_of=day)
    campaign_log, campaign_quality = None, None
    if campaigns is not None:
        from features.campaigns import prepare_campaigns, read_campaigns

        campaign_log, campaign_quality = (
            prepare_campaigns(campaigns) if isinstance(campaigns, pd.DataFrame) else read_campaigns(str(campaigns))
        )
    return train_job(
        transactions,
        quality,
        as_of=day,
        source=IN_MEMORY_SOURCE if isinstance(data, pd.DataFrame) else str(data),
        config=config,
        experiment=experiment,
        model_name=model_name,
        force=force,
        horizon_days=horizon_days,
        campaigns=campaign_log,
        campaign_quality=campaign_quality,
        **choices,
    )


def backtest(
    data: Source,
    as_of: DateLike,
    *,
    folds: int = 3,
    step_days: int = 30,
    horizon_days: int | None = None,
    config: TrainingConfig | None = None,
    log: bool = True,
    experiment: str | None = None,
    **choices: Any,
) -> pd.DataFrame:
    """Rolling-origin backtest (``retention backtest``): one full training run per fold, scored on its next H days.

    Args:
        data: transactions (see the module docstring); rows after ``as_of`` are left out.
        as_of: UTC day, included: the latest fold is trained at ``as_of - H`` so its outcome is known at ``as_of``.
        folds: number of fold as-of dates, ``step_days`` days apart, oldest first.
        horizon_days, config, choices: as in :func:`fit`.
        log: also log the table to MLflow (a ``backtest-...`` run in ``experiment``).

    Returns:
        One row per (fold ``as_of``, ``model``, customer ``group``): the product's model, ``btyd`` and ``naive``
        for ``all``, ``one_time`` and ``repeat`` buyers, with ``customers`` and the churn and value metrics.
    """
    from training.jobs import backtest as backtest_job

    day = _day(as_of)
    return backtest_job(
        _transactions(data, day),
        as_of=day,
        folds=folds,
        step_days=step_days,
        experiment=experiment,
        log=log,
        config=config,
        horizon_days=horizon_days,
        **choices,
    )


def fit_btyd(data: Source, as_of: DateLike) -> BTYDModel:
    """Fit BG/NBD + Gamma-Gamma by maximum likelihood on the customers' summaries at ``as_of`` (``retention btyd``).

    Args:
        data: transactions (see the module docstring).
        as_of: UTC day, included: the summaries (``frequency`` = repeat purchase days, ``recency`` and ``T`` in
            days, ``monetary`` in currency units per repeat purchase day) are the kernel's at this day.

    Returns:
        :class:`serving.btyd.BTYDModel` (time unit: days): ``predict(frequency, recency, T, monetary,
        horizon_days)`` gives P(no purchase in the next ``horizon_days``), expected purchases and value. Fit
        problems (boundary optimum, flat likelihood) are in ``model.warnings``, not raised; ``ValueError`` when
        nobody made a repeat purchase.
    """
    from training.baselines import fit_btyd as fit_on_features

    return fit_on_features(features(data, as_of))


def load_model(reference: str | os.PathLike[str] | None = None, *, isolate: bool = True) -> ScoringModel:
    """Load a model version for :func:`score`.

    Args:
        reference: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/...`` (resolved against
            ``MLFLOW_TRACKING_URI``) or a local model directory; default: ``RETENTION_MODEL_URI``, else the champion
            of ``RETENTION_MODEL_NAME`` (:attr:`retention.settings.Settings.resolved_model_uri`).
        isolate: check the bundle in a child process first (a damaged file cannot crash this one).

    Returns:
        :class:`serving.model.ScoringModel` (``describe()``, ``feature_columns``, ``meta.horizon_days``). Raises
        :class:`serving.loader.ModelNotFound` / ``ModelRejected`` with one sentence.
    """
    from serving.loader import load_model as load

    if reference is None:
        from retention.settings import get_settings

        reference = get_settings().resolved_model_uri
    return load(str(reference), isolate=isolate)


@overload
def score(
    model: ScoringModel,
    data: Source,
    as_of: DateLike,
    *,
    reasons: int = ...,
    as_frame: Literal[False] = ...,
    num_threads: int = ...,
    economics: EconomicsLike = ...,
) -> ScoredBatch: ...


@overload
def score(
    model: ScoringModel,
    data: Source,
    as_of: DateLike,
    *,
    reasons: int = ...,
    as_frame: Literal[True],
    num_threads: int = ...,
    economics: EconomicsLike = ...,
) -> pd.DataFrame: ...


def score(
    model: ScoringModel,
    data: Source,
    as_of: DateLike,
    *,
    reasons: int = 3,
    as_frame: bool = False,
    num_threads: int = 0,
    economics: EconomicsLike = None,
) -> ScoredBatch | pd.DataFrame:
    """Score every customer with a transaction on or before ``as_of``: the same outputs as ``retention score``.

    Args:
        model: a loaded model (:func:`load_model`, or ``fit(...).model``).
        data: transactions (see the module docstring); rows after ``as_of`` are left out.
        as_of: UTC day, included: features are computed at it; predictions cover the model's horizon
            (``model.meta.horizon_days``) days after it.
        reasons: reason codes per customer (the churn head's largest contributions); 0 skips them (faster).
        as_frame: return the nightly list's columns as a DataFrame instead of the arrays.
        num_threads: LightGBM threads (0: its default, all cores).
        economics: what ``expected_profit`` subtracts (:data:`EconomicsLike`; None: ``RETENTION_ECONOMICS``).

    Returns:
        :class:`serving.scoring.ScoredBatch` (arrays in the kernel's customer order, exact values):
        ``churn_probability`` = P(no purchase in the horizon), ``expected_value`` (currency units over the horizon,
        after margin and discount), ``value_at_risk`` = their product, ``expected_profit`` (same units, may be
        negative: :func:`serving.economics.expected_profit`), ``tier``, ``segment``, coded reasons and the optional
        outputs (intervals, timing, ``uplift``: None when the model has none).
        With ``as_frame=True``: the same as columns (:func:`serving.scoring.output_columns`, reasons as text).
        Features the data cannot give (``n_categories`` without a ``category`` column) are missing (NaN), as in
        the nightly job.
    """
    from serving.scoring import feature_matrix, output_columns, score_customers

    day = _day(as_of)
    ids, arrays = compute_feature_arrays(index_transactions(_transactions(data, day)), day)
    columns = model.feature_columns
    X = feature_matrix(arrays, columns, len(ids))
    batch = score_customers(model, ids, X, reasons=reasons, num_threads=num_threads, economics=_economics(economics))
    return output_columns(batch, reasons=reasons) if as_frame else batch


def _economics(economics: Any) -> Economics:
    """:data:`EconomicsLike` as an :class:`~serving.economics.Economics`."""
    from serving.economics import Economics, economics_of_settings

    if economics is None:
        return economics_of_settings()
    if isinstance(economics, Economics):
        return economics
    if isinstance(economics, Mapping):
        return Economics.from_dict(economics)
    return Economics.read(economics)


def plan(
    model: ScoringModel,
    data: Source,
    as_of: DateLike,
    *,
    budget: float,
    offers: Sequence[Offer | str] | None = None,
    economics: EconomicsLike = None,
) -> Plan:
    """The retention plan (``retention plan``): whom to contact with which offer within ``budget``.

    Args:
        model: a loaded model (:func:`load_model`).
        data: transactions (see the module docstring); rows after ``as_of`` are left out.
        as_of: UTC day, included: customers are scored at it (:func:`score`, with reasons).
        budget: money the plan may spend at most (currency units).
        offers: :class:`serving.economics.Offer` objects or their command-line text
            (``"call:fixed=5,share=0,save=0.2"``), after the economics' own offers.
        economics: :data:`EconomicsLike` (margin, costs, contact cost, offers); None: ``RETENTION_ECONOMICS``.

    Returns:
        :class:`serving.plan.Plan`: ``rows`` (contacted customers: offer, cost, expected benefit, reasons),
        ``totals`` (spend, expected saved value, expected net benefit, ROI), ``budget_curve``, ``offers``,
        ``sleeping_dogs``. Bad budget, offers or economics raise :class:`ContractError` with one sentence.
    """
    from serving.plan import make_plan, plan_offers

    chosen = _economics(economics)
    merged = plan_offers(offers, chosen)  # bad offers fail before any scoring
    batch = score(model, data, as_of, economics=chosen)
    return make_plan(batch, merged, budget, dataclasses.replace(chosen, offers=()), meta=model.meta)


def rank(scored: ScoredBatch | pd.DataFrame, *, top_k: int | None = None) -> pd.DataFrame:
    """The retention list: customers by value at risk, highest first (exact values; ties by customer id).

    Args:
        scored: :func:`score`'s result (a :class:`~serving.scoring.ScoredBatch` or its frame), or any frame with
            ``customer_id`` and ``value_at_risk`` columns.
        top_k: keep the first ``top_k`` rows only (None: all).

    Returns:
        The rows in retention order with ``retention_rank`` (1 = act first) as the second column; a ScoredBatch
        becomes the nightly list's columns (:func:`serving.scoring.output_columns`).
    """
    from serving.ranking import rank_frame
    from serving.scoring import ScoredBatch, output_columns

    table = output_columns(scored) if isinstance(scored, ScoredBatch) else scored
    ranked = rank_frame(table)
    return ranked if top_k is None else ranked.head(top_k)


def reasons(scored: ScoredBatch, customer_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Reason codes as one row per (customer, reason), for the customers asked (default: all, in batch order).

    Returns:
        ``customer_id``, ``reason`` (1 = largest contribution), ``feature``, ``description``, ``value`` (the
        feature's value, None when missing), ``effect`` ("raises churn risk" / "lowers churn risk") and
        ``contribution`` (log-odds of churn), rounded as in the API's JSON. Raises ``KeyError`` for an id that
        is not in ``scored``.
    """
    from retention.analysis import reasons_frame
    from serving.scoring import reason_objects

    if customer_ids is None:
        rows = np.arange(len(scored))
    else:
        wanted = [str(c) for c in customer_ids]
        rows = pd.Index(scored.customer_id.astype(str)).get_indexer(wanted)
        if (rows < 0).any():
            missing = [c for c, r in zip(wanted, rows, strict=True) if r < 0]
            raise KeyError(f"not in the scored customers: {', '.join(missing[:5])}")
    return reasons_frame(scored.customer_id[rows].astype(str), [reason_objects(scored, int(r)) for r in rows])


def acquisition_forecast(
    data: Source,
    as_of: DateLike,
    *,
    horizon_days: int = 90,
    by: str = "channel",
    cohort_days: int = 90,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The new-customer forecast (``retention acquisition``): expected net value of a customer acquired on ``as_of``.

    Args:
        data: transactions (see the module docstring); rows after ``as_of`` are left out.
        as_of: UTC day, included: the last day whose outcomes are known.
        horizon_days: H: value = net spend on the first purchase day plus the H days after it.
        by: ``channel`` (acquisition channel = the first purchase day's largest purchase's), ``category`` or
            ``all``; without that column the forecast is for ``all`` (``attrs["caveat"]`` says so).
        cohort_days: acquisition days averaged: the ``cohort_days`` days ending on ``as_of - H``.
        confidence: of the CLT interval of each mean.

    Returns:
        One row per group and an ``all`` row (:data:`training.acquisition.COLUMNS`): cohort size and share, mean
        first-day value, mean value in the H days after, their sum ``value`` with ``value_low`` / ``value_high``,
        the repeat rate, and the same over 365 days from the customers acquired a year earlier when the data reaches
        back that far. ``attrs["caveat"]`` names the acquisition days used (the seasonality note). Semantics in
        :mod:`training.acquisition`.
    """
    from training.acquisition import acquisition_forecast as forecast

    day = _day(as_of)
    return forecast(_transactions(data, day), day, horizon_days, by, cohort_days=cohort_days, confidence=confidence)
