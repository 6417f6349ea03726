"""SQLite backend: one file in WAL mode (readers never wait for the writer), a ``features_<snapshot id>`` table per
snapshot, a ``snapshots`` metadata table and a one-row ``current`` pointer, switched in the writing transaction."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from serving.store.base import OnlineStore, SnapshotInfo
from serving.store.connections import PerThread, close_quietly
from serving.store.packing import checked_snapshot_id, pack_snapshot, request_ids, unpack_vector

__all__ = ["SQLiteStore"]


class SQLiteStore(OnlineStore):
    """Embedded store in one SQLite file (WAL mode); see :mod:`serving.store`."""

    _BUSY_TIMEOUT_MS = 10_000
    _WRITER_BUSY_TIMEOUT_MS = 600_000

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._threads: PerThread[sqlite3.Connection] = PerThread(self._connect, close_quietly)
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
        return f"features_{checked_snapshot_id(snapshot_id)}"

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
        ids = request_ids(customer_ids)
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
                return info, ({ids[0]: unpack_vector(hit[0])} if hit is not None else {})
            rows = conn.execute(
                f'SELECT customer_id, vec FROM "{table}" WHERE customer_id IN (SELECT value FROM json_each(?))',
                (json.dumps(ids),),
            ).fetchall()
            return info, {cid: unpack_vector(vec) for cid, vec in rows}
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def info(self) -> SnapshotInfo | None:
        return self.read_with_info(())[0]

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        snap = pack_snapshot(features, as_of, feature_columns)
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
