"""Redis backend: one key per customer and snapshot, ``<prefix>:snap:<snapshot id>:<customer id>``, and a
``<prefix>:current`` pointer hash (snapshot id + metadata JSON).

A write stores the values with a TTL (unpublished values expire on their own), then publishes in one atomic step
(MULTI/EXEC): the TTLs are removed and the pointer set together, or neither happens. A writer killed at any point
before that step (``kill -9`` runs no cleanup) leaves only values that expire; a ``<prefix>:snapshots`` registry of
writes in progress with their heartbeats lets the next store client start (or write) delete them sooner.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import time
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from serving.store.base import OnlineStore, SnapshotInfo
from serving.store.connections import import_driver
from serving.store.packing import checked_snapshot_id, pack_snapshot, request_ids, unpack_vector

__all__ = ["PREFIX_PATTERN", "RedisStore"]

PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
"""Key prefixes (``?prefix=``): no glob characters, since snapshots are deleted by ``SCAN MATCH``."""

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
# the writer publishes the snapshot (see _PUBLISH_* below), so a writer killed mid-way leaves nothing for long.
_PENDING_WRITE_SCRIPT = """
local ttl = ARGV[1]
for i = 2, #ARGV, 2 do redis.call('SET', ARGV[i], ARGV[i + 1], 'PX', ttl) end
return (#ARGV - 1) / 2
"""

# Publishing is one MULTI/EXEC transaction (atomic, and discarded by the server if the writer dies before EXEC) of
# scripts over at most _BATCH_ROWS keys each, so no single script runs long enough to make Redis answer BUSY:
# 1. _PUBLISH_PERSIST_SCRIPT per batch: KEYS[1] = tally key, ARGV = value keys; removes their TTL and adds to the
#    tally how many were there (an expired or swept key is missing);
# 2. _PUBLISH_SWITCH_SCRIPT: KEYS[1] = current pointer hash, KEYS[2] = tally key, ARGV[1] = snapshot id, ARGV[2] =
#    metadata JSON, ARGV[3] = number of values; when all were there, points readers at the snapshot and returns
#    {1, previous snapshot id or false}, else returns {0, number missing} and changes nothing;
# 3. _PUBLISH_UNDO_SCRIPT per batch: KEYS[1] = current pointer hash, ARGV[1] = snapshot id, ARGV[2] = TTL in ms,
#    ARGV[3..] = value keys; when the snapshot was not published, gives its values their TTL back.
# Either the snapshot is live with permanent values, or every one of its values still expires.
_PUBLISH_PERSIST_SCRIPT = """
local kept = 0
for i = 1, #ARGV do kept = kept + redis.call('PERSIST', ARGV[i]) end
return redis.call('INCRBY', KEYS[1], kept)
"""

_PUBLISH_SWITCH_SCRIPT = """
local kept = tonumber(redis.call('GET', KEYS[2]) or '0')
local expected = tonumber(ARGV[3])
if kept ~= expected then return {0, expected - kept} end
local old = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'meta', ARGV[2])
return {1, old}
"""

_PUBLISH_UNDO_SCRIPT = """
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('PEXPIRE', ARGV[i], ARGV[2]) end
return #ARGV - 2
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
        if not PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"Redis key prefix {prefix!r} must match {PREFIX_PATTERN.pattern}")
        self._redis_mod = import_driver("redis", "redis", "Redis")
        self.prefix = prefix
        # a server that drops packets must not hold a request (or the start-up) for minutes; URL options win
        self._client = self._redis_mod.Redis.from_url(url, socket_connect_timeout=5)
        self._current_key = f"{prefix}:current"
        self._registry_key = f"{prefix}:snapshots"  # snapshot id -> start time of its write
        self._snap_base = f"{prefix}:snap:"
        self._read_script = self._client.register_script(_READ_SCRIPT)
        self._delete_script = self._client.register_script(_DELETE_SCRIPT)
        self._pending_script = self._client.register_script(_PENDING_WRITE_SCRIPT)
        self._publish_persist_script = self._client.register_script(_PUBLISH_PERSIST_SCRIPT)
        self._publish_switch_script = self._client.register_script(_PUBLISH_SWITCH_SCRIPT)
        self._publish_undo_script = self._client.register_script(_PUBLISH_UNDO_SCRIPT)
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
        ids = request_ids(customer_ids)
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
        values = zip(ids, result[2:], strict=True)
        return info, {cid: unpack_vector(value) for cid, value in values if value is not None}

    def info(self) -> SnapshotInfo | None:
        self._check_open()
        meta = self._client.hget(self._current_key, "meta")
        return SnapshotInfo.from_json(meta) if meta is not None else None

    def _snapshot_pattern(self, snapshot_id: str) -> str:
        return f"{self._snap_base}{checked_snapshot_id(snapshot_id)}:*"

    def write_snapshot(self, features: pd.DataFrame, *, as_of: dt.date, feature_columns: Sequence[str]) -> SnapshotInfo:
        self._check_open()
        snap = pack_snapshot(features, as_of, feature_columns)
        info = snap.info
        sid = info.snapshot_id
        client = self._client
        self._delete_orphans(keep=None)  # before writing: what crashed writers left
        client.hset(self._registry_key, sid, str(time.time()))  # the writer's heartbeat, renewed per round trip
        try:
            base = f"{self._snap_base}{sid}:".encode()
            keys = [base + cid.encode() for cid in snap.ids]
            self._write_pending(sid, keys, snap.blobs)
            old = self._publish(info, keys)
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

    def _publish(self, info: SnapshotInfo, keys: list[bytes]) -> bytes | None:
        """Make the pending values permanent and point readers at the snapshot, in one atomic step (MULTI/EXEC of
        the ``_PUBLISH_*`` scripts); returns the previous snapshot id (None if there was none).

        Raises RuntimeError, publishing nothing and leaving every value expiring, when some values are gone
        (expired, or swept as a crashed write's because the writer stalled).
        """
        sid = info.snapshot_id
        tally = f"{self.prefix}:publishing:{sid}"
        batches = [keys[start : start + self._BATCH_ROWS] for start in range(0, len(keys), self._BATCH_ROWS)]
        ttl = str(self._PENDING_TTL_MS)
        tx = self._client.pipeline(transaction=True)
        tx.hset(self._registry_key, sid, str(time.time()))  # a last heartbeat: the sweep leaves the values alone
        tx.delete(tally)
        for batch in batches:
            self._publish_persist_script(keys=[tally], args=batch, client=tx)
        self._publish_switch_script(keys=[self._current_key, tally], args=[sid, info.to_json(), len(keys)], client=tx)
        for batch in batches:
            self._publish_undo_script(keys=[self._current_key], args=[sid, ttl, *batch], client=tx)
        tx.delete(tally)
        published, detail = tx.execute()[2 + len(batches)]
        if not published:
            raise RuntimeError(
                f"online store: {int(detail):,} of {len(keys):,} values of snapshot {sid} expired or were swept"
                " before it could be published (the write stalled); nothing was published, write again"
            )
        return detail

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
