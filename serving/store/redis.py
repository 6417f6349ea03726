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
  JSON). ``?prefix=`` sets the key prefix (default ``retention``).

Guarantees, on every backend:

- a snapshot becomes visible all at once: a concurrent reader sees the previous snapshot or the new one,
  never a mix and never an empty store; the previous snapshot is deleted after the switch;
- one :meth:`~OnlineStore.read` call (any number of ids) is answered from one snapshot;
- vectors are the feature values exactly as written (packed little-endian float64, NaN/inf/-0.0 kept),
  in the order of the snapshot's ``feature_columns``.

The returned vectors are read-only views over the stored bytes (no copy); ``.copy()`` them to modify.
Stores are thread-safe (one database connection per thread for SQLite and PostgreSQL, redis-py's
connection pool for Redis). Nothing is imported or opened at import time; the PostgreSQL and Redis drivers
are imported when such a store is opened.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

DEFAULT_STORE_URL_ENV = "RETENTION_STORE_URL"
"""Environment variable holding the online store URL (see :func:`open_store`)."""

ID_COLUMN = "customer_id"
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg", "redis", "rediss")
VECTOR_DTYPE = np.dtype("<f8")

_PREFIX_PG = re.compile(r"[a-z_][a-z0-9_]{0,19}")
_PREFIX_REDIS = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SNAPSHOT_ID = re.compile(r"[0-9a-z_]{1,40}")


def default_store_url(base_dir: Path) -> str:
    """The default (SQLite) store URL for a data directory: ``sqlite:///<base_dir>/online_store.db``."""
    return f"sqlite:///{(Path(base_dir) / 'online_store.db').as_posix()}"


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
        data = json.loads(text)
        return cls(
            snapshot_id=data["snapshot_id"],
            as_of=dt.date.fromisoformat(data["as_of"]),
            rows=int(data["rows"]),
            feature_columns=tuple(data["feature_columns"]),
            written_at=dt.datetime.fromisoformat(data["written_at"]).astimezone(dt.UTC),
        )


class OnlineStore(abc.ABC):
    """Per-customer feature vectors, replaced one complete snapshot at a time (see the module docstring)."""

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


def open_store(url: str) -> OnlineStore:
    """Open the online store at ``url``: ``sqlite:///path``, ``postgresql://...`` or ``redis://...``.

    Raises ``ValueError`` for an unsupported scheme or a malformed URL, ``ImportError`` naming the extra
    to install when the backend's driver is missing.
    """
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SUPPORTED_SCHEMES:
        shown = scheme if sep else "<none>"
        raise ValueError(
            f"unsupported online store URL scheme {shown!r}; supported schemes: {', '.join(SUPPORTED_SCHEMES)}"
            " (e.g. sqlite:///data/online_store.db, postgresql://user@host:5432/db, redis://host:6379/0)"
        )
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url))
    if scheme.startswith("postgresql"):
        conninfo, prefix = _pop_prefix(url, "online_store")
        conninfo = "postgresql" + conninfo[len(scheme) :]
        if not _PREFIX_PG.fullmatch(prefix):
            raise ValueError(f"PostgreSQL table prefix {prefix!r} must match {_PREFIX_PG.pattern}")
        return PostgresStore(conninfo, prefix)
    conninfo, prefix = _pop_prefix(url, "retention")
    if not _PREFIX_REDIS.fullmatch(prefix):
        raise ValueError(f"Redis key prefix {prefix!r} must match {_PREFIX_REDIS.pattern}")
    return RedisStore(conninfo, prefix)


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


def redact_url(url: str) -> str:
    """``url`` without its password (for messages and /readyz)."""
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return url


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


# --------------------------------------------------------------------------------------------- helpers


def _sqlite_path(url: str) -> Path:
    rest = url[len("sqlite://") :]
    if "?" in rest or "#" in rest:
        raise ValueError("sqlite store URLs take no query parameters")
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        raise ValueError(
            "sqlite store URL needs a file path: sqlite:///relative/path.db or sqlite:////absolute/path.db"
            " (in-memory databases are not supported: each thread would get its own empty store)"
        )
    return Path(rest[1:])


def _pop_prefix(url: str, default: str) -> tuple[str, str]:
    """``url`` without its ``prefix`` query parameter, and that parameter (or ``default``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [value for key, value in query if key == "prefix"]
    rest = [(key, value) for key, value in query if key != "prefix"]
    return urlunsplit(parts._replace(query=urlencode(rest))), prefixes[-1] if prefixes else default


def _import_driver(module: str, extra: str, what: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {what} online store needs the '{module}' package: pip install 'retention[{extra}]'"
        ) from exc


def _check_as_of(as_of: object) -> dt.date:
    if isinstance(as_of, dt.datetime) or not isinstance(as_of, dt.date):
        raise TypeError(f"as_of must be a datetime.date, not {type(as_of).__name__}")
    return as_of


def _new_snapshot_id(now: dt.datetime) -> str:
    return f"{now:%Y%m%dt%H%M%S%f}_{secrets.token_hex(4)}"


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    """A validated snapshot ready to write: ids and their packed vectors, in the frame's order."""

    info: SnapshotInfo
    ids: list[str]
    blobs: list[bytes]


def _prepare_snapshot(features: pd.DataFrame, as_of: dt.date, feature_columns: Sequence[str]) -> _Snapshot:
    """Validate a snapshot frame and pack every row into little-endian float64 bytes."""
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
    return _Snapshot(info, ids, blobs)


def _request_ids(customer_ids: Iterable[str]) -> list[str]:
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


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=VECTOR_DTYPE)


C = TypeVar("C")


class _PerThread(Generic[C]):
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
        with self._lock:
            self.closed = True
            conns, self._all = self._all, []
        for conn in conns:
            self._close(conn)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


# ---------------------------------------------------------------------------------------------- SQLite


class SQLiteStore(OnlineStore):
    """Embedded store in one SQLite file (WAL mode); see the module docstring."""

    _BUSY_TIMEOUT_MS = 10_000
    _WRITER_BUSY_TIMEOUT_MS = 600_000

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._threads: _PerThread[sqlite3.Connection] = _PerThread(self._connect, _close_quietly)
        self._known: SnapshotInfo | None = None
        conn = self._threads.get()
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"snapshots", "current"} <= tables:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                'CREATE TABLE IF NOT EXISTS "snapshots" (snapshot_id TEXT PRIMARY KEY NOT NULL, '
                "as_of TEXT NOT NULL, n_rows INTEGER NOT NULL, feature_columns TEXT NOT NULL, "
                "written_at TEXT NOT NULL)"
            )
            conn.execute(
                'CREATE TABLE IF NOT EXISTS "current" (id INTEGER PRIMARY KEY CHECK (id = 0), '
                "snapshot_id TEXT NOT NULL)"
            )
            conn.execute("COMMIT")

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, cached_statements=256)
        conn.execute(f"PRAGMA busy_timeout = {self._BUSY_TIMEOUT_MS}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("PRAGMA mmap_size = 1073741824")
        return conn

    @staticmethod
    def _table(snapshot_id: str) -> str:
        if not _SNAPSHOT_ID.fullmatch(snapshot_id):
            raise RuntimeError(f"corrupt online store: bad snapshot id {snapshot_id!r}")
        return f"features_{snapshot_id}"

    def _load_info(self, conn: sqlite3.Connection, snapshot_id: str) -> SnapshotInfo:
        row = conn.execute(
            'SELECT as_of, n_rows, feature_columns, written_at FROM "snapshots" WHERE snapshot_id = ?',
            (snapshot_id,),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"corrupt online store: no metadata for current snapshot {snapshot_id!r}")
        return SnapshotInfo(
            snapshot_id,
            dt.date.fromisoformat(row[0]),
            int(row[1]),
            tuple(json.loads(row[2])),
            dt.datetime.fromisoformat(row[3]).astimezone(dt.UTC),
        )

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, np.ndarray]]:
        ids = _request_ids(customer_ids)
        conn = self._threads.get()
        conn.execute("BEGIN")  # one read transaction: pointer and rows come from the same database state
        try:
            row = conn.execute('SELECT snapshot_id FROM "current" WHERE id = 0').fetchone()
            if row is None:
                return None, {}
            info = self._known
            if info is None or info.snapshot_id != row[0]:
                info = self._known = self._load_info(conn, row[0])
            table = self._table(info.snapshot_id)
            if not ids:
                return info, {}
            if len(ids) == 1:
                hit = conn.execute(f'SELECT vec FROM "{table}" WHERE customer_id = ?', ids).fetchone()
                return info, ({ids[0]: _vector(hit[0])} if hit is not None else {})
            rows = conn.execute(
                f'SELECT customer_id, vec FROM "{table}" WHERE customer_id IN (SELECT value FROM json_each(?))',
                (json.dumps(ids),),
            ).fetchall()
            return info, {cid: _vector(vec) for cid, vec in rows}
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def info(self) -> SnapshotInfo | None:
        return self.read_with_info(())[0]

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        snap = _prepare_snapshot(features, as_of, feature_columns)
        info, ids, blobs = snap.info, snap.ids, snap.blobs
        order = sorted(range(len(ids)), key=ids.__getitem__)  # B-tree appends: several times faster
        table = self._table(info.snapshot_id)
        conn = self._threads.get()
        conn.execute(f"PRAGMA busy_timeout = {self._WRITER_BUSY_TIMEOUT_MS}")  # wait for another writer
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute(f"PRAGMA busy_timeout = {self._BUSY_TIMEOUT_MS}")
        try:  # create, fill and switch in one transaction: readers see all of it or nothing
            conn.execute(f'CREATE TABLE "{table}" (customer_id TEXT PRIMARY KEY NOT NULL, vec BLOB NOT NULL)')
            conn.executemany(
                f'INSERT INTO "{table}" (customer_id, vec) VALUES (?, ?)', ((ids[i], blobs[i]) for i in order)
            )
            conn.execute(
                'INSERT INTO "snapshots" (snapshot_id, as_of, n_rows, feature_columns, written_at) '
                "VALUES (?, ?, ?, ?, ?)",
                (
                    info.snapshot_id,
                    info.as_of.isoformat(),
                    info.rows,
                    json.dumps(list(info.feature_columns)),
                    info.written_at.isoformat(),
                ),
            )
            conn.execute(
                'INSERT INTO "current" (id, snapshot_id) VALUES (0, ?) '
                "ON CONFLICT (id) DO UPDATE SET snapshot_id = excluded.snapshot_id",
                (info.snapshot_id,),
            )
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise ValueError(f"snapshot rejected, nothing was written: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._known = info
        self._drop_stale(conn)
        return info

    def _drop_stale(self, conn: sqlite3.Connection) -> None:
        """Drop every snapshot table but the current one (the one just replaced, and any leftovers)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            current = conn.execute('SELECT snapshot_id FROM "current" WHERE id = 0').fetchone()
            keep = self._table(current[0]) if current is not None else None
            stale = [
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'features\\_%' ESCAPE '\\'"
                )
                if name != keep
            ]
            for name in stale:
                conn.execute(f'DROP TABLE "{name}"')
            conn.execute('DELETE FROM "snapshots" WHERE snapshot_id IS NOT ?', (current[0] if current else None,))
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # e.g. another writer holds the lock: it will clean up
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            warnings.warn(f"online store: could not drop the previous snapshot yet ({exc})", stacklevel=3)

    def close(self) -> None:
        self._threads.close_all()


# ------------------------------------------------------------------------------------------ PostgreSQL


class PostgresStore(OnlineStore):
    """PostgreSQL store (psycopg 3): ``<prefix>_features`` + one-row ``<prefix>_snapshot``."""

    _SWAP_LOCK_TIMEOUT = "200ms"  # longest a read can be held up by a switch waiting for a long query
    _SWAP_PATIENCE_S = 300.0  # then the write fails (rolled back, the current snapshot stays)
    _INFO_COLUMNS = "snapshot_id, as_of, n_rows, feature_columns, written_at"

    def __init__(self, conninfo: str, prefix: str = "online_store") -> None:
        if not _PREFIX_PG.fullmatch(prefix):
            raise ValueError(f"PostgreSQL table prefix {prefix!r} must match {_PREFIX_PG.pattern}")
        self._pg = _import_driver("psycopg", "postgres", "PostgreSQL")
        self._conninfo = conninfo
        self.prefix = prefix
        self._features = f"{prefix}_features"
        self._meta = f"{prefix}_snapshot"
        self._lock_key = zlib.crc32(f"retention.online_store:{prefix}".encode())
        self._read_sql = (
            f'SELECT m.snapshot_id, f.customer_id, f.vec FROM "{self._meta}" AS m '
            f'LEFT JOIN "{self._features}" AS f ON f.customer_id = ANY(%s::text[])'
        )
        self._known: SnapshotInfo | None = None
        self._threads: _PerThread[Any] = _PerThread(self._connect, _close_quietly)
        self._threads.get()  # fail fast on a bad URL or an unreachable server

    def __repr__(self) -> str:
        return f"PostgresStore(prefix={self.prefix!r})"

    def _connect(self) -> Any:
        return self._pg.connect(self._conninfo, autocommit=True)

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]] | None:
        """Rows of a read query on this thread's connection (None while the tables don't exist yet)."""
        for attempt in (1, 2):
            conn = self._threads.get()
            try:
                return conn.execute(sql, params, prepare=True, binary=True).fetchall()
            except self._pg.errors.UndefinedTable:
                return None
            except self._pg.OperationalError:
                if attempt == 2 or not (conn.broken or conn.closed):
                    raise
                self._threads.discard()  # server restarted or connection dropped: reconnect once
        raise AssertionError("unreachable")

    def _info_from_row(self, row: Sequence[Any]) -> SnapshotInfo:
        snapshot_id, as_of, rows, columns, written_at = row
        return SnapshotInfo(snapshot_id, as_of, int(rows), tuple(columns), written_at.astimezone(dt.UTC))

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, np.ndarray]]:
        ids = _request_ids(customer_ids)
        for _ in range(5):
            rows = self._fetch(self._read_sql, (ids,))  # one statement: pointer and rows from one snapshot
            if not rows:
                return None, {}
            info = self._known
            if info is None or info.snapshot_id != rows[0][0]:
                meta = self._fetch(
                    f'SELECT {self._INFO_COLUMNS} FROM "{self._meta}" WHERE snapshot_id = %s', (rows[0][0],)
                )
                if not meta:  # replaced in between: its metadata is gone, read again
                    continue
                info = self._known = self._info_from_row(meta[0])
            return info, {cid: _vector(vec) for _, cid, vec in rows if cid is not None}
        raise RuntimeError("online store: snapshots are replaced faster than they can be read")

    def info(self) -> SnapshotInfo | None:
        rows = self._fetch(f'SELECT {self._INFO_COLUMNS} FROM "{self._meta}"', ())
        return self._info_from_row(rows[0]) if rows else None

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        snap = _prepare_snapshot(features, as_of, feature_columns)
        info = snap.info
        staging = f"{self.prefix}_stage_{info.snapshot_id}"
        staging_pk = f"{staging}_pk"
        pg = self._pg
        try:
            with pg.connect(self._conninfo, autocommit=True) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))  # one writer at a time
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self._meta}" (k smallint PRIMARY KEY CHECK (k = 0), '
                    "snapshot_id text NOT NULL, as_of date NOT NULL, n_rows bigint NOT NULL, "
                    "feature_columns text[] NOT NULL, written_at timestamptz NOT NULL)"
                )
                conn.execute(f'CREATE TABLE "{staging}" (customer_id text COLLATE "C" NOT NULL, vec bytea NOT NULL)')
                copy_sql = f'COPY "{staging}" (customer_id, vec) FROM STDIN (FORMAT BINARY)'
                with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                    copy.set_types(["text", "bytea"])
                    for row in zip(snap.ids, snap.blobs, strict=True):
                        copy.write_row(row)
                conn.execute(f'ALTER TABLE "{staging}" ADD CONSTRAINT "{staging_pk}" PRIMARY KEY (customer_id)')
                conn.execute(f'ANALYZE "{staging}"')
                self._swap(conn, staging, staging_pk, info)
        except pg.errors.UniqueViolation as exc:
            raise ValueError(f"snapshot rejected, nothing was written: {exc}") from exc
        self._known = info
        return info

    def _swap(self, conn: Any, staging: str, staging_pk: str, info: SnapshotInfo) -> None:
        """Replace the features table by ``staging`` and update the pointer (inside the caller's transaction).

        The old table is dropped here: the exclusive lock waits for running reads (milliseconds), and reads
        arriving meanwhile queue behind it until the commit. A long query on the table (a report, a dump)
        would hold everyone up, so the lock wait is bounded by ``lock_timeout`` and the swap retried: reads
        are then delayed at most that long at a time, and the write waits for the long query to end.
        """
        pg = self._pg
        conn.execute(f"SET LOCAL lock_timeout = '{self._SWAP_LOCK_TIMEOUT}'")
        deadline = time.monotonic() + self._SWAP_PATIENCE_S
        attempt = 0
        while True:
            attempt += 1
            try:
                with conn.transaction():  # savepoint: a lock timeout does not lose the loaded table
                    conn.execute(f'DROP TABLE IF EXISTS "{self._features}"')
                    conn.execute(f'ALTER TABLE "{staging}" RENAME TO "{self._features}"')
                    conn.execute(
                        f'ALTER TABLE "{self._features}" RENAME CONSTRAINT "{staging_pk}" TO "{self._features}_pkey"'
                    )
                    conn.execute(
                        f'INSERT INTO "{self._meta}" (k, {self._INFO_COLUMNS}) VALUES (0, %s, %s, %s, %s, %s) '
                        "ON CONFLICT (k) DO UPDATE SET snapshot_id = excluded.snapshot_id, as_of = excluded.as_of, "
                        "n_rows = excluded.n_rows, feature_columns = excluded.feature_columns, "
                        "written_at = excluded.written_at",
                        (info.snapshot_id, info.as_of, info.rows, list(info.feature_columns), info.written_at),
                    )
                return
            except pg.errors.LockNotAvailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(min(0.05 * attempt, 1.0))

    def close(self) -> None:
        self._threads.close_all()


# ----------------------------------------------------------------------------------------------- Redis

# KEYS[1] = current pointer hash; ARGV[1] = "<prefix>:snap:", ARGV[2] = snapshot id the client already
# has metadata for, ARGV[3..] = customer ids. Returns {} when nothing is materialized, else
# {snapshot id, metadata JSON or false when ARGV[2] is current, value or false per id}. Atomic, so every
# value comes from the snapshot the pointer named (the value keys are derived from the pointer, hence not
# declared in KEYS: standalone Redis only, not Redis Cluster).
_READ_SCRIPT = """
local sid = redis.call('HGET', KEYS[1], 'id')
if not sid then return {} end
local meta = false
if sid ~= ARGV[2] then meta = redis.call('HGET', KEYS[1], 'meta') end
local out = {sid, meta}
local base = ARGV[1] .. sid .. ':'
local n = #ARGV
local i = 3
while i <= n do
  local j = math.min(i + 999, n)
  local keys = {}
  for k = i, j do keys[#keys + 1] = base .. ARGV[k] end
  local values = redis.call('MGET', unpack(keys))
  for k = 1, #values do out[#out + 1] = values[k] end
  i = j + 1
end
return out
"""

# Write pending (not yet published) values: ARGV[1] = TTL in ms, then key, value pairs. Each key expires unless
# the writer publishes the snapshot (see _PERSIST_SCRIPT), so a writer killed mid-way leaves nothing for long.
_PENDING_WRITE_SCRIPT = """
local ttl = ARGV[1]
for i = 2, #ARGV, 2 do redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', ttl) end
return (#ARGV - 1) / 2
"""

# Make pending values permanent before the switch: ARGV = keys. Returns how many were still there (an expired or
# swept key is missing: the snapshot must not be published then).
_PERSIST_SCRIPT = """
local n = 0
for i = 1, #ARGV do n = n + redis.call('PERSIST', ARGV[i]) end
return n
"""

# One step of deleting a snapshot: SCAN from cursor ARGV[1] for keys matching ARGV[2] (COUNT ARGV[3]) and
# UNLINK them, without shipping the keys to the client. Returns {next cursor, keys deleted}.
_DELETE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = r[2]
for i = 1, #keys, 1000 do
  redis.call('UNLINK', unpack(keys, i, math.min(i + 999, #keys)))
end
return {r[1], #keys}
"""


class RedisStore(OnlineStore):
    """Redis store: one key per customer and snapshot, a ``<prefix>:current`` pointer hash."""

    _BATCH_ROWS = 1_000  # key/value pairs per MSET
    _PIPELINE_COMMANDS = 10  # MSETs per round trip
    _DELETE_SCAN_COUNT = 2_000  # keyspace slots visited per deletion step (initially; adapts)
    _ORPHAN_AGE_S = 120  # an unpublished snapshot whose writer gave no sign of life for this long is from a crash
    _PENDING_TTL_MS = 3_600_000  # unpublished values expire after an hour, even when no later start or write sweeps

    def __init__(self, url: str, prefix: str = "retention") -> None:
        if not _PREFIX_REDIS.fullmatch(prefix):
            raise ValueError(f"Redis key prefix {prefix!r} must match {_PREFIX_REDIS.pattern}")
        self._redis_mod = _import_driver("redis", "redis", "Redis")
        self.prefix = prefix
        # a server that drops packets must not hold a request (or the start-up) for minutes; URL options win
        self._client = self._redis_mod.Redis.from_url(url, socket_connect_timeout=5)
        self._current_key = f"{prefix}:current"
        self._registry_key = f"{prefix}:snapshots"  # snapshot id -> start time of its write
        self._snap_base = f"{prefix}:snap:"
        self._read_script = self._client.register_script(_READ_SCRIPT)
        self._delete_script = self._client.register_script(_DELETE_SCRIPT)
        self._pending_script = self._client.register_script(_PENDING_WRITE_SCRIPT)
        self._persist_script = self._client.register_script(_PERSIST_SCRIPT)
        self._known: SnapshotInfo | None = None
        self._closed = False
        self._client.ping()  # fail fast on a bad URL or an unreachable server
        try:  # at start: snapshots of writers killed mid-way (kill -9 runs no cleanup) go now
            self._delete_orphans(keep=None)
        except Exception as exc:  # e.g. a read-only replica: the next write sweeps
            warnings.warn(f"online store: could not sweep unpublished snapshots yet ({exc})", stacklevel=2)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the online store is closed")

    def read_with_info(self, customer_ids: Sequence[str]) -> tuple[SnapshotInfo | None, dict[str, np.ndarray]]:
        self._check_open()
        ids = _request_ids(customer_ids)
        known = self._known
        result = self._read_script(
            keys=[self._current_key], args=[self._snap_base, known.snapshot_id if known else "", *ids]
        )
        if not result:
            return None, {}
        info = known
        if result[1] is not None:
            info = self._known = SnapshotInfo.from_json(result[1])
        assert info is not None
        return info, {cid: _vector(value) for cid, value in zip(ids, result[2:], strict=True) if value is not None}

    def info(self) -> SnapshotInfo | None:
        self._check_open()
        meta = self._client.hget(self._current_key, "meta")
        return SnapshotInfo.from_json(meta) if meta is not None else None

    def _snapshot_pattern(self, snapshot_id: str) -> str:
        if not _SNAPSHOT_ID.fullmatch(snapshot_id):
            raise RuntimeError(f"corrupt online store: bad snapshot id {snapshot_id!r}")
        return f"{self._snap_base}{snapshot_id}:*"

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        self._check_open()
        snap = _prepare_snapshot(features, as_of, feature_columns)
        info = snap.info
        sid = info.snapshot_id
        client = self._client
        self._delete_orphans(keep=None)  # before writing: what crashed writers left
        client.hset(self._registry_key, sid, str(time.time()))  # the writer's heartbeat, renewed per round trip
        try:
            base = f"{self._snap_base}{sid}:".encode()
            keys = [base + cid.encode() for cid in snap.ids]
            self._write_pending(sid, keys, snap.blobs)
            self._persist(sid, keys)
            switch = client.pipeline(transaction=True)  # MULTI/EXEC: read the old pointer and set the new
            switch.hget(self._current_key, "id")
            switch.hset(self._current_key, mapping={"id": sid, "meta": info.to_json()})
            old = switch.execute()[0]
        except BaseException:
            self._discard_unpublished(sid)
            raise
        self._known = info
        try:
            if old is not None:
                self._delete_snapshot(old.decode())
            self._delete_orphans(keep=sid)
        except Exception as exc:  # the new snapshot is live; a later write removes the leftovers
            warnings.warn(f"online store: could not delete the previous snapshot yet ({exc})", stacklevel=2)
        return info

    def _write_pending(self, snapshot_id: str, keys: list[bytes], blobs: list[bytes]) -> None:
        """Write the values with a TTL (:data:`_PENDING_WRITE_SCRIPT`), renewing the writer's heartbeat."""
        pipe = self._client.pipeline(transaction=False)
        ttl = str(self._PENDING_TTL_MS)
        for start in range(0, len(keys), self._BATCH_ROWS):
            args: list[bytes | str] = [ttl]
            stop = start + self._BATCH_ROWS
            for key, blob in zip(keys[start:stop], blobs[start:stop], strict=True):
                args.append(key)
                args.append(blob)
            self._pending_script(args=args, client=pipe)
            if len(pipe) >= self._PIPELINE_COMMANDS:
                pipe.hset(self._registry_key, snapshot_id, str(time.time()))
                pipe.execute()
        pipe.execute()

    def _persist(self, snapshot_id: str, keys: list[bytes]) -> None:
        """Make the pending values permanent; raise when some are gone (expired, or swept as a crashed write's)."""
        pipe = self._client.pipeline(transaction=False)
        kept = 0
        for start in range(0, len(keys), self._BATCH_ROWS):
            self._persist_script(args=keys[start : start + self._BATCH_ROWS], client=pipe)
            if len(pipe) >= self._PIPELINE_COMMANDS:
                kept += sum(int(n) for n in pipe.execute())
                self._client.hset(self._registry_key, snapshot_id, str(time.time()))
        kept += sum(int(n) for n in pipe.execute())
        if kept != len(keys):
            raise RuntimeError(
                f"online store: {len(keys) - kept:,} of {len(keys):,} values of snapshot {snapshot_id} expired or were"
                " swept before it could be published (the write stalled); nothing was published, write again"
            )

    def _discard_unpublished(self, snapshot_id: str) -> None:
        """After a failed write: delete its keys unless the switch did happen (e.g. reply lost)."""
        with contextlib.suppress(Exception):  # unreachable server: the orphan sweep of a later write cleans up
            current = self._client.hget(self._current_key, "id")
            if current is None or current.decode() != snapshot_id:
                self._delete_snapshot(snapshot_id)

    def _delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot's keys: SCAN + UNLINK in server-side steps that each pause Redis a few ms.

        The COUNT adapts: large where the keyspace is mostly other keys, small where most keys match
        (unlinking ~1,000 small keys takes Redis ~4 ms).
        """
        pattern = self._snapshot_pattern(snapshot_id)
        cursor: bytes | str | int = "0"
        count = self._DELETE_SCAN_COUNT
        while True:
            cursor, deleted = self._delete_script(args=[cursor, pattern, count])
            if cursor in (b"0", "0", 0):
                break
            if deleted * 20 < count:
                count = min(count * 2, 32 * self._DELETE_SCAN_COUNT)
            elif deleted > 2 * self._DELETE_SCAN_COUNT:
                count = max(count // 2, self._DELETE_SCAN_COUNT // 2)
        self._client.hdel(self._registry_key, snapshot_id)

    def _delete_orphans(self, keep: str | None) -> None:
        """Delete snapshots left by crashed writers: never published, no heartbeat for ``_ORPHAN_AGE_S``."""
        current = self._client.hget(self._current_key, "id")
        current_id = current.decode() if current is not None else None
        cutoff = time.time() - self._ORPHAN_AGE_S
        for raw_id, started in self._client.hgetall(self._registry_key).items():
            snapshot_id = raw_id.decode()
            if snapshot_id not in (keep, current_id) and float(started) < cutoff:
                self._delete_snapshot(snapshot_id)

    def close(self) -> None:
        self._closed = True
        self._client.close()
