"""Snapshot validation and vector encoding: every backend stores a customer's features as one packed little-endian
float64 vector (NaN, inf and -0.0 kept bit for bit) in the order of the snapshot's ``feature_columns``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from serving.store.base import SnapshotInfo

__all__ = [
    "ID_COLUMN",
    "VECTOR_DTYPE",
    "PackedSnapshot",
    "checked_snapshot_id",
    "pack_snapshot",
    "request_ids",
    "unpack_vector",
]

ID_COLUMN = "customer_id"
VECTOR_DTYPE = np.dtype("<f8")
_SNAPSHOT_ID = re.compile(r"[0-9a-z_]{1,40}")


def checked_snapshot_id(snapshot_id: str) -> str:
    """``snapshot_id`` when it has the shape this module gives ids (safe in table and key names), else RuntimeError."""
    if not _SNAPSHOT_ID.fullmatch(snapshot_id):
        raise RuntimeError(f"corrupt online store: bad snapshot id {snapshot_id!r}")
    return snapshot_id


def _check_as_of(as_of: object) -> dt.date:
    if isinstance(as_of, dt.datetime) or not isinstance(as_of, dt.date):
        raise TypeError(f"as_of must be a datetime.date, not {type(as_of).__name__}")
    return as_of


def _new_snapshot_id(now: dt.datetime) -> str:
    """A unique id sortable by write time: ``<UTC timestamp to the microsecond>_<8 random hex digits>``."""
    return f"{now:%Y%m%dt%H%M%S%f}_{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True, slots=True)
class PackedSnapshot:
    """A validated snapshot ready to write: ids and their packed vectors, in the frame's order."""

    info: SnapshotInfo
    ids: list[str]
    blobs: list[bytes]


def pack_snapshot(features: pd.DataFrame, as_of: dt.date, feature_columns: Sequence[str]) -> PackedSnapshot:
    """Validate a snapshot frame and pack every row into little-endian float64 bytes (the rules of
    :meth:`~serving.store.base.OnlineStore.write_snapshot`: ValueError / TypeError, nothing written)."""
    if not isinstance(features, pd.DataFrame):
        raise TypeError(f"features must be a pandas DataFrame, not {type(features).__name__}")
    as_of = _check_as_of(as_of)
    if isinstance(feature_columns, str):
        raise TypeError("feature_columns must be a sequence of column names, not one string")
    columns = tuple(feature_columns)
    if not columns:
        raise ValueError("feature_columns is empty")
    if not all(isinstance(column, str) and column for column in columns):
        raise TypeError(f"feature column names must be non-empty strings, got {columns!r}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"feature_columns has duplicates: {sorted({c for c in columns if columns.count(c) > 1})}")
    if ID_COLUMN in columns:
        raise ValueError(f"'{ID_COLUMN}' cannot be a feature column")
    missing = [column for column in (ID_COLUMN, *columns) if column not in features.columns]
    if missing:
        raise ValueError(f"features has no column(s) {missing}")
    repeated = [column for column in (ID_COLUMN, *columns) if (features.columns == column).sum() > 1]
    if repeated:
        raise ValueError(f"features has several columns named {repeated}")
    if len(features) == 0:
        raise ValueError("refusing to write an empty snapshot (it would empty the online store)")
    non_numeric = [
        column
        for column in columns
        if not (pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(features[column]))
    ]
    if non_numeric:
        raise ValueError(f"feature columns must be numeric; not numeric: {non_numeric}")

    ids = features[ID_COLUMN].tolist()
    if not all(type(cid) is str for cid in ids):
        bad = [cid for cid in ids if not isinstance(cid, str)]
        if bad:
            raise TypeError(
                f"customer_id values must be str (ids are opaque: 42 and '00042' differ); found {len(bad)} "
                f"other value(s), e.g. {type(bad[0]).__name__} {bad[0]!r}"
            )
        ids = [str(cid) for cid in ids]  # str subclasses such as numpy.str_
    joined = "\n".join(ids)
    if "\x00" in joined:
        raise ValueError("customer_id values cannot contain NUL characters")
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"customer_id values must be valid Unicode text: {exc}") from None
    index = pd.Index(ids, dtype=object)
    if not index.is_unique:
        duplicated = index[index.duplicated()].unique()
        raise ValueError(
            f"{len(duplicated)} customer_id value(s) occur more than once, e.g. {list(duplicated[:5])}; "
            "nothing was written"
        )

    values = features.loc[:, list(columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    values = np.ascontiguousarray(values, dtype=VECTOR_DTYPE)
    blobs = values.view(np.dtype((np.void, VECTOR_DTYPE.itemsize * len(columns)))).ravel().tolist()
    now = dt.datetime.now(dt.UTC)
    info = SnapshotInfo(_new_snapshot_id(now), as_of, len(ids), columns, now)
    return PackedSnapshot(info, ids, blobs)


def request_ids(customer_ids: Iterable[str]) -> list[str]:
    """Distinct requested ids in order; ids that can never be stored (NUL, lone surrogates) are dropped."""
    if isinstance(customer_ids, str | bytes):
        raise TypeError("customer_ids must be a sequence of ids, not one string")
    out: list[str] = []
    seen: set[str] = set()
    for cid in customer_ids:
        if type(cid) is not str:
            if not isinstance(cid, str):
                raise TypeError(f"customer ids must be str, got {type(cid).__name__} {cid!r}")
            cid = str(cid)
        if cid in seen:
            continue
        seen.add(cid)
        if "\x00" in cid or (not cid.isascii() and not _encodable(cid)):
            continue
        out.append(cid)
    return out


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unpack_vector(blob: bytes) -> np.ndarray:
    """A stored vector as a read-only float64 array over ``blob`` (no copy)."""
    return np.frombuffer(blob, dtype=VECTOR_DTYPE)
