"""The campaign-log contract and point-in-time campaign outcomes: what an uplift model learns from.

A campaign log has one row per (customer, campaign) assignment:

- ``customer_id`` -- the customer (opaque text, the ids of the transaction log; see below);
- ``campaign_id`` -- the campaign (opaque text);
- ``sent_at``     -- when the contact was sent (or assigned, for the held-out control group): a timestamp, converted
  to UTC (naive values are UTC already), parsed like the transactions' timestamps
  (:func:`features.contract.parse_timestamps`); an input without ``sent_at`` but with ``assigned_at`` uses it;
- ``treatment``   -- 1 for a contacted customer, 0 for the randomized held-out control group. Accepted values
  (:data:`TREATMENT_VALUES`, case and surrounding white space ignored): ``1``/``0`` (also ``1.0``/``0.0`` and
  booleans), ``true``/``false``, ``yes``/``no``, ``treatment``/``control``, ``treated``/``control``,
  ``contacted``/``held_out`` (``held-out``, ``holdout``); anything else breaks the row;
- ``offer``       -- optional, the offer sent (text; missing: ``""``);
- ``cost``        -- optional, what the contact cost (currency units, a number >= 0; missing column or empty cell: 0).

Input columns of other names are mapped with ``columns={"sent_at": "assigned_at", ...}`` (contract name -> input
name), as for transactions. Every input row ends in exactly one place: it is either *valid* or counted under the
first rule it breaks, in this order (:data:`CAMPAIGN_RULES`):

1. ``null_customer_id``     -- customer id missing, empty or only white space;
2. ``null_campaign_id``     -- campaign id missing, empty or only white space;
3. ``bad_timestamp``        -- ``sent_at`` missing or unparseable;
4. ``bad_treatment``        -- the treatment flag is none of the accepted values;
5. ``bad_cost``             -- ``cost`` is not a number, infinite or negative;
6. ``duplicate_assignment`` -- a later row for a (customer, campaign) pair that an earlier valid row already holds
   (the first one is kept; ``conflicting_assignments`` counts those whose treatment differs from the kept row).

So ``rows_read == rows_valid + sum(rule counts)``. ``strict`` raises :class:`~features.contract.ContractError` naming
the rules when any row breaks one. Ids are handled as in :mod:`features.contract`: text, never numbers
(``"00042"`` stays), a float column renders as ``"17850.0"``, and ``normalize_float_ids=True`` reads ``"17850.0"``
as ``"17850"`` in both id columns (do the same as for the transactions, or the ids will not match).

Outcomes (:func:`campaign_outcomes`), point in time: a campaign row's *cutoff* is the UTC calendar day of its
``sent_at``. Features are computed at that cutoff (transactions whose UTC day is at or before it, the send day
included, as everywhere in :mod:`features`); outcomes come from the ``horizon_days`` days after it, the window
``(cutoff, cutoff + H]`` of :func:`features.labels.labels_at`: ``retained`` = 1 when the customer makes a purchase
(``amount >= 0``) in the window, ``net_spend`` = purchases minus refunds in the window (currency units). A customer
with no transaction at or before the cutoff (an id the transaction log does not know, or a customer who joined
later) has ``known`` = False, ``retained`` = 0 and ``net_spend`` = 0: kept and counted, never dropped silently.
A window that reaches past the end of the transaction log is refused (its outcomes are not known yet).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping

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
    group_codes,
    ids_as_text,
    parse_timestamps,
    present_mask,
    repeated_rows,
    rule_table,
)
from features.kernel import NS_PER_DAY, PreparedTransactions, compute_feature_arrays, date_to_day, day_to_date
from features.labels import labels_at

__all__ = [
    "CAMPAIGN_COLUMNS",
    "CAMPAIGN_RULES",
    "OPTIONAL_CAMPAIGN_COLUMNS",
    "REQUIRED_CAMPAIGN_COLUMNS",
    "TREATMENT_VALUES",
    "CampaignReport",
    "campaign_outcomes",
    "campaign_training_frame",
    "prepare_campaigns",
    "read_campaigns",
]

REQUIRED_CAMPAIGN_COLUMNS: tuple[str, ...] = ("customer_id", "campaign_id", "sent_at", "treatment")
OPTIONAL_CAMPAIGN_COLUMNS: tuple[str, ...] = ("offer", "cost")
CAMPAIGN_COLUMNS: tuple[str, ...] = REQUIRED_CAMPAIGN_COLUMNS + OPTIONAL_CAMPAIGN_COLUMNS
"""The columns of a prepared campaign log, in this order."""
CAMPAIGN_RULES: tuple[str, ...] = (
    "null_customer_id",
    "null_campaign_id",
    "bad_timestamp",
    "bad_treatment",
    "bad_cost",
    "duplicate_assignment",
)
TREATMENT_VALUES: dict[str, int] = {
    "1": 1,
    "1.0": 1,
    "true": 1,
    "yes": 1,
    "treatment": 1,
    "treated": 1,
    "contacted": 1,
    "0": 0,
    "0.0": 0,
    "false": 0,
    "no": 0,
    "control": 0,
    "held_out": 0,
    "held-out": 0,
    "holdout": 0,
}
"""Accepted treatment flags (lower case, stripped) and what they mean: 1 contacted, 0 held-out control."""
SENT_AT_ALIAS = "assigned_at"
"""Read as ``sent_at`` when the input has no ``sent_at`` column (and no mapping names one)."""
OUTCOME_COLUMNS: tuple[str, ...] = ("cutoff", "known", "retained", "net_spend")
"""What :func:`campaign_outcomes` adds to the campaign columns."""


@dataclasses.dataclass(frozen=True)
class CampaignReport(InputReportJson):
    """What the campaign contract found in one log: rule counts, arms and campaigns.

    ``treated`` / ``control``: valid rows per arm; ``campaigns``: distinct campaign ids; ``arms``: per campaign
    ``{"treated": rows, "control": rows}``; ``conflicting_assignments``: duplicate rows whose treatment differs from
    the kept row (the log assigns a customer to both arms); ``float_like_ids``: distinct customer ids that look like
    floats (``"17850.0"``; 0 when normalised). ``first_sent`` / ``last_sent``: UTC days (ISO) of the valid rows.
    """

    rows_read: int
    rows_valid: int
    rule_counts: dict[str, int]
    customers: int
    campaigns: int
    treated: int
    control: int
    arms: dict[str, dict[str, int]]
    first_sent: str | None
    last_sent: str | None
    conflicting_assignments: int = 0
    float_like_ids: int = 0

    @property
    def rows_broken(self) -> int:
        """Rows that break a rule (every rule is an error: there is no out-of-scope rule here)."""
        return sum(self.rule_counts.values())

    @property
    def warnings(self) -> list[str]:
        """One sentence per finding that keeps the rows but may make an uplift estimate wrong."""
        out = []
        for campaign, arm in self.arms.items():
            if not arm["control"]:
                out.append(f"campaign '{campaign}' has no held-out control group: its uplift cannot be measured")
            elif not arm["treated"]:
                out.append(f"campaign '{campaign}' contacted nobody (every row is control): it measures no uplift")
        if self.conflicting_assignments:
            out.append(
                f"{self.conflicting_assignments:,} duplicate rows put a customer in the other arm of the same "
                "campaign; the first row was kept"
            )
        if self.float_like_ids:
            out.append(float_like_ids_warning(self.float_like_ids))
        return out

    def render(self) -> str:
        """A short human-readable table (as the transactions' report prints), then one line per warning."""
        lines = rule_table("Campaign log quality", self.rows_read, self.rows_valid, self.rule_counts, CAMPAIGN_RULES)
        lines += [
            f"  campaigns                 {self.campaigns:>12,}",
            f"  customers                 {self.customers:>12,}",
            f"  treated rows              {self.treated:>12,}",
            f"  control rows              {self.control:>12,}",
            f"  sent                      {self.first_sent} .. {self.last_sent}",
        ]
        lines += [f"warning: {sentence}" for sentence in self.warnings]
        return "\n".join(lines)


def _contract_frame(raw: pd.DataFrame, columns: Mapping[str, str] | None) -> pd.DataFrame:
    """The input's campaign columns under their contract names (mapped, ``assigned_at`` standing in for
    ``sent_at``); raises :class:`ContractError` for an unknown mapping key or a missing required column."""
    mapping = dict(columns or {})
    unknown = [key for key in mapping if key not in CAMPAIGN_COLUMNS]
    if unknown:
        raise ContractError(
            f"campaign column mapping names unknown column '{unknown[0]}' (known: {', '.join(CAMPAIGN_COLUMNS)})"
        )
    check_column_sources(raw.columns, mapping)
    if "sent_at" not in mapping and "sent_at" not in raw.columns and SENT_AT_ALIAS in raw.columns:
        mapping["sent_at"] = SENT_AT_ALIAS
    sources = {name: mapping.get(name, name) for name in CAMPAIGN_COLUMNS}
    missing = [f"'{sources[name]}'" for name in REQUIRED_CAMPAIGN_COLUMNS if sources[name] not in raw.columns]
    if missing:
        raise ContractError(
            f"required campaign column {', '.join(missing)} is missing from the input (map other names with "
            "--campaign-columns customer_id=...,campaign_id=...,sent_at=...,treatment=...)"
        )
    return pd.DataFrame({name: raw[source] for name, source in sources.items() if source in raw.columns})


def _treatment_flags(values: pd.Series) -> np.ndarray:
    """1 / 0 per row, -1 where the value is not an accepted flag (see :data:`TREATMENT_VALUES`)."""
    text = ids_as_text(values).str.strip().str.lower()
    return text.map(TREATMENT_VALUES).fillna(-1).to_numpy(dtype=np.int64)


def _costs(frame: pd.DataFrame) -> np.ndarray:
    """The contact cost per row (0 without a cost column or in an empty cell; NaN: not a number)."""
    if "cost" not in frame.columns:
        return np.zeros(len(frame))
    cost = as_numbers(frame["cost"])
    empty = frame["cost"].isna().to_numpy()
    if pd.api.types.is_string_dtype(frame["cost"].dtype):
        empty = empty | ~present_mask(ids_as_text(frame["cost"]), strip=True)
    return np.where(empty, 0.0, cost)


def prepare_campaigns(
    frame: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    *,
    normalize_float_ids: bool = False,
    allow_empty: bool = False,
) -> tuple[pd.DataFrame, CampaignReport]:
    """Apply the campaign contract (module docstring): ``(campaigns, CampaignReport)``.

    ``campaigns`` holds the valid rows in input order with the columns of :data:`CAMPAIGN_COLUMNS`:
    ``customer_id`` / ``campaign_id`` / ``offer`` as ``str``, ``sent_at`` datetime64[ns, UTC], ``treatment`` int8
    (1 contacted, 0 control), ``cost`` float64 (currency units). Raises :class:`ContractError` when a required column
    is missing, when no row is valid (unless ``allow_empty``) and, under ``strict``, when any row breaks a rule.
    """
    data = _contract_frame(frame, columns)
    n = len(data)
    customer = ids_as_text(data["customer_id"], normalize_float_ids=normalize_float_ids)
    campaign = ids_as_text(data["campaign_id"], normalize_float_ids=normalize_float_ids)
    sent_at = parse_timestamps(data["sent_at"])
    treatment = _treatment_flags(data["treatment"])
    cost = _costs(data)

    rule = np.zeros(n, dtype=np.int8)
    broken = np.zeros(n, dtype=bool)
    checks = (
        ~present_mask(customer, strip=True),
        ~present_mask(campaign, strip=True),
        sent_at.array.asi8 == NAT_NS,
        treatment < 0,
        ~(np.isfinite(cost) & (cost >= 0)),
    )
    for number, fails in enumerate(checks, start=1):
        hit = fails & ~broken
        rule[hit] = number
        broken |= hit
    rows = np.flatnonzero(~broken)
    pairs = group_codes([customer.array.take(rows), campaign.array.take(rows)])
    repeat = repeated_rows(pairs)
    rule[rows[repeat]] = len(CAMPAIGN_RULES)
    first_of = np.full(int(pairs.max()) + 1 if len(pairs) else 0, -1, dtype=np.int64)
    first_of[pairs[~repeat]] = np.flatnonzero(~repeat)
    conflicting = int((treatment[rows[repeat]] != treatment[rows[first_of[pairs[repeat]]]]).sum())

    tally = np.bincount(rule, minlength=len(CAMPAIGN_RULES) + 1)
    counts = {name: int(tally[k + 1]) for k, name in enumerate(CAMPAIGN_RULES)}
    if strict and any(counts.values()):
        detail = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items() if count)
        raise ContractError(f"--strict: {detail} row(s) break the campaign contract")
    valid = rule == 0
    if not valid.any() and not allow_empty:
        detail = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items() if count)
        raise ContractError(f"no valid campaign row in the input ({n} rows read; {detail or 'file is empty'})")

    offer = ids_as_text(data["offer"]).fillna("") if "offer" in data.columns else pd.Series("", index=data.index)
    out = pd.DataFrame(
        {
            "customer_id": customer.array[valid],
            "campaign_id": campaign.array[valid],
            "sent_at": sent_at.array[valid],
            "treatment": treatment[valid].astype(np.int8),
            "offer": pd.array(offer.to_numpy(dtype=object)[valid], dtype="str"),
            "cost": cost[valid].astype(np.float64),
        }
    )
    return out, _report(out, n, counts, conflicting, normalize_float_ids)


def _report(
    out: pd.DataFrame, rows_read: int, counts: dict[str, int], conflicting: int, normalized: bool
) -> CampaignReport:
    arms: dict[str, dict[str, int]] = {}
    if len(out):
        table = out.groupby(["campaign_id", "treatment"], sort=True).size()
        for (campaign, flag), rows in table.items():
            arms.setdefault(str(campaign), {"treated": 0, "control": 0})["treated" if flag else "control"] = int(rows)
    days = out["sent_at"].dt.floor("D") if len(out) else None
    ids = distinct_ids(out["customer_id"]) if len(out) else np.empty(0, dtype=object)
    treated = int(out["treatment"].sum())
    return CampaignReport(
        rows_read=rows_read,
        rows_valid=len(out),
        rule_counts=counts,
        customers=len(ids),
        campaigns=len(arms),
        treated=treated,
        control=len(out) - treated,
        arms=arms,
        first_sent=None if days is None else str(days.min().date()),
        last_sent=None if days is None else str(days.max().date()),
        conflicting_assignments=conflicting,
        float_like_ids=0 if normalized else count_float_like_ids(ids),
    )


def read_campaigns(
    source: str | os.PathLike[str],
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    *,
    normalize_float_ids: bool = False,
) -> tuple[pd.DataFrame, CampaignReport]:
    """Read a campaign log (CSV, Parquet, a directory of Parquet files or a SQL URL, as
    :func:`features.sources.read_table` reads them) and apply :func:`prepare_campaigns`.

    Both id columns are read as text, so ``"00042"`` keeps its zeros in a CSV file too.
    """
    from features.sources import read_table

    raw = read_table(source, columns, text_columns=("customer_id", "campaign_id", "offer"))
    return prepare_campaigns(raw, columns, strict, normalize_float_ids=normalize_float_ids)


def _cutoff_days(campaigns: pd.DataFrame) -> np.ndarray:
    """The UTC day (days since 1970-01-01) of each row's ``sent_at``."""
    sent = parse_timestamps(campaigns["sent_at"])  # nanoseconds since the epoch in UTC, whatever the input's unit
    if sent.isna().any():
        raise ContractError("campaign rows need a valid sent_at: prepare the log with prepare_campaigns first")
    return np.floor_divide(sent.array.asi8, NS_PER_DAY)


def _check_window(prep: PreparedTransactions, days: np.ndarray, horizon_days: int, as_of: dt.date | None) -> None:
    """Refuse a campaign whose outcome window ends after the transaction log (its outcome is not known yet)."""
    if horizon_days < 1:
        raise ContractError(f"horizon must be at least 1 day, got {horizon_days}")
    if not len(days):
        return
    last = date_to_day(as_of) if as_of is not None else (int(prep.day.max()) if len(prep.day) else None)
    latest = int(days.max())
    if last is None or latest + horizon_days > last:
        through = "no transaction at all" if last is None else f"transactions through {day_to_date(last)}"
        raise ContractError(
            f"a campaign sent on {day_to_date(latest)} needs outcomes through "
            f"{day_to_date(latest + horizon_days)} (horizon {horizon_days} days), but the log has {through}: "
            "use a shorter horizon or a later transaction export"
        )


def _positions(ids: np.ndarray, wanted: pd.Series) -> np.ndarray:
    """Position of each wanted id among ``ids`` (-1: absent)."""
    return pd.Index(ids).get_indexer(pd.Index(wanted.to_numpy(dtype=object)))


def campaign_outcomes(
    prep: PreparedTransactions,
    campaigns: pd.DataFrame,
    horizon_days: int,
    *,
    as_of: dt.date | str | None = None,
) -> pd.DataFrame:
    """The campaign rows with their outcomes over ``horizon_days`` days (module docstring).

    Returns a copy of ``campaigns`` (the output of :func:`prepare_campaigns`, same rows, same order) with
    :data:`OUTCOME_COLUMNS` added: ``cutoff`` (``datetime.date``, UTC day of ``sent_at``), ``known`` (bool: the
    customer has a transaction at or before the cutoff), ``retained`` (int8 0/1) and ``net_spend`` (float64,
    currency units), both from :func:`features.labels.labels_at` at the cutoff (0 for unknown customers).
    ``as_of``: the last day the transaction log is complete through (default: its last transaction's day); a window
    that ends after it raises :class:`ContractError`.
    """
    days = _cutoff_days(campaigns)
    _check_window(prep, days, horizon_days, None if as_of is None else pd.Timestamp(as_of).date())
    n = len(campaigns)
    known = np.zeros(n, dtype=bool)
    retained = np.zeros(n, dtype=np.int8)
    net_spend = np.zeros(n, dtype=np.float64)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        ids, labels = labels_at(prep, day_to_date(day), horizon_days)
        at = _positions(ids, campaigns["customer_id"].iloc[rows])
        hit = at >= 0
        known[rows[hit]] = True
        retained[rows[hit]] = 1 - labels["churned"][at[hit]]
        net_spend[rows[hit]] = labels["future_value"][at[hit]]
    out = campaigns.copy()
    distinct, inverse = np.unique(days, return_inverse=True)
    out["cutoff"] = np.array([day_to_date(d) for d in distinct] + [None], dtype=object)[:-1][inverse]
    out["known"] = known
    out["retained"] = retained
    out["net_spend"] = net_spend
    return out


def campaign_training_frame(
    prep: PreparedTransactions,
    campaigns: pd.DataFrame,
    horizon_days: int,
    *,
    as_of: dt.date | str | None = None,
    known_only: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kernel features at each campaign row's cutoff and its outcomes: ``(X, outcomes)``, row-aligned.

    ``X`` has the columns ``prep.columns`` (the features a model trained on ``prep`` uses), computed by
    :func:`features.kernel.compute_feature_arrays` at the row's cutoff (the UTC day of ``sent_at``: nothing after it
    is read); ``outcomes`` is :func:`campaign_outcomes`. Both have a fresh ``RangeIndex``. ``known_only`` (default)
    keeps only the rows of customers with a transaction at or before their cutoff (the others have no features);
    ``outcomes["known"].sum()`` against ``len(campaigns)`` says how many were left out. Without it, their features
    are NaN.
    """
    outcomes = campaign_outcomes(prep, campaigns, horizon_days, as_of=as_of)
    if known_only:
        outcomes = outcomes[outcomes["known"].to_numpy()].reset_index(drop=True)
    days = _cutoff_days(outcomes)
    columns = prep.columns
    values = np.full((len(outcomes), len(columns)), np.nan)
    for day in np.unique(days):
        rows = np.flatnonzero(days == day)
        ids, arrays = compute_feature_arrays(prep, day_to_date(day))
        at = _positions(ids, outcomes["customer_id"].iloc[rows])
        hit = at >= 0
        for j, name in enumerate(columns):
            values[rows[hit], j] = arrays[name][at[hit]]
    return pd.DataFrame(values, columns=columns), outcomes
