"""The transaction input contract: column mapping, parsing and per-rule data-quality counts.

Every input row ends in exactly one place: it is either a *valid* transaction or it is counted under the
first rule it breaks, in this order:

1. ``null_customer_id``   -- customer id missing, empty or only white space;
2. ``bad_timestamp``      -- timestamp missing or unparseable;
3. ``bad_amount``         -- amount missing, not a number, NaN or infinite;
4. ``duplicate_transaction_id`` -- a ``transaction_id`` already seen on an earlier valid row (kept once);
5. ``after_as_of``        -- the transaction's UTC day is after the as-of date (kept out of features).

So ``rows_read == rows_valid + sum(rule counts)`` always holds. Zero amounts are valid purchases; negative
amounts are refunds: they are valid rows that reduce net spend and are counted as refunds, not purchases.

Timestamps: date-only or datetime strings, or native timestamp columns. Timezone-aware values are
converted to UTC; naive values are taken to be UTC already. ``customer_id`` and ``transaction_id`` are
opaque strings: they are never cast to numbers (``"00042"`` stays ``"00042"``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "amount")
OPTIONAL_COLUMNS: tuple[str, ...] = ("transaction_id", "quantity", "category", "channel")
STRING_COLUMNS: tuple[str, ...] = ("customer_id", "transaction_id", "category", "channel")
RULES: tuple[str, ...] = (
    "null_customer_id",
    "bad_timestamp",
    "bad_amount",
    "duplicate_transaction_id",
    "after_as_of",
)
BROKEN_RULES: tuple[str, ...] = RULES[:4]
"""Rules whose rows are errors under ``--strict`` (rows after the as-of date are merely out of scope)."""


class ContractError(ValueError):
    """The input cannot be used: a required column is missing, no row is valid, or ``--strict`` failed."""


@dataclasses.dataclass(frozen=True)
class DataQualityReport:
    """What the contract found in one input: rule counts, coverage and refund share.

    ``refund_share`` is refunded amount / gross purchase amount (0 when nothing was bought).
    Dates are ISO strings of the UTC calendar day of the first and last valid transaction.
    """

    rows_read: int
    rows_valid: int
    rule_counts: dict[str, int]
    customers: int
    purchases: int
    refunds: int
    zero_amount: int
    refund_share: float
    first_date: str | None
    last_date: str | None
    as_of: str | None
    gross_amount: float = 0.0
    refunded_amount: float = 0.0

    @property
    def rows_broken(self) -> int:
        """Rows that break a data rule (rows after the as-of date excluded)."""
        return sum(self.rule_counts[rule] for rule in BROKEN_RULES)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rows_broken"] = self.rows_broken
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """A short human-readable table, as printed by the CLI."""
        lines = [
            "Data quality",
            f"  rows read                 {self.rows_read:>12,}",
            f"  rows valid                {self.rows_valid:>12,}",
        ]
        lines += [f"  {rule.replace('_', ' '):<25} {self.rule_counts[rule]:>12,}" for rule in RULES]
        lines += [
            f"  customers                 {self.customers:>12,}",
            f"  purchases                 {self.purchases:>12,}",
            f"  refunds                   {self.refunds:>12,}",
            f"  zero-amount rows          {self.zero_amount:>12,}",
            f"  refund share of spend     {self.refund_share:>12.2%}",
            f"  date range                {self.first_date} .. {self.last_date}",
        ]
        if self.as_of:
            lines.append(f"  as of                     {self.as_of}")
        return "\n".join(lines)


def parse_column_map(spec: str | None) -> dict[str, str]:
    """Parse ``"customer_id=cust,timestamp=order_date"`` into ``{"customer_id": "cust", ...}``.

    Keys are contract column names, values are the names in the input file.
    """
    if not spec:
        return {}
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ContractError(f"column mapping '{item}' must look like contract_name=input_name")
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            known = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
            raise ContractError(f"column mapping names unknown column '{key}' (known: {known})")
        if not value:
            raise ContractError(f"column mapping for '{key}' has no input column name")
        mapping[key] = value
    return mapping


def to_date(value: str | dt.date | pd.Timestamp | None) -> dt.date | None:
    """Parse an as-of date (``YYYY-MM-DD`` or a datetime, taken as its UTC calendar day)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime | pd.Timestamp):
        ts = pd.Timestamp(value)
        return (ts.tz_convert("UTC") if ts.tzinfo else ts).date()
    if isinstance(value, dt.date):
        return value
    try:
        ts = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError) as exc:
        raise ContractError(f"as-of date '{value}' is not a date (expected YYYY-MM-DD)") from exc
    if ts is pd.NaT:
        raise ContractError(f"as-of date '{value}' is not a date (expected YYYY-MM-DD)")
    return (ts.tz_convert("UTC") if ts.tzinfo else ts).date()


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse timestamps to ``datetime64[ns, UTC]``; unparseable values become ``NaT``.

    Aware values are converted to UTC, naive values are taken as UTC. ISO 8601 (date-only or datetime,
    any offset) is parsed fast; the remaining strings are retried with a permissive parser. Instants outside
    the nanosecond range (before 1677-09-21 or after 2262-04-11) are unparseable too: no transaction is that
    old, and such a value is a typo (``0024-05-01``) rather than a date.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _within_ns_range(values.dt.tz_convert("UTC"))
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return _within_ns_range(values.dt.tz_localize("UTC"))
    if pd.api.types.is_numeric_dtype(values.dtype):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    text = values.astype("str").str.strip()
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    retry = parsed.isna() & values.notna() & (text != "")
    if retry.any():
        parsed[retry] = pd.to_datetime(text[retry], utc=True, errors="coerce", format="mixed")
    return _within_ns_range(parsed)


_NS_MIN = pd.Timestamp.min.tz_localize("UTC")
_NS_MAX = pd.Timestamp.max.tz_localize("UTC")


def _within_ns_range(utc: pd.Series) -> pd.Series:
    """``datetime64[ns, UTC]`` with ``NaT`` where an instant (of any resolution) does not fit nanoseconds."""
    if utc.dtype == "datetime64[ns, UTC]":
        return utc
    return utc.mask((utc < _NS_MIN) | (utc > _NS_MAX)).astype("datetime64[ns, UTC]")


def _as_string(values: pd.Series) -> pd.Series:
    """Opaque identifiers: keep strings as they are; render anything else as text without casting."""
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        return values
    if pd.api.types.is_float_dtype(values.dtype):
        # a float column means the source lost the text; render integral values without ".0"
        as_int = values.dropna()
        if (as_int == np.floor(as_int)).all():
            return values.map(lambda v: None if pd.isna(v) else str(int(v))).astype("str")
    return values.astype("str").where(values.notna(), None).astype("str")


def prepare_transactions(
    raw: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    as_of: str | dt.date | None = None,
    strict: bool = False,
    allow_empty: bool = False,
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Apply the contract to a raw frame (``allow_empty``: a part of a larger input may hold no valid row).

    Returns the valid transactions (columns ``customer_id`` str, ``timestamp`` datetime64[ns, UTC],
    ``amount`` float64 in currency units, plus the optional columns present) and the data-quality report.
    Raises :class:`ContractError` when the input cannot be used at all, or under ``strict`` when any row
    breaks a rule.
    """
    mapping = dict(columns or {})
    rename = {source: target for target, source in mapping.items()}
    frame = raw.rename(columns=rename)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        wanted = ", ".join(f"'{mapping.get(c, c)}'" for c in missing)
        hint = " (map other names with --columns customer_id=...,timestamp=...,amount=...)"
        raise ContractError(f"required column {wanted} is missing from the input{hint}")
    keep = [c for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c in frame.columns]
    frame = frame[keep]
    as_of_date = to_date(as_of)
    n = len(frame)

    customer = _as_string(frame["customer_id"])
    null_id = customer.isna().to_numpy() | (customer.fillna("").str.strip() == "").to_numpy()
    timestamp = parse_timestamps(frame["timestamp"])
    bad_ts = ~null_id & timestamp.isna().to_numpy()
    amount = pd.to_numeric(frame["amount"], errors="coerce").astype("float64").to_numpy()
    bad_amount = ~null_id & ~bad_ts & ~np.isfinite(amount)
    ok = ~(null_id | bad_ts | bad_amount)

    duplicate = np.zeros(n, dtype=bool)
    if "transaction_id" in frame.columns:
        tx_id = _as_string(frame["transaction_id"])
        has_id = tx_id.notna().to_numpy() & (tx_id.fillna("") != "").to_numpy()
        candidates = ok & has_id
        seen = tx_id[candidates].duplicated(keep="first").to_numpy()
        duplicate[np.flatnonzero(candidates)[seen]] = True
    ok &= ~duplicate

    day = timestamp.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    after = np.zeros(n, dtype=bool)
    if as_of_date is not None:
        after = ok & (day > np.datetime64(as_of_date, "D"))
    ok &= ~after

    counts = {
        "null_customer_id": int(null_id.sum()),
        "bad_timestamp": int(bad_ts.sum()),
        "bad_amount": int(bad_amount.sum()),
        "duplicate_transaction_id": int(duplicate.sum()),
        "after_as_of": int(after.sum()),
    }
    rows_valid = int(ok.sum())

    if strict:
        broken = {rule: count for rule, count in counts.items() if rule in BROKEN_RULES and count}
        if broken:
            detail = ", ".join(f"{count} {rule.replace('_', ' ')}" for rule, count in broken.items())
            raise ContractError(f"--strict: {detail} row(s) break the input contract")
    if rows_valid == 0 and not allow_empty:
        detail = ", ".join(f"{count} {rule.replace('_', ' ')}" for rule, count in counts.items() if count)
        raise ContractError(f"no valid transaction in the input ({n} rows read; {detail or 'file is empty'})")

    # masks on the typed arrays: ``to_numpy()`` of a tz-aware column builds one Timestamp object per row (the
    # slowest step of a 10M-row job before)
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(customer.array[ok]).astype("str"),
            "timestamp": pd.Series(timestamp.array[ok]).astype("datetime64[ns, UTC]"),
            "amount": amount[ok],
        }
    )
    for name in OPTIONAL_COLUMNS:
        if name not in frame.columns:
            continue
        if name == "quantity":
            out[name] = pd.to_numeric(frame[name], errors="coerce").to_numpy()[ok]
        else:
            out[name] = pd.Series(_as_string(frame[name]).array[ok]).astype("str")

    valid_amount = amount[ok]
    gross = float(valid_amount[valid_amount > 0].sum())
    refunded = 0.0 - float(valid_amount[valid_amount < 0].sum())
    valid_days = day[ok]
    report = DataQualityReport(
        rows_read=n,
        rows_valid=rows_valid,
        rule_counts=counts,
        customers=int(out["customer_id"].nunique()),
        purchases=int((valid_amount >= 0).sum()),
        refunds=int((valid_amount < 0).sum()),
        zero_amount=int((valid_amount == 0).sum()),
        refund_share=refunded / gross if gross > 0 else 0.0,
        first_date=str(valid_days.min()) if rows_valid else None,
        last_date=str(valid_days.max()) if rows_valid else None,
        as_of=str(as_of_date) if as_of_date else None,
        gross_amount=gross,
        refunded_amount=refunded,
    )
    return out, report


def combine_reports(reports: list[DataQualityReport]) -> DataQualityReport:
    """One report for inputs read in customer-disjoint parts (the batch job's partitions)."""
    if not reports:
        raise ContractError("no input rows at all")
    gross = sum(r.gross_amount for r in reports)
    refunded = sum(r.refunded_amount for r in reports)
    firsts = [r.first_date for r in reports if r.first_date]
    lasts = [r.last_date for r in reports if r.last_date]
    return DataQualityReport(
        rows_read=sum(r.rows_read for r in reports),
        rows_valid=sum(r.rows_valid for r in reports),
        rule_counts={rule: sum(r.rule_counts[rule] for r in reports) for rule in RULES},
        customers=sum(r.customers for r in reports),
        purchases=sum(r.purchases for r in reports),
        refunds=sum(r.refunds for r in reports),
        zero_amount=sum(r.zero_amount for r in reports),
        refund_share=refunded / gross if gross > 0 else 0.0,
        first_date=min(firsts) if firsts else None,
        last_date=max(lasts) if lasts else None,
        as_of=reports[0].as_of,
        gross_amount=gross,
        refunded_amount=refunded,
    )
