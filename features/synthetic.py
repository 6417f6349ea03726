"""Seeded synthetic retail transactions: the product's embedded default dataset and the tests' fixture.

``generate_transactions(n_customers, days, seed=..., start=...)`` returns a frame that follows the input
contract of :mod:`features.contract` (columns ``customer_id``, ``transaction_id``, ``timestamp``, ``amount``,
``quantity``, ``category``, ``channel``), sorted by ``customer_id`` then ``timestamp``. The same arguments
always give the identical frame; the work is fully vectorised over blocks of customers whose random
streams depend only on ``(seed, block number)``, so the output does not depend on how blocks are grouped.

The generating process (all knobs are fields of :class:`GeneratorConfig`):

* **Acquisition.** Each customer's first purchase (their *join*) falls on a day drawn with weight
  ``(1 + acquisition_growth * t / days) * season(t)``: customers arrive over the whole period, more of
  them later, so the base grows and cohorts of every age are present.
* **Purchase process (BG/NBD-like).** Customer ``i`` buys at a Poisson rate ``lambda_i ~ Gamma`` (per
  day, heterogeneous) and drops out for good right after each purchase with probability
  ``p_i ~ Beta(dropout_a, dropout_b)`` (U-shaped by default: many trial buyers who never come back,
  many loyal ones). On top of that, signal that a BTYD model does not capture:

  - *engagement decay*: the rate is multiplied by ``(1 + age / engagement_tau) ** -engagement_decay``
    (age = days since joining), so customers slow down as they age;
  - *slowdown before dropout*: the gap before the last purchase of a customer who drops out is
    stretched by ``slowdown_factor`` (the one before it by its square root);
  - *channel effects*: each customer has a primary channel (80 % of their purchases); ``app``
    customers buy more often and drop out much less, ``store`` customers buy a little less and drop
    out more (the dropout effect ``e`` turns the Beta into ``Beta(a * e, b / e)``: app ``e = 0.65``
    moves mass towards loyal, rarely-dropping customers);
  - *category effects*: each customer has a favourite category that sets their frequency, dropout,
    basket price and refund propensity (grocery: frequent, cheap, loyal; electronics: rare, expensive,
    volatile; apparel: most refunds);
  - *the first purchase tells*: it goes through the customer's primary channel (the channel that acquired
    them, ``acquisition_channel_share``) and its basket is larger for loyal customers (``first_basket_loyalty``:
    a log-normal lift of ``0.35`` standard deviations per standard deviation of ``-logit(p)``), so a one-time
    buyer's first basket, channel and category say something about whether they come back, as in real logs.

* **Calendar intensity.** Purchases follow ``season(t) = weekly(t) * yearly(t) * drift(t)``: a weekend
  peak (Saturday highest), a Nov/Dec holiday peak (Black-Friday week and December), a Jan/Feb lull.
  The process runs in "seasonal time" so that the exact rate is piecewise constant per day.
* **Spend.** Each customer has a mean basket ``m_i`` (log-normal, weakly correlated with
  ``lambda_i``); an amount is ``m_i * category price * Gamma(amount_shape)/amount_shape`` (heavier
  in December), rounded to cents; quantity is 1 + a Poisson count that grows with the basket.
* **Drift (calendar-time non-stationarity).** Purchase intensity changes by
  ``intensity_drift_per_quarter`` (default -5 % per quarter, about -18.5 % per year, compounding
  from ``start``) and basket size by ``basket_drift_per_quarter`` (default +2 % per quarter, about
  +8 % per year, price inflation); the share of newly acquired customers whose primary channel is the
  app rises linearly from ``app_share_start`` (20 %) to ``app_share_end`` (40 %). Purchases per active
  customer-month are about 9 % lower in the second year than in the first, mean baskets about 6 %
  higher, so a model fitted on early cutoffs forecasts too many purchases of too small baskets later.
* **Data-quality noise.** About ``refund_rate`` of the purchases are refunded (those falling after the
  last day are dropped, so about 3 % of the rows are refunds: negative amount, a later
  transaction of the same customer mirroring all or part of an earlier purchase, same category and
  channel, own ``transaction_id``); about ``duplicate_rate`` of the rows are exact copies (same
  ``transaction_id``) right after their original; ``zero_amount_rate`` of purchases cost nothing.

With the defaults, ``generate_transactions(500_000, 730)`` gives about 10.0 million rows (19.5
purchases per customer on average, median 5, 99th percentile about 145; about 30 % one-time buyers),
about 48 % of the customers have no purchase in the final 90 days and the top 20 % of customers hold
about 72 % of net revenue. Of the customers who joined in the first year, about 54 % of those who mostly
buy in the app are silent over the last three months against about 68 % (web) and 77 % (store). It takes
about 10 s of CPU time (10-30 s wall on 2 CPUs) and under 2 GB of memory.

Identifiers: ``customer_id`` is ``"C"`` + the zero-padded customer number (``"C0000042"``),
``transaction_id`` is ``"T"`` + a zero-padded number that increases with time (like a till would give).

**Scenarios** (:data:`SCENARIOS`, ``generate_transactions(..., scenario=NAME)``, ``retention generate
--scenario NAME``) are named presets of the config with their own default length and first day, built to
reproduce the shapes of real logs (see ``docs/quality.md``); everything above describes ``default``, whose output
does not depend on the scenario knobs:

* ``cohort`` -- one acquisition cohort: every first purchase in the first 84 days, then no new customer; rare,
  heterogeneous purchases whose rate decays with age; about 54 % of customers buy on a single day in their first
  year and about 80 % of them make no purchase in the 182 days after it. 548 days from 2023-01-01.
* ``seasonal`` -- an online wholesaler's invoice export: the log starts in the middle of existing customers'
  lives (a year of simulated prehistory is cut off), a Sep-Dec season (Nov-Dec spend per active customer about
  2.3x the summer's), a heavy tail (top 1 % of customers about 30 % of spend), 25 % of rows without a customer
  id, cancellations as separate negative invoices with a ``C`` prefix (about 14 % of invoices, 7 % of spend),
  several invoices per customer per day, ids exported as floats (``12346.0``). 486 days (13 months + 90) from
  2023-12-01.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

CATEGORIES: tuple[str, ...] = ("grocery", "home", "apparel", "beauty", "electronics", "sports")
CHANNELS: tuple[str, ...] = ("web", "store", "app")
COLUMNS: tuple[str, ...] = (
    "customer_id",
    "transaction_id",
    "timestamp",
    "amount",
    "quantity",
    "category",
    "channel",
)

# Per-category effects, in CATEGORIES order.
_CAT_POPULARITY = np.array([0.30, 0.14, 0.20, 0.13, 0.10, 0.13])
_CAT_PRICE = np.array([0.55, 1.35, 1.0, 0.7, 2.6, 1.15])  # basket price multiplier
_CAT_RATE = np.array([1.45, 0.85, 1.0, 1.15, 0.6, 0.85])  # purchase rate of customers who favour it
_CAT_DROPOUT = np.array([0.8, 1.05, 1.0, 0.95, 1.35, 1.05])  # dropout of customers who favour it
_CAT_REFUND = np.array([0.35, 1.1, 2.1, 0.65, 1.45, 1.1])  # relative refund propensity
_CAT_QUANTITY = np.array([1.6, 0.4, 0.8, 0.9, 0.1, 0.4])  # extra items per basket (Poisson mean)
# Per-channel effects, in CHANNELS order.
_CHAN_RATE = np.array([1.0, 0.9, 1.2])
_CHAN_DROPOUT = np.array([1.0, 1.2, 0.65])
# Hour-of-day profiles (UTC) per channel: stores open 9-21, web peaks in the evening, app at lunch/evening.
_HOURS = np.arange(24)
_HOUR_PROFILE = np.stack(
    [
        0.3 + np.exp(-0.5 * ((_HOURS - 20.5) / 2.5) ** 2) + 0.5 * np.exp(-0.5 * ((_HOURS - 12.5) / 2.0) ** 2),
        np.where((_HOURS >= 9) & (_HOURS < 21), 1.0 + 0.6 * np.exp(-0.5 * ((_HOURS - 16) / 2.5) ** 2), 0.0),
        0.15 + np.exp(-0.5 * ((_HOURS - 21) / 2.0) ** 2) + 0.7 * np.exp(-0.5 * ((_HOURS - 12.5) / 1.5) ** 2),
    ]
)
# Weekly profile Monday..Sunday (mean 1) and monthly profile Jan..Dec (before the holiday lift).
_WEEKLY = np.array([0.88, 0.86, 0.90, 0.95, 1.08, 1.25, 1.08])
_MONTHLY = np.array([0.90, 0.88, 0.96, 0.98, 1.0, 0.98, 0.97, 0.98, 0.96, 1.0, 1.0, 1.0])

_BLOCK = 1 << 15  # customers per random stream; fixed so that output does not depend on chunking
_DAYS_PER_QUARTER = 365.25 / 4
_NS = 10**9


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the synthetic transaction process (see the module docstring for the model).

    Rates are per day; "quarter" means 91.3 days; shares are fractions of rows unless said otherwise.
    """

    mean_rate: float = 0.235
    """Mean of the Gamma purchase rate ``lambda`` (purchases per day of a new customer, before effects)."""
    rate_shape: float = 4.0
    """Shape of the Gamma purchase rate; smaller is more heterogeneous (heavier tail of frequent buyers)."""
    dropout_a: float = 0.22
    """Beta ``a`` of the per-purchase dropout probability ``p``; multiplied by the channel/category dropout effects."""
    dropout_b: float = 0.45
    """Beta ``b`` of the dropout ``p`` (mean ``a / (a + b)``); divided by the channel/category dropout effects."""
    acquisition_growth: float = 1.5
    """New customers per day at the end of the period are ``1 + acquisition_growth`` times those at the start."""
    engagement_tau: float = 90.0
    """Age scale (days) of the engagement decay ``(1 + age / tau) ** -decay``."""
    engagement_decay: float = 0.4
    """Exponent of the engagement decay (0 disables it)."""
    slowdown_factor: float = 2.5
    """Stretch of the last inter-purchase gap before a dropout (the previous gap gets its square root)."""
    holiday_lift: float = 0.35
    """Extra purchase intensity in December (half of it in November, plus a Black-Friday week bump)."""
    intensity_drift_per_quarter: float = -0.05
    """Relative change of purchase intensity per quarter of calendar time (drift)."""
    basket_drift_per_quarter: float = 0.02
    """Relative change of basket amounts per quarter of calendar time (drift)."""
    app_share_start: float = 0.2
    """Share of customers acquired at the start whose primary channel is the app."""
    app_share_end: float = 0.4
    """Share of customers acquired at the end whose primary channel is the app."""
    store_share: float = 0.35
    """Share of non-app customers whose primary channel is the store (the rest: web)."""
    primary_channel_share: float = 0.8
    """Probability that a repeat purchase uses the customer's primary channel."""
    acquisition_channel_share: float = 1.0
    """Probability that the first purchase uses the customer's primary channel (the channel that acquired them);
    otherwise any channel at random, as for a repeat purchase."""
    first_basket_loyalty: float = 0.35
    """Log-scale effect of the customer's loyalty on the first purchase's basket: the first basket is multiplied by
    ``exp(first_basket_loyalty * z - first_basket_loyalty**2 / 2)``, ``z`` the customer's standardized
    ``-logit(p)`` (low dropout probability ``p``: a bigger first basket). 0: the first basket carries no more than
    the customer's mean basket does."""
    favourite_category_share: float = 0.6
    """Probability that a purchase is in the customer's favourite category."""
    mean_amount: float = 42.0
    """Median per-customer mean basket amount (currency units) before category and drift effects."""
    amount_sigma: float = 0.35
    """Log-normal sigma of the per-customer mean basket (heterogeneity of spend)."""
    amount_shape: float = 2.5
    """Gamma shape of single basket amounts around the customer's mean (smaller: more variable)."""
    spend_frequency_corr: float = 0.1
    """Correlation of log mean basket with log purchase rate (weak)."""
    december_basket_lift: float = 0.12
    """Relative lift of basket amounts in December (gifts)."""
    refund_rate: float = 0.034
    """Probability that a purchase is refunded later (a share of rows, before window truncation)."""
    full_refund_share: float = 0.7
    """Share of refunds that give back the whole purchase (the rest: 20-90 % of it)."""
    refund_lag_days: float = 9.0
    """Mean delay (days) between a purchase and its refund."""
    duplicate_rate: float = 0.002
    """Share of rows written twice (exact copy, same transaction_id, right after the original)."""
    zero_amount_rate: float = 0.001
    """Share of purchases with a zero amount (free items, vouchers)."""
    # --- scenario knobs: the defaults below switch them off (the default scenario's output does not change) ----
    acquisition_days: int = 0
    """When > 0, every first purchase falls in the first ``acquisition_days`` days (one cohort, then no new
    customers); 0 spreads acquisition over the whole simulated period."""
    prehistory_days: int = 0
    """Days simulated before ``start`` whose rows are dropped: the log begins in the middle of existing customers'
    lives (left-censored), and customers who left before ``start`` never appear."""
    yearly_intensity: tuple[float, ...] = ()
    """Twelve monthly purchase-intensity multipliers (January first) replacing the built-in retail profile; the
    holiday lift still adds to them. Empty: the built-in profile."""
    yearly_basket: tuple[float, ...] = ()
    """Twelve monthly basket-amount multipliers (January first), on top of the December lift. Empty: none."""
    same_day_rate: float = 0.0
    """Mean number of extra invoices on the same day per purchase (Poisson): several invoices a day."""
    missing_customer_id_rate: float = 0.0
    """Share of rows exported with an empty ``customer_id`` (guest orders; the contract counts and drops them)."""
    partial_refund_low: float = 0.2
    """Smallest share of a purchase given back by a partial refund."""
    partial_refund_high: float = 0.9
    """Largest share of a purchase given back by a partial refund."""
    transaction_prefix: str = "T"
    """Prefix of purchase transaction ids."""
    cancel_prefix: str = ""
    """When set, refund rows are cancellation invoices: their id is this prefix + the invoice number (``C536379``)."""
    customer_id_offset: int = 0
    """First customer number (``12346`` gives ids from ``12346``)."""
    customer_id_suffix: str = ""
    """Suffix of customer ids (``".0"``: ids exported as floats, ``17850.0``)."""
    customer_id_prefix: str = "C"
    """Prefix of customer ids."""


@dataclasses.dataclass(frozen=True)
class _Calendar:
    days: int
    cum: np.ndarray  # cumulative seasonal intensity at day boundaries, len days + 1
    grid: np.ndarray  # 0..days as float
    join_cdf: np.ndarray  # acquisition CDF per day
    basket: np.ndarray  # basket multiplier per day (drift, December)


def _calendar(days: int, start: np.datetime64, cfg: GeneratorConfig) -> _Calendar:
    day_index = np.arange(days)
    dates = start + day_index.astype("timedelta64[D]")
    epoch_day = dates.astype("datetime64[D]").astype(np.int64)
    dow = (epoch_day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month = dates.astype("datetime64[M]").astype(np.int64) % 12  # January = 0
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    yearly = (np.asarray(cfg.yearly_intensity, dtype=np.float64) if cfg.yearly_intensity else _MONTHLY)[month].copy()
    yearly += np.where(month == 10, 0.5 * cfg.holiday_lift, 0.0)
    yearly += np.where((month == 11) & (dom <= 24), cfg.holiday_lift, 0.0)
    yearly += np.where((month == 10) & (dom >= 23) & (dom <= 30), 0.6 * cfg.holiday_lift, 0.0)  # Black Friday
    quarters = day_index / _DAYS_PER_QUARTER
    drift = (1.0 + cfg.intensity_drift_per_quarter) ** quarters
    season = _WEEKLY[dow] * yearly * drift
    cum = np.concatenate([[0.0], np.cumsum(season)])
    acquisition = (1.0 + cfg.acquisition_growth * (day_index + 0.5) / days) * _WEEKLY[dow] * yearly
    if cfg.acquisition_days > 0:
        acquisition = np.where(day_index < cfg.acquisition_days, acquisition, 0.0)
    join_cdf = np.cumsum(acquisition)
    join_cdf /= join_cdf[-1]
    basket = (1.0 + cfg.basket_drift_per_quarter) ** quarters * np.where(
        month == 11, 1.0 + cfg.december_basket_lift, 1.0
    )
    if cfg.yearly_basket:
        basket = basket * np.asarray(cfg.yearly_basket, dtype=np.float64)[month]
    return _Calendar(days, cum, np.arange(days + 1, dtype=np.float64), join_cdf, basket)


def _standardized(values: np.ndarray) -> np.ndarray:
    """``(values - mean) / std`` over the block (zeros when fewer than two customers or no spread)."""
    spread = float(values.std()) if len(values) > 1 else 0.0
    return (values - values.mean()) / spread if spread > 0 else np.zeros(len(values))


def _segment_cumsum(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each segment (segments are consecutive, ``counts`` may hold zeros)."""
    total = np.cumsum(values)
    before = np.concatenate([[0.0], total])[starts]
    return total - np.repeat(before, counts)


def _engagement_inverse(v: np.ndarray, cfg: GeneratorConfig) -> np.ndarray:
    """Age at which the cumulative engaged time ``E(age) = int (1 + a/tau)^-decay da`` reaches ``v``."""
    tau, b = cfg.engagement_tau, cfg.engagement_decay
    if b == 0:
        return v
    if b == 1:
        return tau * np.expm1(v / tau)
    return tau * ((1.0 + v * (1.0 - b) / tau) ** (1.0 / (1.0 - b)) - 1.0)


def _engagement(age: np.ndarray, cfg: GeneratorConfig) -> np.ndarray:
    """Cumulative engaged time ``E(age)``."""
    tau, b = cfg.engagement_tau, cfg.engagement_decay
    if b == 0:
        return age
    if b == 1:
        return tau * np.log1p(age / tau)
    return tau / (1.0 - b) * ((1.0 + age / tau) ** (1.0 - b) - 1.0)


def _block(block: int, first: int, n: int, seed: int, cal: _Calendar, cfg: GeneratorConfig) -> dict:
    """Transactions of customers ``first .. first + n - 1`` (sorted by customer, time)."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(block,)))
    days = cal.days

    # --- customers -------------------------------------------------------------------------------------
    join_day = np.searchsorted(cal.join_cdf, rng.random(n), side="right").clip(0, days - 1)
    join_t = join_day + rng.random(n)
    app_share = cfg.app_share_start + (cfg.app_share_end - cfg.app_share_start) * join_t / days
    u = rng.random(n)
    primary = np.where(u < app_share, 2, np.where(u < app_share + (1 - app_share) * cfg.store_share, 1, 0))
    favourite = np.searchsorted(np.cumsum(_CAT_POPULARITY), rng.random(n) * _CAT_POPULARITY.sum(), side="right")
    shape = cfg.rate_shape
    rate = rng.standard_gamma(shape, n)
    # Wilson-Hilferty: an approximately standard-normal score of the Gamma draw, to correlate spend with it
    z_rate = (np.cbrt(rate / shape) - (1.0 - 1.0 / (9.0 * shape))) * np.sqrt(9.0 * shape)
    corr = cfg.spend_frequency_corr
    z_spend = corr * z_rate + np.sqrt(1.0 - corr**2) * rng.standard_normal(n)
    rate *= cfg.mean_rate / shape
    rate = np.maximum(rate, 1e-6) * _CHAN_RATE[primary] * _CAT_RATE[favourite]
    mean_basket = cfg.mean_amount * np.exp(cfg.amount_sigma * z_spend)
    # channel/category effects e give Beta(a * e, b / e): e < 1 moves mass to p near 0 (loyal customers)
    dropout_effect = _CHAN_DROPOUT[primary] * _CAT_DROPOUT[favourite]
    p = rng.beta(cfg.dropout_a * dropout_effect, cfg.dropout_b / dropout_effect)
    p = np.clip(p, 1e-4, 0.98)
    loyalty = _standardized(np.log1p(-p) - np.log(p))  # high: unlikely to drop out after a purchase
    lifetime_purchases = rng.geometric(p)  # purchases before dropping out, >= 1

    # --- repeat purchases in engaged seasonal time ----------------------------------------------------
    c_join = np.interp(join_t, cal.grid, cal.cum)
    span = cal.cum[-1] - c_join  # seasonal time from join to the end
    v_max = rate * _engagement(span, cfg)
    m = rng.poisson(v_max)  # repeat purchases in the window if the customer never dropped out
    k = np.minimum(m, lifetime_purchases - 1)
    drops = (lifetime_purchases - 1 <= m) & (k > 0)
    starts = np.concatenate([[0], np.cumsum(k)[:-1]])
    r = int(k.sum())
    owner = np.repeat(np.arange(n), k)
    pos = np.arange(r) - np.repeat(starts, k)
    # first k order statistics of m uniforms on [0, v_max] (a unit Poisson process conditioned on m)
    denom = np.repeat(m, k) - pos
    log_surv = _segment_cumsum(rng.standard_exponential(r) / denom, starts, k)
    v = -np.expm1(-log_surv) * np.repeat(v_max, k)
    if cfg.slowdown_factor != 1.0 and r:
        gaps = np.diff(v, prepend=0.0)
        gaps[pos == 0] = v[pos == 0]
        from_end = np.repeat(k, k) - 1 - pos
        dropper = np.repeat(drops, k)
        stretch = np.ones(r)
        stretch[dropper & (from_end == 0)] = cfg.slowdown_factor
        stretch[dropper & (from_end == 1)] = np.sqrt(cfg.slowdown_factor)
        v = _segment_cumsum(gaps * stretch, starts, k)
    c_event = np.repeat(c_join, k) + _engagement_inverse(v / rate[owner], cfg)
    inside = c_event < cal.cum[-1]
    t_event = np.interp(c_event[inside], cal.cum, cal.grid)

    cust = np.concatenate([np.arange(n), owner[inside]])
    t = np.concatenate([join_t, t_event])
    joining = np.arange(len(cust)) < n  # the first purchase (same-day extras below belong to it)
    if cfg.same_day_rate > 0:
        extra = 1 + rng.poisson(cfg.same_day_rate, len(cust))
        cust, t, joining = np.repeat(cust, extra), np.repeat(t, extra), np.repeat(joining, extra)
    rows = len(cust)

    # --- purchase attributes --------------------------------------------------------------------------
    day = np.minimum(t.astype(np.int64), days - 1)
    primary_share = np.where(joining, cfg.acquisition_channel_share, cfg.primary_channel_share)
    chan = np.where(rng.random(rows) < primary_share, primary[cust], rng.integers(0, 3, rows))
    hour_cdf = np.cumsum(_HOUR_PROFILE, axis=1)
    hour_cdf = (hour_cdf / hour_cdf[:, -1:] + np.arange(3)[:, None]).ravel()
    hour = np.searchsorted(hour_cdf, chan + rng.random(rows), side="right") - 24 * chan
    hour = np.clip(hour, 0, 23)
    seconds = day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, rows)
    fav_pick = rng.random(rows) < cfg.favourite_category_share
    any_cat = np.searchsorted(np.cumsum(_CAT_POPULARITY), rng.random(rows) * _CAT_POPULARITY.sum(), side="right")
    cat = np.where(fav_pick, favourite[cust], any_cat)
    size = rng.gamma(cfg.amount_shape, 1.0 / cfg.amount_shape, rows)
    if cfg.first_basket_loyalty:
        beta = cfg.first_basket_loyalty
        size[joining] *= np.exp(beta * loyalty[cust[joining]] - beta**2 / 2)
    amount = np.round(mean_basket[cust] * _CAT_PRICE[cat] * cal.basket[day] * size, 2)
    amount = np.maximum(amount, 0.01)
    amount[rng.random(rows) < cfg.zero_amount_rate] = 0.0
    quantity = 1 + rng.poisson(_CAT_QUANTITY[cat] * np.sqrt(size))

    # --- refunds --------------------------------------------------------------------------------------
    refund_p = cfg.refund_rate * _CAT_REFUND[cat] / float(_CAT_REFUND @ _CAT_POPULARITY)
    refunded = np.flatnonzero((rng.random(rows) < refund_p) & (amount > 0))
    nr = len(refunded)
    lag = 0.25 + rng.gamma(1.5, (cfg.refund_lag_days - 0.25) / 1.5, nr)
    r_seconds = seconds[refunded] + (lag * 86_400).astype(np.int64)
    full = rng.random(nr) < cfg.full_refund_share
    frac = np.where(full, 1.0, rng.uniform(cfg.partial_refund_low, cfg.partial_refund_high, nr))
    r_amount = -np.maximum(np.round(amount[refunded] * frac, 2), 0.01)
    r_quantity = np.where(full, quantity[refunded], np.maximum(1, (quantity[refunded] * frac).astype(np.int64)))
    keep = r_seconds < days * 86_400
    refunded = refunded[keep]

    cust = np.concatenate([cust, cust[refunded]])
    seconds = np.concatenate([seconds, r_seconds[keep]])
    amount = np.concatenate([amount, r_amount[keep]])
    quantity = np.concatenate([quantity, r_quantity[keep]])
    cat = np.concatenate([cat, cat[refunded]])
    chan = np.concatenate([chan, chan[refunded]])

    if cfg.prehistory_days > 0:  # the log starts after the prehistory: drop what happened before
        seen = seconds >= cfg.prehistory_days * 86_400
        cust, seconds, amount, quantity, cat, chan = (a[seen] for a in (cust, seconds, amount, quantity, cat, chan))

    order = np.argsort(cust * np.int64(days * 86_400) + seconds, kind="stable")
    total = len(order)
    duplicate = rng.random(total) < cfg.duplicate_rate
    out = {
        "cust": (cust[order] + first).astype(np.int64),
        "seconds": seconds[order],
        "amount": amount[order],
        "quantity": quantity[order].astype(np.int64),
        "category": cat[order].astype(np.int8),
        "channel": chan[order].astype(np.int8),
        "duplicate": duplicate,
    }
    if cfg.missing_customer_id_rate > 0:
        out["anonymous"] = rng.random(total) < cfg.missing_customer_id_rate
    return out


def _fixed_width_ids(prefix: str, numbers: np.ndarray, width: int, suffix: str = "") -> pa.Array:
    """``prefix`` + zero-padded ``numbers`` + ``suffix`` as an Arrow string array, built from raw byte buffers."""
    n = len(numbers)
    head, tail = prefix.encode(), suffix.encode()
    stride = len(head) + width + len(tail)
    buf = np.empty((n, stride), dtype=np.uint8)
    for i, ch in enumerate(head):
        buf[:, i] = ch
    for i, ch in enumerate(tail):
        buf[:, len(head) + width + i] = ch
    rest = numbers.astype(np.int64, copy=True)
    for col in range(len(head) + width - 1, len(head) - 1, -1):
        buf[:, col] = 48 + rest % 10
        rest //= 10
    if n * stride < 2**31 - 1:
        offsets = np.arange(n + 1, dtype=np.int32) * np.int32(stride)
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))
    offsets = np.arange(n + 1, dtype=np.int64) * stride
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(buf))


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named preset of the generator: config overrides plus the default length and first day of the log."""

    name: str
    description: str
    days: int
    start: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

    def config(self, **overrides: Any) -> GeneratorConfig:
        return dataclasses.replace(GeneratorConfig(), **{**self.overrides, **overrides})


SCENARIOS: dict[str, Scenario] = {
    "default": Scenario(
        "default",
        "a growing retail base over two years: customers join all the time, BG/NBD-like purchases with drift",
        730,
        "2023-01-01",
    ),
    "cohort": Scenario(
        "cohort",
        "one acquisition cohort (all first purchases in the first 12 weeks) that only ages, 18 months of history",
        548,
        "2023-01-01",
        {
            "acquisition_days": 84,
            "acquisition_growth": 0.0,
            "mean_rate": 0.04,
            "rate_shape": 0.7,
            "dropout_a": 0.45,
            "dropout_b": 0.52,
            "engagement_tau": 60.0,
            "engagement_decay": 0.4,
            "slowdown_factor": 2.0,
            "holiday_lift": 0.15,
            "intensity_drift_per_quarter": 0.0,
            "basket_drift_per_quarter": 0.0,
            "app_share_start": 0.2,
            "app_share_end": 0.2,
            "mean_amount": 35.0,
            "amount_sigma": 0.7,
            "amount_shape": 2.0,
            "spend_frequency_corr": 0.2,
            "refund_rate": 0.02,
        },
    ),
    "seasonal": Scenario(
        "seasonal",
        "an online wholesaler's invoice export: a Nov-Dec peak, a heavy tail, rows without customer id and "
        "cancellation invoices, 13 months plus a 90-day horizon",
        486,
        "2023-12-01",
        {
            "prehistory_days": 365,
            "acquisition_growth": 0.3,
            "mean_rate": 0.03,
            "rate_shape": 0.6,
            "dropout_a": 0.12,
            "dropout_b": 1.6,
            "engagement_tau": 120.0,
            "engagement_decay": 0.5,
            "slowdown_factor": 1.5,
            "holiday_lift": 0.0,
            "yearly_intensity": (0.8, 0.8, 0.95, 0.9, 0.95, 0.9, 0.9, 0.95, 1.4, 1.8, 2.6, 1.6),
            "yearly_basket": (0.9, 0.9, 0.95, 0.95, 0.95, 0.9, 0.9, 0.95, 1.2, 1.4, 1.7, 1.6),
            "december_basket_lift": 0.0,
            "intensity_drift_per_quarter": 0.0,
            "basket_drift_per_quarter": 0.0,
            "mean_amount": 250.0,
            "amount_sigma": 1.15,
            "amount_shape": 1.5,
            "spend_frequency_corr": 0.5,
            "same_day_rate": 0.08,
            "missing_customer_id_rate": 0.25,
            "refund_rate": 0.18,
            "full_refund_share": 0.1,
            "partial_refund_low": 0.05,
            "partial_refund_high": 0.5,
            "refund_lag_days": 3.0,
            "duplicate_rate": 0.005,
            "zero_amount_rate": 0.002,
            "transaction_prefix": "",
            "cancel_prefix": "C",
            "customer_id_prefix": "",
            "customer_id_offset": 12346,
            "customer_id_suffix": ".0",
        },
    ),
}


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name``; ``KeyError`` with the known names otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario '{name}' (known: {', '.join(SCENARIOS)})") from None


def generate_transactions(
    n_customers: int,
    days: int | None = None,
    seed: int = 0,
    start: str | None = None,
    *,
    scenario: str = "default",
    **overrides: Any,
) -> pd.DataFrame:
    """Generate a synthetic transaction log of ``n_customers`` customers over ``days`` days from ``start``.

    ``scenario`` picks a preset of :data:`SCENARIOS` (its ``days`` and ``start`` apply when they are not given);
    ``overrides`` replace fields of its :class:`GeneratorConfig` (e.g. ``refund_rate=0.0``). Returns the
    columns of :data:`COLUMNS` (``customer_id``, ``transaction_id``, ``category``, ``channel`` as ``str``;
    ``timestamp`` datetime64[ns, UTC]; ``amount`` float64; ``quantity`` int64), sorted by customer id then
    timestamp, duplicate rows right after their original (rows exported without a customer id stay where their
    customer's rows are). Deterministic in all arguments.
    """
    preset = get_scenario(scenario)
    days = preset.days if days is None else days
    start = preset.start if start is None else start
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    if days < 1:
        raise ValueError("days must be at least 1")
    cfg = preset.config(**overrides)
    start_day = np.datetime64(pd.Timestamp(start).date(), "D")
    sim_start = start_day - np.timedelta64(cfg.prehistory_days, "D")
    cal = _calendar(days + cfg.prehistory_days, sim_start, cfg)

    blocks = [(b, b * _BLOCK, min(_BLOCK, n_customers - b * _BLOCK)) for b in range(-(-n_customers // _BLOCK))]
    workers = min(len(blocks), os.cpu_count() or 1, 4)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda a: _block(*a, seed, cal, cfg), blocks))
    else:
        parts = [_block(*a, seed, cal, cfg) for a in blocks]
    cols = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    del parts

    # transaction ids increase with time (ties: customer order); duplicates repeat their original's id
    by_time = np.argsort(cols["seconds"], kind="stable")
    tx_number = np.empty(len(by_time), dtype=np.int64)
    tx_number[by_time] = np.arange(1, len(by_time) + 1)
    del by_time
    repeat = 1 + cols.pop("duplicate").astype(np.int64)
    if len(repeat) and repeat.max() > 1:
        cols = {name: np.repeat(values, repeat) for name, values in cols.items()}
        tx_number = np.repeat(tx_number, repeat)

    last_customer = cfg.customer_id_offset + n_customers - 1
    id_width = max(7, len(str(last_customer))) if cfg.customer_id_prefix == "C" else len(str(last_customer))
    customer_ids = _fixed_width_ids(
        cfg.customer_id_prefix,
        np.arange(n_customers) + cfg.customer_id_offset,
        id_width,
        cfg.customer_id_suffix,
    )
    customer_id = pc.take(customer_ids, pa.array(cols["cust"]))
    if "anonymous" in cols:
        customer_id = pc.if_else(pa.array(cols["anonymous"]), pa.scalar("", customer_id.type), customer_id)
    tx_width = max(9, len(str(len(tx_number)))) if cfg.transaction_prefix == "T" else len(str(len(tx_number)))
    transaction_id = _fixed_width_ids(cfg.transaction_prefix, tx_number, tx_width)
    if cfg.cancel_prefix:
        cancelled = _fixed_width_ids(cfg.cancel_prefix, tx_number, tx_width)
        if cancelled.type != transaction_id.type:
            cancelled = pc.cast(cancelled, pa.large_string())
            transaction_id = pc.cast(transaction_id, pa.large_string())
        transaction_id = pc.if_else(pa.array(cols["amount"] < 0), cancelled, transaction_id)
    ns = cols["seconds"] * _NS + np.int64(sim_start.astype("datetime64[s]").astype(np.int64)) * _NS
    table = pa.table(
        {
            "customer_id": customer_id,
            "transaction_id": transaction_id,
            "timestamp": pa.array(ns, type=pa.timestamp("ns", tz="UTC")),
            "amount": pa.array(cols["amount"]),
            "quantity": pa.array(cols["quantity"]),
            "category": pc.take(pa.array(CATEGORIES), pa.array(cols["category"])),
            "channel": pc.take(pa.array(CHANNELS), pa.array(cols["channel"])),
        }
    )
    frame = table.to_pandas()
    for name in ("customer_id", "transaction_id", "category", "channel"):
        if frame[name].dtype != "str":
            frame[name] = frame[name].astype("str")
    return frame


def write_transactions(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` to ``path`` as ``.csv`` or ``.parquet``/``.pq`` (by extension), creating parent dirs.

    Parquet goes through pyarrow with row groups of about a million rows; CSV through pyarrow's writer
    with ISO 8601 UTC timestamps (``2023-01-01T10:15:00Z``). Ids are written as text, so ``"C0000042"``
    reads back unchanged.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"output '{path}' must end in .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if suffix == ".csv":
            if "timestamp" in table.column_names:
                ts = table["timestamp"]
                if pa.types.is_timestamp(ts.type):
                    # casting the naive UTC wall time to text is much faster than strftime
                    naive = pc.cast(ts, pa.timestamp(ts.type.unit))  # aware values are stored as UTC
                    seconds = pc.cast(naive, pa.timestamp("s"), safe=False)
                    if pc.all(pc.equal(pc.cast(seconds, naive.type), naive)).as_py() is not False:
                        naive = seconds  # whole seconds: no ".000000000"
                    text = pc.replace_substring(pc.cast(naive, pa.string()), " ", "T", max_replacements=1)
                    suffix = "Z" if ts.type.tz else ""
                    text = pc.binary_join_element_wise(text, pa.scalar(suffix), "")
                    table = table.set_column(table.column_names.index("timestamp"), "timestamp", text)
            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp, row_group_size=1_000_000)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
