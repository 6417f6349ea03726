"""Online feature store: the per-customer feature vectors the prediction service reads by customer id.

A ``materialize`` job writes a complete *snapshot* (one feature vector per customer, as of one date) with
:meth:`OnlineStore.write_snapshot`; the service reads vectors with :meth:`OnlineStore.read` (or
:meth:`OnlineStore.read_with_info`, which also says which snapshot answered). Backends, chosen by URL
(:func:`open_store`):

- ``sqlite:///path/to/file.db`` (default, embedded; ``sqlite:////abs/path.db`` for an absolute path):
  one table ``features_<snapshot id>`` per snapshot, a ``snapshots`` metadata table and a one-row
  ``current`` pointer, WAL mode so readers never wait for the writer.
- ``postgresql://user@host:port/db`` (also ``postgresql+psycopg://``; needs ``retention[postgres]``):
  the snapshot is bulk-loaded with ``COPY`` into a staging table, which replaces ``<prefix>_features``
  (``ALTER TABLE ... RENAME``) in the transaction that updates ``<prefix>_snapshot``. ``?prefix=`` names
  the tables (default ``online_store``).
- ``redis://host:port/db`` (also ``rediss://``; needs ``retention[redis]``): one key per customer,
  ``<prefix>:snap:<snapshot id>:<customer id>``, and a ``<prefix>:current`` hash (snapshot id + metadata
  JSON). ``?prefix=`` sets the key prefix (default ``retention``). Values are written with a TTL; removing it
  and setting the pointer is one atomic step, so a write killed at any point leaves only values that expire.

Guarantees, on every backend:

- a snapshot becomes visible all at once: a concurrent reader sees the previous snapshot or the new one,
  never a mix and never an empty store; the previous snapshot is deleted after the switch;
- one :meth:`~OnlineStore.read` call (any number of ids) is answered from one snapshot;
- vectors are the feature values exactly as written (packed little-endian float64, NaN/inf/-0.0 kept),
  in the order of the snapshot's ``feature_columns``.

The returned vectors are read-only views over the stored bytes (no copy); ``.copy()`` them to modify.
Stores are thread-safe (one database connection per thread for SQLite and PostgreSQL, redis-py's
connection pool for Redis). Nothing is imported or opened at import time; the PostgreSQL and Redis drivers

Modules: :mod:`~serving.store.base` (the interface, metadata and errors), :mod:`~serving.store.packing` (snapshot
validation, vector encoding), :mod:`~serving.store.connections` (per-thread connections, driver import), one module
per backend (:mod:`~serving.store.sqlite`, :mod:`~serving.store.postgres`, :mod:`~serving.store.redis`),
:mod:`~serving.store.resilient` (the service's store that follows its server) and :mod:`~serving.store.urls`
(:func:`open_store`).
"""

from serving.store.base import OnlineStore, SnapshotInfo, StoreUnavailable, is_unavailable_error
from serving.store.redis import RedisStore
from serving.store.resilient import ResilientStore
from serving.store.urls import DEFAULT_STORE_URL_ENV, default_store_url, open_store, redact_url

__all__ = [
    "DEFAULT_STORE_URL_ENV",
    "OnlineStore",
    "RedisStore",
    "ResilientStore",
    "SnapshotInfo",
    "StoreUnavailable",
    "default_store_url",
    "is_unavailable_error",
    "open_store",
    "redact_url",
]
