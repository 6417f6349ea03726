"""A simulated retention campaign with a randomized control group and known, heterogeneous effects.

:func:`simulate_campaign` takes a transaction log (the output of :func:`features.synthetic.generate_transactions`, or
any frame with the transaction contract's column names) and a send time, contacts a random ``treated_share`` of the
*eligible* customers (those with a purchase at or before the send day, the cutoff ``D`` = the UTC day of
``sent_at``), and returns the observed world: the transactions with the effects of the contact applied to the treated
customers, the campaign log (:mod:`features.campaigns` contract) and the ground truth per eligible customer.

**Response types** are a function of the kernel's features at ``D`` (:func:`features.kernel.compute_feature_arrays`),
so a model given the same features can learn them (:func:`response_types`, thresholds in :class:`CampaignDesign`),
first match wins:

1. ``lost_cause``  -- long silent: ``recency_days > 300``, or a one-time buyer (one purchase day) silent for
   ``> 60`` days. They leave whatever we do: no effect. They have the highest churn risk.
2. ``sleeping_dog`` -- customers who return things: ``refund_share >= 0.05`` (refunded amount / purchases). A contact
   annoys them: with probability ``annoy_probability`` (0.5) they stop buying, every transaction after ``D`` is
   dropped (their later refunds too). Mostly active, but about a quarter of them would not buy in the window anyway
   (high churn risk): a risk ranking contacts them.
3. ``persuadable`` -- lapsing repeat buyers: two purchase days or more and ``overdue_ratio >= 2`` (silent for at
   least twice their usual interval between purchase days) but not yet lost. With probability
   ``persuade_probability`` (0.6) the contact brings them back: ``1 + Poisson(extra_purchases_mean = 1)`` extra
   purchases on uniform days of the window ``(D, D + H]``, each ``mean_amount`` (their average purchase at ``D``) x
   ``Gamma(2.5) / 2.5``, in the channel and category of their latest transaction.
4. ``sure_thing`` -- everyone else (active loyal customers, recent first-time buyers): no effect.

Both potential outcomes are known for every eligible customer (the random draws of the effects are made for
everyone, independently of the assignment): ``truth`` holds ``response``, ``treated`` and, over the window
``(D, D + H]``, ``spend_if_treated`` / ``spend_if_control`` (net spend) and ``retained_if_treated`` /
``retained_if_control`` (a purchase in the window), exactly what :func:`features.campaigns.campaign_outcomes`
computes from the observed transactions for the arm the customer is in. Customers who are not eligible are not in
the campaign and their transactions are untouched.

**Design numbers** measured on ``generate_transactions(20_000, 730, seed=0)``, ``sent_at = 2024-09-01``,
``horizon_days = 90``, ``seed = 0`` (:func:`response_summary`; 15,136 eligible customers; retention = share with a
purchase in the window, uplifts are means of the individual treated-minus-control differences, spend in currency
units over the window):

============  =====  ===================  ===================  ================  ================
response      share  retained if control  retained if treated  retention uplift  net spend uplift
============  =====  ===================  ===================  ================  ================
persuadable   20.8 %        0.294                0.706              +0.412            +58.1
sure_thing    32.5 %        0.836                0.836               0.000              0.0
lost_cause    36.2 %        0.002                0.002               0.000              0.0
sleeping_dog  10.5 %        0.729                0.359              -0.369           -187.7
============  =====  ===================  ===================  ================  ================

By design a persuadable's retention uplift is ``persuade_probability x (1 - retained if control)`` and its spend uplift
``persuade_probability x (1 + extra_purchases_mean) x mean_amount``; a sleeping dog's retention uplift is
``-annoy_probability x retained if control``. Other seeds give the same table within about 0.02 (retention) and 12
(spend). Targeting by churn risk (highest risk first) contacts lost causes first (zero uplift), then lapsing customers,
among them the sleeping dogs at risk (11 % of the sleeping dogs are in the riskiest 30 %); targeting by uplift contacts
the persuadables. Measured with a LightGBM T-learner (one classifier of ``retained`` per arm on the kernel's features at
the send day, 150 trees, trained on half of the customers; ``tests/model/test_campaign_simulation.py``): on the other
half, contacting the top 20 % (1,519 customers) by predicted uplift reaches 82 % persuadables and a true incremental
profit of 17,540 at margin 0.3 and 2 per contact, the top 20 % by churn risk (1 - the control head) 79 % lost causes
and 1,303, a random 20 % -6,834; mean predicted uplift: persuadables +0.42, sleeping dogs -0.33, others 0.00.

:func:`true_incremental_profit` scores any list of contacted customers against the truth.

Deterministic in all arguments: the assignment and the effects come from two independent random streams of
``seed`` (changing ``treated_share`` re-draws the assignment, not the effects).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.campaigns import prepare_campaigns
from features.contract import ContractError, ids_as_text, parse_timestamps, prepare_transactions
from features.kernel import NS_PER_DAY, compute_feature_arrays, date_to_day, day_to_date, index_transactions
from features.labels import labels_at

__all__ = [
    "RESPONSES",
    "TRUTH_COLUMNS",
    "CampaignDesign",
    "SimulatedCampaign",
    "response_summary",
    "response_types",
    "simulate_campaign",
    "true_incremental_profit",
]

RESPONSES: tuple[str, ...] = ("persuadable", "sure_thing", "lost_cause", "sleeping_dog")
TRUTH_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "response",
    "treated",
    "spend_if_treated",
    "spend_if_control",
    "retained_if_treated",
    "retained_if_control",
)


@dataclasses.dataclass(frozen=True)
class CampaignDesign:
    """Who responds how to a contact (module docstring). Days are whole days before the cutoff ``D``."""

    lost_after_days: float = 300.0
    """``recency_days`` above this: ``lost_cause``."""
    one_time_lost_after_days: float = 60.0
    """A one-time buyer (one purchase day) with ``recency_days`` above this: ``lost_cause``."""
    sleeping_refund_share: float = 0.05
    """``refund_share`` at or above this (and not lost): ``sleeping_dog``."""
    persuadable_overdue_ratio: float = 2.0
    """A repeat buyer with ``overdue_ratio`` (days since the last purchase / usual interval) at or above this (and
    neither lost nor a sleeping dog): ``persuadable``."""
    persuade_probability: float = 0.6
    """Probability that a contacted persuadable comes back (extra purchases in the window)."""
    extra_purchases_mean: float = 1.0
    """A persuaded customer makes ``1 + Poisson(extra_purchases_mean)`` extra purchases in the window."""
    amount_shape: float = 2.5
    """Gamma shape of an extra purchase's amount around the customer's average purchase."""
    annoy_probability: float = 0.5
    """Probability that a contacted sleeping dog stops buying (every transaction after the send day dropped)."""


@dataclasses.dataclass(frozen=True)
class SimulatedCampaign:
    """The observed world of one simulated campaign.

    ``transactions``: the input's rows with the treated customers' effects applied (same columns, sorted by customer
    id then timestamp); ``campaigns``: the campaign log, one row per eligible customer (the
    :func:`features.campaigns.prepare_campaigns` columns); ``truth``: per eligible customer, in the log's order, the
    columns :data:`TRUTH_COLUMNS` (spend in currency units and retention over ``(D, D + H]``). ``cutoff`` is ``D``,
    the UTC day of ``sent_at``; ``horizon_days`` is ``H``; ``design`` the response rules and effect sizes used. A second
    campaign is simulated on ``transactions`` again (another ``campaign_id``: its extra purchases get other ids).
    """

    transactions: pd.DataFrame
    campaigns: pd.DataFrame
    truth: pd.DataFrame
    cutoff: dt.date | None = None
    horizon_days: int = 90
    design: CampaignDesign = CampaignDesign()


def response_types(features: dict[str, np.ndarray], design: CampaignDesign = CampaignDesign()) -> np.ndarray:
    """The response type (:data:`RESPONSES`) of each customer from kernel features at the send day (object array).

    ``features`` holds at least ``recency_days``, ``n_purchase_days``, ``refund_share`` and ``overdue_ratio`` (the
    arrays of :func:`features.kernel.compute_feature_arrays`); customers without a purchase get ``lost_cause``.
    """
    recency = np.nan_to_num(features["recency_days"], nan=np.inf)
    one_time = features["n_purchase_days"] < 2
    lost = (recency > design.lost_after_days) | (one_time & (recency > design.one_time_lost_after_days))
    dog = ~lost & (np.nan_to_num(features["refund_share"]) >= design.sleeping_refund_share)
    overdue = np.nan_to_num(features["overdue_ratio"], nan=0.0) >= design.persuadable_overdue_ratio
    persuadable = ~lost & ~dog & ~one_time & overdue
    out = np.full(len(recency), "sure_thing", dtype=object)
    out[lost] = "lost_cause"
    out[dog] = "sleeping_dog"
    out[persuadable] = "persuadable"
    return out


@dataclasses.dataclass(frozen=True)
class _Effects:
    """The effect of a contact on every eligible customer (drawn whether or not they are contacted)."""

    annoyed: np.ndarray  # bool per eligible customer: stops buying after the send day when contacted
    extra_owner: np.ndarray  # eligible-customer position of each extra purchase (when contacted)
    extra_day: np.ndarray  # its UTC day
    extra_second: np.ndarray  # its second of the day
    extra_amount: np.ndarray  # its amount (currency units, cents)


def _draw_effects(
    rng: np.random.Generator,
    response: np.ndarray,
    basket: np.ndarray,
    cutoff_day: int,
    horizon_days: int,
    design: CampaignDesign,
) -> _Effects:
    n = len(response)
    annoyed = (response == "sleeping_dog") & (rng.random(n) < design.annoy_probability)
    persuaded = (response == "persuadable") & (rng.random(n) < design.persuade_probability)
    count = np.where(persuaded, 1 + rng.poisson(design.extra_purchases_mean, n), 0)
    owner = np.repeat(np.arange(n), count)
    m = len(owner)
    day = cutoff_day + rng.integers(1, horizon_days + 1, m)
    second = rng.integers(0, 86_400, m)
    scale = np.nan_to_num(basket[owner], nan=0.0)
    amount = np.round(scale * rng.gamma(design.amount_shape, 1.0 / design.amount_shape, m), 2)
    return _Effects(annoyed, owner, day, second, amount)


def _apply(
    raw: pd.DataFrame,
    customer: pd.Series,
    day: np.ndarray,
    eligible: np.ndarray,
    who: np.ndarray,
    effects: _Effects,
    cutoff_day: int,
    campaign_id: str,
) -> pd.DataFrame:
    """The world where the eligible customers marked in ``who`` are contacted (rows sorted by customer, time)."""
    position = pd.Index(eligible).get_indexer(customer.to_numpy(dtype=object))
    contacted = np.zeros(len(raw), dtype=bool)
    contacted[position >= 0] = who[position[position >= 0]]
    annoyed = np.zeros(len(raw), dtype=bool)
    annoyed[position >= 0] = effects.annoyed[position[position >= 0]]
    kept = raw[~(contacted & annoyed & (day > cutoff_day))]
    pick = np.flatnonzero(who[effects.extra_owner])
    extra = _extra_rows(raw, customer, position, effects, pick, eligible, campaign_id)
    world = pd.concat([kept, extra], ignore_index=True) if len(extra) else kept.reset_index(drop=True)
    ids = ids_as_text(world["customer_id"]).fillna("")
    order = np.lexsort((world["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64), ids.to_numpy(object)))
    return world.iloc[order].reset_index(drop=True)


def _extra_rows(
    raw: pd.DataFrame,
    customer: pd.Series,
    position: np.ndarray,
    effects: _Effects,
    pick: np.ndarray,
    eligible: np.ndarray,
    campaign_id: str,
) -> pd.DataFrame:
    """The persuaded purchases ``pick`` as rows of the input's columns (channel / category of the latest row)."""
    owner = effects.extra_owner[pick]
    rows = np.flatnonzero(position >= 0)
    ts = raw["timestamp"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    rows = rows[np.lexsort((ts[rows], position[rows]))]  # by customer, then time: each customer's last is latest
    last = np.append(position[rows][1:] != position[rows][:-1], True)
    latest = np.full(len(eligible), -1, dtype=np.int64)
    latest[position[rows[last]]] = rows[last]
    source = latest[owner]
    ns = effects.extra_day[pick] * NS_PER_DAY + effects.extra_second[pick] * 10**9
    columns = {
        "customer_id": eligible[owner],
        "timestamp": pd.DatetimeIndex(ns, dtype="datetime64[ns, UTC]"),
        "amount": effects.extra_amount[pick],
    }
    if "transaction_id" in raw.columns:
        columns["transaction_id"] = [f"{campaign_id}-{k:07d}" for k in pick]  # the same id in every world
    if "quantity" in raw.columns:
        columns["quantity"] = np.ones(len(pick), dtype=raw["quantity"].dtype)
    for name in ("category", "channel"):
        if name in raw.columns:
            columns[name] = raw[name].to_numpy(dtype=object)[source]
    extra = pd.DataFrame(columns)
    for name in raw.columns:
        if name in extra.columns:
            extra[name] = extra[name].astype(raw[name].dtype)
        else:
            extra[name] = pd.Series([None] * len(extra), dtype=raw[name].dtype)
    return extra[list(raw.columns)]


def _outcomes(world: pd.DataFrame, cutoff, horizon_days: int, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Retained (0/1) and net spend over the window of each eligible customer in ``world``."""
    prep = index_transactions(prepare_transactions(world)[0])
    ids, labels = labels_at(prep, cutoff, horizon_days)
    at = pd.Index(ids).get_indexer(pd.Index(eligible))
    retained, spend = np.zeros(len(eligible), np.int8), np.zeros(len(eligible))
    retained[at >= 0] = 1 - labels["churned"][at[at >= 0]]
    spend[at >= 0] = labels["future_value"][at[at >= 0]]
    return retained, spend


def simulate_campaign(
    transactions: pd.DataFrame,
    sent_at: str | pd.Timestamp,
    *,
    horizon_days: int = 90,
    treated_share: float = 0.5,
    seed: int = 0,
    campaign_id: str = "C1",
    offer: str = "call",
    cost: float = 2.0,
    design: CampaignDesign = CampaignDesign(),
) -> SimulatedCampaign:
    """Simulate one campaign sent at ``sent_at`` (module docstring): ``SimulatedCampaign(transactions, campaigns,
    truth)``.

    ``transactions``: rows of the transaction contract's columns (``customer_id``, ``timestamp``, ``amount`` and
    optionally ``transaction_id``, ``quantity``, ``category``, ``channel``), e.g. a generated log. The campaign log
    gives every eligible customer ``sent_at``, ``offer`` and ``cost`` (``cost`` currency units for a contacted
    customer, 0 for the control group). Raises :class:`ContractError` when the window ``(D, D + horizon_days]``
    reaches past the last transaction day, nobody is eligible or ``treated_share`` is outside (0, 1).
    """
    if not 0.0 < treated_share < 1.0:
        raise ContractError(f"treated share must be between 0 and 1 (exclusive), got {treated_share}")
    if not isinstance(transactions["timestamp"].dtype, pd.DatetimeTZDtype):  # text: parsed once, as the contract does
        transactions = transactions.assign(timestamp=parse_timestamps(transactions["timestamp"]))
    sent = pd.Timestamp(sent_at)
    sent = sent.tz_convert("UTC") if sent.tzinfo else sent.tz_localize("UTC")
    cutoff = sent.date()
    cutoff_day = date_to_day(cutoff)
    prepared, _ = prepare_transactions(transactions)
    prep = index_transactions(prepared)
    last_day = int(prep.day.max())
    if cutoff_day + horizon_days > last_day:
        raise ContractError(
            f"a campaign sent on {cutoff} needs transactions through {day_to_date(cutoff_day + horizon_days)}, "
            f"the log ends on {day_to_date(last_day)}"
        )
    ids, features = compute_feature_arrays(prep, cutoff)
    buyers = features["n_transactions"] > 0
    eligible = np.asarray(ids[buyers], dtype=object)
    if not len(eligible):
        raise ContractError(f"nobody has a purchase on or before {cutoff}: no customer to contact")
    response = response_types({k: v[buyers] for k, v in features.items()}, design)

    assign_rng, effect_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    n = len(eligible)
    treated = np.zeros(n, dtype=bool)
    treated[assign_rng.permutation(n)[: round(treated_share * n)]] = True
    effects = _draw_effects(effect_rng, response, features["mean_amount"][buyers], cutoff_day, horizon_days, design)

    customer = ids_as_text(transactions["customer_id"])
    day = np.floor_divide(parse_timestamps(transactions["timestamp"]).array.asi8, NS_PER_DAY)
    everyone = _apply(transactions, customer, day, eligible, np.ones(n, bool), effects, cutoff_day, campaign_id)
    observed = _apply(transactions, customer, day, eligible, treated, effects, cutoff_day, campaign_id)
    retained_t, spend_t = _outcomes(everyone, cutoff, horizon_days, eligible)
    _, labels = labels_at(prep, cutoff, horizon_days)
    retained_c = (1 - labels["churned"][buyers]).astype(np.int8)
    spend_c = labels["future_value"][buyers]

    log = pd.DataFrame(
        {
            "customer_id": eligible,
            "campaign_id": campaign_id,
            "sent_at": sent,
            "treatment": treated.astype(np.int8),
            "offer": offer,
            "cost": np.where(treated, float(cost), 0.0),
        }
    )
    campaigns, _ = prepare_campaigns(log, strict=True)
    truth = pd.DataFrame(
        {
            "customer_id": pd.array(eligible, dtype="str"),
            "response": pd.array(response, dtype="str"),
            "treated": treated.astype(np.int8),
            "spend_if_treated": spend_t,
            "spend_if_control": spend_c,
            "retained_if_treated": retained_t,
            "retained_if_control": retained_c,
        }
    )
    return SimulatedCampaign(observed, campaigns, truth, cutoff, horizon_days, design)


def true_incremental_profit(
    truth: pd.DataFrame, contacted_ids: Iterable[str], *, margin: float, cost_per_contact: float
) -> float:
    """The true incremental profit of contacting ``contacted_ids`` (currency units):
    ``sum over contacted of (spend_if_treated - spend_if_control) x margin - cost_per_contact``.

    Each id counts once; an id that is not in ``truth`` (not in the campaign: its effect is unknown) raises
    :class:`ContractError`.
    """
    wanted = pd.Index(pd.unique(pd.Series(list(contacted_ids), dtype="str")))
    at = pd.Index(truth["customer_id"]).get_indexer(wanted)
    if (at < 0).any():
        missing = int((at < 0).sum())
        raise ContractError(
            f"{missing} contacted customer(s) are not in the campaign's truth, e.g. '{wanted[at < 0][0]}'"
        )
    lift = truth["spend_if_treated"].to_numpy()[at] - truth["spend_if_control"].to_numpy()[at]
    return float(lift.sum() * margin - cost_per_contact * len(at))


def response_summary(truth: pd.DataFrame) -> pd.DataFrame:
    """Per response type (index in :data:`RESPONSES` order): ``customers``, ``share``, mean ``retained_if_control``,
    ``retained_if_treated``, ``retention_uplift`` (their difference), ``spend_uplift`` (mean net spend difference)."""
    lift = truth.assign(
        retention_uplift=truth["retained_if_treated"] - truth["retained_if_control"],
        spend_uplift=truth["spend_if_treated"] - truth["spend_if_control"],
    )
    out = lift.groupby("response").agg(
        customers=("customer_id", "size"),
        retained_if_control=("retained_if_control", "mean"),
        retained_if_treated=("retained_if_treated", "mean"),
        retention_uplift=("retention_uplift", "mean"),
        spend_uplift=("spend_uplift", "mean"),
    )
    out.insert(1, "share", out["customers"] / out["customers"].sum())
    return out.reindex([r for r in RESPONSES if r in out.index])
