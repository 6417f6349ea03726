"""Connections shared by the database backends: one connection per thread, and the optional drivers' import."""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, Generic, TypeVar

__all__ = ["PerThread", "close_quietly", "import_driver"]


def import_driver(module: str, extra: str, what: str) -> ModuleType:
    """Import a backend's driver; ``ImportError`` naming the extra to install (``retention[<extra>]``) if missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {what} online store needs the '{module}' package: pip install 'retention[{extra}]'"
        ) from exc


C = TypeVar("C")


class PerThread(Generic[C]):
    """One connection per thread (and per process: a forked child never reuses its parent's)."""

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[C] = []
        self._pid = os.getpid()
        self.closed = False

    def get(self) -> C:
        """This thread's connection, opened on first use."""
        if self.closed:
            raise RuntimeError("the online store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid():
            return conn
        return self._open()

    def _open(self) -> C:
        with self._lock:
            if os.getpid() != self._pid:
                self._pid, self._all, self._local = os.getpid(), [], threading.local()
        conn = self._connect()
        with self._lock:
            if self.closed:
                self._close(conn)
                raise RuntimeError("the online store is closed")
            self._all.append(conn)
        self._local.conn = conn
        return conn

    def discard(self) -> None:
        """Forget (and close) this thread's connection, e.g. after the server went away."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            self._close(conn)

    def close_all(self) -> None:
        """Close every thread's connection; :meth:`get` raises afterwards."""
        with self._lock:
            self.closed = True
            conns, self._all = self._all, []
        for conn in conns:
            self._close(conn)


def close_quietly(conn: Any) -> None:
    """Close ``conn``, ignoring errors (a connection to a server that went away)."""
    with contextlib.suppress(Exception):
        conn.close()
