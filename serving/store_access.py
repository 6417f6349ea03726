"""The service's online store: opened at start-up without ever stopping it, read-only.

The default store is the SQLite file under ``RETENTION_HOME``, where ``retention materialize`` writes by default;
the service does not create it: until it exists, customers sent by id are answered "unknown customer_id".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retention.settings import Settings
from serving.store import OnlineStore, ResilientStore, SnapshotInfo, open_store

__all__ = ["open_service_store"]

log = logging.getLogger("retention.service")


def open_service_store(settings: Settings) -> ResilientStore:
    """The online store of ``settings`` (``store_url``, else the SQLite file under ``home``). It never stops the
    start-up: while its server is unreachable, by-id requests answer 503 naming it, /readyz reports it, inline
    customers are scored; it reconnects when the server is back. The default SQLite file is not created here:
    until ``retention materialize`` writes it, every customer sent by id is unknown (:class:`_NotMaterialized`)."""
    url = settings.resolved_store_url
    opener = _open_default_store if settings.store_url is None else open_store
    store = ResilientStore(url, opener=opener)
    error = store.health()["error"]
    if error:
        log.warning("starting without the online store %s: %s", store.name, error)
    return store


def _open_default_store(url: str) -> OnlineStore:
    """The default SQLite store (``sqlite:///<home>/online_store.db``) if its file exists, else a
    :class:`_NotMaterialized` stand-in: the service creates no file."""
    path = Path(url.removeprefix("sqlite:///"))
    return open_store(url) if path.exists() else _NotMaterialized(url, path)


class _NotMaterialized(OnlineStore):
    """The default SQLite store before ``retention materialize`` has written its file: no snapshot, so every
    customer sent by id is "unknown customer_id"; the first read after the file appears opens it. Read-only."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self._store: OnlineStore | None = None
        self._lock = threading.Lock()

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, Any]]:
        store = self._store
        if store is None:
            if not self.path.exists():
                return None, {}
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.url)
                store = self._store
        return store.read_with_info(customer_ids)

    def info(self) -> SnapshotInfo | None:
        return self.read_with_info(())[0]

    def write_snapshot(self, features: Any, *, as_of: Any, feature_columns: Sequence[str]) -> SnapshotInfo:
        raise RuntimeError("the service does not write the online store: run `retention materialize`")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
