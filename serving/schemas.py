"""The request bodies of ``/predict``, ``/rank``, ``/plan`` and the ``/batch/*`` task routes (pydantic): what BentoML
validates (400 on a mismatch) and what the OpenAPI document shows (:mod:`serving.openapi`); and the response
bodies of ``/predict``, ``/rank`` and ``/plan``, for the document (responses are written by
:func:`serving.scoring.json_rows`, :mod:`serving.online` and :mod:`serving.plan`, not through these models; the HTTP
tests check real answers against them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchJobRequest",
    "BatchSubmitRequest",
    "Customer",
    "EconomicsOverrides",
    "OfferSpec",
    "PlanRequest",
    "PlanResponse",
    "PlanRow",
    "PlanTotals",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "PredictionError",
    "RankRequest",
    "RankResponse",
    "RankedPrediction",
    "Reason",
    "Transaction",
]


class Transaction(BaseModel):
    """One transaction of the customer, or one line of an order, as in the input contract (money in currency
    units, timestamps UTC). Lines sharing a ``transaction_id`` are summed into one order (at its earliest line's
    time); a line's amount is ``amount``, or ``quantity × unit_price`` when it has no ``amount``."""

    model_config = ConfigDict(extra="forbid")
    timestamp: Annotated[str, Field(min_length=1, description="ISO 8601 date or datetime; naive = UTC")]
    amount: (
        Annotated[
            float,
            Field(
                strict=True,  # true/false are not amounts (lax pydantic reads true as 1.0)
                allow_inf_nan=False,
                description="Line or transaction amount, negative for refunds; optional with quantity and unit_price",
            ),
        ]
        | None
    ) = None
    transaction_id: Annotated[str | None, Field(description="Order id: lines sharing it are one order")] = None
    quantity: Annotated[float, Field(strict=True, allow_inf_nan=False, description="Negative for returns")] | None = (
        None
    )
    unit_price: (
        Annotated[float, Field(strict=True, allow_inf_nan=False, description="Amount = quantity × unit_price")] | None
    ) = None
    line_id: Annotated[str | None, Field(description="Line within the order: a repeated one is a duplicate")] = None
    category: str | None = None
    channel: str | None = None


class Customer(BaseModel):
    """A customer by id (features from the online store) or with their own transactions inline."""

    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(min_length=1, description="Opaque id, kept exactly as sent")]
    transactions: list[Transaction] | None = None


class PredictRequest(BaseModel):
    """The body of ``/predict``: unknown top-level fields are a 400, like unknown fields of a customer."""

    model_config = ConfigDict(extra="forbid")
    customers: Annotated[list[Customer], Field(min_length=1)]
    as_of: Annotated[
        str | None, Field(description="ISO 8601 date (YYYY-MM-DD) features are computed at; default today, UTC")
    ] = None


class RankRequest(PredictRequest):
    """The body of ``/rank``: ``/predict``'s and ``top_k``."""

    top_k: Annotated[int, Field(strict=True, ge=1, description="Keep only the first top_k customers")] | None = None


_MONEY = Field(strict=True, ge=0, allow_inf_nan=False)  # strict: true/false are not amounts
_SHARE = Field(strict=True, ge=0, le=1)
MAX_OFFERS = 20
"""Offers in one ``/plan`` request at most (the plan's work grows with the square of the offers per customer)."""


class OfferSpec(BaseModel):
    """A retention offer (:class:`serving.economics.Offer`): money in currency units, shares and rates in [0, 1]."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="Offer name")]
    fixed_cost: Annotated[float, _MONEY, Field(description="Cost per contacted customer besides the contact")] = 0.0
    spend_share: Annotated[
        float, _SHARE, Field(description="Discount as a share of the customer's expected revenue")
    ] = 0.0
    save_rate: Annotated[
        float, _SHARE, Field(description="Assumed share of would-be churners kept (used when the model has no uplift)")
    ] = 0.0


class EconomicsOverrides(BaseModel):
    """Fields of the service's economics (``RETENTION_ECONOMICS``, :class:`serving.economics.Economics`) to replace
    for this request; money in currency units over the model's horizon."""

    model_config = ConfigDict(extra="forbid")
    gross_margin: Annotated[float, _SHARE, Field(description="Share of revenue kept as gross profit")] | None = None
    cost_to_serve_per_order: Annotated[float, _MONEY, Field(description="Cost to serve one order")] | None = None
    cost_per_refund: Annotated[float, _MONEY, Field(description="Handling cost of one refund")] | None = None
    contact_cost: Annotated[float, _MONEY, Field(description="Cost of one contact, whatever the offer")] | None = None
    discount_rate: Annotated[float, Field(strict=True, ge=0, le=10, description="Annual discount rate")] | None = None


class PlanRequest(PredictRequest):
    """The body of ``/plan``: ``/predict``'s customers (by id or with inline transactions), the budget and the offers
    (:func:`serving.plan.make_plan`)."""

    budget: Annotated[float, _MONEY, Field(description="Money the plan may spend at most (currency units)")]
    offers: Annotated[
        list[OfferSpec],
        Field(max_length=MAX_OFFERS, description="Offers to choose from, after the service economics' own offers"),
    ] = []
    economics: EconomicsOverrides | None = None


class BatchSubmitRequest(BaseModel):
    """The body of ``/batch/submit``: a batch scoring job (:mod:`serving.batch_tasks`), as ``retention score``."""

    model_config = ConfigDict(extra="forbid")
    source: Annotated[
        str,
        Field(
            min_length=1,
            description="Transactions: a .parquet/.csv file or a Parquet folder inside RETENTION_BATCH_ROOT (absolute,"
            " or relative to it), or a SQL URL when RETENTION_BATCH_SQL=1",
        ),
    ]
    as_of: Annotated[str, Field(min_length=1, description="ISO 8601 date (YYYY-MM-DD) features are computed at")]
    destination: Annotated[
        str | None,
        Field(
            min_length=1,
            description="Output .parquet/.csv inside the batch root, or a SQL URL (?table=); default:"
            " <root>/scores/<job_id>.parquet",
        ),
    ] = None
    top_k: Annotated[int, Field(strict=True, ge=1, description="Keep only the first top_k customers")] | None = None
    reasons: Annotated[
        Literal["all", "top-k", "none"] | None,
        Field(description="Which rows get reasons (as `retention score --reasons`); default: the job's default"),
    ] = None


class BatchJobRequest(BaseModel):
    """The body of ``/batch/status`` and ``/batch/result``: the id ``/batch/submit`` answered."""

    model_config = ConfigDict(extra="forbid")
    job_id: Annotated[str, Field(min_length=1, description="The job id answered by /batch/submit")]


# --- responses ---------------------------------------------------------------------------------------------------

_VALUE_UNITS = "currency units over the horizon, after margin and discount (as expected_value)"

_NO_INTERVALS = "; null when the model version has no intervals (trained before them)"
_NO_TIMING = "; null beyond the horizon, or when the model version has no BG/NBD"
_NO_UPLIFT = "; null when the model version has no uplift heads (trained without campaign history)"
_NO_SCORECARD = "; null when the model version has no scorecard reference (trained before the scorecard)"


class Reason(BaseModel):
    """One of the churn head's largest contributions for the customer."""

    feature: str
    description: str
    value: Annotated[float | None, Field(description="The customer's feature value; null when missing")]
    effect: Literal["raises churn risk", "lowers churn risk"]
    contribution: Annotated[float, Field(description="Log-odds contribution to the churn head")]
    cause: Annotated[
        str,
        Field(
            description="The feature's churn-cause family: service (dissatisfaction), value (price), engagement"
            " (fading), lapse (natural lapse) or other; see serving/causes.py"
        ),
    ]
    fact: Annotated[str, Field(description="The reason in plain language, e.g. 'no purchase for 143 days'")]


class Prediction(BaseModel):
    """One scored customer (:func:`serving.scoring.json_rows`). Intervals: ``value_low``..``value_high`` holds the
    customer's future value with probability 80% (``[value_p10, value_p90]`` when P(no purchase) < 10%, else
    ``[0, P80]``: with a point mass at 0 the equal-tailed interval would hold 90%); see ``serving/intervals.py``."""

    customer_id: str
    churn_probability: Annotated[float, Field(description="P(no purchase in the next horizon_days)")]
    expected_value: Annotated[float, Field(description=f"Expected future value, {_VALUE_UNITS}")]
    value_at_risk: Annotated[float, Field(description="churn_probability x expected_value")]
    expected_profit: Annotated[
        float,
        Field(
            description="Expected profit over the horizon under the service's economics (margin, cost to serve per"
            " order, cost per refund; RETENTION_ECONOMICS), may be negative; equal to expected_value without them"
        ),
    ]
    tier: str
    segment: str
    value_p10: float | None = Field(description=f"10% quantile of future value, {_VALUE_UNITS}{_NO_INTERVALS}")
    value_p50: float | None = Field(description=f"Median future value{_NO_INTERVALS}")
    value_p90: float | None = Field(description=f"90% quantile of future value{_NO_INTERVALS}")
    value_low: float | None = Field(description=f"Lower end of the 80% interval of future value{_NO_INTERVALS}")
    value_high: float | None = Field(description=f"Upper end of the 80% interval of future value{_NO_INTERVALS}")
    purchases_p50: int | None = Field(description=f"Median number of purchase days in the horizon{_NO_INTERVALS}")
    purchases_low: int | None = Field(description=f"Lower end of the 80% interval of purchase days{_NO_INTERVALS}")
    purchases_high: int | None = Field(description=f"Upper end of the 80% interval of purchase days{_NO_INTERVALS}")
    purchase_within_7d: float | None = Field(description=f"P(a purchase within 7 days after as_of){_NO_TIMING}")
    purchase_within_14d: float | None = Field(description=f"P(a purchase within 14 days){_NO_TIMING}")
    purchase_within_30d: float | None = Field(description=f"P(a purchase within 30 days){_NO_TIMING}")
    purchase_within_60d: float | None = Field(description=f"P(a purchase within 60 days){_NO_TIMING}")
    purchase_within_90d: float | None = Field(description=f"P(a purchase within 90 days){_NO_TIMING}")
    expected_days_to_next_purchase: float | None = Field(
        description=f"Expected days from as_of to the next purchase, given one within the horizon{_NO_TIMING}"
    )
    uplift: float | None = Field(
        description=f"Change in P(a purchase within the horizon) a retention contact causes, in [-1, 1]{_NO_UPLIFT}"
    )
    contribution_score: float | None = Field(
        description=f"Current net value after margin (spend_365d x margin), 0-100 percentile of the training"
        f" population{_NO_SCORECARD}"
    )
    loyalty_score: float | None = Field(
        description=f"Loyalty 0-100: retention probability, tenure, repurchase, complaints and satisfaction"
        f"{_NO_SCORECARD}"
    )
    potential_score: float | None = Field(
        description=f"Expected value, 0-100 percentile of the training population{_NO_SCORECARD}"
    )
    composite_score: float | None = Field(
        description=f"Weighted mean of the three scores (default weights 1/3 each){_NO_SCORECARD}"
    )
    scorecard_tier: str | None = Field(
        description=f"Tier by the composite score, the alternative to tier by expected value{_NO_SCORECARD}"
    )
    features_as_of: Annotated[str, Field(description="Date the features were computed at (store or inline)")]
    churn_cause: str | None = Field(
        description="Cause family of the customer's largest reason that raises churn risk; null when none does"
    )
    reasons: list[Reason]


class PredictionError(BaseModel):
    """A customer that could not be scored (unknown id, no transaction on or before as_of)."""

    customer_id: str
    error: str


class PredictResponse(BaseModel):
    """The body of a ``/predict`` answer: one entry per requested customer, in request order."""

    model_version: str | None
    as_of: str
    horizon_days: int
    predictions: list[Prediction | PredictionError]


class RankedPrediction(Prediction):
    retention_rank: Annotated[int, Field(ge=1, description="1 = highest value at risk")]


class RankResponse(BaseModel):
    """The body of a ``/rank`` answer: scored customers in retention order, the others under ``errors``."""

    model_version: str | None
    as_of: str
    horizon_days: int
    ranking: list[RankedPrediction]
    errors: list[PredictionError]


class PlanRow(BaseModel):
    """One contacted customer of a plan (:data:`serving.plan.PLAN_COLUMNS`), in the plan's order."""

    customer_id: str
    plan_rank: Annotated[int, Field(ge=1, description="1 = chosen first (best benefit per unit cost)")]
    offer: str
    churn_probability: float
    expected_value: float
    expected_profit: float
    uplift: Annotated[float, Field(description="Uplift used: the model's, or save_rate x churn_probability")]
    cost: Annotated[float, Field(description="Cost of the contact with this offer (currency units)")]
    expected_benefit: Annotated[float, Field(description="uplift x expected_profit - cost (currency units)")]
    reasons: list[Reason]


class PlanTotals(BaseModel):
    """A plan's totals (:class:`serving.plan.Plan`), money in currency units over the horizon."""

    budget: float
    customers_scored: int
    candidates: Annotated[int, Field(description="Customers with a positive best benefit (sleeping dogs excluded)")]
    customers_contacted: int
    spend: float
    expected_saved_value: Annotated[float, Field(description="Sum of uplift x expected_profit")]
    expected_net_benefit: Annotated[float, Field(description="expected_saved_value - spend")]
    roi: Annotated[float | None, Field(description="expected_net_benefit / spend; null without spend")]
    sleeping_dogs: Annotated[int, Field(description="Customers a contact makes leave (negative model uplift)")]
    uplift_source: Literal["model", "assumed"]


class PlanResponse(BaseModel):
    """The body of a ``/plan`` answer: the contacted customers, the totals, the budget curve, customers per offer
    and the customers that could not be scored."""

    model_version: str | None
    as_of: str
    horizon_days: int
    plan: list[PlanRow]
    totals: PlanTotals
    budget_curve: dict[str, list[float]]
    offers: dict[str, int]
    sleeping_dogs: Annotated[list[str], Field(description="Customer ids never to contact (negative model uplift)")]
    errors: list[PredictionError]
