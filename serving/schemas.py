"""The request bodies of ``/predict``, ``/rank`` and the ``/batch/*`` task routes (pydantic): what BentoML
validates (400 on a mismatch) and what the OpenAPI document shows (:mod:`serving.openapi`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BatchJobRequest", "BatchSubmitRequest", "Customer", "PredictRequest", "RankRequest", "Transaction"]


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
