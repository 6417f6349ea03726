"""The online store interface: snapshot metadata, the :class:`OnlineStore` contract every backend keeps, and the
errors that mean "the store cannot be reached" (see :mod:`serving.store` for the guarantees)."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
import sqlite3
import sys
from collections.abc import Sequence
from typing import Self

import numpy as np
import pandas as pd

__all__ = ["OnlineStore", "SnapshotInfo", "StoreUnavailable", "is_unavailable_error"]


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """Metadata of one materialized snapshot.

    ``snapshot_id`` is unique per write (sortable by write time), ``as_of`` the feature date,
    ``rows`` the number of customers, ``feature_columns`` the order of the values in every vector and
    ``written_at`` when the snapshot was written (timezone-aware, UTC).
    """

    snapshot_id: str
    as_of: dt.date
    rows: int
    feature_columns: tuple[str, ...]
    written_at: dt.datetime

    def to_json(self) -> str:
        """The metadata as one JSON object (dates as ISO 8601 text), as the Redis backend stores it."""
        return json.dumps(
            {
                "snapshot_id": self.snapshot_id,
                "as_of": self.as_of.isoformat(),
                "rows": self.rows,
                "feature_columns": list(self.feature_columns),
                "written_at": self.written_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SnapshotInfo:
        """The inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            snapshot_id=data["snapshot_id"],
            as_of=dt.date.fromisoformat(data["as_of"]),
            rows=int(data["rows"]),
            feature_columns=tuple(data["feature_columns"]),
            written_at=dt.datetime.fromisoformat(data["written_at"]).astimezone(dt.UTC),
        )


class OnlineStore(abc.ABC):
    """Per-customer feature vectors, replaced one complete snapshot at a time (see :mod:`serving.store`)."""

    @abc.abstractmethod
    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        """Write a complete new snapshot, switch readers to it atomically, then delete the previous one.

        ``features`` has a ``customer_id`` column of ``str`` (opaque: ``"00042"`` and ``"42"`` are
        different customers) and the numeric ``feature_columns`` (NaN allowed; other columns are ignored).
        Raises ``ValueError`` for duplicate customer ids, a missing ``customer_id`` column, missing or
        non-numeric feature columns and an empty frame, ``TypeError`` for ids that are not ``str`` (None and
        NaN included); nothing is written then and the current snapshot stays.
        """

    @abc.abstractmethod
    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, np.ndarray]]:
        """Like :meth:`read`, plus the metadata of the snapshot that answered (None if there is none).

        Use this rather than :meth:`read` + :meth:`feature_columns` when the column order matters and a
        new snapshot (possibly with other columns) may be written between the two calls.
        """

    @abc.abstractmethod
    def info(self) -> SnapshotInfo | None:
        """Metadata of the current snapshot, or None when nothing has been materialized yet."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release all connections (of every thread); the store cannot be used afterwards."""

    def read(self, customer_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Feature vectors (float64, in :meth:`feature_columns` order, NaN kept) by customer id.

        Ids not in the current snapshot are absent from the result. All vectors come from one snapshot.
        """
        return self.read_with_info(customer_ids)[1]

    def feature_columns(self) -> tuple[str, ...]:
        """Feature column order of the current snapshot (``()`` when nothing has been materialized)."""
        info = self.info()
        return info.feature_columns if info is not None else ()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached (down, restarting, network): the message names the store (no password).

    The service answers by-id requests with 503 and this message; customers sent with their transactions need no
    store and are still scored.
    """


def is_unavailable_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the store's server or file cannot be reached (not a bug, not a bad request)."""
    if isinstance(exc, StoreUnavailable | OSError | sqlite3.OperationalError):
        return True
    redis_mod = sys.modules.get("redis")
    if redis_mod is not None and isinstance(
        exc,
        redis_mod.exceptions.ConnectionError
        | redis_mod.exceptions.TimeoutError
        | redis_mod.exceptions.BusyLoadingError,
    ):
        return True
    pg = sys.modules.get("psycopg")
    return pg is not None and isinstance(exc, pg.OperationalError)
