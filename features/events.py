"""The customer-event contract: complaints, ratings, service contacts and e-mail engagement beside the purchases.

An event log has one row per thing that happened to a customer outside a purchase:

- ``customer_id`` -- the customer (opaque text, the ids of the transaction log: ``"00042"`` stays ``"00042"``, a
  float column renders as ``"17850.0"`` and ``normalize_float_ids=True`` reads it as ``"17850"``, exactly as
  :mod:`features.contract` does for transactions; do the same for both inputs or the ids will not match);
- ``timestamp``   -- when it happened: converted to UTC (naive values are UTC already), parsed like the
  transactions' timestamps (:func:`features.contract.parse_timestamps`);
- ``type``        -- what happened, open-ended text normalised to lower case with surrounding white space removed
  and inner spaces / hyphens as ``_`` (``" Complaint Resolved"`` -> ``"complaint_resolved"``). The types the
  feature kernel reads are :data:`KNOWN_EVENT_TYPES` (see :mod:`features.event_features`); any other type is kept,
  counted per type in the report (:attr:`EventReport.types`) and ignored by the features;
- ``value``       -- optional number (float): a ``rating`` is 1-5 (a satisfaction score), an ``nps`` 0-10; empty
  means no value;
- ``reason``      -- optional text (why a complaint was made, why a product came back): missing is ``""``.

Input columns of other names are mapped with ``columns={"type": "event", ...}`` (contract name -> input name), as for
transactions (CLI ``--event-columns type=event,value=score``). Every input row ends in exactly one place: it is
either *valid* or counted under the first rule it breaks, in this order (:data:`EVENT_RULES`):

1. ``null_customer_id`` -- customer id missing, empty or only white space;
2. ``bad_timestamp``    -- timestamp missing or unparseable;
3. ``null_type``        -- type missing, empty or only white space;
4. ``bad_value``        -- ``value`` is present but not a number, NaN or infinite (an empty cell is no value).

So ``rows_read == rows_valid + sum(rule counts)`` always holds. ``strict`` raises
:class:`~features.contract.ContractError` naming the rules when any row breaks one. Events are not de-duplicated:
two complaints at the same instant are two complaints (nothing tells a repeated export row from a second call).

Time semantics are the kernel's: an event belongs to the UTC calendar day of its timestamp, and a feature at cutoff
``D`` reads only events whose day is ``<= D`` (:mod:`features.event_features`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import pandas as pd

from features.contract import (
    NAT_NS,
    ContractError,
    InputReportJson,
    as_numbers,
    check_column_sources,
    count_float_like_ids,
    distinct_ids,
    float_like_ids_warning,
    ids_as_text,
    parse_timestamps,
    present_mask,
    rule_table,
)

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_RULES",
    "KNOWN_EVENT_TYPES",
    "OPTIONAL_EVENT_COLUMNS",
    "REQUIRED_EVENT_COLUMNS",
    "EventReport",
    "normalize_types",
    "prepare_events",
    "read_events",
]

REQUIRED_EVENT_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "type")
OPTIONAL_EVENT_COLUMNS: tuple[str, ...] = ("value", "reason")
EVENT_COLUMNS: tuple[str, ...] = REQUIRED_EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS
"""The columns of prepared events, in this order."""
EVENT_RULES: tuple[str, ...] = ("null_customer_id", "bad_timestamp", "null_type", "bad_value")
KNOWN_EVENT_TYPES: dict[str, str] = {
    "complaint": "the customer complained (value: none; reason: what about)",
    "complaint_resolved": "a complaint was resolved (one resolution settles one complaint)",
    "rating": "the customer rated us (value: 1-5, higher is more satisfied)",
    "support_contact": "the customer contacted support (a call, a chat, a ticket)",
    "email_open": "the customer opened a marketing e-mail",
    "email_click": "the customer clicked a link in a marketing e-mail",
    "unsubscribe": "the customer unsubscribed from marketing e-mail",
    "return_reason": "the reason given for a returned product (reason: the text)",
}
"""The event types :mod:`features.event_features` reads, and what each means. Other types are kept, not used."""


@dataclasses.dataclass(frozen=True)
class EventReport(InputReportJson):
    """What the event contract found in one log: rule counts, customers, types and their date range.

    ``types``: valid rows per normalised type (known and unknown); ``unknown_types``: the types the features do not
    read; ``ratings_without_value``: valid ``rating`` rows with no value (they count as a rating event, carry no
    score); ``float_like_ids``: distinct customer ids that look like floats (``"17850.0"``; 0 when normalised).
    ``first_date`` / ``last_date``: UTC days (ISO) of the valid rows.
    """

    rows_read: int
    rows_valid: int
    rule_counts: dict[str, int]
    customers: int
    types: dict[str, int]
    first_date: str | None
    last_date: str | None
    ratings_without_value: int = 0
    float_like_ids: int = 0

    DERIVED: ClassVar[tuple[str, ...]] = ("unknown_types",)

    @property
    def rows_broken(self) -> int:
        """Rows that break a rule (every rule is an error here)."""
        return sum(self.rule_counts.values())

    @property
    def unknown_types(self) -> list[str]:
        """Types present in the log that the event features do not read (sorted)."""
        return sorted(t for t in self.types if t not in KNOWN_EVENT_TYPES)

    @property
    def warnings(self) -> list[str]:
        """One sentence per finding that keeps the rows but may make the features say less than the log does."""
        out = []
        unknown = self.unknown_types
        if unknown:
            rows = sum(self.types[t] for t in unknown)
            shown = ", ".join(f"'{t}'" for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            out.append(
                f"{rows:,} events of {len(unknown)} type(s) the features do not read ({shown}); known types: "
                f"{', '.join(KNOWN_EVENT_TYPES)}"
            )
        if self.ratings_without_value:
            out.append(f"{self.ratings_without_value:,} rating events have no value: they carry no score")
        if self.float_like_ids:
            out.append(float_like_ids_warning(self.float_like_ids))
        return out

    def render(self) -> str:
        """A short human-readable table (as the transactions' report prints), then one line per warning."""
        lines = rule_table("Event log quality", self.rows_read, self.rows_valid, self.rule_counts, EVENT_RULES)
        lines.append(f"  customers                 {self.customers:>12,}")
        known = [name for name in KNOWN_EVENT_TYPES if name in self.types]
        lines += [f"  {name.replace('_', ' '):<25} {self.types[name]:>12,}" for name in known]
        lines.append(f"  date range                {self.first_date} .. {self.last_date}")
        lines += [f"warning: {sentence}" for sentence in self.warnings]
        return "\n".join(lines)


def normalize_types(values: pd.Series) -> pd.Series:
    """Event types as the contract reads them: text, stripped, lower case, inner runs of spaces / hyphens as ``_``
    (missing stays missing)."""
    text = ids_as_text(values).str.strip().str.lower()
    return text.str.replace(r"[\s\-]+", "_", regex=True)


def _contract_frame(raw: pd.DataFrame, columns: Mapping[str, str] | None) -> pd.DataFrame:
    """The input's event columns under their contract names; :class:`ContractError` for an unknown mapping key or a
    missing required column."""
    mapping = dict(columns or {})
    unknown = [key for key in mapping if key not in EVENT_COLUMNS]
    if unknown:
        raise ContractError(
            f"event column mapping names unknown column '{unknown[0]}' (known: {', '.join(EVENT_COLUMNS)})"
        )
    check_column_sources(raw.columns, mapping)
    sources = {name: mapping.get(name, name) for name in EVENT_COLUMNS}
    missing = [f"'{sources[name]}'" for name in REQUIRED_EVENT_COLUMNS if sources[name] not in raw.columns]
    if missing:
        raise ContractError(
            f"required event column {', '.join(missing)} is missing from the input (map other names with "
            "--event-columns customer_id=...,timestamp=...,type=...)"
        )
    return pd.DataFrame({name: raw[source] for name, source in sources.items() if source in raw.columns})


def _values(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The ``value`` column as numbers (NaN: no value) and the rows whose value is present but not a finite number."""
    n = len(frame)
    if "value" not in frame.columns:
        return np.full(n, np.nan), np.zeros(n, dtype=bool)
    column = frame["value"]
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.full(n, np.nan), column.notna().to_numpy()  # a flag is not a score
    numbers = as_numbers(column)
    empty = column.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(column.dtype):
        empty = empty | ~present_mask(ids_as_text(column).fillna(""), strip=True)
    bad = ~empty & ~np.isfinite(numbers)
    return np.where(empty, np.nan, numbers), bad


def prepare_events(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    *,
    normalize_float_ids: bool = False,
    allow_empty: bool = False,
) -> tuple[pd.DataFrame, EventReport]:
    """Apply the event contract (module docstring): ``(events, EventReport)``.

    ``events`` holds the valid rows in input order with the columns of :data:`EVENT_COLUMNS`: ``customer_id`` /
    ``type`` / ``reason`` as ``str`` (type normalised, missing reason ``""``), ``timestamp`` datetime64[ns, UTC],
    ``value`` float64 (NaN: no value). Raises :class:`ContractError` when a required column is missing, when no row
    is valid (unless ``allow_empty``) and, under ``strict``, when any row breaks a rule.
    """
    data = _contract_frame(frame, columns)
    n = len(data)
    customer = ids_as_text(data["customer_id"], normalize_float_ids=normalize_float_ids)
    timestamp = parse_timestamps(data["timestamp"])
    kind = normalize_types(data["type"])
    value, bad_value = _values(data)

    rule = np.zeros(n, dtype=np.int8)
    broken = np.zeros(n, dtype=bool)
    checks = (
        ~present_mask(customer.fillna(""), strip=True),
        timestamp.array.asi8 == NAT_NS,
        ~present_mask(kind.fillna(""), strip=True),
        bad_value,
    )
    for number, fails in enumerate(checks, start=1):
        hit = fails & ~broken
        rule[hit] = number
        broken |= hit
    tally = np.bincount(rule, minlength=len(EVENT_RULES) + 1)
    counts = {name: int(tally[k + 1]) for k, name in enumerate(EVENT_RULES)}
    detail = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items() if count)
    if strict and any(counts.values()):
        raise ContractError(f"--strict: {detail} row(s) break the event contract")
    valid = ~broken
    if not valid.any() and not allow_empty:
        raise ContractError(f"no valid event in the input ({n} rows read; {detail or 'file is empty'})")

    reason = ids_as_text(data["reason"]).fillna("") if "reason" in data.columns else pd.Series("", index=data.index)
    out = pd.DataFrame(
        {
            "customer_id": pd.array(customer.to_numpy(dtype=object)[valid], dtype="str"),
            "timestamp": timestamp.array[valid],
            "type": pd.array(kind.to_numpy(dtype=object)[valid], dtype="str"),
            "value": value[valid].astype(np.float64),
            "reason": pd.array(reason.to_numpy(dtype=object)[valid], dtype="str"),
        }
    )
    return out, _report(out, n, counts, normalize_float_ids)


def _report(out: pd.DataFrame, rows_read: int, counts: dict[str, int], normalized: bool) -> EventReport:
    types = {str(k): int(v) for k, v in out["type"].value_counts(sort=False).sort_index().items()}
    days = out["timestamp"].dt.floor("D") if len(out) else None
    ids = distinct_ids(out["customer_id"]) if len(out) else np.empty(0, dtype=object)
    ratings = (out["type"] == "rating").to_numpy()
    return EventReport(
        rows_read=rows_read,
        rows_valid=len(out),
        rule_counts=counts,
        customers=len(ids),
        types=types,
        first_date=None if days is None else str(days.min().date()),
        last_date=None if days is None else str(days.max().date()),
        ratings_without_value=int((ratings & np.isnan(out["value"].to_numpy())).sum()),
        float_like_ids=0 if normalized else count_float_like_ids(ids),
    )


def read_events(
    source: str | os.PathLike[str],
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    *,
    normalize_float_ids: bool = False,
) -> tuple[pd.DataFrame, EventReport]:
    """Read an event log (CSV, Parquet, a directory of Parquet files or a SQL URL, as
    :func:`features.sources.read_table` reads them) and apply :func:`prepare_events`.

    ``customer_id``, ``type`` and ``reason`` are read as text, so ``"00042"`` keeps its zeros in a CSV file too.
    """
    from features.sources import read_table

    raw = read_table(source, columns, text_columns=("customer_id", "type", "reason"))
    return prepare_events(raw, columns, strict, normalize_float_ids=normalize_float_ids)
