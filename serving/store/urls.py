"""Which store a URL names: :func:`open_store` dispatches ``sqlite:``, ``postgresql:`` and ``redis:`` URLs to their
backends (the text itself is read by :mod:`features.urls`, through SQLAlchemy's URL object)."""

from __future__ import annotations

from pathlib import Path

from features.urls import parse_url, redact_url, render_url, take_query, url_scheme
from retention.settings import default_store_url
from serving.store.base import OnlineStore
from serving.store.postgres import PostgresStore
from serving.store.redis import RedisStore
from serving.store.sqlite import SQLiteStore

__all__ = ["DEFAULT_STORE_URL_ENV", "SUPPORTED_SCHEMES", "default_store_url", "open_store", "redact_url"]

DEFAULT_STORE_URL_ENV = "RETENTION_STORE_URL"
"""Environment variable holding the online store URL (see :func:`open_store`)."""

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "redis", "rediss")


def open_store(url: str) -> OnlineStore:
    """Open the online store at ``url``: ``sqlite:///path``, ``postgresql://...`` or ``redis://...``.

    ``?prefix=`` names the PostgreSQL tables (default ``online_store``) or the Redis keys (default ``retention``).
    Raises ``ValueError`` for an unsupported scheme or a malformed URL, ``ImportError`` naming the extra to install
    when the backend's driver is missing. A backend's driver is imported when
    its first store is opened.
    """
    scheme = url_scheme(url)
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"unsupported online store URL scheme {scheme or '<none>'!r}; supported schemes: "
            f"{', '.join(SUPPORTED_SCHEMES)}"
            " (e.g. sqlite:///data/online_store.db, postgresql://user@host:5432/db, redis://host:6379/0)"
        )
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url))
    parsed, options = take_query(parse_url(url), "prefix")
    if scheme.startswith("postgresql"):
        conninfo = render_url(parsed.set(drivername="postgresql"))  # libpq's URI form: no "+driver"
        return PostgresStore(conninfo, options.get("prefix", "online_store"))
    return RedisStore(render_url(parsed), options.get("prefix", "retention"))


def _sqlite_path(url: str) -> Path:
    """The database file of ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
    parsed = parse_url(url)
    if parsed.query or "#" in url:
        raise ValueError("sqlite store URLs take no query parameters")
    database = parsed.database
    if not database or database == ":memory:" or parsed.host or parsed.username:
        raise ValueError(
            "sqlite store URL needs a file path: sqlite:///relative/path.db or sqlite:////absolute/path.db"
            " (in-memory databases are not supported: each thread would get its own empty store)"
        )
    return Path(database)
