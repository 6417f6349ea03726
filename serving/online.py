"""Online scoring: the plain-Python logic behind ``/predict``, ``/rank`` and ``/plan`` (the BentoML service stays thin).

A request names customers either by ``customer_id`` alone (features read from the online store, computed by
the kernel at the snapshot's as-of date) or with their own ``transactions`` inline (features computed by the
same kernel, as of the request's ``as_of`` or today, UTC). Inline transactions go through the input contract
(:func:`~features.contract.prepare_transactions`, like a file): they may be order lines, summed per
``transaction_id``; a broken row is a client error naming the field, never silently dropped.

Configuration (environment): ``RETENTION_MODEL_URI`` (default ``models:/retention@champion``),
``RETENTION_STORE_URL`` (default: no store; id-only customers then get a per-customer error),
``RETENTION_MAX_CUSTOMERS`` (1,000), ``RETENTION_MAX_TRANSACTIONS`` (10,000 per customer), ``RETENTION_ECONOMICS``
(the economics every ``expected_profit`` is computed under, :mod:`serving.economics`; ``/plan`` may override fields
of it per request).

``/plan`` scores the customers exactly as ``/predict`` does, then hands them to :func:`serving.plan.make_plan` with
the request's budget and offers: the same plan ``retention plan`` makes of the same customers.

The by-id path (the CRM call) stays lean: one store read (vectors and snapshot metadata in one
transaction), a cached column map from the snapshot's to the model's column order, single-threaded
LightGBM calls on a one-row matrix and no pandas; most of its ~1 ms is LightGBM's ``pred_contrib``
(TreeSHAP) for the reasons.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.contract import (
    ContractError,
    iso_8601_mask,
    parse_timestamps,
    prepare_transactions,
    row_rules,
    timestamp_problem,
    to_date,
)
from features.kernel import compute_feature_arrays, index_transactions
from serving.economics import Economics, Offer
from serving.loader import load_model
from serving.model import ScoringModel, today_utc
from serving.plan import json_plan_rows, make_plan
from serving.ranking import rank_order
from serving.scorecard import ScorecardWeights
from serving.scoring import ScoredBatch, feature_matrix, json_rows, score_customers

log = logging.getLogger("retention.online")

DEFAULT_MODEL_URI = "models:/retention@champion"
UNKNOWN_CUSTOMER = "unknown customer_id: not in the online store"


class RequestError(ValueError):
    """A client error: ``status`` is the HTTP status (422 invalid, 413 too large), ``field`` names the input."""

    def __init__(self, message: str, status: int = 422, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


@dataclasses.dataclass(frozen=True)
class Limits:
    max_customers: int = 1_000
    max_transactions: int = 10_000

    @classmethod
    def from_env(cls) -> Limits:
        """The limits of the settings (``RETENTION_MAX_CUSTOMERS``, ``RETENTION_MAX_TRANSACTIONS``)."""
        from retention.settings import get_settings

        settings = get_settings()
        return cls(settings.max_customers, settings.max_transactions)


class ModelHolder:
    """The serving model behind one reference, swapped atomically on reload; a failed load keeps the old one.

    ``on_loaded`` (optional) is called after each successful load, e.g. to freeze the new model's objects out
    of the garbage collector's reach.
    """

    def __init__(self, reference: str, on_loaded: Callable[[], None] | None = None):
        self.reference = reference
        self.model: ScoringModel | None = None
        self.error: str | None = None
        self.on_loaded = on_loaded
        self._lock = threading.Lock()

    def load(self, reference: str | None = None) -> ScoringModel:
        """Load ``reference`` (default: the holder's own, e.g. an alias) and swap it in; raises on failure, the
        old model then keeps serving and :attr:`error` says why. A pinned ``reference`` (the version every worker
        serves, see :mod:`serving.reload`) leaves :attr:`reference` as it is for later reloads."""
        reference = reference or self.reference
        with self._lock:
            try:
                model = load_model(reference)
            except Exception as exc:  # any failure keeps the model that is serving
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", reference, self.error)
                raise
            warm = np.zeros((1, len(model.feature_columns)))
            model.score(warm, num_threads=1)  # warm up every call the online path makes
            model.churn_contributions(warm, num_threads=1)
            self.model, self.error = model, None
            log.info("serving model %s version %s", reference, model.version)
            if self.on_loaded is not None:
                self.on_loaded()
            return model


def _ids_and_transactions(customers: Sequence[dict[str, Any]], limits: Limits) -> None:
    if not customers:
        raise RequestError("customers: the list is empty; send at least one customer", field="customers")
    if len(customers) > limits.max_customers:
        raise RequestError(
            f"customers: {len(customers)} customers in one request; the limit is {limits.max_customers}",
            status=413,
            field="customers",
        )
    for i, customer in enumerate(customers):
        tx = customer.get("transactions")
        if tx is not None and len(tx) > limits.max_transactions:
            raise RequestError(
                f"customers[{i}].transactions: {len(tx)} transactions; the limit is {limits.max_transactions}",
                status=413,
                field=f"customers[{i}].transactions",
            )


INLINE_FIELDS: tuple[str, ...] = (
    "timestamp",
    "amount",
    "transaction_id",
    "quantity",
    "unit_price",
    "line_id",
    "category",
    "channel",
)
"""Fields of an inline transaction (one line of an order, or a whole transaction), as in the input contract."""


def _inline_frame(customers: Sequence[dict[str, Any]]) -> tuple[pd.DataFrame, list[int]]:
    """The request's inline rows as a contract frame (``customer_id`` = request position) and each row's owner."""
    owners: list[int] = []
    values: dict[str, list[Any]] = {name: [] for name in INLINE_FIELDS}
    for i, customer in enumerate(customers):
        for tx in customer.get("transactions") or ():
            owners.append(i)
            for name, column in values.items():
                column.append(tx.get(name))
    frame = {"customer_id": pd.Series([str(i) for i in owners], dtype="str")}
    frame["timestamp"] = pd.Series(values.pop("timestamp"), dtype="str")
    frame.update({name: column for name, column in values.items() if any(v is not None for v in column)})
    if "unit_price" not in frame and "amount" not in frame:
        frame["amount"] = values["amount"]
    if "unit_price" in frame and "quantity" not in frame:  # each line without one is then named, not the request
        frame["quantity"] = values["quantity"]
    return pd.DataFrame(frame, index=pd.RangeIndex(len(owners)), copy=False), owners


def _broken_row_error(frame: pd.DataFrame, owners: list[int], as_of: dt.date) -> RequestError:
    """The client error naming the first inline row that breaks the contract (timestamp, amount or as_of)."""
    rules = row_rules(frame, as_of=as_of)
    k = int(np.flatnonzero((rules != "") & (rules != "duplicate_line"))[0])
    i, j = _locate(owners, k)
    where = f"customers[{i}].transactions[{j}]"
    if rules[k] == "bad_amount":
        row = frame.iloc[k]
        given = {name for name in ("amount", "quantity", "unit_price") if name in frame and pd.notna(row[name])}
        name = "amount"
        if "amount" not in given and given & {"quantity", "unit_price"}:
            name = "unit_price" if "quantity" in given else "quantity"  # the half of a priced line that is missing
        return RequestError(
            f"{where}.{name}: no line amount (send amount, or quantity and unit_price)", field=f"{where}.{name}"
        )
    text = frame["timestamp"].iloc[k]
    if rules[k] == "after_as_of":
        ts = parse_timestamps(frame["timestamp"].iloc[k : k + 1]).iloc[0]
        return RequestError(f"{where}.timestamp: {ts} is after as_of {as_of}", field=f"{where}.timestamp")
    return RequestError(f"{where}.timestamp: {_quoted(text)} {timestamp_problem(text)}", field=f"{where}.timestamp")


def _quoted(text: str, limit: int = 40) -> str:
    """A client's value for an error sentence: quoted, control characters escaped, long values cut."""
    shown = repr(text[:limit])[1:-1] + ("..." if len(text) > limit else "")
    return f"'{shown}'"


def _check_iso_timestamps(frame: pd.DataFrame, owners: list[int]) -> None:
    """Over HTTP a timestamp is a strict ISO 8601 date or datetime (files keep the permissive contract parser):
    ``06/01/2024``, ``01-06-2024``, full-width digits or a NUL are a 422 naming the field, never a guess."""
    strict = iso_8601_mask(frame["timestamp"])
    if strict.all():
        return
    k = int(np.flatnonzero(~strict)[0])
    i, j = _locate(owners, k)
    where = f"customers[{i}].transactions[{j}].timestamp"
    text = str(frame["timestamp"].iloc[k])
    raise RequestError(f"{where}: {_quoted(text)} {timestamp_problem(text)}", field=where)


def inline_features(
    customers: Sequence[dict[str, Any]], as_of: dt.date, columns: Sequence[str]
) -> dict[int, np.ndarray]:
    """Feature vectors (model column order) of the customers that sent transactions, by request position.

    The rows go through the input contract like a file's (:func:`~features.contract.prepare_transactions`): the
    lines of one order (same ``transaction_id`` within one customer) are summed into one transaction at its
    earliest line's time, an exact duplicate line is kept once, ``quantity × unit_price`` is the amount of a
    line sent without one. A row that breaks any other rule is a client error naming its field.
    """
    frame, owners = _inline_frame(customers)
    if not owners:
        return {}
    _check_iso_timestamps(frame, owners)
    tx, report = prepare_transactions(frame, as_of=as_of, allow_empty=True)
    if report.rows_valid + report.rule_counts["duplicate_line"] < report.rows_read:
        raise _broken_row_error(frame, owners, as_of)
    positions, arrays = compute_feature_arrays(index_transactions(tx), as_of)
    n = len(positions)
    matrix = feature_matrix(arrays, columns, n)
    return {int(p): matrix[k] for k, p in enumerate(positions)}


def _locate(owners: list[int], flat_index: int) -> tuple[int, int]:
    i = owners[flat_index]
    return i, flat_index - owners.index(i)


@dataclasses.dataclass(frozen=True)
class _ColumnMap:
    """How to turn a store vector (snapshot column order) into a model row (model column order)."""

    store_columns: tuple[str, ...]
    model_columns: tuple[str, ...]
    take: np.ndarray | None  # store position per model column; None when the orders are the same
    missing: np.ndarray | None  # model columns the snapshot lacks (filled with NaN); None when there are none

    @classmethod
    def build(cls, store_columns: tuple[str, ...], model_columns: tuple[str, ...]) -> _ColumnMap:
        if store_columns == model_columns:
            return cls(store_columns, model_columns, None, None)
        position = {c: k for k, c in enumerate(store_columns)}
        index = np.asarray([position.get(c, -1) for c in model_columns], dtype=np.intp)
        missing = np.flatnonzero(index < 0)
        return cls(store_columns, model_columns, np.maximum(index, 0), missing if len(missing) else None)

    def matches(self, store_columns: tuple[str, ...], model_columns: tuple[str, ...]) -> bool:
        return (self.store_columns is store_columns or self.store_columns == store_columns) and (
            self.model_columns is model_columns or self.model_columns == model_columns
        )

    def apply(self, vec: np.ndarray) -> np.ndarray:
        if self.take is None:
            return vec
        row = vec[self.take]
        if self.missing is not None:
            row[self.missing] = np.nan
        return row


@dataclasses.dataclass(frozen=True)
class OnlineAnswer:
    """A scored request: the response header, one JSON row per requested customer (request order; an ``error``
    row for a customer that could not be scored) and each row's exact value at risk (None for an error row),
    so ``/rank`` orders on exact values although the rows are rounded for JSON."""

    header: dict[str, Any]
    rows: list[dict[str, Any]]
    risk: list[float | None]

    def predict_body(self) -> dict[str, Any]:
        """The ``/predict`` response: the header and ``predictions`` in request order."""
        return {**self.header, "predictions": self.rows}

    def rank_body(self, top_k: int | None = None) -> dict[str, Any]:
        """The ``/rank`` response: scored customers in retention order (:func:`serving.ranking.rank_order`),
        numbered from 1 (``retention_rank``), cut to ``top_k``; customers that could not be scored under
        ``errors``."""
        scored = [i for i, r in enumerate(self.risk) if r is not None]
        order = rank_order(
            np.asarray([self.risk[i] for i in scored], dtype=np.float64),
            np.asarray([self.rows[i]["customer_id"] for i in scored], dtype=object),
        )
        kept = order[:top_k] if top_k else order
        ranking = [{**self.rows[scored[k]], "retention_rank": n} for n, k in enumerate(kept, start=1)]
        errors = [row for row, r in zip(self.rows, self.risk, strict=True) if r is None]
        return {**self.header, "ranking": ranking, "errors": errors}

    def split(self, sizes: Sequence[int]) -> list[OnlineAnswer]:
        """Cut the answer of merged requests into one answer per request (``sizes`` customers each, in order)."""
        out, start = [], 0
        for n in sizes:
            out.append(OnlineAnswer(self.header, self.rows[start : start + n], self.risk[start : start + n]))
            start += n
        return out


@dataclasses.dataclass(frozen=True)
class _Scored:
    """A request's customers scored in one call: the batch (scored customers only, in request order), the request
    position of each of its rows, the per-request results (an ``error`` row for each customer not scored, empty
    for the others) and the answer's header."""

    batch: ScoredBatch | None
    slots: list[tuple[int, str]]
    results: list[dict[str, Any]]
    header: dict[str, Any]


class OnlineScorer:
    """Scores requests with the current model and the online store; ``economics`` (default: the default economics,
    the service passes ``RETENTION_ECONOMICS``) gives every answer's ``expected_profit``, ``scorecard_weights``
    (:class:`serving.scorecard.ScorecardWeights`; default 1/3 each) every answer's ``composite_score``."""

    def __init__(
        self,
        holder: ModelHolder,
        store: Any | None = None,
        limits: Limits | None = None,
        economics: Economics | None = None,
        scorecard_weights: ScorecardWeights | None = None,
    ):
        self.holder = holder
        self.store = store
        self.limits = limits or Limits()
        self.economics = economics or Economics()
        self.scorecard_weights = scorecard_weights
        self._column_map: _ColumnMap | None = None

    @property
    def ready(self) -> bool:
        return self.holder.model is not None

    def _store_vectors(self, ids: list[str], columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray], dt.date | None]:
        """Vectors in model column order and the snapshot's as-of date, from one read of one snapshot."""
        if self.store is None or not ids:
            return {}, None
        info, found = self.store.read_with_info(ids)
        if info is None:
            return {}, None
        mapping = self._column_map
        if mapping is None or not mapping.matches(info.feature_columns, columns):
            mapping = self._column_map = _ColumnMap.build(tuple(info.feature_columns), tuple(columns))
        if mapping.take is not None:
            found = {cid: mapping.apply(vec) for cid, vec in found.items()}
        return found, info.as_of

    def check(self, customers: Sequence[dict[str, Any]], as_of: str | None = None) -> dt.date | None:
        """Validate a request's shape against the limits and parse its ``as_of`` (None when not given).

        Raises :class:`RequestError` (413 over a limit, 422 for an ``as_of`` that is not a date).
        """
        _ids_and_transactions(customers, self.limits)
        if as_of and not iso_8601_mask(pd.Series([as_of], dtype="str"))[0]:
            raise RequestError(f"as_of: {_quoted(as_of)} {timestamp_problem(as_of)}", field="as_of")
        try:
            return to_date(as_of) if as_of else None
        except ContractError as exc:
            raise RequestError(f"as_of: {exc}", field="as_of") from exc

    def predict(self, customers: Sequence[dict[str, Any]], as_of: str | None = None) -> dict[str, Any]:
        """Scores in request order: one entry per customer, an ``error`` entry for a customer that cannot be scored."""
        return self.score_checked(customers, self.check(customers, as_of)).predict_body()

    def score_checked(self, customers: Sequence[dict[str, Any]], request_as_of: dt.date | None) -> OnlineAnswer:
        """:meth:`predict` for a request :meth:`check` has passed (several such requests may be merged into one
        call, see :mod:`serving.coalesce`): inline transactions are still checked against the contract here."""
        scored = self._score(customers, request_as_of, self.economics)
        results = scored.results
        risk: list[float | None] = [None] * len(customers)
        if scored.batch is not None:
            for k, ((i, features_as_of), row) in enumerate(zip(scored.slots, json_rows(scored.batch), strict=True)):
                row["features_as_of"] = features_as_of
                row["churn_cause"] = row.pop("churn_cause")  # field order of the response: cause, reasons last
                row["reasons"] = row.pop("reasons")
                results[i] = row
                risk[i] = float(scored.batch.value_at_risk[k])
        return OnlineAnswer(scored.header, results, risk)

    def _score(
        self, customers: Sequence[dict[str, Any]], request_as_of: dt.date | None, economics: Economics
    ) -> _Scored:
        """Features (store or inline) and one :func:`score_customers` call for the customers that have them."""
        model = self.holder.model
        if model is None:
            raise RuntimeError("no model loaded yet")
        inline_as_of = request_as_of or today_utc()
        columns = model.feature_columns
        id_only = [str(c["customer_id"]) for c in customers if c.get("transactions") is None]
        vectors = inline_features(customers, inline_as_of, columns) if len(id_only) < len(customers) else {}
        stored, store_as_of = self._store_vectors(id_only, columns)

        rows: list[np.ndarray] = []
        slots: list[tuple[int, str]] = []
        results: list[dict[str, Any]] = [{} for _ in customers]
        for i, customer in enumerate(customers):
            cid = str(customer["customer_id"])
            if customer.get("transactions") is not None:
                if i in vectors:
                    rows.append(vectors[i])
                    slots.append((i, str(inline_as_of)))
                else:
                    results[i] = {"customer_id": cid, "error": "no transaction on or before as_of"}
            elif cid in stored:
                rows.append(stored[cid])
                slots.append((i, str(store_as_of) if store_as_of else ""))
            else:
                results[i] = {"customer_id": cid, "error": UNKNOWN_CUSTOMER}
        batch = None
        if rows:
            X = np.vstack(rows) if len(rows) > 1 else rows[0].reshape(1, -1)
            ids = [str(customers[i]["customer_id"]) for i, _ in slots]
            batch = score_customers(
                model,
                ids,
                X,
                num_threads=1 if len(rows) <= 64 else 0,
                economics=economics,
                scorecard_weights=self.scorecard_weights,
            )
        response_as_of = request_as_of or (store_as_of if store_as_of and id_only else inline_as_of)
        header = {"model_version": model.version, "as_of": str(response_as_of), "horizon_days": model.meta.horizon_days}
        return _Scored(batch, slots, results, header)

    def plan(
        self,
        customers: Sequence[dict[str, Any]],
        budget: float,
        offers: Sequence[dict[str, Any]] = (),
        economics: dict[str, Any] | None = None,
        as_of: str | None = None,
    ) -> dict[str, Any]:
        """The ``/plan`` answer: the customers scored as by ``/predict`` (under the service's economics with the
        request's ``economics`` fields replaced), then :func:`serving.plan.make_plan` within ``budget`` with
        ``offers`` (after the economics' own). Each customer is planned once: a repeated id is a client error."""
        request_as_of = self.check(customers, as_of)
        seen: dict[str, int] = {}
        for i, customer in enumerate(customers):
            cid = str(customer["customer_id"])
            if cid in seen:
                raise RequestError(
                    f"customers[{i}].customer_id: '{cid}' is repeated (customers[{seen[cid]}]); a plan contacts each"
                    " customer once",
                    field=f"customers[{i}].customer_id",
                )
            seen[cid] = i
        try:
            chosen = self.economics.override(**(economics or {}))
        except ContractError as exc:
            raise RequestError(f"economics: {exc}", field="economics") from exc
        parsed = []
        for k, offer in enumerate(offers):
            where = f"offers[{k}]"
            try:
                parsed.append(Offer.from_dict(offer, where))
            except ContractError as exc:
                message = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
                raise RequestError(message, field=where) from exc
        scored = self._score(customers, request_as_of, chosen)
        model = self.holder.model
        batch = scored.batch if scored.batch is not None else _no_customers(model, chosen)
        try:
            plan = make_plan(batch, parsed, budget, chosen, meta=model.meta if model is not None else None)
        except ContractError as exc:
            message = str(exc) if str(exc).startswith("budget") else f"offers: {exc}"
            raise RequestError(message, field=message.split(" ", 1)[0].rstrip(":")) from exc
        errors = [row for row in scored.results if row]
        return {
            **scored.header,
            "plan": json_plan_rows(plan, batch),
            **plan.to_dict(),
            "sleeping_dogs": plan.sleeping_dogs["customer_id"].tolist(),
            "errors": errors,
        }

    def rank(self, customers: Sequence[dict[str, Any]], as_of: str | None = None, top_k: int | None = None):
        """``predict`` in retention order (exact value at risk, highest first, ties by id), numbered, with errors
        listed apart."""
        check_top_k(top_k)
        return self.score_checked(customers, self.check(customers, as_of)).rank_body(top_k)


def _no_customers(model: ScoringModel | None, economics: Economics) -> ScoredBatch:
    """The scored batch of no customer (a plan request none of whose customers could be scored)."""
    if model is None:
        raise RuntimeError("no model loaded yet")
    return score_customers(model, [], np.empty((0, len(model.feature_columns))), economics=economics)


def check_top_k(top_k: int | None) -> None:
    if top_k is not None and top_k < 1:
        raise RequestError("top_k: must be at least 1", field="top_k")
