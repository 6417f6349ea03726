"""One training run at an as-of date: plan, dataset, heads (LightGBM, hybrid, BTYD), level, final bundle.

Steps (all dates are UTC days; ``V = as_of - H`` is the validation cutoff, see :mod:`training.dataset`):

1. The plan: labeled cutoffs and the validation scheme the history allows (``temporal``, ``customer_grouped`` or
   ``none``). With ``none`` (history shorter than H + ``min_history_days``) the version is BTYD-only: BG/NBD +
   Gamma-Gamma fitted at ``as_of``, the same bundle interface and outputs, not validated (it says so).
2. Features, labels and the BTYD prior (BG/NBD + Gamma-Gamma fitted at each cutoff) at every cutoff of the plan.
3. Selection models per head, plain LightGBM and hybrid (the BTYD prior as LightGBM's offset), with early stopping
   on ``V`` (``tune`` parameter sets; churn chosen by AUC, value by normalized Gini).
4. Honest validation metrics at ``V`` for lightgbm, hybrid, btyd and naive, side by side. Calibration and value
   level are *cross-fitted* on two halves of ``V``'s customers, so no customer's label calibrates its own score.
   Each head's kind is chosen on these metrics (see :func:`choose_head`); the product's model (``model`` in the
   metrics) is the chosen churn head with the chosen value head.
5. Final calibrator (isotonic, all of ``V``), boosters refitted on every labeled cutoff with the selected rounds.
6. The level: the value head is scaled so that its total at ``as_of`` equals the total of the level estimator that
   backtested best at the latest labeled cutoffs (BTYD, the recent run rate or last year's season; see
   :mod:`training.level`): ranking comes from the heads, the level from something that extrapolates.
7. Tier and segment thresholds from the scored population at ``as_of``, and the scorecard's reference (quantiles of
   that population and the composite's tier bounds, :func:`serving.scorecard.fit_reference`).
8. Intervals (:mod:`training.intervals`): per tier, the conformal quantiles of ``actual / expected value given a
   purchase`` of ``V``'s buying customers, scored with the cross-fitted churn probabilities and values of step 4;
   their coverage at ``V`` is cross-fitted on the same two halves (``interval_*`` metrics of the product).
   BTYD-only versions give purchase-day intervals only (nothing labeled to calibrate value intervals on).
9. Uplift (only with a campaign log, ``campaigns=``): the two uplift heads of :mod:`training.uplift`, fitted on the
   campaigns' features and outcomes at their cutoffs, evaluated on held-out customers against random and churn-risk
   targeting (the version's churn head at each cutoff), and put in the bundle (format 4) with the verdict
   ``trusted``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from features.contract import ContractError
from features.kernel import FEATURE_DESCRIPTIONS, PreparedTransactions, compute_features, date_to_day
from retention import progress
from serving import scorecard
from serving.btyd import BTYDModel
from serving.drift import reference_bins
from serving.intervals import IntervalCalibration
from serving.model import BTYD_COLUMNS, BundleMeta, ScoringModel, calibrate
from serving.scoring import CURRENT_VALUE_FEATURE
from training import baselines, heads, level
from training import intervals as interval_fit
from training import uplift as uplift_fit
from training.config import TrainingConfig, training_config
from training.dataset import TrainingPlan, build_dataset, customer_half, plan_training
from training.metrics import churn_metrics, interval_metrics, value_metrics

PRODUCT = "model"
"""Key of the product's model (chosen churn head + chosen value head) in the metrics and validation columns."""
CANDIDATES = ("lightgbm", "hybrid", "btyd")
"""The head kinds validation chooses from (the same names as :data:`serving.model.HEAD_KINDS`)."""
LEVEL_TOLERANCE = 0.10
"""The level a forecast should hold: total predicted / total actual within 1 +- 10% (backtests, scoreboard)."""


@dataclasses.dataclass
class PipelineResult:
    model: ScoringModel
    plan: TrainingPlan
    validation: pd.DataFrame
    """Rows at the validation cutoff: ids, labels, and each model's ``<model>_churn`` / ``<model>_value``."""
    metrics: dict[str, dict[str, float]]
    """``{model: {"churn_auc": .., ...}}`` for model (the product), lightgbm, hybrid, btyd and naive; empty for a
    BTYD-only version (nothing could be labeled)."""
    training_rows: int
    selection: dict[str, Any]
    btyd_params: dict[str, Any]
    importance: pd.DataFrame
    valid_features: pd.DataFrame
    """Feature rows (with labels) at the validation cutoff, for the champion gate and explanations."""
    population: pd.DataFrame
    """Feature rows of every customer at the as-of date (what the version scores first)."""
    choice: dict[str, str]
    """``churn_head``, ``value_head``, ``level_source``, ``validation_scheme`` and one sentence ``why`` each."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    config: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    """The training choices this result was fitted with."""
    interval_checks: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    """Cross-fitted interval checks at the validation cutoff: ``reliability`` (per level tau, the share of actual
    values at most Q(tau)) and ``tiers`` (per tier, coverage of the 80% interval and its promise); empty when no
    value interval could be calibrated."""
    uplift: uplift_fit.UpliftFit | None = None
    """The uplift heads' fit and held-out evaluation (step 9); None without a campaign log."""


def cross_fit(raw: np.ndarray, y: np.ndarray, folds: np.ndarray, fit, apply) -> np.ndarray:
    """Apply a post-processing fitted on the other fold to each fold's rows."""
    out = np.empty_like(raw)
    for k in (0, 1):
        train, test = folds != k, folds == k
        out[test] = apply(fit(raw[train], y[train]), raw[test]) if train.any() else raw[test]
    return out


def level_factor(pred: np.ndarray, actual: np.ndarray) -> float:
    total = float(np.sum(pred))
    return float(np.sum(actual)) / total if total > 0 else 1.0


def all_metrics(churned: np.ndarray, p: np.ndarray, actual: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    out = {f"churn_{k}": v for k, v in churn_metrics(churned, p).items()}
    out.update({f"value_{k}": v for k, v in value_metrics(actual, pred).items()})
    return out


def _fit_btyd_at_as_of(population: pd.DataFrame, as_of: dt.date, min_customers: int) -> BTYDModel:
    """BG/NBD + Gamma-Gamma at the as-of date; ContractError (exit 2) when nothing at all can be fitted (fewer than
    ``min_customers`` buyers, or no repeat purchase)."""
    buyers = int((population["n_purchase_days"] > 0).sum())
    if buyers < min_customers:
        raise ContractError(
            f"cannot train: {buyers} customer(s) with a purchase on or before {as_of}, at least {min_customers} needed"
        )
    try:
        return baselines.fit_btyd(population)
    except ValueError as exc:
        raise ContractError(f"cannot train at {as_of}: {exc}") from exc


def _btyd_warnings(model: BTYDModel, where: str) -> list[str]:
    return [f"BTYD fit at {where}: {w}" for w in model.warnings]


def _split(data: pd.DataFrame, plan: TrainingPlan) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Selection rows and validation rows for the plan's scheme (see :mod:`training.dataset`)."""
    at_v = (data["cutoff"] == plan.validation_cutoff).to_numpy()
    if plan.scheme == "temporal":
        selection = data["cutoff"].isin(plan.selection_cutoffs).to_numpy()
        return data[selection], data[at_v].reset_index(drop=True)
    half = customer_half(data["customer_id"], bit=1)
    return data[half == 0], data[at_v & (half == 1)].reset_index(drop=True)


def _select_heads(
    train: pd.DataFrame, valid: pd.DataFrame, columns: list[str], config: TrainingConfig
) -> dict[tuple[str, str], heads.FittedHead]:
    """The best selection model per (head, kind) for kinds lightgbm and hybrid over the config's ``tune`` parameter
    sets: churn by AUC, value by normalized Gini, both on ``valid`` (each head's raw prediction there kept as
    ``valid_raw``).

    Per parameter set the selection and validation rows are binned once (:class:`training.heads.Split`) and shared
    by its four fits, the plain kinds first (a hybrid fit leaves its init score on the shared Dataset)."""
    best: dict[tuple[str, str], heads.FittedHead] = {}
    score: dict[tuple[str, str], float] = {}
    y_churn = valid["churned"].to_numpy(dtype=np.float64)
    y_value = valid["future_value"].to_numpy(dtype=np.float64)
    sets = heads.sample_params(config)
    runs = [(o, kind, hybrid) for o in range(len(sets)) for hybrid in (False, True) for kind in ("churn", "value")]
    splits: dict[int, tuple[heads.Split, heads.Split]] = {}
    for index, kind, hybrid in progress.track(runs, "training heads", total=len(runs)):
        if index not in splits:
            splits.clear()  # the previous parameter set's bins are no longer needed
            rows = heads.split(train, columns)
            splits[index] = (rows, heads.split(valid, columns, reference=rows, keep_matrix=True))
        rows, valid_rows = splits[index]
        head = heads.fit_head(rows, valid_rows, columns, kind=kind, config=config, overrides=sets[index], hybrid=hybrid)
        head.valid_raw = heads.predict_raw(head, valid_rows, columns, kind=kind)
        if kind == "churn":
            metric = churn_metrics(y_churn, head.valid_raw)["auc"]
        else:
            metric = value_metrics(y_value, head.valid_raw)["normalized_gini"]
        key = (kind, "hybrid" if hybrid else "lightgbm")
        if metric > score.get(key, -np.inf):
            best[key], score[key] = head, metric
    return best


HEAD_GOALS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "churn": (("churn_auc",), ()),
    "value": (("value_normalized_gini", "value_spearman", "value_top20_capture"), ("value_mae",)),
}
"""Per head: (metrics where higher is better, primary first; metrics where lower is better) -- the goal metrics."""


def choose_head(metrics: dict[str, dict[str, float]], head: str) -> tuple[str, str]:
    """The head kind to deploy, from the validation metrics at ``V``.

    A supervised kind (lightgbm, hybrid) replaces BG/NBD + Gamma-Gamma only when it is at least as good as BTYD on
    *every* goal metric of the head (churn: AUC; value: normalized Gini, Spearman, top-20% capture and MAE); among
    those, the highest primary metric wins. One validation window is noisy, and a head that wins Gini by 0.001 while
    losing Spearman by 0.03 is not better: the classical model stays unless it is beaten on all counts.
    """
    higher, lower = HEAD_GOALS[head]
    primary = higher[0]

    def dominates_btyd(kind: str) -> bool:
        return all(metrics[kind][k] >= metrics["btyd"][k] for k in higher) and all(
            metrics[kind][k] <= metrics["btyd"][k] for k in lower
        )

    eligible = ["btyd", *(k for k in ("lightgbm", "hybrid") if dominates_btyd(k))]
    chosen = max(eligible, key=lambda k: (metrics[k][primary], -eligible.index(k)))
    detail = ", ".join(f"{k} {metrics[k][primary]:.4f}" for k in CANDIDATES)
    beaten = ", ".join(eligible[1:]) or "none"
    return chosen, (
        f"{head} head: {chosen}; at the validation cutoff BTYD is matched or beaten on every goal metric by: {beaten};"
        f" {primary}: {detail}"
    )


def choose_level(
    prep: PreparedTransactions,
    plan: TrainingPlan,
    data: pd.DataFrame,
    btyd_now: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig,
) -> level.LevelChoice:
    """The total forecast at ``as_of``: every estimator of :mod:`training.level`, backtested at the config's
    ``level_backtest_cutoffs`` latest labeled cutoffs of ``data`` (their actual next-H-day totals and the BTYD
    fitted at each are already there); ``config.level_source`` forces one.
    ``btyd_now``: BTYD's (P(churn), expected value) of every customer at ``as_of``."""
    horizon = plan.horizon_days
    btyd_total = float(btyd_now[1].sum())
    totals: dict[int, level.Totals] = {}
    if not data.empty:
        sums = data.groupby("cutoff")[["future_value", "btyd_value"]].sum()
        totals = {
            date_to_day(c): level.Totals(float(r["future_value"]), float(r["btyd_value"])) for c, r in sums.iterrows()
        }
    as_of = date_to_day(plan.as_of)
    at_as_of = level.estimates(prep, as_of, horizon, btyd_total, totals.get(as_of - horizon))
    backtests = [
        (level.estimates(prep, day, horizon, totals[day].btyd, totals.get(day - horizon)), totals[day].actual)
        for day in sorted(totals)[-config.level_backtest_cutoffs :]
    ]
    try:
        return level.choose(
            config.level_source,
            at_as_of,
            backtests,
            rebase_above=config.level_rebase_above,
            seasonal_within=config.seasonal_within,
        )
    except ValueError as exc:
        raise ContractError(str(exc)) from exc


def choose_churn_rate(
    prep: PreparedTransactions,
    plan: TrainingPlan,
    data: pd.DataFrame,
    btyd_now: tuple[np.ndarray, np.ndarray],
    config: TrainingConfig,
) -> level.LevelChoice:
    """The churn rate at ``as_of``: the estimators of :data:`training.level.CHURN_ESTIMATORS`, backtested at the
    latest labeled cutoffs of ``data`` (their observed churn rates and BTYD's mean churn probability there)."""
    horizon = plan.horizon_days
    btyd_mean = float(btyd_now[0].mean())
    rates: dict[int, tuple[float, float]] = {}
    if not data.empty:
        means = data.groupby("cutoff")[["churned", "btyd_churn"]].mean()
        rates = {date_to_day(c): (float(r["churned"]), float(r["btyd_churn"])) for c, r in means.iterrows()}

    def btyd_at(day: int) -> float | None:
        return rates[day][1] if day in rates else None

    as_of = date_to_day(plan.as_of)
    at_as_of = level.churn_estimates(prep, as_of, horizon, btyd_mean, btyd_at(as_of - horizon))
    backtests = [
        (level.churn_estimates(prep, day, horizon, rates[day][1], btyd_at(day - horizon)), rates[day][0])
        for day in sorted(rates)[-config.level_backtest_cutoffs :]
    ]
    return level.choose_churn_rate("auto", at_as_of, backtests, seasonal_within=config.seasonal_within)


def _btyd_reference(population: pd.DataFrame) -> dict[str, float]:
    """Median BTYD summary of the customers with a purchase (whole days: a valid summary point)."""
    buyers = population[population["n_purchase_days"] > 0]
    return {c: float(np.floor(np.median(buyers[c].to_numpy(dtype=np.float64)))) for c in BTYD_COLUMNS}


def _finish(
    draft: BundleMeta,
    churn_booster,
    value_booster,
    population: pd.DataFrame,
    target_total: float,
    churn: level.LevelChoice,
    tier_top_shares: tuple[float, ...],
    intervals: IntervalCalibration,
) -> ScoringModel:
    """Level (the raw value head's total at as-of scaled to ``target_total``), the churn rate (probabilities shifted
    to ``churn``'s rate unless it is ``recent`` or ``none``), tiers (expected-value quantiles at the cumulative
    ``tier_top_shares``), segments, drift reference, the interval calibration, the scorecard's reference (quantiles of
    the population at as-of, composite tier bounds at ``tier_top_shares``: :func:`serving.scorecard.fit_reference`)."""
    columns = list(draft.feature_columns)
    X_now = population[columns].to_numpy(dtype=np.float64)
    model = ScoringModel(churn_booster, value_booster, draft)
    raw_total = float(model.raw_value(X_now).sum())
    shift = 0.0
    if churn.source not in ("recent", "none"):
        shift = level.shift_to_mean(model.calibrate(model.raw_churn(X_now)), churn.total)
    draft = dataclasses.replace(
        draft,
        level_factor=target_total / raw_total if raw_total > 0 else 1.0,
        churn_shift=shift,
        churn_rate_source=churn.source,
    )
    now = ScoringModel(churn_booster, value_booster, draft).score(X_now)
    expected = now.expected_value
    reference = scorecard.fit_reference(
        X_now, columns, now.churn_probability, expected, draft.margin, draft.tier_names, tier_top_shares
    )
    meta = dataclasses.replace(
        draft,
        tier_thresholds=interval_fit.tier_thresholds(expected, tier_top_shares),
        intervals=intervals.to_dict(),
        segment_current_threshold=float(np.median(np.nan_to_num(population[CURRENT_VALUE_FEATURE].to_numpy()))),
        segment_future_threshold=float(np.median(expected)),
        feature_reference={c: reference_bins(X_now[:, j]) for j, c in enumerate(columns)},
        scorecard=reference.to_dict(),
    )
    return ScoringModel(churn_booster, value_booster, meta)


def fit_pipeline(
    prep: PreparedTransactions,
    as_of: dt.date,
    horizon_days: int | None = None,
    *,
    config: TrainingConfig | None = None,
    campaigns: pd.DataFrame | None = None,
    **choices: Any,
) -> PipelineResult:
    """Train one model version at ``as_of``: the whole run behind ``retention train``, without MLflow.

    Args:
        prep: contract-checked transactions, indexed (:func:`features.kernel.index_transactions`). Features read
            days on or before each cutoff; every label window ends on or before ``as_of``.
        as_of: the UTC day the version is trained for (included): its features are the first the version scores.
        horizon_days: H in days; replaces ``config.horizon_days`` when given.
        config: the training choices (default: :class:`~training.config.TrainingConfig`'s defaults).
        campaigns: a campaign log prepared by :func:`features.campaigns.prepare_campaigns` (the customers' ids of
            ``prep``), whose outcome windows (H days after each send day) end by ``as_of``: the version then gets
            uplift heads (step 9, :mod:`training.uplift`; ``result.uplift``). None: no uplift heads.
        **choices: single config fields to change (``seed=1``, ``tier_top_shares=(0.1, 0.3, 0.6)``); ``None``
            keeps the config's value.

    Returns:
        A :class:`PipelineResult`: the scoring bundle (``model``: churn probability over the next H days, expected
        value in currency units x margin x discount), the plan, validation rows and metrics at the validation cutoff
        ``as_of - H`` for the product, each candidate head and the baselines, the choices with one sentence why,
        and the config used.

    The steps are those of the module docstring: :meth:`_Run.btyd_only` when no cutoff can be labeled (a version
    is trained on any history BTYD can fit), else :meth:`_Run.supervised`. Raises :class:`ContractError` (exit 2)
    only when nothing at all can be fitted (fewer than ``config.min_customers`` buyers, no repeat purchase by
    ``as_of``), for an ``as_of`` before the first transaction, or for a bad option.
    """
    config = training_config(config, horizon_days=horizon_days, **choices)
    _check_request(prep, as_of, config)
    population = compute_features(prep, as_of)
    btyd_now = _fit_btyd_at_as_of(population, as_of, config.min_customers)
    plan = plan_training(prep, as_of, config=config)
    draft = _draft_meta(prep.columns, population, btyd_now, plan, config)
    data = _labeled_rows(prep, plan)
    # BTYD's (P(churn), expected value) of every customer at as-of, scored once for both choices
    scored = ScoringModel(None, None, draft).btyd_scores(population[list(prep.columns)].to_numpy(dtype=np.float64))
    total = choose_level(prep, plan, data, scored, config)
    churn = choose_churn_rate(prep, plan, data, scored, config)
    run = _Run(prep, draft, plan, data, population, btyd_now, _btyd_warnings(btyd_now, str(as_of)), config)
    if plan.scheme == "none" or data.empty or not (data["cutoff"] == plan.validation_cutoff).any():
        result = run.btyd_only(total, churn)
    else:
        if plan.scheme != "temporal":
            run.warnings.append(f"validation scheme {plan.describe()}")
        result = run.supervised(total, churn)
    return result if campaigns is None else _add_uplift(result, prep, campaigns, as_of, config)


def _add_uplift(
    result: PipelineResult, prep: PreparedTransactions, campaigns: pd.DataFrame, as_of: dt.date, config: TrainingConfig
) -> PipelineResult:
    """Step 9: the uplift heads fitted on ``campaigns`` put in the result's bundle (the gate's verdict warned about
    when they are not trusted)."""
    with progress.step(f"uplift heads on {len(campaigns):,} campaign rows"):
        fit = uplift_fit.fit_campaign_uplift(
            prep, campaigns, result.model, as_of=as_of, seed=config.seed, num_threads=config.num_threads
        )
    for w in fit.warnings:
        result.warnings.append(w)
        progress.warn(w)
    if not fit.trusted:
        m = fit.metrics
        warning = (
            f"uplift heads not trusted: held-out Qini {m['uplift_qini_model']:.4f} does not beat churn-risk targeting"
            f" ({m['uplift_qini_risk']:.4f}) and random (95% quantile {m['uplift_qini_random_p95']:.4f}); the"
            " version scores no uplift (a plan falls back to the assumed save rate)"
        )
        result.warnings.append(warning)
        progress.warn(warning)
    return dataclasses.replace(result, model=uplift_fit.with_uplift(result.model, fit), uplift=fit)


def _check_request(prep: PreparedTransactions, as_of: dt.date, config: TrainingConfig) -> None:
    """Refuse (ContractError) a level source that does not exist and an as-of date before the first transaction."""
    if config.level_source not in level.SOURCES:
        raise ContractError(f"--level-source must be one of {', '.join(level.SOURCES)}, got '{config.level_source}'")
    if date_to_day(as_of) < int(prep.day.min()):
        raise ContractError(f"cannot train at {as_of}: it is before the first transaction")


def _draft_meta(
    columns: list[str], population: pd.DataFrame, btyd_now: BTYDModel, plan: TrainingPlan, config: TrainingConfig
) -> BundleMeta:
    """The bundle's metadata before anything is fitted: two BTYD heads, identity calibration, level 1, no tiers."""
    return BundleMeta(
        feature_columns=tuple(columns),
        horizon_days=config.horizon_days,
        trained_as_of=str(plan.as_of),
        calibrator_x=(0.0, 1.0),
        calibrator_y=(0.0, 1.0),
        level_factor=1.0,
        margin=config.margin,
        discount_rate=config.discount_rate,
        tier_names=config.tier_names,
        tier_thresholds=(0.0,) * len(config.tier_names),
        segment_current_threshold=0.0,
        segment_future_threshold=0.0,
        feature_descriptions={c: FEATURE_DESCRIPTIONS[c] for c in columns},
        churn_head="btyd",
        value_head="btyd",
        btyd=btyd_now.to_dict(),
        btyd_reference=_btyd_reference(population),
        level_source="btyd",
        validation_scheme=plan.scheme,
    )


def _labeled_rows(prep: PreparedTransactions, plan: TrainingPlan) -> pd.DataFrame:
    """Features, labels and BTYD priors at every cutoff of the plan (empty when nothing can be labeled)."""
    if not plan.cutoffs:
        return pd.DataFrame()
    with progress.step(f"features, labels and BTYD priors at {len(plan.cutoffs)} cutoffs"):
        return build_dataset(prep, list(plan.cutoffs), plan.horizon_days)


def _level_selection(total: level.LevelChoice, churn: level.LevelChoice) -> dict[str, float]:
    """The level's and churn rate's figures for the MLflow params: every estimate at as-of and its backtest error."""
    return {
        **{f"level_total_{name}": value for name, value in total.estimates.items()},
        **{f"level_backtest_error_{name}": value for name, value in total.backtest_errors.items()},
        **{f"churn_rate_{name}": value for name, value in churn.estimates.items()},
        **{f"churn_rate_backtest_error_{name}": value for name, value in churn.backtest_errors.items()},
    }


def _choice(
    plan: TrainingPlan,
    heads_chosen: tuple[tuple[str, str], tuple[str, str]],
    total: level.LevelChoice,
    churn: level.LevelChoice,
) -> dict[str, str]:
    """:attr:`PipelineResult.choice` from ``((churn_kind, why), (value_kind, why))`` and the level choices."""
    (churn_kind, why_churn), (value_kind, why_value) = heads_chosen
    return {
        "churn_head": churn_kind,
        "value_head": value_kind,
        "level_source": total.source,
        "validation_scheme": plan.scheme,
        "why_churn": why_churn,
        "why_value": why_value,
        "why_level": total.why,
        "churn_rate_source": churn.source,
        "why_churn_rate": churn.why,
    }


@dataclasses.dataclass
class _Validation:
    """The supervised path's validation at ``V``: rows with every model's scores, metrics, the chosen heads."""

    rows: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    raw_churn: dict[str, np.ndarray]
    """Uncalibrated P(churn) of each candidate kind on the validation rows (the final calibrator is fitted on it)."""
    churn: tuple[str, str]
    """(chosen churn kind, why)."""
    value: tuple[str, str]
    """(chosen value kind, why)."""
    interval_checks: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Run:
    """One training run after the plan: the state both paths of :func:`fit_pipeline` share."""

    prep: PreparedTransactions
    draft: BundleMeta
    plan: TrainingPlan
    data: pd.DataFrame
    population: pd.DataFrame
    btyd_now: BTYDModel
    warnings: list[str]
    config: TrainingConfig

    def btyd_only(self, total: level.LevelChoice, churn: level.LevelChoice) -> PipelineResult:
        """A version with two BTYD heads: nothing could be labeled, so nothing is validated (the card says so)."""
        warnings = [*self.warnings, f"BTYD-only version: {self.plan.describe()}"]
        for w in warnings:
            progress.warn(w)
        draft = dataclasses.replace(self.draft, level_source=total.source)
        no_labels = IntervalCalibration(None, None, level_log_sd=_level_log_sd(total))
        model = _finish(draft, None, None, self.population, total.total, churn, self.config.tier_top_shares, no_labels)
        why = "no labeled cutoff: BG/NBD + Gamma-Gamma fitted at the as-of date, not validated"
        return PipelineResult(
            model=model,
            plan=self.plan,
            validation=pd.DataFrame(columns=["customer_id", "cutoff", "churned", "future_value"]),
            metrics={},
            training_rows=0,
            selection={"selection_rows": 0, "validation_rows": 0, **_level_selection(total, churn)},
            btyd_params=self.btyd_now.to_dict(),
            importance=pd.DataFrame(columns=["feature", "churn_gain", "value_gain"]),
            valid_features=self.population.iloc[0:0],
            population=self.population,
            choice=_choice(self.plan, (("btyd", why), ("btyd", why)), total, churn),
            warnings=warnings,
            config=self.config,
        )

    def supervised(self, total: level.LevelChoice, churn: level.LevelChoice) -> PipelineResult:
        """Steps 3-7 of the module docstring: select, validate and choose the heads, refit, level, tiers."""
        columns = list(self.draft.feature_columns)
        train, valid = _split(self.data, self.plan)
        best = _select_heads(train, valid, columns, self.config)
        checked = self._validate(train, valid, best)
        churn_kind, value_kind = checked.churn[0], checked.value[0]
        final = self._refit(best, churn_kind, value_kind)
        calib_x, calib_y = heads.fit_isotonic(checked.raw_churn[churn_kind], valid["churned"].to_numpy(np.float64))
        draft = dataclasses.replace(
            self.draft,
            calibrator_x=tuple(calib_x.tolist()),
            calibrator_y=tuple(calib_y.tolist()),
            churn_head=churn_kind,
            value_head=value_kind,
            level_source=total.source,
        )
        calibration = self._interval_calibration(checked.rows, total)
        model = _finish(
            draft,
            final["churn"],
            final["value"],
            self.population,
            total.total,
            churn,
            self.config.tier_top_shares,
            calibration,
        )
        for w in self.warnings:
            progress.warn(w)
        return PipelineResult(
            model=model,
            plan=self.plan,
            validation=checked.rows,
            metrics=checked.metrics,
            training_rows=len(self.data),
            selection={
                **{f"{h}_{k}_rounds": best[(h, k)].best_iteration for h in ("churn", "value") for k in CANDIDATES[:2]},
                "churn_params": self._searched(best[("churn", churn_kind if churn_kind != "btyd" else "lightgbm")]),
                "value_params": self._searched(best[("value", value_kind if value_kind != "btyd" else "lightgbm")]),
                **_level_selection(total, churn),
                "selection_rows": len(train),
                "validation_rows": len(valid),
            },
            btyd_params=self.btyd_now.to_dict(),
            importance=_importance(columns, final),
            valid_features=valid,
            population=self.population,
            choice=_choice(self.plan, (checked.churn, checked.value), total, churn),
            warnings=self.warnings,
            config=self.config,
            interval_checks=checked.interval_checks,
        )

    def _interval_calibration(self, rows: pd.DataFrame, total: level.LevelChoice) -> IntervalCalibration:
        """Step 8: the tiers' conformal ratio quantiles from the product's cross-fitted scores at ``V`` (purchase-day
        intervals only, with a warning, when nobody bought in ``V``'s window)."""
        p, ev = rows[f"{PRODUCT}_churn"].to_numpy(np.float64), rows[f"{PRODUCT}_value"].to_numpy(np.float64)
        tiers = interval_fit.tiers_by_rank(ev, self.config.tier_top_shares)
        try:
            return interval_fit.fit_calibration(
                p,
                ev,
                rows["future_value"].to_numpy(np.float64),
                tiers,
                self.config.tier_names,
                level_log_sd=_level_log_sd(total),
            )
        except ValueError as exc:
            self.warnings.append(f"no value intervals: {exc}")
            return IntervalCalibration(None, None, level_log_sd=_level_log_sd(total))

    def _validate(
        self, train: pd.DataFrame, valid: pd.DataFrame, best: dict[tuple[str, str], heads.FittedHead]
    ) -> _Validation:
        """Cross-fitted metrics at ``V`` for every candidate kind, the heads chosen on them, the product and naive."""
        y_churn = valid["churned"].to_numpy(dtype=np.float64)
        y_value = valid["future_value"].to_numpy(dtype=np.float64)
        raw_churn = {"btyd": valid["btyd_churn"].to_numpy(dtype=np.float64)}
        raw_value = {"btyd": valid["btyd_value"].to_numpy(dtype=np.float64)}
        for kind in ("lightgbm", "hybrid"):
            raw_churn[kind] = _valid_raw(best[("churn", kind)], valid, self.draft.feature_columns, "churn")
            raw_value[kind] = _valid_raw(best[("value", kind)], valid, self.draft.feature_columns, "value")

        folds = customer_half(valid["customer_id"], bit=0)
        rows = valid[["customer_id", "cutoff", "churned", "future_value"]].copy()
        metrics: dict[str, dict[str, float]] = {}
        for name in CANDIDATES:
            p = cross_fit(raw_churn[name], y_churn, folds, heads.fit_isotonic, lambda k, x: calibrate(x, *k))
            v = cross_fit(raw_value[name], y_value, folds, level_factor, lambda f, x: x * f)
            rows[f"{name}_churn"], rows[f"{name}_value"] = p, v
            metrics[name] = all_metrics(y_churn, p, y_value, v)
        churn_choice, value_choice = choose_head(metrics, "churn"), choose_head(metrics, "value")
        rows[f"{PRODUCT}_churn"] = rows[f"{churn_choice[0]}_churn"]
        rows[f"{PRODUCT}_value"] = rows[f"{value_choice[0]}_value"]
        metrics[PRODUCT] = all_metrics(
            y_churn, rows[f"{PRODUCT}_churn"].to_numpy(), y_value, rows[f"{PRODUCT}_value"].to_numpy()
        )
        checks = self._check_intervals(rows, folds, metrics[PRODUCT])
        with progress.step("baselines (naive)"):
            rows["naive_churn"] = baselines.naive_churn(train, valid)
            rows["naive_value"] = baselines.naive_value(valid, self.plan.horizon_days)
            metrics["naive"] = all_metrics(
                y_churn, rows["naive_churn"].to_numpy(), y_value, rows["naive_value"].to_numpy()
            )
        return _Validation(rows, metrics, raw_churn, churn_choice, value_choice, checks)

    def _check_intervals(
        self, rows: pd.DataFrame, folds: np.ndarray, metrics: dict[str, float]
    ) -> dict[str, pd.DataFrame]:
        """Cross-fitted value intervals of the product at ``V`` (each half calibrated on the other): the
        ``<product>_value_p10/p50/p90/low/high`` columns of ``rows``, the ``interval_*`` metrics added to
        ``metrics``, and the reliability and per-tier tables (empty when a half has no buyer)."""
        p, ev = rows[f"{PRODUCT}_churn"].to_numpy(np.float64), rows[f"{PRODUCT}_value"].to_numpy(np.float64)
        y = rows["future_value"].to_numpy(np.float64)
        names = self.config.tier_names
        tiers = interval_fit.tiers_by_rank(ev, self.config.tier_top_shares)
        fitted = interval_fit.cross_fitted_intervals(p, ev, y, tiers, folds, names)
        if fitted is None:
            return {}
        for name in ("p10", "p50", "p90", "low", "high"):
            rows[f"{PRODUCT}_value_{name}"] = getattr(fitted, name)
        found = interval_metrics(y, fitted.low, fitted.high, p, tiers == 0)
        metrics.update({f"interval_{k}": v for k, v in found.items()})
        return {
            "reliability": interval_fit.reliability_table(y, fitted.quantiles, p),
            "tiers": interval_fit.tier_coverage(y, fitted.low, fitted.high, p, tiers, names),
        }

    def _refit(self, best: dict[tuple[str, str], heads.FittedHead], churn_kind: str, value_kind: str) -> dict[str, Any]:
        """The chosen supervised heads refitted on every labeled row with their selected rounds (None for BTYD); the
        rows are binned once for both refits (a plain head first: see :class:`training.heads.Split`)."""
        columns = list(self.draft.feature_columns)
        final: dict[str, Any] = {"churn": None, "value": None}
        chosen = [(h, k) for h, k in (("churn", churn_kind), ("value", value_kind)) if k != "btyd"]
        with progress.step(f"refitting the chosen heads on {len(self.data):,} rows"):
            rows = heads.split(self.data, columns) if chosen else None
            for head, kind in sorted(chosen, key=lambda hk: hk[1] == "hybrid"):
                final[head] = heads.refit_head(rows, columns, best[(head, kind)], kind=head)
        return final

    def _searched(self, head: heads.FittedHead) -> dict[str, Any]:
        """The selected values of the searched parameters (for the MLflow params)."""
        return {k: v for k, v in head.params.items() if k in self.config.search_space}


def _valid_raw(head: heads.FittedHead, valid: pd.DataFrame, columns: tuple[str, ...], kind: str) -> np.ndarray:
    """A selection head's raw prediction on the validation rows (the one :func:`_select_heads` kept, if any)."""
    if head.valid_raw is not None:
        return head.valid_raw
    return heads.predict_raw(head, valid, list(columns), kind=kind)


def _level_log_sd(total: level.LevelChoice) -> float | None:
    """The level's uncertainty for the equity interval: from the chosen estimator's backtest error, if any."""
    return interval_fit.level_log_sd(total.backtest_errors.get(total.source))


def _importance(columns: list[str], final: dict[str, Any]) -> pd.DataFrame:
    """Gain importance of the final boosters per feature (zeros for a BTYD head), by churn gain descending."""
    gains = {
        head: final[head].feature_importance("gain") if final[head] is not None else np.zeros(len(columns))
        for head in ("churn", "value")
    }
    return pd.DataFrame({"feature": columns, "churn_gain": gains["churn"], "value_gain": gains["value"]}).sort_values(
        "churn_gain", ascending=False, ignore_index=True
    )
