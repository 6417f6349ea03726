"""Point-in-time customer-event features: what complaints, ratings, service contacts and e-mails say at a cutoff.

The events (the output of :func:`features.events.prepare_events`) are indexed once with the transactions
(:func:`features.kernel.index_transactions` with ``events=``): :func:`index_events` gives an :class:`EventIndex` whose
customer codes are those of the transactions' :class:`~features.kernel.PreparedTransactions`, sorted by (code, day).
Events of customers the transaction log does not know are left out of the index and counted
(:attr:`EventIndex.unmatched_events`, :attr:`EventIndex.unmatched_customers`): nothing is lost silently, and a
customer without a transaction is not scored anyway.

Time semantics are the kernel's: an event belongs to the UTC calendar day of its timestamp; a feature at cutoff ``D``
reads only events whose day is ``<= D`` (the whole cutoff day included) and nothing later. A trailing window of
``w`` days holds the days ``D - w + 1 .. D`` (``day > D - w``), as the kernel's ``tx_30d``. Durations are whole days.

Features (:data:`EVENT_FEATURE_DESCRIPTIONS`; ``NaN`` where a customer has no such event yet):

- ``complaints_30d`` / ``complaints_90d`` -- ``complaint`` events in the trailing 30 / 90 days;
- ``unresolved_complaints`` -- complaints minus ``complaint_resolved`` events to date, floored at 0 (a resolution
  settles one complaint, the oldest or any: only the counts matter);
- ``days_since_last_complaint`` -- ``D`` minus the day of the latest complaint (NaN: never complained);
- ``support_contacts_90d`` -- ``support_contact`` events in the trailing 90 days;
- ``last_rating`` -- the ``rating`` value of the latest day with a rating (the mean of that day's ratings when there
  are several: the order of one day's events is not part of the contract); ratings without a value are not scores;
- ``mean_rating`` -- the mean of every rating value to date;
- ``rating_trend`` -- ``last_rating`` minus the mean of the ratings of earlier days (NaN with one rating day only):
  negative when satisfaction falls;
- ``email_opens_90d`` / ``email_clicks_90d`` -- ``email_open`` / ``email_click`` events in the trailing 90 days;
- ``days_since_last_engagement`` -- ``D`` minus the day of the latest e-mail open or click (NaN: never engaged);
- ``unsubscribed`` -- 1 when the customer has an ``unsubscribe`` event to date, else 0.

Implementation: integer arrays (code, day, type code, value), every feature a ``np.bincount`` or a reduction over
runs of the (code, day) order, so the result never depends on the input's row order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd

from features.contract import ContractError
from features.events import KNOWN_EVENT_TYPES

__all__ = [
    "EVENT_FEATURES",
    "EVENT_FEATURE_DESCRIPTIONS",
    "EventIndex",
    "event_features_at",
    "index_events",
    "require_events",
    "uses_events",
]

NS_PER_DAY = 86_400 * 10**9
EVENT_FEATURE_DESCRIPTIONS: dict[str, str] = {
    "complaints_30d": "complaints in the last 30 days",
    "complaints_90d": "complaints in the last 90 days",
    "unresolved_complaints": "unresolved complaints to date",
    "days_since_last_complaint": "days since the last complaint",
    "support_contacts_90d": "support contacts in the last 90 days",
    "last_rating": "latest satisfaction rating (1-5)",
    "mean_rating": "average satisfaction rating to date",
    "rating_trend": "latest rating minus the average of earlier ratings",
    "email_opens_90d": "marketing e-mails opened in the last 90 days",
    "email_clicks_90d": "marketing e-mail clicks in the last 90 days",
    "days_since_last_engagement": "days since the customer last opened or clicked an e-mail",
    "unsubscribed": "unsubscribed from marketing e-mail (1 yes, 0 no)",
}
"""What each event feature means, in the words of :data:`features.kernel.FEATURE_DESCRIPTIONS` (a CRM agent reads
them in the reasons of a score)."""
EVENT_FEATURES: tuple[str, ...] = tuple(EVENT_FEATURE_DESCRIPTIONS)
_TYPE_CODES: dict[str, int] = {name: k for k, name in enumerate(KNOWN_EVENT_TYPES)}
_OTHER = -1
"""Type code of an event type the features do not read."""


@dataclasses.dataclass(frozen=True)
class EventIndex:
    """Events reduced to arrays aligned on a :class:`~features.kernel.PreparedTransactions`'s customer codes.

    ``code`` indexes the transactions' ``customers``; ``day`` is days since 1970-01-01 (UTC); ``kind`` the position
    of the event's type in :data:`features.events.KNOWN_EVENT_TYPES` (-1: another type); ``value`` float64 (NaN: no
    value). Rows are ordered by (code, day). ``unmatched_events`` / ``unmatched_customers``: events (and their
    distinct customers) whose customer has no transaction, left out.
    """

    code: np.ndarray
    day: np.ndarray
    kind: np.ndarray
    value: np.ndarray
    unmatched_events: int = 0
    unmatched_customers: int = 0

    def __len__(self) -> int:
        return len(self.code)


def index_events(events: pd.DataFrame, customers: np.ndarray) -> EventIndex:
    """Index contract-clean events (:func:`features.events.prepare_events`) on the transactions' ``customers``.

    Validates nothing. Events of ids not among ``customers`` are counted and left out (see :class:`EventIndex`).
    """
    position = pd.Index(customers).get_indexer(pd.Index(events["customer_id"].to_numpy(dtype=object)))
    known = position >= 0
    unmatched = int((~known).sum())
    strangers = len(pd.unique(events["customer_id"].to_numpy(dtype=object)[~known])) if unmatched else 0
    ts = events["timestamp"]
    ns = ts.to_numpy(dtype="datetime64[ns]").view(np.int64) if len(ts) else np.empty(0, np.int64)
    day = np.floor_divide(ns, NS_PER_DAY)[known]
    code = position[known].astype(np.int64)
    kind = events["type"].map(_TYPE_CODES).fillna(_OTHER).to_numpy(dtype=np.int64)[known].astype(np.int8)
    value = np.full(len(code), np.nan)
    if "value" in events.columns:
        value = events["value"].to_numpy(dtype=np.float64)[known]
    order = np.lexsort((day, code))
    return EventIndex(code[order], day[order], kind[order], value[order], unmatched, strangers)


def _count(code: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(code, minlength=n).astype(np.float64)


def _last_day(code: np.ndarray, day: np.ndarray, n: int) -> np.ndarray:
    """The latest day per customer code (rows ordered by (code, day)); NaN where a code has no row."""
    out = np.full(n, np.nan)
    if len(code):
        end = np.flatnonzero(np.append(code[1:] != code[:-1], True))
        out[code[end]] = day[end]
    return out


def _mean(code: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``values`` per code (NaN where a code has none)."""
    count = np.bincount(code, minlength=n)
    total = np.bincount(code, weights=values, minlength=n)
    out = np.full(n, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


def _ratings(code: np.ndarray, day: np.ndarray, value: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """``last_rating``, ``mean_rating`` and ``rating_trend`` from the rating rows (ordered by (code, day))."""
    last_day = _last_day(code, day, n)
    latest = day == last_day[code]
    last = _mean(code[latest], value[latest], n)
    earlier = _mean(code[~latest], value[~latest], n)
    return {"last_rating": last, "mean_rating": _mean(code, value, n), "rating_trend": last - earlier}


def event_features_at(index: EventIndex, cutoff_day: int, n: int) -> dict[str, np.ndarray]:
    """Every event feature at one cutoff day for the ``n`` customer codes (module docstring), float64 arrays of
    length ``n`` in the order of :data:`EVENT_FEATURES`."""
    upto = index.day <= cutoff_day
    code, day, kind, value = index.code[upto], index.day[upto], index.kind[upto], index.value[upto]

    def of(name: str) -> np.ndarray:
        return kind == _TYPE_CODES[name]

    complaint, resolved = of("complaint"), of("complaint_resolved")
    in_30, in_90 = day > cutoff_day - 30, day > cutoff_day - 90
    support = of("support_contact")
    opens, clicks = of("email_open"), of("email_click")
    engaged = opens | clicks
    rated = of("rating") & np.isfinite(value)
    ratings = _ratings(code[rated], day[rated], value[rated], n)
    unresolved = np.maximum(_count(code[complaint], n) - _count(code[resolved], n), 0.0)
    out = {
        "complaints_30d": _count(code[complaint & in_30], n),
        "complaints_90d": _count(code[complaint & in_90], n),
        "unresolved_complaints": unresolved,
        "days_since_last_complaint": cutoff_day - _last_day(code[complaint], day[complaint], n),
        "support_contacts_90d": _count(code[support & in_90], n),
        **ratings,
        "email_opens_90d": _count(code[opens & in_90], n),
        "email_clicks_90d": _count(code[clicks & in_90], n),
        "days_since_last_engagement": cutoff_day - _last_day(code[engaged], day[engaged], n),
        "unsubscribed": (_count(code[of("unsubscribe")], n) > 0).astype(np.float64),
    }
    return {name: out[name] for name in EVENT_FEATURES}


def uses_events(columns: Iterable[str]) -> bool:
    """Whether a model with these feature columns reads customer-event features (it was trained with events)."""
    return any(name in EVENT_FEATURE_DESCRIPTIONS for name in columns)


def require_events(columns: Iterable[str], events_given: bool) -> None:
    """Refuse (:class:`ContractError`, one sentence) to score a model that reads event features without events:
    its event features would all be missing, and its scores quietly worse."""
    used = [name for name in columns if name in EVENT_FEATURE_DESCRIPTIONS]
    if used and not events_given:
        shown = ", ".join(used[:3]) + (", ..." if len(used) > 3 else "")
        raise ContractError(
            f"the model reads customer-event features ({shown}): give its event log too (--events FILE), or score "
            "with a model trained without events"
        )
