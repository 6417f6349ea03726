"""Customer economics: from expected value to expected **profit**, and the offers a retention plan can make.

The bundle's ``expected_value`` is expected net revenue over the model's horizon (``horizon_days`` after the as-of
date) times the bundle's margin, discounted to the as-of date at the mid-horizon point (:mod:`serving.model`). It
says what a customer brings and ignores what the customer costs. :func:`expected_profit` subtracts the costs an
:class:`Economics` names, per customer, in currency units over the same horizon (it may be negative)::

    expected revenue  = expected_value / bundle margin          (x economics discount / bundle discount when set)
    expected orders   = expected revenue / mean_amount          (0 when the customer has no mean purchase amount)
    expected refunds  = expected orders x refund_count / n_transactions      (the customer's own refund rate so far)
    expected profit   = gross_margin x expected revenue
                        - cost_to_serve_per_order x expected orders - cost_per_refund x expected refunds

This is the "80/20/30" view of a customer base: ranked by profit, the top 20% of customers typically earn more
than all the profit, and the bottom 30% -- many small orders, many refunds -- destroy a large part of it (their
expected profit is negative: serving them costs more than they bring). The batch summary shows the cumulative
profit curve and how many customers are unprofitable (:func:`serving.batch.population_summary`).

The default :class:`Economics` (no costs, the bundle's margin and discount rate) gives ``expected_profit ==
expected_value`` exactly, so a run that names no economics writes the expected value twice and nothing changes.

An :class:`Offer` is what a retention contact gives (a voucher, a call, a discount): contacting customer ``i`` with
offer ``o`` costs ``contact_cost + o.fixed_cost + o.spend_share x expected revenue of i`` (:func:`contact_costs`),
and saves the customer with probability ``o.save_rate`` when the model has no uplift heads (see
:mod:`serving.plan`).

Bad economics (unknown field, negative cost, a margin outside [0, 1]) raise
:class:`features.contract.ContractError` naming the field: one sentence, exit code 2 on the command line, a 422
over HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from features.contract import ContractError
from serving.model import BundleMeta

__all__ = [
    "ECONOMICS_FIELDS",
    "OFFER_KEYS",
    "Economics",
    "Offer",
    "checked_number",
    "contact_costs",
    "economics_of_settings",
    "expected_profit",
    "expected_revenue",
    "value_scale",
]

MEAN_AMOUNT, REFUND_COUNT, PURCHASES = "mean_amount", "refund_count", "n_transactions"
"""The kernel features the order and refund counts come from (currency units, counts to date)."""
OFFER_KEYS = {"fixed": "fixed_cost", "share": "spend_share", "save": "save_rate"}
"""The short keys of an offer on the command line (``call:fixed=5,save=0.2,share=0.1``) and the fields they set."""
_OFFER_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def checked_number(value: Any, field: str, *, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a finite float in ``[low, high]``, else :class:`ContractError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ContractError(f"{field} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ContractError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ContractError(f"{field} must be a finite number, got {value!r}")
    if number < low or number > high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise ContractError(f"{field} must be {bounds}, got {number:g}")
    return number


@dataclasses.dataclass(frozen=True)
class Offer:
    """A retention offer. Money in currency units, shares and rates in [0, 1].

    ``fixed_cost``: cost per contacted customer besides the contact itself (a voucher's face value, an agent's time).
    ``spend_share``: a discount given on the customer's spend, as a share of their expected revenue over the horizon.
    ``save_rate``: the assumed share of would-be churners this offer keeps (used when the model has no uplift heads:
    uplift = save_rate x churn probability).
    """

    name: str
    fixed_cost: float = 0.0
    spend_share: float = 0.0
    save_rate: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _OFFER_NAME.match(self.name):
            raise ContractError(f"offer name must be letters, digits, '_', '-' or '.', got {self.name!r}")
        where = f"offer '{self.name}'"
        object.__setattr__(self, "fixed_cost", checked_number(self.fixed_cost, f"{where} fixed_cost"))
        object.__setattr__(self, "spend_share", checked_number(self.spend_share, f"{where} spend_share", high=1.0))
        object.__setattr__(self, "save_rate", checked_number(self.save_rate, f"{where} save_rate", high=1.0))

    @classmethod
    def parse(cls, text: str) -> Offer:
        """An offer from command-line text ``NAME:fixed=5,share=0.1,save=0.2`` (keys :data:`OFFER_KEYS`, any order,
        each optional: 0 when left out)."""
        name, sep, rest = text.partition(":")
        values: dict[str, float | str] = {}
        for item in rest.split(",") if sep and rest.strip() else ():
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in OFFER_KEYS:
                raise ContractError(
                    f"--offer '{text}': '{item}' is not KEY=VALUE with KEY one of {', '.join(OFFER_KEYS)}"
                )
            values[OFFER_KEYS[key]] = value.strip()
        return cls(name.strip(), **values)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "offer") -> Offer:
        """An offer from a JSON object with the fields ``name``, ``fixed_cost``, ``spend_share``, ``save_rate``."""
        if not isinstance(raw, Mapping):
            raise ContractError(f"{where} must be an object with a name, got {raw!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise ContractError(f"{where}: unknown field '{unknown[0]}' (expected {', '.join(sorted(fields))})")
        if "name" not in raw:
            raise ContractError(f"{where}: the field 'name' is missing")
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Economics:
    """What customers cost and what a contact costs; money in currency units, over the model's horizon.

    ``gross_margin``: share of revenue kept as gross profit, in [0, 1] (None: the bundle's margin, the one its
    ``expected_value`` already carries). ``cost_to_serve_per_order``: picking, shipping, payment fees per order.
    ``cost_per_refund``: handling cost of one refund (on top of the refunded amount, which net revenue already
    lacks). ``contact_cost``: cost of one retention contact whatever the offer (an email, a call minute).
    ``discount_rate``: annual rate the horizon's money is discounted at, to the as-of date at mid-horizon (None: the
    bundle's). ``offers``: the offers a plan may choose from (the economics file's ``offers`` list; the command line
    adds its ``--offer`` ones).
    """

    gross_margin: float | None = None
    cost_to_serve_per_order: float = 0.0
    cost_per_refund: float = 0.0
    contact_cost: float = 0.0
    discount_rate: float | None = None
    offers: tuple[Offer, ...] = ()

    def __post_init__(self) -> None:
        if self.gross_margin is not None:
            object.__setattr__(self, "gross_margin", checked_number(self.gross_margin, "gross_margin", high=1.0))
        for name in ("cost_to_serve_per_order", "cost_per_refund", "contact_cost"):
            object.__setattr__(self, name, checked_number(getattr(self, name), name))
        if self.discount_rate is not None:
            object.__setattr__(self, "discount_rate", checked_number(self.discount_rate, "discount_rate", high=10.0))
        offers = tuple(
            o if isinstance(o, Offer) else Offer.from_dict(o, f"offers[{k}]") for k, o in enumerate(self.offers)
        )
        names = [o.name for o in offers]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ContractError(f"offer '{repeated[0]}' is given twice; offer names must be unique")
        object.__setattr__(self, "offers", offers)

    @property
    def has_costs(self) -> bool:
        """Whether any per-order or per-refund cost is set (else profit is margin x revenue alone)."""
        return self.cost_to_serve_per_order > 0 or self.cost_per_refund > 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Economics:
        """Economics from a JSON object with :data:`ECONOMICS_FIELDS` (each optional); an unknown field is a
        :class:`ContractError` naming it."""
        if not isinstance(raw, Mapping):
            raise ContractError(f"economics must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(ECONOMICS_FIELDS))
        if unknown:
            raise ContractError(f"economics: unknown field '{unknown[0]}' (expected {', '.join(ECONOMICS_FIELDS)})")
        values = dict(raw)
        offers = values.pop("offers", None) or ()
        if not isinstance(offers, (list, tuple)):
            raise ContractError("economics: 'offers' must be a list of offer objects")
        return cls(**values, offers=tuple(offers))

    @classmethod
    def read(cls, path: str | Path) -> Economics:
        """Economics from a JSON file (:meth:`from_dict`); a missing or unreadable file is a :class:`ContractError`."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ContractError(f"cannot read the economics file '{path}' ({exc.strerror or exc})") from None
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ContractError(f"the economics file '{path}' is not valid JSON ({exc})") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`from_dict` reads back (logged with every run)."""
        out = {f: getattr(self, f) for f in ECONOMICS_FIELDS if f != "offers"}
        out["offers"] = [o.to_dict() for o in self.offers]
        return out

    def override(self, **values: Any) -> Economics:
        """These economics with the given fields replaced; a None value leaves the field as it is (a flag not
        given on the command line)."""
        given = {k: v for k, v in values.items() if v is not None}
        unknown = sorted(set(given) - set(ECONOMICS_FIELDS))
        if unknown:
            raise ContractError(f"economics: unknown field '{unknown[0]}'")
        return dataclasses.replace(self, **given) if given else self


ECONOMICS_FIELDS = tuple(f.name for f in dataclasses.fields(Economics))
"""The fields of an economics file, in order."""


def economics_of_settings(settings: Any = None) -> Economics:
    """The economics of this process: the ``RETENTION_ECONOMICS`` JSON file when set, else the default."""
    if settings is None:
        from retention.settings import get_settings

        settings = get_settings()
    path = getattr(settings, "economics", None)
    return Economics.read(path) if path else Economics()


def value_scale(meta: BundleMeta, economics: Economics) -> float:
    """The factor from the bundle's ``expected_value`` to ``gross_margin x expected revenue`` under ``economics``:
    ``(gross_margin / bundle margin) x (discount factor / bundle discount factor)``; exactly 1.0 when both are the
    bundle's (None)."""
    scale = 1.0
    if economics.gross_margin is not None:
        scale *= economics.gross_margin / meta.margin if meta.margin > 0 else 0.0
    return scale * _discount_ratio(meta, economics)


def _discount_ratio(meta: BundleMeta, economics: Economics) -> float:
    if economics.discount_rate is None or economics.discount_rate == meta.discount_rate:
        return 1.0
    other = dataclasses.replace(meta, discount_rate=economics.discount_rate)
    return other.discount_factor / meta.discount_factor


def expected_revenue(expected_value: np.ndarray, meta: BundleMeta, economics: Economics) -> np.ndarray:
    """Expected net revenue per customer over the horizon (currency units, discounted as ``economics`` says):
    ``expected_value / bundle margin``; 0 for a bundle whose margin is 0."""
    ev = np.asarray(expected_value, dtype=np.float64)
    if meta.margin <= 0:
        return np.zeros_like(ev)
    return ev * (_discount_ratio(meta, economics) / meta.margin)


def _column(X: np.ndarray, feature_columns: Sequence[str], name: str) -> np.ndarray:
    if name not in feature_columns or not len(X):
        return np.full(len(X), np.nan)
    return np.asarray(X[:, list(feature_columns).index(name)], dtype=np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` where both are finite and the denominator positive, else 0."""
    ok = np.isfinite(numerator) & np.isfinite(denominator) & (denominator > 0)
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=ok)


def expected_profit(
    expected_value: np.ndarray,
    X: np.ndarray,
    feature_columns: Sequence[str],
    meta: BundleMeta,
    economics: Economics | None = None,
) -> np.ndarray:
    """Expected profit per customer over the horizon, in currency units (may be negative): see the module doc.

    ``expected_value``: the bundle's (:class:`serving.model.Scores`); ``X``: the customers' feature rows, columns
    ``feature_columns`` (``mean_amount``, ``refund_count`` and ``n_transactions`` give orders and refunds; a column
    the rows lack counts as unknown: no orders, no refunds). ``economics`` None or default: ``expected_value``
    itself (a copy), exactly.
    """
    economics = economics or Economics()
    ev = np.asarray(expected_value, dtype=np.float64)
    scale = value_scale(meta, economics)
    profit = ev.copy() if scale == 1.0 else ev * scale
    if not economics.has_costs:
        return profit
    orders = _ratio(expected_revenue(ev, meta, economics), _column(X, feature_columns, MEAN_AMOUNT))
    refunds = orders * _ratio(_column(X, feature_columns, REFUND_COUNT), _column(X, feature_columns, PURCHASES))
    return profit - economics.cost_to_serve_per_order * orders - economics.cost_per_refund * refunds


def contact_costs(revenue: np.ndarray, offer: Offer, economics: Economics) -> np.ndarray:
    """Cost of contacting each customer with ``offer`` (currency units): ``contact_cost + fixed_cost +
    spend_share x expected revenue`` (``revenue``: :func:`expected_revenue`, negative counted as 0)."""
    base = economics.contact_cost + offer.fixed_cost
    return base + offer.spend_share * np.maximum(np.asarray(revenue, dtype=np.float64), 0.0)
