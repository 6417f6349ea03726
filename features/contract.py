"""The transaction input contract: column mapping, parsing, per-rule data-quality counts and order lines.

Input rows are *lines*. A line belongs to an *order* (one purchase event, what the feature kernel calls a
transaction): the lines sharing ``(customer_id, transaction_id)`` form one order; a line without a
``transaction_id`` is an order of its own. :func:`prepare_transactions` returns one row per order, so the kernel
(and every path above it: training, batch, online, Spark) sees transactions, whatever the export's grain.

Every input row ends in exactly one place: it is either a *valid* line or it is counted under the first rule it
breaks, in this order:

1. ``null_customer_id`` -- customer id missing, empty or only white space;
2. ``bad_timestamp``    -- timestamp missing or unparseable;
3. ``bad_amount``       -- the line amount is missing, not a number, NaN or infinite;
4. ``duplicate_line``   -- the row repeats an earlier valid row of the same order exactly (the same value in
   *every* input column, mapped or not), or repeats its ``line_id`` when one is mapped (kept once, the first);
5. ``after_as_of``      -- the line's UTC day is after the as-of date (kept out of features).

So ``rows_read == rows_valid + sum(rule counts)`` always holds; ``rows_valid`` counts valid *lines*.

Line amount: ``amount`` when it is mapped; otherwise ``quantity × unit_price`` when ``unit_price`` is mapped
(a ``quantity`` column is then required). When both ``amount`` and ``unit_price`` are mapped, **``amount``
wins** (a source's line total may hold discounts) and is cross-checked: lines where it differs from
``quantity × unit_price`` by more than half a cent are counted in ``price_mismatch_lines`` and named in a
warning (they stay valid). Zero amounts are valid purchases; negative amounts (so negative quantities, e.g. a
cancellation invoice ``C536379``) are returns/refunds: valid lines that reduce net spend.

Orders: the lines of one order are summed into one transaction: ``amount`` and ``quantity`` are the sums over
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
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

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
    "bad_amount",
    "duplicate_line",
    "after_as_of",
)
BROKEN_RULES: tuple[str, ...] = RULES[:4]
"""Rules whose rows are errors under ``--strict`` (rows after the as-of date are merely out of scope)."""
PRICE_TOLERANCE = 0.005
"""Largest difference (currency units) between ``amount`` and ``quantity × unit_price`` that is not a mismatch."""
_FLOAT_ID = r"^([+-]?\d+)\.0+$"
_FLOAT_ID_RE = re.compile(_FLOAT_ID)


class ContractError(ValueError):
    """The input cannot be used: a required column is missing, no row is valid, or ``--strict`` failed."""


@dataclasses.dataclass(frozen=True)
class DataQualityReport:
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
            out.append(
                f"{self.float_like_ids:,} customer ids look like numbers an export turned into floats ('17850.0'); "
                "they are kept as text, add --normalize-ids to read them as '17850'"
            )
        if self.price_mismatch_lines:
            out.append(
                f"{self.price_mismatch_lines:,} lines have an amount that differs from quantity × unit_price; "
                "the amount column was used"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rows_broken"] = self.rows_broken
        out["lines"] = self.lines
        out["looks_like_order_lines"] = self.looks_like_order_lines
        out["warnings"] = self.warnings
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def render(self) -> str:
        """A short human-readable table, as printed by the CLI, then one line per warning."""
        lines = [
            "Data quality",
            f"  rows read                 {self.rows_read:>12,}",
            f"  rows valid (lines)        {self.rows_valid:>12,}",
        ]
        lines += [f"  {rule.replace('_', ' '):<25} {self.rule_counts[rule]:>12,}" for rule in RULES]
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


def _as_string(values: pd.Series, *, normalize_float_ids: bool = False) -> pd.Series:
    """Opaque identifiers as text: strings stay as they are, anything else is rendered as ``str`` renders it.

    A float column becomes ``"17850.0"`` (what :func:`features.sources.read_table` gives for it too);
    ``normalize_float_ids`` turns integral float text (``"17850.0"``, ``"-3.00"``) into ``"17850"``.
    """
    if pd.api.types.is_string_dtype(values.dtype) and not pd.api.types.is_object_dtype(values.dtype):
        text = values
    else:
        text = values.astype("str").where(values.notna(), None).astype("str")
    if normalize_float_ids:
        text = text.str.replace(_FLOAT_ID, r"\1", regex=True)
    return text


def _present(text: pd.Series) -> np.ndarray:
    """Rows holding a non-empty value."""
    return text.notna().to_numpy() & (text.fillna("") != "").to_numpy()


@dataclasses.dataclass
class _Lines:
    """Every input row parsed and classified: ``rule`` is 0 for a valid line, else 1 + its index in RULES."""

    frame: pd.DataFrame  # the input renamed to contract names (every column, mapped or not)
    customer: pd.Series
    timestamp: pd.Series
    amount: np.ndarray
    rule: np.ndarray
    key: np.ndarray | None  # order number per row (-1: an order of its own); None: no transaction_id repeats
    declared: bool
    price_mismatch: int
    normalize_float_ids: bool

    @property
    def valid(self) -> np.ndarray:
        return self.rule == 0


def _line_amounts(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """Line amounts in currency units (NaN: bad), and ``quantity × unit_price`` when ``unit_price`` is mapped."""
    priced = None
    if "unit_price" in frame.columns:
        quantity = pd.to_numeric(frame["quantity"], errors="coerce").astype("float64").to_numpy()
        price = pd.to_numeric(frame["unit_price"], errors="coerce").astype("float64").to_numpy()
        priced = quantity * price
    if "amount" in frame.columns:
        return pd.to_numeric(frame["amount"], errors="coerce").astype("float64").to_numpy(), priced
    return priced, priced  # type: ignore[return-value]


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


def _order_keys(customer: pd.Series, tx_id: pd.Series, rows: np.ndarray) -> np.ndarray:
    """Order number (first-appearance order) of each of ``rows`` by ``(customer_id, transaction_id)``."""
    pairs = pd.DataFrame({"c": customer.array[rows], "t": tx_id.array[rows]})
    return pairs.groupby(["c", "t"], sort=False).ngroup().to_numpy(dtype=np.int64)


def _duplicate_lines(lines: _Lines, tx_id: pd.Series | None, ok: np.ndarray) -> np.ndarray:
    """Rows (among ``ok``) that repeat an earlier row of their order exactly, or its ``line_id`` when mapped.

    Side effect: sets ``lines.key`` -- the order numbers of the rows whose ``transaction_id`` repeats.
    """
    n = len(ok)
    duplicate = np.zeros(n, dtype=bool)
    frame = lines.frame
    line_id = None
    if "line_id" in frame.columns:
        line_id = _as_string(frame["line_id"], normalize_float_ids=lines.normalize_float_ids)
        has_line = ok & _present(line_id)
        rows = np.flatnonzero(has_line)
        scope = tx_id.array[rows] if tx_id is not None else np.full(len(rows), "")
        same = pd.DataFrame({"c": lines.customer.array[rows], "t": scope, "l": line_id.array[rows]}).duplicated()
        duplicate[rows[same.to_numpy()]] = True
    if tx_id is None:
        return duplicate
    candidates = np.flatnonzero(ok & _present(tx_id))
    repeated = candidates[tx_id.iloc[candidates].duplicated(keep=False).to_numpy()]
    if not len(repeated):
        return duplicate
    key = np.full(n, -1, dtype=np.int64)
    key[repeated] = _order_keys(lines.customer, tx_id, repeated)
    lines.key = key
    exact = repeated if line_id is None else repeated[~_present(line_id)[repeated]]
    if len(exact):
        # every input column, mapped or not: two products of one order may share price, quantity and time
        copies = frame.iloc[exact].assign(_order=key[exact]).duplicated().to_numpy()
        duplicate[exact[copies]] = True
    return duplicate


def _classify(
    raw: pd.DataFrame,
    columns: Mapping[str, str] | None,
    as_of_date: dt.date | None,
    normalize_float_ids: bool,
) -> _Lines:
    """Parse every row and give it its first broken rule (vectorised; see the module docstring for the rules)."""
    mapping = dict(columns or {})
    frame = raw.rename(columns={source: target for target, source in mapping.items()}) if mapping else raw
    _check_columns(frame, mapping)
    customer = _as_string(frame["customer_id"], normalize_float_ids=normalize_float_ids)
    null_id = ~_present(customer.str.strip())
    timestamp = parse_timestamps(frame["timestamp"])
    bad_ts = ~null_id & timestamp.isna().to_numpy()
    amount, priced = _line_amounts(frame)
    bad_amount = ~null_id & ~bad_ts & ~np.isfinite(amount)
    ok = ~(null_id | bad_ts | bad_amount)
    lines = _Lines(
        frame=frame,
        customer=customer,
        timestamp=timestamp,
        amount=amount,
        rule=np.zeros(len(frame), dtype=np.int8),
        key=None,
        declared=any(c in frame.columns for c in LINE_COLUMNS),
        price_mismatch=0,
        normalize_float_ids=normalize_float_ids,
    )
    tx_id = None
    if "transaction_id" in frame.columns:
        tx_id = _as_string(frame["transaction_id"], normalize_float_ids=normalize_float_ids)
    duplicate = _duplicate_lines(lines, tx_id, ok)
    ok &= ~duplicate
    after = np.zeros(len(frame), dtype=bool)
    if as_of_date is not None:
        day = timestamp.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
        after = ok & (day > np.datetime64(as_of_date, "D"))
    for number, broken in enumerate((null_id, bad_ts, bad_amount, duplicate, after), start=1):
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
) -> np.ndarray:
    """The rule each input row breaks (``""``: a valid line), as an object array in input order."""
    lines = _classify(raw, columns, to_date(as_of), normalize_float_ids)
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
    quantity = None
    if "quantity" in lines.frame.columns:
        quantity = pd.to_numeric(lines.frame["quantity"], errors="coerce").astype("float64").to_numpy()
    if lines.key is None:
        return _Orders(valid, lines.amount, None, quantity, 0)
    rows = np.flatnonzero(valid & (lines.key >= 0))
    if not len(rows):
        return _Orders(valid, lines.amount, None, quantity, 0)
    code, _ = pd.factorize(lines.key[rows], sort=False)
    first = rows[np.flatnonzero(~pd.Series(code).duplicated().to_numpy())]
    counts = np.bincount(code)
    amount = lines.amount.copy()
    amount[first] = np.bincount(code, weights=lines.amount[rows])
    ns = lines.timestamp.array.asi8.copy()
    ns[first] = pd.Series(ns[rows]).groupby(code, sort=True).min().to_numpy()
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
    if orders.ns is None:
        # masks on the typed arrays: ``to_numpy()`` of a tz-aware column builds one Timestamp object per row
        timestamp = pd.Series(lines.timestamp.array[keep]).astype("datetime64[ns, UTC]")
    else:
        timestamp = pd.Series(pd.to_datetime(orders.ns[keep], unit="ns", utc=True))
    out = pd.DataFrame(
        {
            "customer_id": pd.Series(lines.customer.array[keep]).astype("str"),
            "timestamp": timestamp.astype("datetime64[ns, UTC]"),
            "amount": orders.amount[keep],
        }
    )
    frame = lines.frame
    for name in TRANSACTION_COLUMNS:
        if name not in frame.columns:
            continue
        if name == "quantity":
            out[name] = orders.quantity[keep]  # type: ignore[index]
        else:
            normalize = lines.normalize_float_ids and name in ID_COLUMNS
            out[name] = pd.Series(_as_string(frame[name], normalize_float_ids=normalize).array[keep]).astype("str")
    return out


def _float_like(ids: np.ndarray) -> int:
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
) -> tuple[pd.DataFrame, DataQualityReport]:
    """Apply the contract to a raw frame of lines (``allow_empty``: a part of a larger input may hold none).

    Returns one row per order (columns ``customer_id`` str, ``timestamp`` datetime64[ns, UTC], ``amount``
    float64 in currency units, plus ``transaction_id`` / ``quantity`` / ``category`` / ``channel`` when
    present), in the order of each order's first line, and the data-quality report. Raises
    :class:`ContractError` when the input cannot be used at all, or under ``strict`` when any row breaks a rule
    or the input looks like order lines mapped as transactions. ``normalize_float_ids``: see the module docstring.
    """
    as_of_date = to_date(as_of)
    lines = _classify(raw, columns, as_of_date, normalize_float_ids)
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
    days = lines.timestamp.array.asi8[valid].view("datetime64[ns]").astype("datetime64[D]")
    ids = out["customer_id"].unique()
    report = DataQualityReport(
        rows_read=n,
        rows_valid=rows_valid,
        rule_counts=counts,
        customers=len(ids),
        purchases=int((line_amount >= 0).sum()),
        refunds=int((line_amount < 0).sum()),
        zero_amount=int((line_amount == 0).sum()),
        refund_share=refunded / gross if gross > 0 else 0.0,
        first_date=str(days.min()) if rows_valid else None,
        last_date=str(days.max()) if rows_valid else None,
        as_of=str(as_of_date) if as_of_date else None,
        gross_amount=gross,
        refunded_amount=refunded,
        orders=len(out),
        multi_line_orders=orders.multi_line,
        cancelled_orders=int((out["amount"].to_numpy() < 0).sum()),
        undeclared_line_orders=undeclared,
        float_like_ids=0 if normalize_float_ids else _float_like(np.asarray(ids)),
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
