"""The uplift heads: who is persuadable, fitted on randomized campaigns and checked on held-out customers.

Data (:func:`features.campaigns.campaign_training_frame`): one row per (customer, campaign) of a campaign log with a
held-out control group, the kernel's features at the campaign's cutoff (the UTC day of ``sent_at``: nothing after it
is read) and the outcome ``retained`` (1 = a purchase in the ``horizon_days`` days after the cutoff), point in time.

Learners (:data:`serving.model.UPLIFT_ROLES`; the uplift of a customer with features X is P(retained | contacted, X)
- P(retained | control, X), in [-1, 1], :func:`serving.model.uplift_from_heads`):

- ``t_learner`` (two models): one LightGBM binary head on ``retained`` of the contacted customers
  (``uplift_treated``), one of the control customers (``uplift_control``); uplift = their difference;
- ``x_learner`` (Kunzel et al. 2019), built on the T-learner's heads: the effect imputed on each contacted customer,
  retained - the control head's P(retained | X), and on each control customer, the treated head's P(retained | X) -
  retained, each arm's imputed effects learned by a LightGBM regression head (``uplift_tau_treated``,
  ``uplift_tau_control``); uplift = g x the control arm's head + (1 - g) x the treated arm's, g = the campaigns'
  treated share (the propensity of a randomized campaign).

Both are fitted; the bundle keeps the one with the higher held-out Qini coefficient (below; the T-learner on a tie),
and the other's coefficient is recorded beside it (``uplift_qini_t_learner``, ``uplift_qini_x_learner``). Each head
stops early on a customer-grouped fifth of its training rows (:data:`STOPPING_SHARE`; binary log loss, squared error)
and is refitted on all its training rows with the rounds found. The heads use the bundle's feature columns (the
kernel's), are saved as LightGBM native text and nothing is pickled.

Evaluation, customer-grouped: :data:`HOLDOUT_SHARE` of the customers (a CRC-32 of their id, so a customer's
campaigns are all on one side, independently of the churn heads' validation split) are held out of both heads. On
their rows (:mod:`training.uplift_metrics`) the Qini coefficient and the uplift at 10/20/30 % of three targetings:

- ``model``: the chosen learner's uplift, highest first;
- ``risk``: the churn risk at the cutoff, highest first -- the churn head's calibrated P(no purchase in the
  horizon) of the bundle trained alongside (``risk_source`` ``churn_head``), or, without one,
  1 - the control head's P(retained) (``control_head``);
- ``random``: the expectation of random targeting (a Qini coefficient of 0, an uplift at k equal to the average
  effect), and ``qini_random_p95``, the 95% quantile of random orders' Qini coefficients on these rows.

The champion gate idea for uplift: the heads are ``trusted`` when their held-out Qini coefficient beats both the
risk targeting's and the random p95 (better than 95% of random orders). Only trusted heads fill
:attr:`serving.model.Scores.uplift`; untrusted ones are still versioned in the bundle (with their metrics), the
scores carry no uplift and a plan falls back to the assumed save rate. The served heads are those evaluated: they
are not refitted on the held-out customers, so the held-out figures describe exactly what is served.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import zlib
from typing import Any

import numpy as np
import pandas as pd

from features.campaigns import campaign_training_frame
from features.contract import ContractError
from features.kernel import PreparedTransactions, date_to_day, day_to_date
from serving.model import UPLIFT_LEARNERS, UPLIFT_ROLES, BundleMeta, ScoringModel, uplift_from_heads
from training import heads
from training.config import DEFAULT_CONFIG
from training.uplift_metrics import UPLIFT_AT, qini_coefficient, qini_curve, random_qini, uplift_metrics

__all__ = [
    "GOAL_RATIO",
    "HOLDOUT_SHARE",
    "LEARNERS",
    "TARGETINGS",
    "UpliftFit",
    "fit_campaign_uplift",
    "fit_uplift",
    "goal_figures",
    "uplift_holdout",
    "with_uplift",
]

LEARNERS = UPLIFT_LEARNERS
"""The uplift learners fitted and compared (:data:`serving.model.UPLIFT_ROLES`), the preferred one first."""
HOLDOUT_SHARE = 0.3
"""Share of the campaign customers held out of both heads to evaluate them."""
STOPPING_SHARE = 0.2
"""Share of the training customers each head stops early on before its refit on all of them."""
MIN_ROWS_PER_ARM = 50
"""Fewest training rows per arm (treated, control) and held-out rows per arm an uplift fit accepts."""
UPLIFT_PARAMS: dict[str, Any] = {**DEFAULT_CONFIG.churn_params, "min_data_in_leaf": 50}
"""LightGBM parameters of every uplift head (the churn head's shape: shallow trees, at least 50 rows a leaf; the
X-learner's heads with ``objective`` ``regression``)."""
MAX_ROUNDS = 1000
EARLY_STOPPING_ROUNDS = 50
TARGETINGS = ("model", "risk", "random")
"""The targetings compared on the held-out customers (module docstring)."""
RANDOM_DRAWS = 200
"""Random orders behind ``qini_random_p95``."""
GOAL_RATIO = 1.5
"""Issue 12's goal: the uplift plan earns at least this multiple of the incremental profit of contacting the same
number of customers by churn risk (:func:`goal_figures`)."""


def _hashed_share(ids: pd.Series, salt: str, share: float) -> np.ndarray:
    """True for about ``share`` of the distinct ids, stably: a CRC-32 of ``salt:id`` below ``share`` of 2**32."""
    bound = share * 2**32
    return np.fromiter((zlib.crc32(f"{salt}:{i}".encode()) < bound for i in ids), dtype=bool, count=len(ids))


def uplift_holdout(customer_ids: pd.Series, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """True for the rows whose customer is held out of the uplift heads (about ``share`` of the customers, every
    campaign row of a customer on the same side, always the same customers)."""
    return _hashed_share(customer_ids, "uplift-holdout", share)


@dataclasses.dataclass
class UpliftFit:
    """An uplift fit: the chosen learner's two heads, their bundle metadata and the held-out evaluation."""

    boosters: dict[str, Any]
    """Role (:data:`serving.model.UPLIFT_ROLES` of the chosen learner) -> LightGBM booster."""
    meta: dict[str, Any]
    """:attr:`serving.model.BundleMeta.uplift`: learner, files, campaign ids, horizon, trusted, metrics, ..."""
    metrics: dict[str, float]
    """Held-out metrics, MLflow names: ``uplift_qini_<targeting>`` for model (the chosen learner), risk and random,
    ``uplift_qini_random_p95``, ``uplift_<targeting>_at_<pct>``, ``uplift_qini_<learner>`` of every learner fitted,
    ``uplift_ate`` (treated - control retention rate), ``uplift_holdout_rows``, ``uplift_trusted`` (1/0)."""
    holdout: pd.DataFrame
    """The held-out rows: ``customer_id``, ``campaign_id``, ``cutoff``, ``treatment``, ``retained``, ``uplift`` (the
    heads'), ``risk`` (the churn risk they are compared with)."""
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    """Qini curve per targeting on the held-out rows (:func:`training.uplift_metrics.qini_curve`; random: the
    straight line)."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Campaign rows left out (outcome window not over by the as-of date, customer unknown at the cutoff)."""

    @property
    def trusted(self) -> bool:
        return bool(self.meta["trusted"])


def _arm_rows(frame: pd.DataFrame, mask: np.ndarray, what: str) -> None:
    for arm, name in ((1, "treated"), (0, "control")):
        rows = int((mask & (frame["treatment"].to_numpy() == arm)).sum())
        if rows < MIN_ROWS_PER_ARM:
            raise ContractError(
                f"cannot fit uplift heads: {rows} {name} campaign row(s) among the {what} customers, at least"
                f" {MIN_ROWS_PER_ARM} needed (a campaign log with a held-out control group of enough known customers)"
            )


def _fit_arm(X: np.ndarray, y: np.ndarray, stop: np.ndarray, columns: list[str], params: dict[str, Any]):
    """One head: early stopping on the ``stop`` rows (binary log loss or squared error, by objective), then the refit
    on every row with the rounds found."""
    lgb = heads._lightgbm()
    fit = lgb.Dataset(X[~stop], y[~stop], feature_name=columns, free_raw_data=True)
    valid = lgb.Dataset(X[stop], y[stop], reference=fit)
    booster = lgb.train(
        {**params, "metric": "binary_logloss" if params["objective"] == "binary" else "l2"},
        fit,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    rounds = int(booster.best_iteration or booster.current_iteration())
    final = lgb.train(params, lgb.Dataset(X, y, feature_name=columns), num_boost_round=rounds)
    return final, rounds


def fit_uplift(
    X: pd.DataFrame,
    outcomes: pd.DataFrame,
    columns: list[str] | tuple[str, ...],
    *,
    horizon_days: int,
    risk: np.ndarray | None = None,
    seed: int = 0,
    num_threads: int = 0,
    holdout_share: float = HOLDOUT_SHARE,
    learners: tuple[str, ...] = LEARNERS,
) -> UpliftFit:
    """Fit and evaluate the uplift heads (module docstring) on campaign rows.

    Args:
        X: features at each row's cutoff (:func:`features.campaigns.campaign_training_frame`), with ``columns``.
        outcomes: the rows' outcomes (same function): ``customer_id``, ``campaign_id``, ``cutoff``, ``treatment``
            (1/0), ``retained`` (1/0, a purchase within ``horizon_days`` after the cutoff).
        columns: the feature columns of the heads (the bundle's).
        horizon_days: the outcome window the rows were labeled with (days).
        risk: churn risk per row (P(no purchase in the horizon) at the cutoff, e.g. the churn head's), the targeting
            compared with; None: 1 - the control head's P(retained).
        seed, num_threads: LightGBM's.
        holdout_share: share of customers held out for the evaluation.
        learners: the learners compared (:data:`LEARNERS`); the one with the best held-out Qini is kept.

    Raises :class:`ContractError` when an arm has fewer than :data:`MIN_ROWS_PER_ARM` rows on either side.
    """
    columns = list(columns)
    if len(X) != len(outcomes):
        raise ValueError(f"X has {len(X)} rows but outcomes {len(outcomes)}")
    holdout = uplift_holdout(outcomes["customer_id"], holdout_share)
    _arm_rows(outcomes, ~holdout, "training")
    _arm_rows(outcomes, holdout, "held-out")
    matrix = X[columns].to_numpy(dtype=np.float64)
    y = outcomes["retained"].to_numpy(dtype=np.float64)
    t = outcomes["treatment"].to_numpy(dtype=np.int8)
    stop = _hashed_share(outcomes["customer_id"], "uplift-stop", STOPPING_SHARE)
    unknown = [name for name in learners if name not in UPLIFT_ROLES]
    if unknown or not learners:
        raise ContractError(f"uplift learner {unknown or learners} is not one of {', '.join(UPLIFT_ROLES)}")
    params = {**UPLIFT_PARAMS, "seed": seed, "num_threads": num_threads}
    propensity = float(t[~holdout].mean())
    candidates, rounds = _fit_learners(matrix, y, t, ~holdout, stop, columns, params, learners)

    held = matrix[holdout]
    estimates = {name: uplift_from_heads(name, candidates[name], held, propensity, num_threads) for name in learners}
    y_held, t_held = y[holdout], t[holdout]
    qini = {name: qini_coefficient(y_held, t_held, u) for name, u in estimates.items()}
    learner = max(learners, key=lambda name: (qini[name], -learners.index(name)))
    rows = outcomes.loc[holdout, ["customer_id", "campaign_id", "cutoff", "treatment", "retained"]].reset_index(
        drop=True
    )
    rows["uplift"] = estimates[learner]
    if risk is not None:
        rows["risk"] = np.asarray(risk, dtype=np.float64)[holdout]
    else:
        rows["risk"] = 1.0 - candidates["t_learner"]["uplift_control"].predict(held, num_threads=num_threads)
    metrics, curves = _evaluate(rows, seed)
    metrics.update({f"uplift_qini_{name}": value for name, value in qini.items()})
    trusted = metrics["uplift_qini_model"] > max(metrics["uplift_qini_risk"], metrics["uplift_qini_random_p95"])
    metrics["uplift_trusted"] = float(trusted)
    meta = uplift_meta(outcomes, holdout, horizon_days, learner, trusted, metrics, rounds, holdout_share)
    meta.update(risk_source="churn_head" if risk is not None else "control_head", propensity=propensity)
    return UpliftFit(dict(candidates[learner]), meta, metrics, rows, curves)


def _fit_learners(
    X: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    training: np.ndarray,
    stop: np.ndarray,
    columns: list[str],
    params: dict[str, Any],
    learners: tuple[str, ...],
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """The heads of the learners asked for on the ``training`` rows, and the T-learner's in any case (the X-learner is
    built on them, the fallback risk score reads the control head): ``({learner: {role: booster}}, {role: rounds})``."""
    t_heads: dict[str, Any] = {}
    rounds: dict[str, int] = {}
    for role, arm in (("uplift_treated", 1), ("uplift_control", 0)):
        rows = training & (t == arm)
        if not (stop[rows].any() and (~stop[rows]).any()):
            raise ContractError(f"cannot fit uplift heads: too few {role.removeprefix('uplift_')} customers")
        t_heads[role], rounds[role] = _fit_arm(X[rows], y[rows], stop[rows], columns, params)
    out: dict[str, dict[str, Any]] = {"t_learner": t_heads}
    if "x_learner" in learners:
        x_heads: dict[str, Any] = {}
        regression = {**params, "objective": "regression"}
        for role, arm, other in (
            ("uplift_tau_treated", 1, "uplift_control"),
            ("uplift_tau_control", 0, "uplift_treated"),
        ):
            rows = training & (t == arm)
            imputed = t_heads[other].predict(X[rows], num_threads=params["num_threads"])
            effect = y[rows] - imputed if arm == 1 else imputed - y[rows]
            x_heads[role], rounds[role] = _fit_arm(X[rows], effect, stop[rows], columns, regression)
        out["x_learner"] = x_heads
    return out, rounds


def _evaluate(rows: pd.DataFrame, seed: int) -> tuple[dict[str, float], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The held-out metrics and Qini curves of the three targetings (module docstring)."""
    y, t = rows["retained"].to_numpy(np.float64), rows["treatment"].to_numpy(np.float64)
    ate = float(y[t == 1].mean() - y[t == 0].mean())
    metrics: dict[str, float] = {"uplift_ate": ate, "uplift_holdout_rows": float(len(rows))}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, score in (("model", rows["uplift"]), ("risk", rows["risk"])):
        found = uplift_metrics(y, t, score.to_numpy(np.float64))
        metrics[f"uplift_qini_{name}"] = found.pop("qini")
        metrics.update({f"uplift_{name}_{k.removeprefix('uplift_')}": v for k, v in found.items()})
        curves[name] = qini_curve(y, t, score.to_numpy(np.float64))
    metrics["uplift_qini_random"] = 0.0
    metrics["uplift_qini_random_p95"] = random_qini(y, t, draws=RANDOM_DRAWS, seed=seed)
    metrics.update({f"uplift_random_at_{round(100 * k)}": ate for k in UPLIFT_AT})
    end = curves["model"]
    curves["random"] = (np.array([0.0, end[0][-1]]), np.array([0.0, end[1][-1]]))
    return metrics, curves


def uplift_meta(
    outcomes: pd.DataFrame,
    holdout: np.ndarray,
    horizon_days: int,
    learner: str,
    trusted: bool,
    metrics: dict[str, float],
    rounds: dict[str, int],
    holdout_share: float,
) -> dict[str, Any]:
    """:attr:`serving.model.BundleMeta.uplift` (JSON-native): learner, files, campaigns, horizon, the gate's
    verdict and the held-out metrics, rows per arm and side, every head's rounds."""
    t = outcomes["treatment"].to_numpy()
    cutoffs = pd.Series(outcomes["cutoff"]).map(str)
    return {
        "learner": learner,
        "files": dict(UPLIFT_ROLES[learner]),
        "outcome": "retained",
        "campaign_ids": sorted(map(str, pd.unique(outcomes["campaign_id"]))),
        "first_cutoff": str(cutoffs.min()),
        "last_cutoff": str(cutoffs.max()),
        "horizon_days": int(horizon_days),
        "trusted": bool(trusted),
        "gate": "qini_model > max(qini_risk, qini_random_p95) on the held-out customers",
        "holdout_share": holdout_share,
        "rows": {
            f"{side}_{arm}": int(((holdout == held) & (t == flag)).sum())
            for side, held in (("training", False), ("holdout", True))
            for arm, flag in (("treated", 1), ("control", 0))
        },
        "rounds": dict(rounds),
        "metrics": {k: (float(v) if np.isfinite(v) else None) for k, v in metrics.items()},
    }


def with_uplift(model: ScoringModel, fit: UpliftFit) -> ScoringModel:
    """``model`` with the uplift heads of ``fit`` and their metadata (a new :class:`ScoringModel`, format 4)."""
    meta: BundleMeta = dataclasses.replace(model.meta, uplift=fit.meta)
    return ScoringModel(model.churn_booster, model.value_booster, meta, model.version, dict(fit.boosters))


def fit_campaign_uplift(
    prep: PreparedTransactions,
    campaigns: pd.DataFrame,
    model: ScoringModel,
    *,
    as_of: dt.date | None = None,
    seed: int = 0,
    num_threads: int = 0,
) -> UpliftFit:
    """The uplift heads of a model version from a prepared campaign log (:func:`features.campaigns.prepare_campaigns`).

    Features and outcomes at each campaign's cutoff over the version's horizon, on the version's feature columns;
    the risk targeting they are compared with is the version's churn head at the cutoff. Left out, counted in
    ``meta["campaign_rows"]`` and warned about: rows whose outcome window (the horizon after the send day) does not
    end by ``as_of`` (default: the last transaction day) -- their outcome is not known yet -- and rows of customers
    unknown at their cutoff (no features). :class:`ContractError` when no row is left.
    """
    horizon = model.meta.horizon_days
    last = date_to_day(as_of) if as_of is not None else int(prep.day.max())
    sent = pd.to_datetime(campaigns["sent_at"], utc=True).dt.floor("D")
    days = (sent - pd.Timestamp("1970-01-01", tz="UTC")).dt.days.to_numpy()
    complete = days + horizon <= last
    if not complete.any():
        raise ContractError(
            f"no campaign row has a complete outcome window: the {horizon} days after a send day must end by"
            f" {day_to_date(last)} (the latest send day is {day_to_date(int(days.max())) if len(days) else 'none'})"
        )
    X, outcomes = campaign_training_frame(prep, campaigns[complete], horizon, as_of=day_to_date(last))
    counts = {
        "read": len(campaigns),
        "incomplete_window": int((~complete).sum()),
        "unknown_customer": int(complete.sum()) - len(outcomes),
        "used": len(outcomes),
    }
    columns = list(model.feature_columns)
    risk = model.score(X[columns].to_numpy(dtype=np.float64), num_threads).churn_probability if len(X) else None
    fit = fit_uplift(X, outcomes, columns, horizon_days=horizon, risk=risk, seed=seed, num_threads=num_threads)
    fit.meta["campaign_rows"] = counts
    if counts["incomplete_window"]:
        fit.warnings.append(
            f"{counts['incomplete_window']:,} campaign row(s) left out of the uplift heads: their {horizon}-day outcome"
            f" window does not end by {day_to_date(last)}"
        )
    if counts["unknown_customer"]:
        fit.warnings.append(
            f"{counts['unknown_customer']:,} campaign row(s) left out of the uplift heads: the customer has no"
            " transaction on or before the send day"
        )
    return fit


def goal_figures(
    model: ScoringModel,
    X: np.ndarray,
    customer_ids: np.ndarray,
    truth: pd.DataFrame,
    *,
    contact_cost: float,
) -> dict[str, Any]:
    """Issue 12's goal measured on a simulated campaign with known effects (tests and ``bench_uplift``).

    ``X``: features of held-out customers at the campaign's cutoff (rows = ``customer_ids``, columns = the
    model's); ``truth``: :attr:`features.synthetic_campaigns.SimulatedCampaign.truth` (both potential outcomes).
    The uplift plan contacts every customer whose benefit = uplift x expected value (the expected profit with the
    default economics) - ``contact_cost`` is positive, best first (so never one with uplift < 0: a flagged
    sleeping dog); churn-risk and value-at-risk targeting contact as many customers, highest first. Each list's
    TRUE incremental profit (:func:`features.synthetic_campaigns.true_incremental_profit`, margin = the model's)
    is returned with ``ratio`` = uplift plan / risk targeting (inf when risk targeting earns nothing or loses),
    ``goal_met`` (the plan earns a positive profit of at least :data:`GOAL_RATIO` x risk targeting's), and the
    sleeping dogs: ``flagged`` (uplift < 0), ``dogs_flagged`` (true sleeping dogs among them), ``dogs`` (true
    sleeping dogs held out), ``dogs_contacted`` (true sleeping dogs the plan contacts: ones it did not flag), plus
    the response types of each list. The uplift is the heads' (:meth:`ScoringModel.raw_uplift`) whether or not
    they are trusted (``trusted`` says).
    """
    from features.synthetic_campaigns import true_incremental_profit

    X = np.ascontiguousarray(X, dtype=np.float64)
    ids = np.asarray(customer_ids, dtype=object)
    scores = model.score(X)
    lift = model.raw_uplift(X)
    benefit = lift * scores.expected_value - contact_cost
    n = int((benefit > 0).sum())
    response = truth.set_index("customer_id")["response"].reindex(ids).to_numpy(dtype=object)
    lists = {
        "uplift": np.argsort(-benefit, kind="stable")[:n],
        "risk": np.argsort(-scores.churn_probability, kind="stable")[:n],
        "value_at_risk": np.argsort(-scores.value_at_risk, kind="stable")[:n],
    }
    margin = model.meta.margin
    profit = {
        name: true_incremental_profit(truth, ids[rows], margin=margin, cost_per_contact=contact_cost)
        for name, rows in lists.items()
    }
    ratio = profit["uplift"] / profit["risk"] if profit["risk"] > 0 else math.inf
    flagged = lift < 0
    return {
        "held_out": len(ids),
        "contacted": n,
        **{f"profit_{name}": value for name, value in profit.items()},
        "ratio": ratio,
        "goal_met": bool(profit["uplift"] > 0 and profit["uplift"] >= GOAL_RATIO * profit["risk"]),
        "flagged": int(flagged.sum()),
        "dogs": int((response == "sleeping_dog").sum()),
        "dogs_flagged": int((flagged & (response == "sleeping_dog")).sum()),
        "dogs_contacted": int((response[lists["uplift"]] == "sleeping_dog").sum()),
        "contacted_flagged": int(flagged[lists["uplift"]].sum()),
        "responses": {name: pd.Series(response[rows]).value_counts().to_dict() for name, rows in lists.items()},
        "trusted": model.meta.uplift_trusted,
    }
