"""The retention plan: whom to contact, with which offer, within a budget -- one function for every caller.

:func:`make_plan` is what ``retention plan``, the service's ``/plan`` and ``rt.plan`` call, on scored customers
(a :class:`serving.scoring.ScoredBatch` or the nightly list's frame). Money is in currency units over the model's
horizon (as ``expected_value``); probabilities in [0, 1].

**Benefit.** Contacting customer ``i`` with offer ``o`` is worth::

    benefit_i(o) = uplift_i(o) x expected_profit_i - cost_i(o)
    cost_i(o)    = contact_cost + o.fixed_cost + o.spend_share x expected revenue_i     (serving.economics)

``uplift_i`` is the model's (treated minus control P(a purchase within the horizon), the same for every offer)
when the scores carry one (``uplift_source = "model"``), else the *assumed* ``o.save_rate x churn_probability_i``:
the share of would-be churners the offer keeps (``uplift_source = "assumed"``). ``uplift_i(o) x
expected_profit_i`` is the customer's *expected saved value*. A customer whose model uplift is negative is never
contacted (a contact would make them less likely to buy); one whose uplift is at most ``-SLEEPING_DOG_UPLIFT``
(a contact costs at least 5 points of purchase probability) is a **sleeping dog**, listed in
:attr:`Plan.sleeping_dogs` (the do-not-contact list; the smaller negative uplifts of customers a contact leaves
unmoved are estimation noise around 0 and are not listed). A customer whose best benefit is <= 0 is never contacted
either, whatever the budget: unprofitable customers (negative expected profit) are never worth saving.

**Choice under the budget.** Choosing customers and one offer each to maximise the total benefit within the budget
is a multiple-choice knapsack (NP-hard). :func:`make_plan` uses its classical greedy (Sinha and Zoltners, 1979):
for each customer, the offers on the upper concave hull of ``(cost, benefit)`` from ``(0, 0)`` (the offers that
are the best use of some amount of money for that customer) give *increments* -- first contact with the offer of
the steepest benefit per unit cost, then upgrades to costlier offers worth more -- whose benefit per unit cost
decreases along the hull. All increments are taken in decreasing benefit per unit cost (ties: customer id in
code-point order, then the customer's hull order; free contacts first, largest benefit first), each while it fits
in what is left of the budget; an increment that does not fit is skipped with the customer's later ones (costlier
upgrades), and cheaper increments further down are still tried. Taking increments in this order up to the budget,
the last one fractionally, is the optimum of the linear relaxation, so the plan's total benefit is at least **the
optimum minus the largest single benefit of one customer** (the increment cut at the budget): near-optimal when each
contact costs little against the budget, the usual case.
With unlimited budget every candidate gets the offer of their largest benefit; with one offer of equal cost for
everyone the plan is the top ``floor(budget / cost)`` customers by benefit. More budget never lowers the total
benefit (the first increment a larger budget takes and a smaller one skips is worth more than everything the
smaller one takes after it, which has lower benefit per unit cost and costs less in total).

**Result.** :class:`Plan`: ``rows`` (the contacted customers in the order the greedy chose them, ``plan_rank`` from
1), ``totals`` (spend, expected saved value, expected net benefit, ROI = net benefit / spend), ``budget_curve``
(cumulative spend, saved value and net benefit along the chosen increments: the plan at every smaller budget, the
"budget vs expected saved value" plot) and the number of customers per offer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.contract import ContractError
from serving.economics import Economics, Offer, checked_number, contact_costs, expected_revenue
from serving.model import BundleMeta
from serving.scoring import JSON_DECIMALS, REASONS, ScoredBatch, reason_objects, reason_text_columns

__all__ = [
    "CURVE_MAX_POINTS",
    "PLAN_COLUMNS",
    "SLEEPING_DOG_UPLIFT",
    "Plan",
    "json_plan_rows",
    "make_plan",
    "plan_offers",
]

REASON_COLUMNS = tuple(f"reason_{r + 1}" for r in range(REASONS))
PLAN_COLUMNS = (
    "customer_id",
    "plan_rank",
    "offer",
    "churn_probability",
    "expected_value",
    "expected_profit",
    "uplift",
    "cost",
    "expected_benefit",
    *REASON_COLUMNS,
)
"""The columns of :attr:`Plan.rows` (and of the written plan), in order."""
CURVE_MAX_POINTS = 201
SLEEPING_DOG_UPLIFT = 0.05
"""A customer whose model uplift is at most minus this (a contact lowers P(a purchase within the horizon) by 5 points
or more) is listed as a sleeping dog; every negative uplift is excluded from contact."""
"""Points of :attr:`Plan.budget_curve` at most (the start at 0 and every increment, thinned evenly beyond that)."""
SLEEPING_DOG_COLUMNS = ("customer_id", "uplift", "expected_profit", "churn_probability")
PLAN_JSON_DECIMALS = {
    **{c: JSON_DECIMALS[c] for c in ("churn_probability", "expected_value", "expected_profit", "uplift")},
    "cost": 4,
    "expected_benefit": 4,
}
"""Decimals kept when a plan row is written as JSON (the plan itself is made on exact values)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A retention plan (:func:`make_plan`).

    ``rows``: one row per contacted customer (:data:`PLAN_COLUMNS`), in the greedy's order: ``offer`` chosen,
    ``uplift`` used (model or assumed), ``cost`` and ``expected_benefit`` = uplift x expected_profit - cost, the
    churn head's ``reason_1..3``. ``totals``: ``budget``, ``customers_scored``, ``candidates`` (customers with a
    positive best benefit, sleeping dogs excluded), ``customers_contacted``, ``spend``, ``expected_saved_value``
    (sum of uplift x expected profit), ``expected_net_benefit`` (saved value - spend), ``roi`` (net benefit / spend;
    None without spend), ``sleeping_dogs`` (customers with a model uplift <=
    -:data:`SLEEPING_DOG_UPLIFT`), ``uplift_source`` (``model`` or
    ``assumed``). ``budget_curve``: equal-length lists ``spend``, ``expected_saved_value``,
    ``expected_net_benefit``, cumulative along the chosen increments from 0 (at most :data:`CURVE_MAX_POINTS`).
    ``offers``: customers per offer (every offer named, 0 when unused). ``sleeping_dogs``: those customers
    (:data:`SLEEPING_DOG_COLUMNS`), most negative uplift first: the do-not-contact list.
    """

    rows: pd.DataFrame
    totals: dict[str, Any]
    budget_curve: dict[str, list[float]]
    offers: dict[str, int]
    sleeping_dogs: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """Totals, budget curve and customers per offer as JSON-ready values (the ``<out>.plan.json`` file)."""
        return {"totals": dict(self.totals), "budget_curve": dict(self.budget_curve), "offers": dict(self.offers)}

    def render(self) -> str:
        """The totals as text lines (the command line prints them)."""
        t = self.totals
        roi = "n/a (no spend)" if t["roi"] is None else f"{t['roi']:.2f}"
        offers = ", ".join(f"{name} {n:,}" for name, n in self.offers.items())
        lines = [
            f"plan: contact {t['customers_contacted']:,} of {t['customers_scored']:,} customers"
            f" ({t['candidates']:,} worth contacting) for {t['spend']:,.2f} of a budget of {t['budget']:,.2f}",
            f"expected saved value {t['expected_saved_value']:,.2f}, expected net benefit"
            f" {t['expected_net_benefit']:,.2f}, ROI {roi} (uplift: {t['uplift_source']})",
            f"offers: {offers}",
        ]
        if t["sleeping_dogs"]:
            lines.append(f"sleeping dogs (never contacted: a contact makes them leave): {t['sleeping_dogs']:,}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Customers:
    """The per-customer inputs of a plan, as arrays (from a ScoredBatch or a scored frame)."""

    customer_id: np.ndarray
    churn_probability: np.ndarray
    expected_value: np.ndarray
    expected_profit: np.ndarray
    uplift: np.ndarray | None
    reasons: dict[str, np.ndarray]


def _customers(scored: ScoredBatch | pd.DataFrame) -> _Customers:
    if isinstance(scored, ScoredBatch):
        n = len(scored)
        texts = reason_text_columns(scored) if scored.reason_feature.size else {}
        reasons = {c: np.asarray(texts[c], dtype=object) if c in texts else np.full(n, None) for c in REASON_COLUMNS}
        columns: dict[str, Any] = {f: getattr(scored, f) for f in ("churn_probability", "expected_value")}
        columns.update(expected_profit=scored.expected_profit, uplift=scored.uplift)
        ids = np.asarray(scored.customer_id, dtype=object)
    else:
        needed = ("customer_id", "churn_probability", "expected_value", "expected_profit")
        missing = [c for c in needed if c not in scored]
        if missing:
            raise ContractError(f"the scored customers lack the column '{missing[0]}'")
        n = len(scored)
        columns = {c: scored[c].to_numpy(dtype=np.float64) for c in ("churn_probability", "expected_value")}
        columns["expected_profit"] = scored["expected_profit"].to_numpy(dtype=np.float64)
        columns["uplift"] = scored["uplift"].to_numpy(dtype=np.float64) if "uplift" in scored else None
        reasons = {
            c: scored[c].astype(object).where(scored[c].notna(), None).to_numpy() if c in scored else np.full(n, None)
            for c in REASON_COLUMNS
        }
        ids = scored["customer_id"].astype(str).to_numpy(dtype=object)
    uplift = columns["uplift"]
    if uplift is not None and not np.isfinite(uplift).any():
        uplift = None  # a list written by a bundle without uplift heads: NaN everywhere
    return _Customers(
        ids,
        np.asarray(columns["churn_probability"], dtype=np.float64),
        np.asarray(columns["expected_value"], dtype=np.float64),
        np.asarray(columns["expected_profit"], dtype=np.float64),
        None if uplift is None else np.asarray(uplift, dtype=np.float64),
        reasons,
    )


def plan_offers(offers: Sequence[Offer | str] | None, economics: Economics) -> tuple[Offer, ...]:
    """The offers of a plan: the economics file's, then the given ones (command-line text is parsed with
    :meth:`Offer.parse`); :class:`ContractError` when there is none or a name repeats."""
    given = tuple(o if isinstance(o, Offer) else Offer.parse(o) for o in offers or ())
    merged = (*economics.offers, *given)
    if not merged:
        raise ContractError("no offer: give at least one, e.g. --offer email:fixed=1,save=0.1")
    names = [o.name for o in merged]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ContractError(f"offer '{repeated[0]}' is given twice; offer names must be unique")
    return merged


def _hull_increments(cost: np.ndarray, benefit: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per customer (rows) the upper concave hull of its offers' ``(cost, benefit)`` from ``(0, 0)``, offers with
    a benefit <= 0 left out, as increments: ``(customer, step, offer, previous offer, previous increment)`` arrays,
    one entry per hull vertex (step 0 = the first contact, previous offer and increment -1). Offers on one line
    (equal benefit per unit cost) are separate vertices, nearest first, so a smaller budget can stop between them;
    among offers of equal cost only the best counts. Vectorised over customers, one pass per step (offers are few).
    """
    n, m = benefit.shape
    at_cost, at_benefit = np.zeros(n), np.zeros(n)
    at_offer = np.full(n, -1, dtype=np.intp)
    at_entry = np.full(n, -1, dtype=np.intp)  # position of the customer's last increment in the output
    active = np.ones(n, dtype=bool)
    done = 0
    out: list[tuple[np.ndarray, ...]] = []
    rows = np.arange(n)
    for step in range(m):
        gain, spend = benefit - at_benefit[:, None], cost - at_cost[:, None]
        valid = active[:, None] & (gain > 0) & (spend >= 0) & (benefit > 0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = np.where(spend > 0, gain / np.where(spend > 0, spend, 1.0), np.inf)
        slope = np.where(valid, slope, -np.inf)
        steepest = slope.max(axis=1, initial=-np.inf)[:, None]
        # ties on the steepest line: the nearest offer (least extra cost); at no extra cost: the largest gain
        closeness = np.where(np.isinf(steepest), gain, -spend)
        best = np.argmax(np.where(valid & (slope == steepest), closeness, -np.inf), axis=1)
        found = valid[rows, best]
        if not found.any():
            break
        who, offer = rows[found], best[found]
        out.append((who, np.full(len(who), step, dtype=np.intp), offer, at_offer[who], at_entry[who]))
        at_cost[who], at_benefit[who], at_offer[who] = cost[who, offer], benefit[who, offer], offer
        at_entry[who] = np.arange(done, done + len(who))
        done += len(who)
        active = found
    if not out:
        return (np.empty(0, dtype=np.intp),) * 5
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def _greedy(
    customer: np.ndarray, step: np.ndarray, delta_cost: np.ndarray, delta_benefit: np.ndarray, slope: np.ndarray,
    id_rank: np.ndarray, budget: float,
) -> np.ndarray:  # fmt: skip
    """Positions (into the increments) taken by the multiple-choice knapsack greedy of the module doc, in order:
    benefit per unit cost descending, then (free contacts) benefit descending, then customer id, then hull step (a
    customer's increments come in hull order: ``slope`` never rises along a customer's hull)."""
    free_first = np.where(np.isinf(slope), -delta_benefit, 0.0)
    order = np.lexsort((step, id_rank[customer], free_first, -slope))
    spent = np.cumsum(delta_cost[order])
    fits = spent <= budget
    head = len(order) if fits.all() else int(np.argmin(fits))  # the prefix that fits whole: taken, no checks
    taken = list(order[:head])
    if head == len(order):
        return np.asarray(taken, dtype=np.intp)
    level = np.zeros(len(id_rank), dtype=np.intp)
    np.add.at(level, customer[order[:head]], 1)
    blocked = np.zeros(len(id_rank), dtype=bool)
    left = budget - (float(spent[head - 1]) if head else 0.0)
    for k in order[head:]:
        i = customer[k]
        if blocked[i] or level[i] != step[k]:
            continue
        if delta_cost[k] <= left:
            taken.append(k)
            level[i] += 1
            left -= delta_cost[k]
        else:
            blocked[i] = True  # the customer's costlier upgrades depend on this one
    return np.asarray(taken, dtype=np.intp)


def _thin(values: np.ndarray, points: int = CURVE_MAX_POINTS) -> list[float]:
    if len(values) <= points:
        return values.tolist()
    index = np.unique(np.linspace(0, len(values) - 1, points).round().astype(np.intp))
    return values[index].tolist()


def make_plan(
    scored: ScoredBatch | pd.DataFrame,
    offers: Sequence[Offer | str] | None,
    budget: float,
    economics: Economics | None = None,
    *,
    meta: BundleMeta | None = None,
) -> Plan:
    """The retention plan for ``scored`` customers within ``budget`` (currency units), see the module doc.

    ``scored``: a :class:`~serving.scoring.ScoredBatch` or a frame with ``customer_id``, ``churn_probability``,
    ``expected_value``, ``expected_profit`` and optionally ``uplift`` (NaN everywhere: no model uplift) and
    ``reason_1..3`` (the nightly list's columns). ``offers``: :class:`~serving.economics.Offer` objects or their
    command-line text, after the ``economics`` file's own (:func:`plan_offers`). ``economics``: contact cost and,
    with ``meta`` (the bundle's metadata), the expected revenue an offer's ``spend_share`` applies to
    (:func:`serving.economics.expected_revenue`); without ``meta`` the expected value counts as the revenue.
    Bad budget or offers raise :class:`~features.contract.ContractError`.
    """
    economics = economics or Economics()
    budget = checked_number(budget, "budget")
    chosen_offers = plan_offers(offers, economics)
    c = _customers(scored)
    n, m = len(c.customer_id), len(chosen_offers)
    revenue = c.expected_value if meta is None else expected_revenue(c.expected_value, meta, economics)
    cost = np.column_stack([contact_costs(revenue, o, economics) for o in chosen_offers]).reshape(n, m)
    if c.uplift is not None:
        uplift = np.repeat(c.uplift[:, None], m, axis=1)
        harmed = c.uplift < 0
        dogs = np.flatnonzero(c.uplift <= -SLEEPING_DOG_UPLIFT)
    else:
        uplift = c.churn_probability[:, None] * np.asarray([o.save_rate for o in chosen_offers])[None, :]
        harmed = np.zeros(n, dtype=bool)
        dogs = np.empty(0, dtype=np.intp)
    saved = uplift * c.expected_profit[:, None]
    benefit = saved - cost
    benefit[~np.isfinite(benefit)] = -np.inf
    benefit[harmed] = -np.inf  # a contact that lowers the purchase probability is never made (sleeping dogs)
    who, step, offer, before, previous = _hull_increments(cost, benefit)
    first = before < 0
    was = np.where(first, 0, before)
    delta_cost = cost[who, offer] - np.where(first, 0.0, cost[who, was])
    delta_benefit = benefit[who, offer] - np.where(first, 0.0, benefit[who, was])
    delta_saved = saved[who, offer] - np.where(first, 0.0, saved[who, was])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        slope = np.where(delta_cost > 0, delta_benefit / np.where(delta_cost > 0, delta_cost, 1.0), np.inf)
    for s in range(1, int(step.max(initial=0)) + 1):  # rounding must not let an upgrade outrank its predecessor
        later = np.flatnonzero(step == s)
        slope[later] = np.minimum(slope[later], slope[previous[later]])
    id_rank = pd.factorize(pd.Series(c.customer_id, dtype="str"), sort=True)[0] if n else np.empty(0, np.intp)
    taken = _greedy(who, step, delta_cost, delta_benefit, slope, id_rank, budget)

    last_step = np.full(n, -1, dtype=np.intp)  # the last hull vertex taken is the customer's offer
    np.maximum.at(last_step, who[taken], step[taken])
    final = np.full(n, -1, dtype=np.intp)
    ends = taken[step[taken] == last_step[who[taken]]]
    final[who[ends]] = offer[ends]
    first_pick = np.full(n, len(taken), dtype=np.intp)
    np.minimum.at(first_pick, who[taken], np.arange(len(taken), dtype=np.intp))
    contacted = np.flatnonzero(final >= 0)
    contacted = contacted[np.argsort(first_pick[contacted], kind="stable")]
    pick = final[contacted]
    rows = pd.DataFrame(
        {
            "customer_id": pd.array(c.customer_id[contacted], dtype="str"),
            "plan_rank": np.arange(1, len(contacted) + 1, dtype=np.int64),
            "offer": pd.array([chosen_offers[k].name for k in pick], dtype="str"),
            "churn_probability": c.churn_probability[contacted],
            "expected_value": c.expected_value[contacted],
            "expected_profit": c.expected_profit[contacted],
            "uplift": uplift[contacted, pick],
            "cost": cost[contacted, pick],
            "expected_benefit": benefit[contacted, pick],
            **{r: pd.array(c.reasons[r][contacted], dtype="str") for r in REASON_COLUMNS},
        }
    )
    spend = math.fsum(rows["cost"])
    saved_total = math.fsum(saved[contacted, pick])
    net = math.fsum(rows["expected_benefit"])
    totals = {
        "budget": budget,
        "customers_scored": int(n),
        "candidates": int((benefit.max(axis=1, initial=-np.inf) > 0).sum()) if n else 0,
        "customers_contacted": len(contacted),
        "spend": spend,
        "expected_saved_value": saved_total,
        "expected_net_benefit": net,
        "roi": net / spend if spend > 0 else None,
        "sleeping_dogs": len(dogs),
        "uplift_source": "model" if c.uplift is not None else "assumed",
    }
    curve = {
        "spend": _thin(np.r_[0.0, np.cumsum(delta_cost[taken])]),
        "expected_saved_value": _thin(np.r_[0.0, np.cumsum(delta_saved[taken])]),
        "expected_net_benefit": _thin(np.r_[0.0, np.cumsum(delta_benefit[taken])]),
    }
    counts = {o.name: int((pick == k).sum()) for k, o in enumerate(chosen_offers)}
    return Plan(rows[list(PLAN_COLUMNS)], totals, curve, counts, _sleeping_dogs(c, dogs))


def _sleeping_dogs(c: _Customers, dogs: np.ndarray) -> pd.DataFrame:
    if c.uplift is None or not len(dogs):
        empty = {name: pd.Series(dtype="str" if name == "customer_id" else "float64") for name in SLEEPING_DOG_COLUMNS}
        return pd.DataFrame(empty)
    dogs = dogs[np.argsort(c.uplift[dogs], kind="stable")]
    return pd.DataFrame(
        {
            "customer_id": pd.array(c.customer_id[dogs], dtype="str"),
            "uplift": c.uplift[dogs],
            "expected_profit": c.expected_profit[dogs],
            "churn_probability": c.churn_probability[dogs],
        }
    )


def json_plan_rows(plan: Plan, batch: ScoredBatch) -> list[dict[str, Any]]:
    """The plan's rows as JSON objects (``/plan``), values rounded to :data:`PLAN_JSON_DECIMALS`, the churn head's
    reasons as ``/predict`` writes them (:func:`serving.scoring.reason_objects` of ``batch``, the scored customers
    the plan was made of; customer ids are unique in it)."""
    position = {str(cid): k for k, cid in enumerate(batch.customer_id)}
    out = []
    for row in plan.rows.itertuples(index=False):
        item: dict[str, Any] = {"customer_id": row.customer_id, "plan_rank": int(row.plan_rank), "offer": row.offer}
        item.update({f: round(float(getattr(row, f)), d) for f, d in PLAN_JSON_DECIMALS.items()})
        item["reasons"] = reason_objects(batch, position[row.customer_id])
        out.append(item)
    return out
