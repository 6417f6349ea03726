"""The one point-in-time feature computation: (transactions, cutoffs) -> one row per (customer, cutoff).

Training (many cutoffs), batch scoring (one cutoff, millions of customers) and online scoring (one customer,
the transactions in the request) all call :func:`compute_features` or :func:`compute_feature_arrays`.
There is no second implementation.

Time semantics: a cutoff ``D`` is a UTC calendar day; a feature at ``D`` reads only transactions whose UTC day
is ``<= D``. Time is measured in whole days (``day = floor(UTC timestamp / 1 day)``), money in the input
currency. A *purchase* is a transaction with ``amount >= 0`` (zero included); a *refund* has ``amount < 0``.
A customer appears at a cutoff once they have any transaction at or before it.

The *first purchase day* (the acquisition) gives :data:`FIRST_PURCHASE_FEATURES`: its spend and items, the days to
the second purchase day, and the channel / category of its largest purchase as a fixed number
(:func:`label_codes`: a name's code never depends on the input, so the feature means the same in training, batch,
Spark and online scoring).

Customer events (complaints, ratings, service contacts, e-mails; :mod:`features.events`) are optional: indexed with
the transactions (``index_transactions(transactions, events=...)``), they add the features of
:mod:`features.event_features` at the same cutoffs under the same rule (events whose UTC day is ``<= D``). Without
events the kernel's columns and values are exactly those of a log without them.

Implementation: the frame is reduced to integer arrays (customer code, day, amount), ordered by
(customer, day) once, and every feature is a vectorised reduction (``np.bincount``, ``ufunc.reduceat``)
over the rows at or before the cutoff. Already-sorted input (what the generator and the batch partitions
give) skips the sort.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from features.event_features import EVENT_FEATURE_DESCRIPTIONS, EventIndex, event_features_at, index_events

WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90, 180, 365)
NS_PER_DAY = 86_400 * 10**9
EPOCH = dt.date(1970, 1, 1)

FEATURE_DESCRIPTIONS: dict[str, str] = {
    "recency_days": "days since last purchase",
    "tenure_days": "days since first transaction",
    "n_purchase_days": "distinct days with a purchase",
    "n_transactions": "purchases (transactions with amount >= 0)",
    "net_spend": "net spend to date (purchases minus refunds)",
    "gross_spend": "spend on purchases to date",
    "mean_amount": "average purchase amount",
    "max_amount": "largest purchase amount",
    "std_amount": "spread of purchase amounts",
    **{f"tx_{w}d": f"purchases in the last {w} days" for w in WINDOWS_DAYS},
    **{f"spend_{w}d": f"net spend in the last {w} days" for w in WINDOWS_DAYS},
    "trend_tx_30_365": "purchase rate last 30 days vs last 365 days",
    "trend_tx_90_365": "purchase rate last 90 days vs last 365 days",
    "trend_spend_90_365": "spend rate last 90 days vs last 365 days",
    "ipt_mean_days": "average days between purchase days",
    "ipt_std_days": "spread of days between purchase days",
    "days_overdue": "days past the customer's usual purchase interval",
    "overdue_ratio": "days since last purchase / usual interval",
    "refund_count": "refunds to date",
    "refund_share": "refunded amount / spend on purchases",
    "btyd_frequency": "repeat purchase days (BTYD frequency)",
    "btyd_recency": "days between first and last purchase (BTYD recency)",
    "btyd_T": "days between first purchase and cutoff (BTYD age T)",
    "btyd_monetary": "average spend per repeat purchase day",
    "season_sin": "time of year of the as-of date (sine)",
    "season_cos": "time of year of the as-of date (cosine)",
    "first_basket_value": "spend on the first purchase day (first basket value)",
    "days_to_second_purchase": "days from the first to the second purchase day (missing for one-time buyers)",
    "n_categories": "distinct product categories bought",
    "n_channels": "distinct channels used",
    "first_category_code": "category of the first purchase day's largest purchase, as a fixed code of its name",
    "first_channel_code": "channel of the first purchase day's largest purchase (acquisition channel), as a fixed "
    "code of its name",
    "first_basket_items": "items (quantity) bought on the first purchase day",
    **EVENT_FEATURE_DESCRIPTIONS,
}
OPTIONAL_FEATURES: dict[str, tuple[str, ...]] = {
    "category": ("n_categories", "first_category_code"),
    "channel": ("n_channels", "first_channel_code"),
    "quantity": ("first_basket_items",),
    "events": tuple(EVENT_FEATURE_DESCRIPTIONS),
}
"""Features an input gives only when it has the optional transaction column (the key), or, for ``events``, when
customer events are indexed with the transactions (:mod:`features.event_features`): a model trained without them
keeps its exact feature list."""
FIRST_PURCHASE_FEATURES: tuple[str, ...] = (
    "first_basket_value",
    "days_to_second_purchase",
    "first_category_code",
    "first_channel_code",
    "first_basket_items",
)
"""What a customer's first purchase day says (the acquisition): the features a one-time buyer is scored on beyond
recency and tenure. A benchmark drops them to measure what they add."""
BASE_FEATURES: tuple[str, ...] = tuple(
    k for k in FEATURE_DESCRIPTIONS if not any(k in names for names in OPTIONAL_FEATURES.values())
)


def feature_columns(
    has_category: bool = False, has_channel: bool = False, has_quantity: bool = False, has_events: bool = False
) -> list[str]:
    """The feature names the kernel produces for an input with or without the optional columns (and events)."""
    has = {"category": has_category, "channel": has_channel, "quantity": has_quantity, "events": has_events}
    optional = {name for column, names in OPTIONAL_FEATURES.items() if has[column] for name in names}
    return [*BASE_FEATURES, *(k for k in FEATURE_DESCRIPTIONS if k in optional)]


def label_codes(labels: np.ndarray) -> np.ndarray:
    """The fixed numeric code of each category / channel name: CRC-32 of its UTF-8 text, as float64 (NaN: empty).

    The code depends on the name alone, never on the input it comes from, so a first-channel feature means the
    same in training, batch, Spark and online scoring (a request's few transactions would number channels
    differently from the training log). Names are taken as written (``"Web"`` and ``"web"`` are two channels, as
    for ``n_channels``). A name the model never saw gets a code that falls between learned split points: trees
    treat it like some known name, so keep category / channel vocabularies stable between training and scoring.
    """
    import zlib

    return np.array(
        [zlib.crc32(str(v).encode("utf-8")) if isinstance(v, str) and v != "" else np.nan for v in labels],
        dtype=np.float64,
    )


def date_to_day(value: dt.date | str | pd.Timestamp) -> int:
    """Days since 1970-01-01 of a calendar date (the kernel's integer time axis)."""
    if isinstance(value, str | pd.Timestamp):
        value = pd.Timestamp(value).date()
    if isinstance(value, dt.datetime):
        value = value.date()
    return (value - EPOCH).days


def day_to_date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


@dataclasses.dataclass
class PreparedTransactions:
    """Transactions reduced to sorted integer arrays, ready for any number of cutoffs.

    ``code`` indexes ``customers``; ``day`` is days since 1970-01-01 (UTC); ``amount`` in currency units.
    Rows are ordered by (code, day). ``category``/``channel`` are small-integer codes (numbered per input) or
    ``None``; ``category_names``/``channel_names`` give each code's name and ``category_keys``/``channel_keys`` its
    input-independent :func:`label_codes` value.
    ``quantity`` is the items per transaction (float64, NaN where unknown) or ``None``. ``dropped``: features left
    out of :attr:`columns` (what a model trained on these transactions uses; an ablation, e.g. without
    :data:`FIRST_PURCHASE_FEATURES`); the arrays of :func:`compute_feature_arrays` still hold them.
    ``events``: the customer events indexed on these customer codes (:class:`features.event_features.EventIndex`),
    or ``None``: the event features are computed only when it is set.
    """

    customers: np.ndarray
    code: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    category: np.ndarray | None = None
    channel: np.ndarray | None = None
    quantity: np.ndarray | None = None
    category_keys: np.ndarray | None = None
    channel_keys: np.ndarray | None = None
    category_names: np.ndarray | None = None
    channel_names: np.ndarray | None = None
    dropped: frozenset[str] = frozenset()
    events: EventIndex | None = None

    @property
    def n_customers(self) -> int:
        return len(self.customers)

    @property
    def columns(self) -> list[str]:
        columns = feature_columns(
            self.category is not None, self.channel is not None, self.quantity is not None, self.events is not None
        )
        return [c for c in columns if c not in self.dropped]


def _factorize(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(values, sort=False)
    return codes.astype(np.int64, copy=False), np.asarray(uniques, dtype=object)


def _arrow_strings(values: pd.Series):
    """The column as one Arrow string array when it is Arrow-backed text (else None: use the pandas path)."""
    import pyarrow as pa

    if not isinstance(values, pd.Series) or not isinstance(values.array, pd.arrays.ArrowStringArray):
        return None
    arr = pa.array(values.array)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return None
    return arr


def _factorize_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_factorize` of the customer ids; fast when each customer's rows are contiguous (sorted input).

    Grouped input: codes are the run numbers, which is exactly first-appearance order (what ``pd.factorize``
    gives), so the result is identical; otherwise (or with nulls) it falls back to ``pd.factorize``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _arrow_strings(values)
    if arr is None or arr.null_count or len(arr) < 2:
        return _factorize(values)
    change = pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate(([True], change)))
    heads = arr.take(pa.array(starts))
    ascending = len(heads) < 2 or pc.all(pc.less(heads.slice(0, len(heads) - 1), heads.slice(1))).as_py()
    if not ascending and pc.count_distinct(heads).as_py() != len(heads):  # a customer's rows are not contiguous
        return _factorize(values)
    code = np.zeros(len(arr), dtype=np.int64)
    code[starts[1:]] = 1
    np.cumsum(code, out=code)
    return code, np.asarray(heads.to_numpy(zero_copy_only=False), dtype=object)


def _factorize_labels(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``values.fillna("")`` in first-appearance order (as :func:`_factorize`), via Arrow when possible,
    with each code's name."""
    import pyarrow.compute as pc

    arr = _arrow_strings(values)
    if arr is None:
        return _factorize(values.fillna(""))
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    encoded = pc.dictionary_encode(arr)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), names


def index_transactions(transactions: pd.DataFrame, events: pd.DataFrame | None = None) -> PreparedTransactions:
    """Index contract-clean transactions for the kernel: :class:`PreparedTransactions`, sorted by (customer, day).

    ``transactions`` is the output of :func:`features.contract.prepare_transactions` (which applies the input
    contract: parsing, rule counts, order lines summed); this function validates nothing. It factorises customer
    ids (and ``category`` / ``channel`` when present) into integer codes, turns timestamps into UTC days since
    1970-01-01 and orders the rows by (customer, day), once, for any number of cutoffs. ``quantity`` is kept
    when present. ``events``: customer events prepared by :func:`features.events.prepare_events`, indexed on the
    same customer codes (:func:`features.event_features.index_events`; events of customers without a transaction
    are counted there and left out); the result then also gives the event features.
    """
    code, customers = _factorize_ids(transactions["customer_id"])
    ts = transactions["timestamp"]
    ns = ts.to_numpy(dtype="datetime64[ns]").view(np.int64) if len(ts) else np.empty(0, np.int64)
    day = np.floor_divide(ns, NS_PER_DAY)
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    extra: dict[str, Any] = {}
    for name in ("category", "channel"):
        if name in transactions.columns:
            extra[name], extra[f"{name}_names"] = _factorize_labels(transactions[name])
            extra[f"{name}_keys"] = label_codes(extra[f"{name}_names"])
    if "quantity" in transactions.columns:
        quantity = transactions["quantity"]
        numbers = quantity if quantity.dtype == np.float64 else pd.to_numeric(quantity, errors="coerce")
        extra["quantity"] = numbers.to_numpy(dtype=np.float64)
    if events is not None:
        extra["events"] = index_events(events, customers)
    return sort_prepared(PreparedTransactions(customers, code, day, amount, **extra))


def _is_ordered(code: np.ndarray, day: np.ndarray) -> bool:
    """Rows ordered by (code, day)? Checked without building a combined key."""
    if not bool(np.all(code[1:] >= code[:-1])):
        return False
    ok = day[1:] >= day[:-1]
    ok |= code[1:] != code[:-1]
    return bool(ok.all())


def sort_prepared(prep: PreparedTransactions) -> PreparedTransactions:
    """Order rows by (customer code, day); a no-op (no copy) for input that is already ordered."""
    n = len(prep.code)
    if n < 2 or _is_ordered(prep.code, prep.day):
        return prep
    span = int(prep.day.max() - prep.day.min()) + 1
    key = prep.code * span + (prep.day - prep.day.min())
    order = np.argsort(key, kind="stable")
    return dataclasses.replace(
        prep,
        code=prep.code[order],
        day=prep.day[order],
        amount=prep.amount[order],
        category=None if prep.category is None else prep.category[order],
        channel=None if prep.channel is None else prep.channel[order],
        quantity=None if prep.quantity is None else prep.quantity[order],
    )


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


_DENSE_DISTINCT_CELLS = 1 << 26
"""Largest customers x values table that :func:`_distinct_per_customer` marks directly (64 MiB of booleans)."""


def _distinct_per_customer(code: np.ndarray, values: np.ndarray, n: int, start: np.ndarray | None = None) -> np.ndarray:
    """Number of distinct ``values`` per customer code.

    With ``start`` (rows ordered by code, ``start`` = first row of each code's run) and at most 64 distinct values,
    each run's values are OR-ed into a bit set and counted; otherwise rows need not be sorted.
    """
    if not len(values):
        return np.zeros(n)
    k = int(values.max()) + 1
    if start is not None and k <= 64:
        bits = np.left_shift(np.uint64(1), values.astype(np.uint64))
        out = np.zeros(n)
        out[code[start]] = np.bitwise_count(np.bitwise_or.reduceat(bits, start))
        return out
    pairs = code * k + values
    if n * k <= max(_DENSE_DISTINCT_CELLS, 4 * len(values)):  # few values: a seen-table
        seen = np.zeros(n * k, dtype=bool)
        seen[pairs] = True
        return np.count_nonzero(seen.reshape(n, k), axis=1).astype(np.float64)
    return np.bincount(np.unique(pairs) // k, minlength=n).astype(np.float64)


def _largest_purchase_key(keys: np.ndarray, amounts: np.ndarray, offset: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """Per group of rows starting at ``offset`` (consecutive groups): the key of the group's largest amount
    (``largest``: each row's group maximum); ties: the smallest key, a missing key only when all tied rows miss
    one. The choice never depends on the order of one day's rows."""
    candidate = np.where((amounts == largest) & ~np.isnan(keys), keys, np.inf)
    out = np.minimum.reduceat(candidate, offset)
    out[np.isinf(out)] = np.nan
    return out


def _features_at(prep: PreparedTransactions, cutoff_day: int) -> dict[str, np.ndarray]:
    """All features at one cutoff, for every customer code that has a transaction at or before it.

    Relies on the (code, day) row order of :class:`PreparedTransactions`: each customer's rows are one
    contiguous run, in day order. Every floating-point sum adds the same values in the same order as a
    ``np.bincount`` over the selected rows, so results do not depend on how the work is arranged.
    """
    n = prep.n_customers
    upto = prep.day <= cutoff_day
    everything = bool(upto.all())
    if everything:
        code, day, amount = prep.code, prep.day, prep.amount
    else:
        code, day, amount = prep.code[upto], prep.day[upto], prep.amount[upto]

    # customers present: one run of rows each
    first_row = np.ones(len(code), dtype=bool)
    np.not_equal(code[1:], code[:-1], out=first_row[1:])
    run_start = np.flatnonzero(first_row)
    present = np.zeros(n, dtype=bool)
    present[code[run_start]] = True
    first_day = np.zeros(n, dtype=np.int64)
    first_day[code[run_start]] = day[run_start]

    net_spend = np.bincount(code, weights=amount, minlength=n)
    is_refund = amount < 0
    if is_refund.any():
        refund_code = code[is_refund]
        refund_count = np.bincount(refund_code, minlength=n).astype(np.float64)
        refund_amount = 0.0 - np.bincount(refund_code, weights=amount[is_refund], minlength=n)
        buy = ~is_refund
        pc, pd_, pa = code[buy], day[buy], amount[buy]
        del refund_code
    else:
        refund_count, refund_amount = np.zeros(n), np.zeros(n)
        buy = None
        pc, pd_, pa = code, day, amount
    del is_refund

    n_tx = np.bincount(pc, minlength=n).astype(np.float64)
    gross = np.bincount(pc, weights=pa, minlength=n)
    sum_sq = np.bincount(pc, weights=pa * pa, minlength=n)
    mean_amount = _safe_div(gross, n_tx)
    var_amount = _safe_div(sum_sq, n_tx) - mean_amount**2
    std_amount = np.sqrt(np.clip(var_amount, 0.0, None))

    max_amount = np.full(n, np.nan)
    n_days = np.zeros(n)
    first_purchase_day = np.zeros(n, dtype=np.int64)
    last_purchase_day = np.zeros(n, dtype=np.int64)
    first_spend = np.zeros(n)
    second_day = np.full(n, np.nan)
    first_items = np.full(n, np.nan)
    first_label = {name: np.full(n, np.nan) for name in ("category", "channel")}
    gap_sq = np.zeros(n)
    purchase_start = None
    m = len(pc)
    if m:
        # purchase runs: rows [start, end) of customer `who`, in day order
        new_customer = pc[1:] != pc[:-1]
        start = np.flatnonzero(np.concatenate(([True], new_customer)))
        end = np.append(start[1:], m)
        who = pc[start]
        purchase_start = start
        max_amount[who] = np.maximum.reduceat(pa, start)
        first_purchase_day[who] = pd_[start]
        last_purchase_day[who] = pd_[end - 1]
        # step[i]: days from purchase row i to row i + 1 of the same customer (0 across customers and at the end),
        # so each customer's steps are step[start:end] and per-customer sums are one reduceat
        step = np.zeros(m, dtype=np.int64)
        np.subtract(pd_[1:], pd_[:-1], out=step[:-1])
        step[:-1][new_customer] = 0
        del new_customer
        # distinct purchase days = 1 + steps to a new day; gaps between purchase days = the positive steps
        new_day = step > 0
        n_days[who] = 1 + np.add.reduceat(new_day, start, dtype=np.int64)
        step *= step
        gap_sq[who] = np.add.reduceat(step, start)  # exact: sums of squared whole days
        del step
        # spend on the first purchase day: the same per-day reduction, over the first day's rows only
        day_rows = np.flatnonzero(new_day) + 1  # rows that start a new purchase day of the same customer
        del new_day
        nxt = np.searchsorted(day_rows, start, side="right")
        first_end = np.minimum(np.append(day_rows, m)[nxt], end)
        length = first_end - start
        offset = np.cumsum(length) - length
        rows = np.arange(int(length.sum())) + np.repeat(start - offset, length)
        first_spend[who] = np.add.reduceat(pa[rows], offset)
        second = first_end < end  # the row after the first day's rows is the same customer's second purchase day
        second_day[who[second]] = pd_[first_end[second]]
        if prep.quantity is not None or prep.channel is not None or prep.category is not None:
            # the first days' rows as row numbers of prep: only they are read from the optional columns
            source = rows if buy is None else np.flatnonzero(buy)[rows]
            if not everything:
                source = np.flatnonzero(upto)[source]
            if prep.quantity is not None:
                first_items[who] = np.add.reduceat(prep.quantity[source], offset)
            first_amounts = pa[rows]
            largest = np.repeat(np.maximum.reduceat(first_amounts, offset), length)
            for name in first_label:
                codes, keys = getattr(prep, name), getattr(prep, f"{name}_keys")
                if codes is not None and keys is not None:
                    first_label[name][who] = _largest_purchase_key(keys[codes[source]], first_amounts, offset, largest)
            del source, first_amounts, largest
        del day_rows, nxt, first_end, length, offset, rows, second

    has_purchase = n_days > 0
    repeat = np.maximum(n_days - 1, 0)
    span_days = (last_purchase_day - first_purchase_day).astype(np.float64)
    ipt_mean = _safe_div(span_days, repeat)
    ipt_std = np.sqrt(np.clip(_safe_div(gap_sq, repeat) - ipt_mean**2, 0.0, None))
    recency = np.where(has_purchase, cutoff_day - last_purchase_day, np.nan).astype(np.float64)

    out: dict[str, np.ndarray] = {
        "recency_days": recency,
        "tenure_days": (cutoff_day - first_day).astype(np.float64),
        "n_purchase_days": n_days,
        "n_transactions": n_tx,
        "net_spend": net_spend,
        "gross_spend": gross,
        "mean_amount": mean_amount,
        "max_amount": max_amount,
        "std_amount": np.where(has_purchase, std_amount, np.nan),
    }
    # windows: a row's rank is the number of windows it falls in (day > cutoff - w), 0..len(WINDOWS_DAYS)
    widths = sorted(WINDOWS_DAYS)  # narrowest first
    rank = (day > cutoff_day - widths[-1]).view(np.int8).copy()
    for w in widths[-2::-1]:
        rank += (day > cutoff_day - w).view(np.int8)
    n_ranks = len(widths) + 1
    # purchases per window: counts per (customer, rank), summed over the ranks inside each window (exact)
    b_rank = rank if buy is None else rank[buy]
    per_rank = np.bincount(pc * n_ranks + b_rank, minlength=n * n_ranks).reshape(n, n_ranks)
    inside = np.cumsum(per_rank[:, ::-1], axis=1)  # inside[:, j] = purchases of rank >= n_ranks - 1 - j
    windows: dict[str, np.ndarray] = {}
    for j, w in enumerate(widths):
        windows[f"tx_{w}d"] = inside[:, j].astype(np.float64)
    del b_rank, per_rank, inside
    # spend per window: windows nest, so each one's rows are filtered from the next wider window's rows, in the
    # same order, and every window sum equals a bincount over all rows of that window
    w_code, w_amount, w_rank = code, amount, rank
    for j, w in reversed(list(enumerate(widths))):
        recent = w_rank >= n_ranks - 1 - j
        w_code, w_amount, w_rank = w_code[recent], w_amount[recent], w_rank[recent]
        windows[f"spend_{w}d"] = np.bincount(w_code, weights=w_amount, minlength=n)
    del w_code, w_amount, w_rank, recent, rank
    for w in WINDOWS_DAYS:  # the documented column order: tx_7d, spend_7d, tx_30d, ...
        out[f"tx_{w}d"] = windows[f"tx_{w}d"]
        out[f"spend_{w}d"] = windows[f"spend_{w}d"]
    out["trend_tx_30_365"] = _safe_div(out["tx_30d"] / 30.0, out["tx_365d"] / 365.0)
    out["trend_tx_90_365"] = _safe_div(out["tx_90d"] / 90.0, out["tx_365d"] / 365.0)
    out["trend_spend_90_365"] = _safe_div(out["spend_90d"] / 90.0, out["spend_365d"] / 365.0)
    out["ipt_mean_days"] = ipt_mean
    out["ipt_std_days"] = ipt_std
    out["days_overdue"] = recency - ipt_mean
    out["overdue_ratio"] = _safe_div(recency, ipt_mean)
    out["refund_count"] = refund_count
    out["refund_share"] = np.where(gross > 0, _safe_div(refund_amount, gross), 0.0)
    out["btyd_frequency"] = repeat
    out["btyd_recency"] = np.where(has_purchase, span_days, 0.0)
    out["btyd_T"] = np.where(has_purchase, cutoff_day - first_purchase_day, 0).astype(np.float64)
    out["btyd_monetary"] = np.where(repeat > 0, _safe_div(gross - first_spend, repeat), 0.0)
    angle = 2.0 * np.pi * (day_to_date(cutoff_day).timetuple().tm_yday - 1) / 365.25
    out["season_sin"] = np.full(n, np.sin(angle))
    out["season_cos"] = np.full(n, np.cos(angle))
    # the first purchase day (acquisition): NaN for customers without a purchase yet
    out["first_basket_value"] = np.where(has_purchase, first_spend, np.nan)
    out["days_to_second_purchase"] = second_day - first_purchase_day

    if prep.category is not None:
        cat = prep.category if everything else prep.category[upto]
        out["n_categories"] = _distinct_per_customer(pc, cat if buy is None else cat[buy], n, purchase_start)
        out["first_category_code"] = first_label["category"]
    if prep.channel is not None:
        chan = prep.channel if everything else prep.channel[upto]
        out["n_channels"] = _distinct_per_customer(code, chan, n, run_start)
        out["first_channel_code"] = first_label["channel"]
    if prep.quantity is not None:
        out["first_basket_items"] = first_items
    if prep.events is not None:
        out.update(event_features_at(prep.events, cutoff_day, n))

    index = np.flatnonzero(present)
    if len(index) == n:  # everyone present (the usual batch case): no gather, no copy of fresh arrays
        arrays = {name: values.astype(np.float64, copy=False) for name, values in out.items()}
        if len({id(v) for v in arrays.values()}) == len(arrays):
            return {"__code__": index, **arrays}
    return {"__code__": index, **{name: values[index].astype(np.float64) for name, values in out.items()}}


def compute_feature_arrays(
    prep: PreparedTransactions, cutoff: dt.date | str
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Features at one cutoff as arrays: ``(customer_ids, {feature: float64 array})``.

    The cheap path for online scoring (no DataFrame is built). Customers are in code order.
    """
    arrays = _features_at(prep, date_to_day(cutoff))
    codes = arrays.pop("__code__")
    return prep.customers[codes], arrays


def compute_features(
    transactions: pd.DataFrame | PreparedTransactions,
    cutoffs: dt.date | str | Iterable[dt.date | str],
) -> pd.DataFrame:
    """One row per (customer, cutoff) with the features of :data:`FEATURE_DESCRIPTIONS`.

    Columns: ``customer_id`` (str, as in the input), ``cutoff`` (``datetime.date``), then the features.
    Only transactions on or before each cutoff's UTC day are read. Rows are ordered by cutoff, then by
    customer order of first appearance in the input.
    """
    prep = transactions if isinstance(transactions, PreparedTransactions) else index_transactions(transactions)
    if isinstance(cutoffs, dt.date | str | pd.Timestamp):
        cutoffs = [cutoffs]
    frames = []
    columns = prep.columns
    for cutoff in cutoffs:
        cutoff_date = pd.Timestamp(cutoff).date()
        ids, arrays = compute_feature_arrays(prep, cutoff_date)
        frame = pd.DataFrame({name: arrays[name] for name in columns})
        frame.insert(0, "cutoff", cutoff_date)
        frame.insert(0, "customer_id", pd.array(ids, dtype="str"))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["customer_id", "cutoff", *columns])
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
