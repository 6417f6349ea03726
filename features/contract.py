"""The transaction input contract: column mapping, parsing, per-rule data-quality counts and order lines.

Input rows are *lines*. A line belongs to an *order* (one purchase event, what the feature kernel calls a
transaction): the lines sharing ``(customer_id, transaction_id)`` form one order; a line without a
``transaction_id`` is an order of its own. :func:`prepare_transactions` returns one row per order, so the kernel
(and every path above it: training, batch, online, Spark) sees transactions, whatever the export's grain.

Every input row ends in exactly one place: it is either a *valid* line or it is counted under the first rule it
breaks, in this order:

1. ``null_customer_id`` -- customer id missing, empty or only white space;
2. ``bad_timestamp``    -- timestamp missing or unparseable;
3. ``implausible_timestamp`` -- the line's UTC day is before the floor ``min_date`` (files, the batch job and the
   CLI: ``MIN_DATE``, 1990-01-01, unless ``--min-date`` says otherwise; no floor when ``min_date`` is None, the
   default of :func:`prepare_transactions`): a garbled value (a damaged Parquet file reads as dates in 1682)
   rather than a purchase;
4. ``bad_amount``       -- the line amount is missing, not a number, NaN or infinite;
5. ``duplicate_line``   -- the row repeats an earlier valid row of the same order exactly (the same value in
   *every* input column, mapped or not), or repeats its ``line_id`` when one is mapped (kept once, the first);
6. ``after_as_of``      -- the line's UTC day is after the as-of date (kept out of features).

So ``rows_read == rows_valid + sum(rule counts)`` always holds; ``rows_valid`` counts valid *lines*.

Line amount: ``amount`` when it is mapped; otherwise ``quantity × unit_price`` when ``unit_price`` is mapped
(a ``quantity`` column is then required). When both ``amount`` and ``unit_price`` are mapped, **``amount``
wins** where a line has one (a source's line total may hold discounts; a line with an empty ``amount`` is
``quantity × unit_price``) and is cross-checked: lines where it differs from
``quantity × unit_price`` by more than half a cent are counted in ``price_mismatch_lines`` and named in a
warning (they stay valid). Zero amounts are valid purchases; negative amounts (so negative quantities, e.g. a
cancellation invoice ``C536379``) are returns/refunds: valid lines that reduce net spend.

Orders: the lines of one order are summed into one transaction: ``amount`` (rounded to ``ORDER_DECIMALS``, 9:
lines that cancel out make a zero-amount order, not a refund of float noise) and ``quantity`` are the sums over
its lines, ``timestamp`` is its **earliest** line's timestamp (the whole order is one purchase event at that
instant, also for frequency and the BTYD summary), ``category``/``channel`` are its first line's. Lines are keyed
by ``(customer_id, transaction_id)``, so a ``transaction_id`` reused by two customers is two orders. An order
with a negative net amount is a *cancelled order* (a refund transaction for the kernel). Without a
``transaction_id`` two equal rows are two purchases: nothing tells them apart (a date-only export of two
coffees on one day). ``after_as_of`` applies to each line by its own timestamp, before the summing.

Order lines mapped as transactions: when ``transaction_id`` repeats with differing lines (amounts, products)
and neither ``unit_price`` nor ``line_id`` is mapped, the input looks like an order-line export read as
transactions; the lines are still summed, the report says so in one sentence (``looks_like_order_lines``,
``undeclared_line_orders``) with how to map it, and ``strict`` fails. Mapping ``unit_price`` or ``line_id``
declares line-level input.

Timestamps: date-only or datetime strings, or native timestamp columns. Timezone-aware values are converted to
UTC; naive values are taken to be UTC already. ``customer_id``, ``transaction_id`` and ``line_id`` are opaque
strings: never cast to numbers (``"00042"`` stays ``"00042"``). A float-typed id column (an export that lost
the text) is rendered the way the file readers of :mod:`features.sources` render it, ``17850.0`` ->
``"17850.0"``, so an id never depends on how the frame was read. Ids that an export turned into floats are
normalised only on request: ``normalize_float_ids=True`` (CLI ``--normalize-ids``) turns ``"17850.0"`` (text or
float) into ``"17850"`` in those three id columns; without it the report counts customer ids that look like
floats (``float_like_ids``) and says how to normalise them.

Performance: every step is vectorised; lines are grouped only when a ``transaction_id`` repeats, and only the
rows whose ``transaction_id`` repeats are grouped (a transaction-level input pays one hash of its ids, as before).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "amount")
"""``amount`` may be replaced by ``unit_price`` (with ``quantity``): the line amount is their product."""
OPTIONAL_COLUMNS: tuple[str, ...] = ("transaction_id", "quantity", "category", "channel", "unit_price", "line_id")
STRING_COLUMNS: tuple[str, ...] = ("customer_id", "transaction_id", "category", "channel", "line_id")
ID_COLUMNS: tuple[str, ...] = ("customer_id", "transaction_id", "line_id")
"""The id columns ``normalize_float_ids`` applies to."""
LINE_COLUMNS: tuple[str, ...] = ("unit_price", "line_id")
"""Mapping either of these declares line-level input (no ``looks_like_order_lines`` warning)."""
TRANSACTION_COLUMNS: tuple[str, ...] = ("transaction_id", "quantity", "category", "channel")
"""Optional columns of the returned transactions (``unit_price`` and ``line_id`` describe lines, not orders)."""
RULES: tuple[str, ...] = (
    "null_customer_id",
    "bad_timestamp",
    "implausible_timestamp",
    "bad_amount",
    "duplicate_line",
    "after_as_of",
)
BROKEN_RULES: tuple[str, ...] = RULES[:5]
"""Rules whose rows are errors under ``--strict`` (rows after the as-of date are merely out of scope)."""
MIN_DATE = dt.date(1990, 1, 1)
"""Default floor of plausible transaction days (``implausible_timestamp`` below it; CLI ``--min-date``)."""
PRICE_TOLERANCE = 0.005
ORDER_DECIMALS = 9
"""An order's amount (the sum of its lines) is rounded to this many decimals (float noise is not a refund)."""
"""Largest difference (currency units) between ``amount`` and ``quantity × unit_price`` that is not a mismatch."""
_FLOAT_ID = r"^([+-]?\d+)\.0+$"
_FLOAT_ID_RE = re.compile(_FLOAT_ID)
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What Python's ``str.strip()`` strips (``str.isspace``), for Arrow's ``utf8_trim``."""
NAT_NS = np.iinfo(np.int64).min  # the int64 nanoseconds of a missing timestamp (NaT)
_NS_MIN, _NS_MAX = pd.Timestamp.min.value, pd.Timestamp.max.value
_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_DAY_NS = 86_400 * 1_000_000_000
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
ISO_8601 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?$"
)
"""A strict ISO 8601 date or datetime (ASCII digits, ``T`` or a space between date and time, optional ``Z`` or
offset): what the HTTP API accepts (:func:`iso_8601_mask`). Files keep the permissive :func:`parse_timestamps`."""
ISO_8601_RE = re.compile(ISO_8601)
TIMESTAMP_RANGE = f"{pd.Timestamp.min.ceil('s'):%Y-%m-%dT%H:%M:%S}Z .. {pd.Timestamp.max.floor('s'):%Y-%m-%dT%H:%M:%S}Z"
"""The instants a timestamp may name (nanoseconds since 1970 in 64 bits): 1677-09-21T00:12:44Z ..
2262-04-11T23:47:16Z; every whole day from 1677-09-22 to 2262-04-10 is inside."""


class ContractError(ValueError):
    """The input cannot be used: a required column is missing, no row is valid, or ``--strict`` failed."""


def float_like_ids_warning(count: int) -> str:
    """The warning every input report gives when ``count`` distinct customer ids look like floats ('17850.0')."""
    return (
        f"{count:,} customer ids look like numbers an export turned into floats ('17850.0'); "
        "they are kept as text, add --normalize-ids to read them as '17850'"
    )


def rule_table(
    title: str, rows_read: int, rows_valid: int, rule_counts: Mapping[str, int], rules: Sequence[str], valid: str = ""
) -> list[str]:
    """The head of every input report's text table: ``title``, rows read and valid (``valid``: a note after "rows
    valid", e.g. "(lines)"), then one line per rule of ``rules`` with its count."""
    label = f"rows valid {valid}".strip()
    lines = [title, f"  rows read                 {rows_read:>12,}", f"  {label:<25} {rows_valid:>12,}"]
    return lines + [f"  {rule.replace('_', ' '):<25} {rule_counts[rule]:>12,}" for rule in rules]


class InputReportJson:
    """``to_dict`` / ``to_json`` of the input reports (transactions, campaign log, event log): the dataclass fields,
    then ``rows_broken``, the report's :attr:`DERIVED` properties and ``warnings``."""

    DERIVED: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        for name in ("rows_broken", *self.DERIVED, "warnings"):
            out[name] = getattr(self, name)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


@dataclasses.dataclass(frozen=True)
class DataQualityReport(InputReportJson):
    """What the contract found in one input: rule counts, lines and orders, coverage and refund share.

    Line counts: ``rows_valid`` (valid lines), ``purchases`` / ``refunds`` / ``zero_amount`` (valid lines with
    amount > = 0 / < 0 / == 0). Order counts: ``orders`` (transactions handed to the kernel), ``multi_line_orders``
    (orders of two lines or more), ``cancelled_orders`` (orders with a negative net amount),
    ``undeclared_line_orders`` (multi-line orders of an input mapped as transactions, see the module docstring).
    ``refund_share`` is refunded amount / gross purchase amount over lines (0 when nothing was bought).
    ``float_like_ids``: distinct valid customer ids that look like floats (``"17850.0"``; 0 when normalised).
    ``price_mismatch_lines``: valid lines whose ``amount`` differs from ``quantity × unit_price``.
    Dates are ISO strings of the UTC calendar day of the first and last valid line.
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
    orders: int = 0
    multi_line_orders: int = 0
    cancelled_orders: int = 0
    undeclared_line_orders: int = 0
    float_like_ids: int = 0
    price_mismatch_lines: int = 0
    DERIVED: ClassVar[tuple[str, ...]] = ("lines", "looks_like_order_lines")

    @property
    def rows_broken(self) -> int:
        """Rows that break a data rule (rows after the as-of date excluded)."""
        return sum(self.rule_counts[rule] for rule in BROKEN_RULES)

    @property
    def lines(self) -> int:
        """Valid input lines (the same as ``rows_valid``)."""
        return self.rows_valid

    @property
    def looks_like_order_lines(self) -> bool:
        """``transaction_id`` repeats with differing lines while the input is mapped as transactions."""
        return self.undeclared_line_orders > 0

    @property
    def warnings(self) -> list[str]:
        """One sentence per finding that does not drop rows but may make the numbers wrong."""
        out = []
        if self.looks_like_order_lines:
            out.append(order_lines_warning(self.undeclared_line_orders))
        if self.float_like_ids:
            out.append(float_like_ids_warning(self.float_like_ids))
        if self.price_mismatch_lines:
            out.append(
                f"{self.price_mismatch_lines:,} lines have an amount that differs from quantity × unit_price; "
                "the amount column was used"
            )
        return out

    def render(self) -> str:
        """A short human-readable table, as printed by the CLI, then one line per warning."""
        lines = rule_table("Data quality", self.rows_read, self.rows_valid, self.rule_counts, RULES, "(lines)")
        lines += [
            f"  orders (transactions)     {self.orders:>12,}",
            f"  multi-line orders         {self.multi_line_orders:>12,}",
            f"  cancelled orders          {self.cancelled_orders:>12,}",
            f"  customers                 {self.customers:>12,}",
            f"  purchase lines            {self.purchases:>12,}",
            f"  refund lines              {self.refunds:>12,}",
            f"  zero-amount lines         {self.zero_amount:>12,}",
            f"  refund share of spend     {self.refund_share:>12.2%}",
            f"  date range                {self.first_date} .. {self.last_date}",
        ]
        if self.as_of:
            lines.append(f"  as of                     {self.as_of}")
        lines += [f"warning: {sentence}" for sentence in self.warnings]
        return "\n".join(lines)


def order_lines_warning(orders: int) -> str:
    """The one sentence for an order-line export mapped as transactions (``orders``: multi-line orders)."""
    return (
        f"the input looks like order lines mapped as transactions: {orders:,} transaction ids repeat with "
        "different lines, which were summed into one transaction per order; map unit_price=<price column> "
        "(line amount = quantity × unit price) or line_id=<line column> to declare line-level input"
    )


def parse_column_map(spec: str | None, known: Sequence[str] | None = None) -> dict[str, str]:
    """Parse ``"customer_id=cust,timestamp=order_date"`` into ``{"customer_id": "cust", ...}``.

    Keys are contract column names (``known``; default the transaction contract's columns, the campaign log passes
    its own), values are the names in the input file. ``None`` is no mapping; an empty
    spec (``""``, ``","``), a contract column mapped twice or an input column mapped to two contract columns
    raise :class:`ContractError`. Whether the input has the named columns is checked when it is read.
    """
    if spec is None:
        return {}
    names = tuple(known) if known is not None else REQUIRED_COLUMNS + OPTIONAL_COLUMNS
    mapping: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ContractError(f"column mapping '{item}' must look like contract_name=input_name")
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key not in names:
            raise ContractError(f"column mapping names unknown column '{key}' (known: {', '.join(names)})")
        if not value:
            raise ContractError(f"column mapping for '{key}' has no input column name")
        if key in mapping:
            raise ContractError(f"column mapping maps '{key}' twice ('{mapping[key]}' and '{value}'); map it once")
        twice = [other for other, source in mapping.items() if source == value]
        if twice:
            raise ContractError(
                f"column mapping maps input column '{value}' to both '{twice[0]}' and '{key}'; map it once"
            )
        mapping[key] = value
    if not mapping:
        raise ContractError(
            f"column mapping {spec!r} is empty; give contract_name=input_name pairs such as customer_id=cust"
        )
    return mapping


def parse_date_only(value: str, what: str = "as-of date") -> dt.date:
    """A calendar date written ``YYYY-MM-DD`` (what the command line takes for ``--as-of``, ``--min-date``).

    A datetime (``2024-12-30T10:00``), another format or an impossible day raise :class:`ContractError`.
    """
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise ContractError(f"{what} '{value}' is not a date: expected YYYY-MM-DD (a calendar day, no time of day)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ContractError(f"{what} '{value}' is not a date: {exc}") from None


FUTURE_AS_OF_TOLERANCE_DAYS = 31
"""How many days an as-of date may lie after the last valid transaction (a late export, a quiet month)."""


def future_as_of_problem(
    last_date: str | dt.date | None, as_of: dt.date, tolerance_days: int = FUTURE_AS_OF_TOLERANCE_DAYS
) -> str | None:
    """The sentence refusing ``as_of`` when it lies after ``last_date`` (the last valid transaction's day) by more
    than ``tolerance_days``, else None. Features as of a future day age every customer: all look churned."""
    if last_date is None:
        return None
    last = dt.date.fromisoformat(str(last_date))
    gap = (as_of - last).days
    if gap <= tolerance_days:
        return None
    latest = last + dt.timedelta(days=tolerance_days)
    return (
        f"as-of date {as_of} is {gap:,} days after the last transaction ({last}), more than the tolerance of"
        f" {tolerance_days} day(s), so every customer would look churned: use an as-of date up to {latest}"
        " or pass --allow-future-as-of"
    )


def check_column_sources(names: Any, mapping: Mapping[str, str]) -> None:
    """Raise :class:`ContractError` when a mapped input column is not among the input's column ``names``."""
    present = set(names)
    missing = [f"'{source}' (for {target})" for target, source in mapping.items() if source not in present]
    if missing:
        shown = ", ".join(str(name) for name in list(names)[:12])
        raise ContractError(
            f"--columns maps input column {', '.join(missing)}, which the input does not have (its columns: {shown})"
        )


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
        return _utc_series(_ns_or_nat(values.dt.tz_convert("UTC").array), values.index)
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return _utc_series(_ns_or_nat(values.array), values.index)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    # Arrow compute and one parse of a numpy array: a pandas string op costs ~50 us per call, whatever the size
    text = pc.utf8_trim(_arrow(values), characters=_WHITESPACE)
    strings = text.to_numpy(zero_copy_only=False)
    ns = _ns_or_nat(pd.to_datetime(strings, utc=True, errors="coerce", format="ISO8601").array)
    retry = (ns == NAT_NS) & _bools(pc.not_equal(text, ""))
    if retry.any():
        mixed = pd.to_datetime(strings[retry], utc=True, errors="coerce", format="mixed")
        ns[retry] = _ns_or_nat(mixed.array)
    return _utc_series(ns, values.index)


def iso_8601_mask(values: pd.Series) -> np.ndarray:
    """True where a timestamp string is a strict ISO 8601 date or datetime (:data:`ISO_8601`; surrounding white
    space is ignored, as by :func:`parse_timestamps`). Month-first or day-first dates (``06/01/2024``,
    ``01-06-2024``), non-ASCII digits and control characters such as NUL are not."""
    text = pc.utf8_trim(_arrow(values), characters=_WHITESPACE)
    return _bools(pc.fill_null(pc.match_substring_regex(text, ISO_8601), False))


def timestamp_problem(text: str) -> str:
    """Why ``text`` is not an accepted timestamp, as the end of a sentence that starts with the value."""
    stripped = text.strip()
    if not ISO_8601_RE.fullmatch(stripped):
        return "is not an ISO 8601 date or datetime (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, optional offset)"
    try:
        dt.datetime.fromisoformat(stripped.replace(",", "."))
    except ValueError:
        return "is not a date or datetime"
    if parse_timestamps(pd.Series([stripped], dtype="str")).isna().iloc[0]:
        return f"is outside the supported range {TIMESTAMP_RANGE}"
    return "is not a date or datetime"


def _ns_or_nat(utc: Any) -> np.ndarray:
    """Nanoseconds since the epoch of a datetime array of any resolution (``NaT``: int64 min), ``NaT`` where an
    instant does not fit nanoseconds (a new array: the caller may write to it)."""
    i8 = np.array(utc.asi8, dtype=np.int64)
    factor = _UNIT_NS[utc.unit]
    if factor == 1:
        return i8
    fits = (i8 >= -(-_NS_MIN // factor)) & (i8 <= _NS_MAX // factor)  # NaT (int64 min) does not fit
    return np.where(fits, np.where(fits, i8, 0) * factor, NAT_NS)


def _utc_series(ns: np.ndarray, index: pd.Index) -> pd.Series:
    """A ``datetime64[ns, UTC]`` Series of nanoseconds since the epoch (``NaT``: int64 min)."""
    # int64 with an aware dtype is read as UTC nanoseconds: no localisation pass, no copy of the fresh array
    return pd.Series(pd.DatetimeIndex(ns, dtype=_UTC_NS, copy=False), index=index)


def _arrow(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The Arrow strings of a column (no copy for the ``str`` dtype; anything else is rendered as ``str`` first)."""
    if not (pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype)):
        values = values.astype("str")
    return pa.array(values.array)


def _bools(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow boolean result as a numpy mask, null as False."""
    return np.asarray(pc.fill_null(mask, False), dtype=bool)


def ids_as_text(values: pd.Series, *, normalize_float_ids: bool = False) -> pd.Series:
    """Opaque identifiers as text: strings stay as they are, anything else is rendered as ``str`` renders it.

    A float column becomes ``"17850.0"`` (what :func:`features.sources.read_table` gives for it too);
    ``normalize_float_ids`` turns integral float text (``"17850.0"``, ``"-3.00"``) into ``"17850"``.
    """
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        text = values
    else:
        text = values.astype("str")  # missing values (None, NaN, NaT) stay missing
    if normalize_float_ids:
        text = text.str.replace(_FLOAT_ID, r"\1", regex=True)
    return text


def normalize_id_text(ids: pd.Series) -> pd.Series:
    """Ids as ``normalize_float_ids`` reads them: text, ``"17850.0"`` (or the float 17850.0) as ``"17850"``.

    Engines that split the input by customer hash these, so that ``17850.0`` and ``17850`` land in one part.
    """
    return ids_as_text(ids, normalize_float_ids=True)


def present_mask(text: pd.Series, *, strip: bool = False) -> np.ndarray:
    """Rows holding a non-empty value (``strip``: a value that is not only white space)."""
    values = _arrow(text)
    if strip:
        values = pc.utf8_trim(values, characters=_WHITESPACE)
    return _bools(pc.not_equal(values, ""))


def group_codes(columns: list[Any]) -> np.ndarray:
    """Group number of each row by its values in every one of ``columns`` (arrays of one length), numbered in order
    of first appearance; missing values are equal to each other, as in ``DataFrame.duplicated``.

    Each column is factorised and the codes combined into one integer (compacted by a factorisation only when the
    product would overflow), then numbered by first appearance: the groups of ``groupby(sort=False).ngroup()``
    without a groupby's per-call cost.
    """
    code = np.zeros(len(columns[0]) if columns else 0, dtype=np.int64)
    size = 1  # code < size
    for values in columns:
        codes, uniques = pd.factorize(values)
        width = len(uniques) + 1  # missing (-1) is a value of its own
        if size * width >= 1 << 62:
            code, kept = pd.factorize(code)
            size = len(kept)
        code = code * width + (codes + 1)
        size *= width
    return pd.factorize(code)[0].astype(np.int64, copy=False)


def repeated_rows(code: np.ndarray) -> np.ndarray:
    """Rows whose group (see :func:`group_codes`) appeared on an earlier row."""
    repeat = np.ones(len(code), dtype=bool)
    repeat[np.unique(code, return_index=True)[1]] = False
    return repeat


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_MAX_HASHED_LENGTHS = 32
"""Most distinct byte lengths :func:`_string_hashes` hashes (one pass each); more: ``None``, hash-table path."""


def _string_hashes(values: pa.Array) -> np.ndarray | None:
    """A 64-bit hash of each string of an Arrow string array without nulls (equal strings, equal hashes).

    The bytes are folded 8-byte word by word (numpy, no Python object per row); the length is part of the hash.
    Strings all of one length of 8 bytes or more are read in place (strided words, the last one overlapping);
    otherwise the strings of each length are gathered into a zero-padded matrix. ``None`` when the array has nulls
    or too many distinct lengths. Collisions are possible: callers confirm equality on the rows whose hashes repeat.
    """
    if values.null_count or not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    n = len(values)
    offset_type = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=offset_type)[values.offset : values.offset + n + 1]
    data = values.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = np.diff(offsets)
    shortest, longest = int(lengths.min()), int(lengths.max())
    if longest - shortest >= 1 << 16:
        return None
    distinct = np.flatnonzero(np.bincount(lengths - shortest)) + shortest if longest > shortest else [shortest]
    if len(distinct) > _MAX_HASHED_LENGTHS:
        return None
    if len(distinct) == 1 and shortest >= 8:  # one length: 8-byte words read in place (the last one overlaps)
        start = int(offsets[0])
        h = np.full(n, shortest, dtype=np.uint64)
        for at in sorted({*range(0, shortest - 7, 8), shortest - 8}):
            h ^= np.ndarray((n,), dtype="<u8", buffer=data, offset=start + at, strides=(shortest,))
            h *= _HASH_MULTIPLIER
            h ^= h >> np.uint64(29)
        return h
    out = np.empty(n, dtype=np.uint64)
    for length in [int(k) for k in distinct]:
        rows = None if len(distinct) == 1 else np.flatnonzero(lengths == length)
        width = -(-length // 8) * 8
        padded = np.zeros((n if rows is None else len(rows), max(width, 8)), dtype=np.uint8)
        if length and rows is None:  # one length: the bytes are one contiguous (n, length) block
            padded[:, :length] = data[offsets[0] : offsets[0] + n * length].reshape(n, length)
        elif length:
            padded[:, :length] = data[offsets[rows][:, None] + np.arange(length)]
        words = padded.view(np.uint64)
        h = np.full(len(words), length, dtype=np.uint64)
        for j in range(words.shape[1]):
            h ^= words[:, j]
            h *= _HASH_MULTIPLIER
            h ^= h >> np.uint64(29)
        if rows is None:
            out = h
        else:
            out[rows] = h
    return out


def _repeated_values(text: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Mask over ``rows`` (non-empty values): the row's value is also the value of another of ``rows``.

    Hashes the values (:func:`_string_hashes`), sorts the hashes and confirms equality exactly (a factorisation)
    only on rows whose hash repeats: a column of millions of distinct ids costs one sort of integers, not a hash
    table of strings. The same mask as counting every value with a factorisation of all ``rows``.
    """
    suspect = np.ones(len(rows), dtype=bool)
    values = _arrow(text)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(rows) != len(values):
        values = values.take(pa.array(rows))
    hashes = _string_hashes(values) if len(rows) > 1 else None
    if hashes is not None:
        ordered = np.sort(hashes)
        twins = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(twins):
            twins = np.unique(twins)
            # a bit table of the twins' low bits first: one gather per row, a binary search only for the few hits
            bits = min(max(16, (64 * len(twins)).bit_length()), 26)
            low = np.uint64((1 << bits) - 1)
            table = np.zeros(1 << bits, dtype=bool)
            table[(twins & low).astype(np.intp)] = True
            suspect = table[(hashes & low).astype(np.intp)]
            hits = np.flatnonzero(suspect)
            where = np.minimum(np.searchsorted(twins, hashes[hits]), len(twins) - 1)
            suspect[hits] = twins[where] == hashes[hits]
        else:
            suspect = np.zeros(len(rows), dtype=bool)
    picked = np.flatnonzero(suspect)
    out = np.zeros(len(rows), dtype=bool)
    if len(picked):
        ids = group_codes([text.array.take(rows[picked])])
        out[picked[np.bincount(ids)[ids] > 1]] = True
    return out


@dataclasses.dataclass
class _Lines:
    """Every input row parsed and classified: ``rule`` is 0 for a valid line, else 1 + its index in RULES."""

    frame: pd.DataFrame  # the input renamed to contract names (every column, mapped or not)
    customer: pd.Series
    timestamp: pd.Series
    ns: np.ndarray  # the timestamps as int64 nanoseconds (NaT: int64 min)
    amount: np.ndarray
    quantity: np.ndarray | None  # the quantity column as numbers, when there is one
    tx_id: pd.Series | None  # the transaction ids as text, when there are any
    rule: np.ndarray
    key: np.ndarray | None  # order number per row (-1: an order of its own); None: no transaction_id repeats
    declared: bool
    price_mismatch: int
    normalize_float_ids: bool

    @property
    def valid(self) -> np.ndarray:
        return self.rule == 0


def as_numbers(values: pd.Series) -> np.ndarray:
    """A column as float64 numbers (NaN: not a number)."""
    if values.dtype == np.float64:
        return values.to_numpy()
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def _line_amounts(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Line amounts in currency units (NaN: bad), ``quantity × unit_price`` when ``unit_price`` is mapped, and the
    quantities when there is a ``quantity`` column."""
    priced = None
    quantity = as_numbers(frame["quantity"]) if "quantity" in frame.columns else None
    if "unit_price" in frame.columns:
        priced = quantity * as_numbers(frame["unit_price"])  # type: ignore[operator]
    if "amount" in frame.columns:
        amount = as_numbers(frame["amount"])
        if priced is not None:  # a line without an amount (empty, not garbage) is quantity × unit_price
            missing = frame["amount"].isna().to_numpy()
            if missing.any():
                amount = np.where(missing, priced, amount)
        return amount, priced, quantity
    return priced, priced, quantity  # type: ignore[return-value]


def _check_columns(frame: pd.DataFrame, mapping: Mapping[str, str]) -> None:
    """Raise :class:`ContractError` when a required column is missing (``unit_price`` may stand for ``amount``)."""
    wanted = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if "amount" in wanted and "unit_price" in frame.columns:
        wanted.remove("amount")
    if wanted:
        names = ", ".join(f"'{mapping.get(c, c)}'" for c in wanted)
        hint = " (map other names with --columns customer_id=...,timestamp=...,amount=...)"
        raise ContractError(f"required column {names} is missing from the input{hint}")
    if "unit_price" in frame.columns and "quantity" not in frame.columns:
        raise ContractError(
            f"column '{mapping.get('unit_price', 'unit_price')}' (unit_price) needs a quantity column: "
            "the line amount is quantity × unit price (map it with --columns quantity=...)"
        )


def _duplicate_lines(lines: _Lines, ok: np.ndarray) -> np.ndarray:
    """Rows (among ``ok``) that repeat an earlier row of their order exactly, or its ``line_id`` when mapped.

    Side effect: sets ``lines.key`` -- the order numbers (by ``(customer_id, transaction_id)``, first-appearance
    order) of the rows whose ``transaction_id`` repeats; an input where none repeats is not grouped at all.
    """
    n = len(ok)
    duplicate = np.zeros(n, dtype=bool)
    frame, tx_id = lines.frame, lines.tx_id
    line_id = None
    if "line_id" in frame.columns:
        line_id = ids_as_text(frame["line_id"], normalize_float_ids=lines.normalize_float_ids)
        has_line = present_mask(line_id)
        rows = np.flatnonzero(ok & has_line)
        scope = [tx_id.array.take(rows)] if tx_id is not None else []
        same = repeated_rows(group_codes([lines.customer.array.take(rows), *scope, line_id.array.take(rows)]))
        duplicate[rows[same]] = True
    if tx_id is None:
        return duplicate
    candidates = np.flatnonzero(ok & present_mask(tx_id))
    repeated = candidates[_repeated_values(tx_id, candidates)]
    if not len(repeated):
        return duplicate
    key = np.full(n, -1, dtype=np.int64)
    key[repeated] = group_codes([lines.customer.array.take(repeated), tx_id.array.take(repeated)])
    lines.key = key
    exact = repeated if line_id is None else repeated[~has_line[repeated]]
    if len(exact):
        # every input column, mapped or not: two products of one order may share price, quantity and time
        picked = np.zeros(n, dtype=bool)  # a mask (ascending rows): Arrow filters chunk by chunk, a take combines
        picked[exact] = True
        columns = [frame.iloc[:, j].array[picked] for j in range(frame.shape[1])]
        duplicate[exact[repeated_rows(group_codes([key[exact], *columns]))]] = True
    return duplicate


def _classify(
    raw: pd.DataFrame,
    columns: Mapping[str, str] | None,
    as_of_date: dt.date | None,
    normalize_float_ids: bool,
    min_date: dt.date | None = None,
) -> _Lines:
    """Parse every row and give it its first broken rule (vectorised; see the module docstring for the rules)."""
    mapping = dict(columns or {})
    frame = raw
    if mapping:
        check_column_sources(raw.columns, mapping)
        renames = {source: target for target, source in mapping.items() if source != target}
        # an unmapped input column named like a mapping's target is shadowed: kept (whole-row duplicates compare
        # it) under another name, never a second column of the contract's name
        shadowed = {name: f"{name} (unmapped input column)" for name in raw.columns if name in renames.values()}
        shadowed = {name: new for name, new in shadowed.items() if name not in renames}
        frame = raw.rename(columns={**shadowed, **renames})
    _check_columns(frame, mapping)
    customer = ids_as_text(frame["customer_id"], normalize_float_ids=normalize_float_ids)
    null_id = ~present_mask(customer, strip=True)
    timestamp = parse_timestamps(frame["timestamp"])
    ns = timestamp.array.asi8
    bad_ts = ~null_id & (ns == NAT_NS)
    implausible = np.zeros(len(frame), dtype=bool)
    if min_date is not None:
        floor_day = (min_date - dt.date(1970, 1, 1)).days
        implausible = ~null_id & ~bad_ts & (ns // _DAY_NS < floor_day)
    amount, priced, quantity = _line_amounts(frame)
    bad_amount = ~null_id & ~bad_ts & ~implausible & ~np.isfinite(amount)
    ok = ~(null_id | bad_ts | implausible | bad_amount)
    tx_id = None
    if "transaction_id" in frame.columns:
        tx_id = ids_as_text(frame["transaction_id"], normalize_float_ids=normalize_float_ids)
    lines = _Lines(
        frame=frame,
        customer=customer,
        timestamp=timestamp,
        ns=ns,
        amount=amount,
        quantity=quantity,
        tx_id=tx_id,
        rule=np.zeros(len(frame), dtype=np.int8),
        key=None,
        declared=any(c in frame.columns for c in LINE_COLUMNS),
        price_mismatch=0,
        normalize_float_ids=normalize_float_ids,
    )
    duplicate = _duplicate_lines(lines, ok)
    ok &= ~duplicate
    after = np.zeros(len(frame), dtype=bool)
    if as_of_date is not None:
        day = ns // _DAY_NS  # numpy's datetime64[ns] -> [D] cast overflows near the range ends (1677 -> 2262)
        after = ok & (day > (as_of_date - dt.date(1970, 1, 1)).days)
    for number, broken in enumerate((null_id, bad_ts, implausible, bad_amount, duplicate, after), start=1):
        lines.rule[broken] = number
    if priced is not None and "amount" in frame.columns:
        differs = ~(np.abs(amount - priced) <= PRICE_TOLERANCE) & np.isfinite(priced)
        lines.price_mismatch = int((differs & lines.valid).sum())
    return lines


def row_rules(
    raw: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    as_of: str | dt.date | None = None,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = None,
) -> np.ndarray:
    """The rule each input row breaks (``""``: a valid line), as an object array in input order."""
    lines = _classify(raw, columns, to_date(as_of), normalize_float_ids, min_date)
    names = np.asarray(("", *RULES), dtype=object)
    return names[lines.rule]


@dataclasses.dataclass(frozen=True)
class _Orders:
    """Valid lines summed per order: ``keep`` marks each order's first line, which carries the order's values."""

    keep: np.ndarray
    amount: np.ndarray
    ns: np.ndarray | None  # int64 nanoseconds (earliest line) when lines were summed, else None
    quantity: np.ndarray | None
    multi_line: int


def _sum_orders(lines: _Lines) -> _Orders:
    """Sum the valid lines of each order onto its first line (only rows whose ``transaction_id`` repeats)."""
    valid = lines.valid
    quantity = lines.quantity
    if lines.key is None:
        return _Orders(valid, lines.amount, None, quantity, 0)
    rows = np.flatnonzero(valid & (lines.key >= 0))
    if not len(rows):
        return _Orders(valid, lines.amount, None, quantity, 0)
    code, _ = pd.factorize(lines.key[rows], sort=False)  # 0, 1, ... in order of first appearance
    first = rows[np.unique(code, return_index=True)[1]]
    counts = np.bincount(code)
    amount = lines.amount.copy()
    # rounded to 1e-9 currency units: lines that cancel out (-0.01 + 0.03 - 0.02) make a zero order, not a
    # refund of -3.5e-18 (float noise would otherwise decide purchase or refund, and depend on line order)
    amount[first] = np.round(np.bincount(code, weights=lines.amount[rows]), ORDER_DECIMALS) + 0.0
    ns = lines.ns.copy()
    by_order = np.argsort(code, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ns[first] = np.minimum.reduceat(ns[rows][by_order], starts)
    if quantity is not None:
        quantity = quantity.copy()
        quantity[first] = np.bincount(code, weights=quantity[rows])
    keep = valid.copy()
    keep[rows] = False
    keep[first] = True
    return _Orders(keep, amount, ns, quantity, int((counts > 1).sum()))


def _transactions(lines: _Lines, orders: _Orders) -> pd.DataFrame:
    """One row per order: ``customer_id``, ``timestamp`` (UTC), ``amount`` and the optional order columns."""
    keep = orders.keep
    ns = lines.ns if orders.ns is None else orders.ns
    # the typed arrays filtered once (a boolean mask: Arrow's filter kernel, about twice as fast as a take of the
    # row numbers on strings) and one DataFrame built from them: every pandas call costs tens of us
    columns: dict[str, Any] = {
        "customer_id": lines.customer.array[keep],  # ``str`` (see ids_as_text)
        "timestamp": pd.DatetimeIndex(ns[keep], dtype=_UTC_NS, copy=False),
        "amount": orders.amount[keep],
    }
    frame = lines.frame
    for name in TRANSACTION_COLUMNS:
        if name not in frame.columns:
            continue
        if name == "quantity":
            columns[name] = orders.quantity[keep]  # type: ignore[index]
        elif name == "transaction_id":
            columns[name] = lines.tx_id.array[keep]  # type: ignore[union-attr]
        else:
            columns[name] = ids_as_text(frame[name]).array[keep]
    rows = len(columns["amount"])
    return pd.DataFrame(columns, index=pd.RangeIndex(rows), copy=False)  # fresh arrays: no copy


def distinct_ids(ids: pd.Series) -> np.ndarray:
    """The distinct values of an id column without missing values, in first-appearance order (``Series.unique``).

    Input grouped by id in ascending order (what the generator, sorted exports and the batch partitions give) is
    read off its runs with two Arrow comparisons of neighbours; anything else is hashed by ``Series.unique``.
    """
    if len(ids) > 1 and isinstance(ids.array, pd.arrays.ArrowStringArray):
        arr = pa.array(ids.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not arr.null_count:
            change = pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1))
            heads = arr.filter(pa.concat_arrays([pa.array([True]), change]))
            if len(heads) < 2 or pc.all(pc.less(heads.slice(0, len(heads) - 1), heads.slice(1))).as_py():
                return heads.to_numpy(zero_copy_only=False)
    return np.asarray(ids.unique())


def count_float_like_ids(ids: np.ndarray) -> int:
    """How many of these distinct ids look like an integer written as a float (``"17850.0"``)."""
    if len(ids) < 1_000:  # a request's few ids: plain Python is ~100x cheaper than a pandas string op
        return sum(1 for v in ids if isinstance(v, str) and _FLOAT_ID_RE.fullmatch(v))
    return int(pd.Series(ids, dtype="str").str.fullmatch(_FLOAT_ID).sum())


def _strict_failure(counts: Mapping[str, int], undeclared: int) -> str | None:
    """The ``--strict`` error sentence, or None when nothing breaks the contract."""
    broken = {rule: count for rule, count in counts.items() if rule in BROKEN_RULES and count}
    problems = []
    if broken:
        detail = ", ".join(f"{count} {rule.replace('_', ' ')}" for rule, count in broken.items())
        problems.append(f"{detail} row(s) break the input contract")
    if undeclared:
        problems.append(order_lines_warning(undeclared))
    return f"--strict: {'; '.join(problems)}" if problems else None


def prepare_transactions(
    raw: pd.DataFrame,
    *,
    columns: Mapping[str, str] | None = None,
    as_of: str | dt.date | None = None,
    strict: bool = False,
    allow_empty: bool = False,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = None,
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Apply the contract to a raw frame of lines (``allow_empty``: a part of a larger input may hold none).

    Returns one row per order (columns ``customer_id`` str, ``timestamp`` datetime64[ns, UTC], ``amount``
    float64 in currency units, plus ``transaction_id`` / ``quantity`` / ``category`` / ``channel`` when
    present), in the order of each order's first line, and the data-quality report. Raises
    :class:`ContractError` when the input cannot be used at all, or under ``strict`` when any row breaks a rule
    or the input looks like order lines mapped as transactions. ``normalize_float_ids``: see the module docstring.
    ``min_date``: lines before this day are ``implausible_timestamp`` (None: no floor).
    """
    as_of_date = to_date(as_of)
    lines = _classify(raw, columns, as_of_date, normalize_float_ids, min_date)
    n = len(lines.rule)
    tally = np.bincount(lines.rule, minlength=len(RULES) + 1)
    counts = {rule: int(tally[k + 1]) for k, rule in enumerate(RULES)}
    rows_valid = int(tally[0])
    orders = _sum_orders(lines)
    undeclared = 0 if lines.declared else orders.multi_line

    failure = _strict_failure(counts, undeclared) if strict else None
    if failure:
        raise ContractError(failure)
    if rows_valid == 0 and not allow_empty:
        detail = ", ".join(f"{count} {rule.replace('_', ' ')}" for rule, count in counts.items() if count)
        raise ContractError(f"no valid transaction in the input ({n} rows read; {detail or 'file is empty'})")

    out = _transactions(lines, orders)
    valid = lines.valid
    line_amount = lines.amount[valid]
    gross = float(line_amount[line_amount > 0].sum())
    refunded = 0.0 - float(line_amount[line_amount < 0].sum())
    # UTC days of the first and last valid line: the floor of the extremes is the extreme of the floors
    valid_ns = lines.ns[valid]
    days = [np.datetime64(int(edge) // _DAY_NS, "D") for edge in (valid_ns.min(), valid_ns.max())] if rows_valid else []
    ids = distinct_ids(out["customer_id"])
    report = DataQualityReport(
        rows_read=n,
        rows_valid=rows_valid,
        rule_counts=counts,
        customers=len(ids),
        purchases=int((line_amount >= 0).sum()),
        refunds=int((line_amount < 0).sum()),
        zero_amount=int((line_amount == 0).sum()),
        refund_share=refunded / gross if gross > 0 else 0.0,
        first_date=str(days[0]) if rows_valid else None,
        last_date=str(days[1]) if rows_valid else None,
        as_of=str(as_of_date) if as_of_date else None,
        gross_amount=gross,
        refunded_amount=refunded,
        orders=len(out),
        multi_line_orders=orders.multi_line,
        cancelled_orders=int((out["amount"].to_numpy() < 0).sum()),
        undeclared_line_orders=undeclared,
        float_like_ids=0 if normalize_float_ids else count_float_like_ids(ids),
        price_mismatch_lines=lines.price_mismatch,
    )
    return out, report


def needs_every_column(names: list[str], columns: Mapping[str, str] | None) -> bool:
    """Whether the contract compares whole rows of this input (``duplicate_line`` without a ``line_id``).

    True when a ``transaction_id`` is among the input's columns (after mapping) and no ``line_id`` is: an
    engine that reads only the contract's columns must then pass every input column to :func:`prepare_transactions`.
    """
    mapping = columns or {}
    return mapping.get("transaction_id", "transaction_id") in names and mapping.get("line_id", "line_id") not in names


def combine_reports(reports: list[DataQualityReport]) -> DataQualityReport:
    """One report for inputs read in customer-disjoint parts (the batch job's partitions)."""
    if not reports:
        raise ContractError("no input rows at all")
    gross = sum(r.gross_amount for r in reports)
    refunded = sum(r.refunded_amount for r in reports)
    firsts = [r.first_date for r in reports if r.first_date]
    lasts = [r.last_date for r in reports if r.last_date]
    summed = (
        "rows_read",
        "rows_valid",
        "customers",
        "purchases",
        "refunds",
        "zero_amount",
        "orders",
        "multi_line_orders",
        "cancelled_orders",
        "undeclared_line_orders",
        "float_like_ids",
        "price_mismatch_lines",
    )
    return DataQualityReport(
        **{name: sum(getattr(r, name) for r in reports) for name in summed},
        rule_counts={rule: sum(r.rule_counts[rule] for r in reports) for rule in RULES},
        refund_share=refunded / gross if gross > 0 else 0.0,
        first_date=min(firsts) if firsts else None,
        last_date=max(lasts) if lasts else None,
        as_of=reports[0].as_of,
        gross_amount=gross,
        refunded_amount=refunded,
    )
