"""PostgreSQL backend (psycopg 3): the snapshot is bulk-loaded with ``COPY`` into a staging table, which replaces
``<prefix>_features`` (``ALTER TABLE ... RENAME``) in the transaction that updates the one-row ``<prefix>_snapshot``."""

from __future__ import annotations

import datetime as dt
import re
import time
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from serving.store.base import OnlineStore, SnapshotInfo
from serving.store.connections import PerThread, close_quietly, import_driver
from serving.store.packing import pack_snapshot, request_ids, unpack_vector

__all__ = ["PREFIX_PATTERN", "PostgresStore"]

PREFIX_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,19}")
"""Table prefixes (``?prefix=``): short lower-case SQL identifiers, quoted in every statement."""


class PostgresStore(OnlineStore):
    """PostgreSQL store (psycopg 3): ``<prefix>_features`` + one-row ``<prefix>_snapshot``."""

    _SWAP_LOCK_TIMEOUT = "200ms"  # longest a read can be held up by a switch waiting for a long query
    _SWAP_PATIENCE_S = 300.0  # then the write fails (rolled back, the current snapshot stays)
    _INFO_COLUMNS = "snapshot_id, as_of, n_rows, feature_columns, written_at"

    def __init__(self, conninfo: str, prefix: str = "online_store") -> None:
        if not PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"PostgreSQL table prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
        self._pg = import_driver("psycopg", "postgres", "PostgreSQL")
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
        self._threads: PerThread[Any] = PerThread(self._connect, close_quietly)
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
        ids = request_ids(customer_ids)
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
            return info, {cid: unpack_vector(vec) for _, cid, vec in rows if cid is not None}
        raise RuntimeError("online store: snapshots are replaced faster than they can be read")

    def info(self) -> SnapshotInfo | None:
        rows = self._fetch(f'SELECT {self._INFO_COLUMNS} FROM "{self._meta}"', ())
        return self._info_from_row(rows[0]) if rows else None

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        snap = pack_snapshot(features, as_of, feature_columns)
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
