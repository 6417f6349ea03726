"""Online feature store (transitional: the package is being split into one module per concern)."""

from serving.store.redis import (
    DEFAULT_STORE_URL_ENV,
    OnlineStore,
    PostgresStore,
    RedisStore,
    ResilientStore,
    SnapshotInfo,
    SQLiteStore,
    StoreUnavailable,
    default_store_url,
    is_unavailable_error,
    open_store,
    redact_url,
)

__all__ = [
    "DEFAULT_STORE_URL_ENV",
    "OnlineStore",
    "PostgresStore",
    "RedisStore",
    "ResilientStore",
    "SQLiteStore",
    "SnapshotInfo",
    "StoreUnavailable",
    "default_store_url",
    "is_unavailable_error",
    "open_store",
    "redact_url",
]
