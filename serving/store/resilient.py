"""A store that starts without its server and follows it down and back up (the service's store)."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.urls import redact_url
from serving.store.base import OnlineStore, SnapshotInfo, StoreUnavailable, is_unavailable_error
from serving.store.urls import open_store

__all__ = ["ResilientStore"]


class ResilientStore(OnlineStore):
    """An :class:`OnlineStore` that starts without its server and comes back with it.

    Opening does not fail when the server is unreachable (a malformed URL or a missing driver still raises at
    once): reads raise :class:`StoreUnavailable` naming the store until it answers. After a failure, calls fail
    fast for ``retry_s`` seconds, then the next call tries the server again (reconnecting); :meth:`health`
    says whether the store answers (probing it at most every ``retry_s`` seconds).
    """

    def __init__(self, url: str, *, retry_s: float = 1.0, opener: Callable[[str], OnlineStore] | None = None) -> None:
        self.url = url
        self.name = redact_url(url)
        self.retry_s = retry_s
        self._opener = opener or open_store
        self._lock = threading.Lock()
        self._store: OnlineStore | None = None
        self._error: str | None = None
        self._retry_at = 0.0
        self._checked_at = time.monotonic()
        self._closed = False
        with self._lock:
            self._open_locked()

    def __repr__(self) -> str:
        return f"ResilientStore({self.name!r})"

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        self._error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self._retry_at = time.monotonic() + self.retry_s
        return self._unavailable()

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the online store {self.name} is unavailable ({self._error}); customers sent by id cannot be scored"
            " until it is back (customers sent with their transactions can)"
        )

    def _open_locked(self) -> None:
        try:
            self._store = self._opener(self.url)
        except Exception as exc:
            if not is_unavailable_error(exc):
                raise
            self._failed(exc)
        else:
            self._error = None
        self._checked_at = time.monotonic()

    def _call(self, operation: Callable[[OnlineStore], Any]) -> Any:
        if self._closed:
            raise RuntimeError("the online store is closed")
        if self._error is not None and time.monotonic() < self._retry_at:
            raise self._unavailable()
        store = self._store
        if store is None:
            with self._lock:
                if self._store is None and time.monotonic() >= self._retry_at:
                    self._open_locked()
                store = self._store
            if store is None:
                raise self._unavailable()
        try:
            result = operation(store)
        except Exception as exc:
            if is_unavailable_error(exc):
                raise self._failed(exc) from exc
            raise
        self._error = None
        self._checked_at = time.monotonic()
        return result

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, np.ndarray]]:
        return self._call(lambda store: store.read_with_info(customer_ids))

    def info(self) -> SnapshotInfo | None:
        return self._call(lambda store: store.info())

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        return self._call(lambda store: store.write_snapshot(features, as_of=as_of, feature_columns=feature_columns))

    def health(self) -> dict[str, Any]:
        """``{"store": <url without password>, "available": bool, "error": reason or None}``; probes the store
        (one metadata read) when the last answer is older than ``retry_s``."""
        if time.monotonic() - self._checked_at >= self.retry_s or self._store is None:
            with contextlib.suppress(StoreUnavailable):
                self.info()
        return {"store": self.name, "available": self._error is None, "error": self._error}

    def close(self) -> None:
        self._closed = True
        with self._lock:
            if self._store is not None:
                self._store.close()
