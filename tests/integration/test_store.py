"""The online feature store (serving.store) against real SQLite, PostgreSQL and Redis backends."""

from __future__ import annotations

import datetime as dt
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_util import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from serving.store import (
    DEFAULT_STORE_URL_ENV,
    OnlineStore,
    SnapshotInfo,
    default_store_url,
    open_store,
)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]
DAY0 = dt.date(2024, 1, 1)


# -------------------------------------------------------------------------------------------- fixtures


def _drop_postgres_tables(base_url: str, prefix: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE %s",
            (prefix.replace("_", r"\_") + r"\_%",),
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def _delete_redis_keys(base_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(base_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
        for start in range(0, len(keys), 10_000):
            client.unlink(*keys[start : start + 10_000])
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store location per test (own file / table prefix / key prefix), cleaned up after."""
    tag = uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/store_{tag}.db"
    elif request.param == "postgres":
        base = request.getfixturevalue("postgres_url")
        prefix = f"t_{tag}"
        yield f"{base}?prefix={prefix}"
        _drop_postgres_tables(base, prefix)
    else:
        base = request.getfixturevalue("redis_url")
        prefix = f"test:store:{tag}"
        yield f"{base}?prefix={prefix}"
        _delete_redis_keys(base, prefix)


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    opened = open_store(store_url)
    yield opened
    opened.close()


def _physical_snapshots(url: str) -> set[str]:
    """Which snapshots have data in the backend (snapshot ids; for PostgreSQL the data table names)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'features%'")
            return {name.removeprefix("features_") for (name,) in rows}
    base, _, prefix = url.partition("?prefix=")
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(base) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s AND tablename NOT LIKE %s",
                (prefix.replace("_", r"\_") + r"\_%", "%snapshot"),
            ).fetchall()
            return {name for (name,) in rows}
    import redis

    client = redis.Redis.from_url(base)
    try:
        keys = client.scan_iter(match=f"{prefix}:snap:*", count=10_000)
        return {key.decode()[len(prefix) + len(":snap:") :].split(":", 1)[0] for key in keys}
    finally:
        client.close()


def _frame(ids: list[str], values: np.ndarray, columns: list[str], id_dtype: str = "object") -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=columns)
    frame.insert(0, "customer_id", pd.Series(ids, dtype=id_dtype))
    return frame


def _same_bits(got: np.ndarray, expected: np.ndarray) -> bool:
    return got.dtype == np.float64 and got.shape == expected.shape and got.tobytes() == expected.tobytes()


# ------------------------------------------------------------------------------------------ behaviour


def test_empty_store(store: OnlineStore) -> None:
    assert store.info() is None
    assert store.feature_columns() == ()
    assert store.read(["00042"]) == {}
    assert store.read_with_info(["00042", "x"]) == (None, {})


def test_round_trip_exact_values_and_opaque_ids(store: OnlineStore) -> None:
    ids = ["00042", "0042", "42", "a:b:c", "é客户", " spaced ", "*", ""]
    values = np.array(
        [
            [1.0, np.nan, -0.0],
            [np.inf, -np.inf, 5e-324],
            [1.7976931348623157e308, -2.2250738585072014e-308, 0.1],
            [np.nan, np.nan, np.nan],
            [1 / 3, -1 / 7, 1e-300],
            [0.0, 1.0, 2.0],
            [3.0, 4.0, 5.0],
            [6.0, 7.0, 8.0],
        ]
    )
    frame = _frame(ids, values, ["c", "a", "b"], id_dtype="str")  # pandas' string dtype
    frame["extra_not_a_feature"] = "ignored"
    # the vector order follows feature_columns, not the frame's column order
    store.write_snapshot(frame, as_of=DAY0, feature_columns=["b", "c", "a"])
    expected = values[:, [2, 0, 1]]
    got = store.read([*ids, "00042"])  # a repeated id is answered once
    assert set(got) == set(ids)
    for i, cid in enumerate(ids):
        assert _same_bits(got[cid], expected[i]), cid
    assert store.feature_columns() == ("b", "c", "a")
    single = store.read(["0042"])
    assert list(single) == ["0042"] and _same_bits(single["0042"], expected[1])


def test_unknown_ids_are_absent(store: OnlineStore) -> None:
    store.write_snapshot(_frame(["1", "2"], np.ones((2, 2)), ["f", "g"]), as_of=DAY0, feature_columns=["f", "g"])
    assert store.read(["3"]) == {}
    assert store.read([]) == {}
    assert set(store.read(["3", "1", "01", "2 ", "2"])) == {"1", "2"}
    assert store.read(["bad\x00id"]) == {}


def test_info_metadata(store: OnlineStore) -> None:
    before = dt.datetime.now(dt.UTC)
    written = store.write_snapshot(
        _frame(["a", "b", "c"], np.zeros((3, 2)), ["x", "y"]), as_of=dt.date(2024, 5, 31), feature_columns=("y", "x")
    )
    after = dt.datetime.now(dt.UTC)
    info = store.info()
    assert isinstance(info, SnapshotInfo)
    assert info == written
    assert info.as_of == dt.date(2024, 5, 31) and type(info.as_of) is dt.date
    assert info.rows == 3
    assert info.feature_columns == ("y", "x")
    assert info.written_at.tzinfo is not None and info.written_at.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= info.written_at <= after + dt.timedelta(seconds=1)
    assert isinstance(info.snapshot_id, str) and info.snapshot_id
    read_info, vectors = store.read_with_info(["a", "zz"])
    assert read_info == info and set(vectors) == {"a"}


def test_second_snapshot_replaces_the_first(store_url: str, store: OnlineStore) -> None:
    first = store.write_snapshot(
        _frame(["old1", "both"], np.full((2, 2), 1.0), ["f", "g"]), as_of=DAY0, feature_columns=["f", "g"]
    )
    other = open_store(store_url)  # e.g. the service process, while the materialize job writes
    try:
        assert other.info() == first
        second = store.write_snapshot(
            _frame(["both", "new1"], np.array([[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]), ["h", "f", "g"]),
            as_of=DAY0 + dt.timedelta(days=7),
            feature_columns=["h", "f", "g"],
        )
        assert second.snapshot_id != first.snapshot_id
        for reader in (store, other):
            assert reader.info() == second
            assert reader.feature_columns() == ("h", "f", "g")
            got = reader.read(["old1", "both", "new1"])
            assert set(got) == {"both", "new1"}
            np.testing.assert_array_equal(got["both"], [2.0, 3.0, 4.0])
    finally:
        other.close()
    assert len(_physical_snapshots(store_url)) == 1  # the old snapshot is gone


def test_duplicate_ids_rejected_and_previous_snapshot_intact(store_url: str, store: OnlineStore) -> None:
    good = store.write_snapshot(_frame(["a", "b"], np.eye(2), ["f", "g"]), as_of=DAY0, feature_columns=["f", "g"])
    duplicated = _frame(["x", "00042", "y", "00042"], np.ones((4, 2)), ["f", "g"])
    with pytest.raises(ValueError, match=r"more than once.*00042"):
        store.write_snapshot(duplicated, as_of=DAY0 + dt.timedelta(days=1), feature_columns=["f", "g"])
    assert store.info() == good
    got = store.read(["a", "b", "x"])
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["b"], [0.0, 1.0])
    assert len(_physical_snapshots(store_url)) == 1


@pytest.mark.parametrize(
    ("frame", "columns", "error", "match"),
    [
        (pd.DataFrame({"customer_id": [42, 43], "f": [1.0, 2.0]}), ["f"], TypeError, "must be str"),
        (pd.DataFrame({"customer_id": ["1", None], "f": [1.0, 2.0]}), ["f"], TypeError, "must be str"),
        (pd.DataFrame({"id": ["1"], "f": [1.0]}), ["f"], ValueError, "no column"),
        (pd.DataFrame({"customer_id": ["1"], "f": [1.0]}), ["g"], ValueError, "no column"),
        (pd.DataFrame({"customer_id": pd.Series([], dtype=object), "f": []}), ["f"], ValueError, "empty"),
        (pd.DataFrame({"customer_id": ["1"], "f": ["1.5"]}), ["f"], ValueError, "numeric"),
        (pd.DataFrame({"customer_id": ["1"], "f": [1.0]}), [], ValueError, "empty"),
        (pd.DataFrame({"customer_id": ["1"], "f": [1.0]}), ["f", "f"], ValueError, "duplicates"),
        (pd.DataFrame({"customer_id": ["1"], "f": [1.0]}), "f", TypeError, "not one string"),
        (pd.DataFrame({"customer_id": ["a\x00"], "f": [1.0]}), ["f"], ValueError, "NUL"),
    ],
)
def test_invalid_snapshots_rejected(
    tmp_path: Path, frame: pd.DataFrame, columns: object, error: type[Exception], match: str
) -> None:
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        store.write_snapshot(pd.DataFrame({"customer_id": ["keep"], "f": [1.0]}), as_of=DAY0, feature_columns=["f"])
        with pytest.raises(error, match=match):
            store.write_snapshot(frame, as_of=DAY0, feature_columns=columns)
        assert set(store.read(["keep", "1"])) == {"keep"}


def test_read_argument_and_as_of_checks(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        frame = pd.DataFrame({"customer_id": ["00042"], "f": [1.0]})
        with pytest.raises(TypeError, match=r"datetime\.date"):
            store.write_snapshot(frame, as_of=dt.datetime(2024, 1, 1), feature_columns=["f"])  # type: ignore[arg-type]
        store.write_snapshot(frame, as_of=DAY0, feature_columns=["f"])
        with pytest.raises(TypeError, match="not one string"):
            store.read("00042")
        with pytest.raises(TypeError, match="must be str"):
            store.read([42])  # type: ignore[list-item]
        # nullable and bool feature columns are accepted, pd.NA becomes NaN
        nullable = pd.DataFrame(
            {
                "customer_id": ["a", "b"],
                "f": pd.array([1.5, None], dtype="Float64"),
                "g": pd.array([1, None], dtype="Int64"),
                "h": [True, False],
            }
        )
        store.write_snapshot(nullable, as_of=DAY0, feature_columns=["f", "g", "h"])
        got = store.read(["a", "b"])
        np.testing.assert_array_equal(got["a"], [1.5, 1.0, 1.0])
        np.testing.assert_array_equal(got["b"], [np.nan, np.nan, 0.0])
    with pytest.raises(RuntimeError, match="closed"):
        store.read(["a"])


def test_atomic_switch_under_concurrent_reads(store_url: str) -> None:
    """Readers hammering multi-id reads while snapshots are replaced never see a mix or an empty store.

    Snapshot ``k`` holds the shared ids plus ``only-k``; every value of every vector equals ``k`` except
    column 1 (the row number), and its ``as_of`` is DAY0 + k days.
    """
    shared = [f"{i:05d}" for i in range(2_000)]
    columns = ["k", "row", "k2", "k3"]

    def snapshot(k: int) -> pd.DataFrame:
        ids = [*shared, f"only-{k}"]
        values = np.full((len(ids), len(columns)), float(k))
        values[:, 1] = np.arange(len(ids))
        return _frame(ids, values, columns)

    writer = open_store(store_url)
    reader = open_store(store_url)
    writer.write_snapshot(snapshot(0), as_of=DAY0, feature_columns=columns)
    stop = threading.Event()
    errors: list[str] = []
    seen: list[int] = []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        last = 0
        try:
            while not stop.is_set():
                probe = rng.sample(shared, 25)
                extra = [f"only-{last}", f"only-{last + 1}", f"only-{last + 2}"]
                info, got = reader.read_with_info(probe + extra)
                if not got or info is None:
                    errors.append(f"empty read after snapshot {last}")
                    return
                ks = {float(vec[0]) for vec in got.values()} | {float(vec[2]) for vec in got.values()}
                if len(ks) != 1:
                    errors.append(f"mixed snapshots {sorted(ks)} in one read")
                    return
                k = int(ks.pop())
                expected = {*probe, f"only-{k}"} & {*probe, *extra}
                if set(got) != expected or info.as_of != DAY0 + dt.timedelta(days=k) or k < last:
                    errors.append(f"snapshot {k} (after {last}): ids {sorted(set(got) ^ expected)}, {info}")
                    return
                if any(vec[1] != int(cid) for cid, vec in got.items() if not cid.startswith("only")):
                    errors.append(f"wrong row values in snapshot {k}")
                    return
                plain = reader.read(probe[:5])
                if len(plain) != 5 or len({float(vec[0]) for vec in plain.values()}) != 1:
                    errors.append("plain read not from one snapshot")
                    return
                seen.append(k)
                last = k
        except Exception as exc:  # report in the main thread
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    try:
        for k in range(1, 9):
            writer.write_snapshot(snapshot(k), as_of=DAY0 + dt.timedelta(days=k), feature_columns=columns)
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        reader.close()
        writer.close()
    assert not errors, errors[:5]
    assert len(seen) > 20 and len(set(seen)) >= 3, f"readers saw too little: {len(seen)} reads of {set(seen)}"
    assert len(_physical_snapshots(store_url)) == 1


def test_reads_from_a_thread_pool(store: OnlineStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [str(i) for i in range(200)]
    store.write_snapshot(
        _frame(ids, np.arange(400.0).reshape(200, 2), ["f", "g"]), as_of=DAY0, feature_columns=["f", "g"]
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda cid: store.read([cid]), ids))
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got[str(i)], [2.0 * i, 2.0 * i + 1])


def test_bulk_write_of_100k_customers(store: OnlineStore) -> None:
    n, k = 100_000, 40
    rng = np.random.default_rng(7)
    values = rng.normal(size=(n, k))
    values[rng.random((n, k)) < 0.05] = np.nan
    ids = [f"C{i:09d}" for i in rng.permutation(n)]
    columns = [f"feature_{j:02d}" for j in range(k)]
    frame = _frame(ids, values, columns)
    info = store.write_snapshot(frame, as_of=DAY0, feature_columns=columns)
    assert info.rows == n
    probe = [ids[0], ids[n // 2], ids[-1]]
    got = store.read(probe)
    for cid, row in zip(probe, (0, n // 2, n - 1), strict=True):
        assert _same_bits(got[cid], values[row])


# ------------------------------------------------------------------------------------------ properties

_id_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
_column_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=8)


@st.composite
def _snapshots(draw: st.DrawFn) -> tuple[list[str], list[str], np.ndarray]:
    ids = draw(st.lists(_id_text, min_size=1, max_size=25, unique=True))
    columns = draw(st.lists(_column_text.filter(lambda c: c != "customer_id"), min_size=1, max_size=5, unique=True))
    values = draw(arrays(np.float64, (len(ids), len(columns)), elements=st.floats(width=64)))
    return ids, columns, values


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(snap=_snapshots())
def test_write_then_read_returns_exactly_what_was_written(
    store: OnlineStore, snap: tuple[list[str], list[str], np.ndarray]
) -> None:
    ids, columns, values = snap
    info = store.write_snapshot(_frame(ids, values, columns), as_of=DAY0, feature_columns=columns)
    assert info.rows == len(ids) and info.feature_columns == tuple(columns)
    got_info, got = store.read_with_info([*ids, "\uffffnot-there"])
    assert got_info == info
    assert set(got) == set(ids)
    for i, cid in enumerate(ids):
        assert _same_bits(got[cid], values[i]), (cid, got[cid], values[i])


# ------------------------------------------------------------------------------------- URLs and imports


@pytest.mark.parametrize("url", ["mysql://host/db", "memcached://x", "s3://bucket/key", "no-scheme.db"])
def test_unsupported_scheme_is_named(url: str) -> None:
    with pytest.raises(ValueError, match="supported schemes: sqlite, postgresql, postgresql\\+psycopg, redis") as exc:
        open_store(url)
    scheme = url.partition("://")[0] if "://" in url else "<none>"
    assert repr(scheme) in str(exc.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro"])
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite"):
        open_store(url)


def test_bad_prefixes() -> None:
    with pytest.raises(ValueError, match="prefix"):
        open_store("postgresql://postgres@127.0.0.1:5432/test?prefix=Bad-Prefix")
    with pytest.raises(ValueError, match="prefix"):
        open_store("redis://127.0.0.1:6379/0?prefix=bad*glob")


def test_default_store_url(tmp_path: Path) -> None:
    assert DEFAULT_STORE_URL_ENV == "RETENTION_STORE_URL"
    assert default_store_url(Path("/data/retention")) == "sqlite:////data/retention/online_store.db"
    url = default_store_url(tmp_path / "new")
    with open_store(url) as store:
        assert store.info() is None
    assert (tmp_path / "new" / "online_store.db").exists()


def test_import_needs_no_optional_driver() -> None:
    code = (
        "import sys, serving.store\n"
        "bad = {'psycopg', 'redis'} & set(sys.modules)\n"
        "assert not bad, bad\n"
        "serving.store.open_store\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql://postgres@127.0.0.1:5432/test", "retention[postgres]"),
        ("psycopg", "postgresql+psycopg://postgres@127.0.0.1:5432/test", "retention[postgres]"),
        ("redis", "redis://127.0.0.1:6379/0", "retention[redis]"),
    ],
)
def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str, url: str, extra: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        open_store(url)


# ------------------------------------------------------------------------------------ backend specifics


@pytest.mark.redis
def test_redis_write_sweeps_snapshots_of_crashed_writers(redis_url: str) -> None:
    import redis

    prefix = f"test:store:{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    store = open_store(f"{redis_url}?prefix={prefix}")
    try:
        # a writer that died two hours ago, after writing some keys but before the switch
        client.hset(f"{prefix}:snapshots", "20000101t000000000000_deadbeef", str(time.time() - 7_200))
        client.mset({f"{prefix}:snap:20000101t000000000000_deadbeef:{i}": b"x" for i in range(50)})
        # a writer that is still running (started a minute ago): must be left alone
        client.hset(f"{prefix}:snapshots", "20000101t000000000000_0000beef", str(time.time() - 60))
        client.set(f"{prefix}:snap:20000101t000000000000_0000beef:1", b"y")
        info = store.write_snapshot(_frame(["1"], np.ones((1, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        assert _physical_snapshots(f"{redis_url}?prefix={prefix}") == {
            info.snapshot_id,
            "20000101t000000000000_0000beef",
        }
        assert set(client.hkeys(f"{prefix}:snapshots")) == {
            info.snapshot_id.encode(),
            b"20000101t000000000000_0000beef",
        }
    finally:
        store.close()
        client.close()
        _delete_redis_keys(redis_url, prefix)


@pytest.mark.postgres
def test_postgres_switch_waits_for_a_long_reader_and_retries(postgres_url: str) -> None:
    """A long query holding the features table delays the switch until it ends; meanwhile reads go on (the switch
    does not queue its lock request in front of them). Order of events, not durations: the switch returns only
    after the long query was released, and reads complete while the switch is waiting."""
    import psycopg

    prefix = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_url}?prefix={prefix}"
    store = open_store(url)
    reader = open_store(url)
    stop = threading.Event()
    switching, released = threading.Event(), threading.Event()
    reads_while_waiting = 0

    def read_loop() -> None:
        nonlocal reads_while_waiting
        while not stop.is_set():
            assert reader.read(["1", "2"])
            if switching.is_set() and not released.is_set():
                reads_while_waiting += 1
            time.sleep(0.005)

    try:
        store.write_snapshot(_frame(["1"], np.ones((1, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        with psycopg.connect(postgres_url) as long_reader:  # holds ACCESS SHARE until it ends its transaction

            def release() -> None:
                released.set()  # before the rollback: a switch that returns has seen it
                long_reader.rollback()

            long_reader.execute(f'SELECT count(*) FROM "{prefix}_features"').fetchone()
            timer = threading.Timer(2.5, release)
            thread = threading.Thread(target=read_loop)
            thread.start()
            switching.set()
            timer.start()
            info = store.write_snapshot(
                _frame(["2"], np.full((1, 1), 2.0), ["f"]), as_of=DAY0 + dt.timedelta(days=1), feature_columns=["f"]
            )
            switched_after_release = released.is_set()
            timer.join()
            stop.set()
            thread.join()
        assert switched_after_release  # it waited for the long query
        assert store.info() == info and set(store.read(["1", "2"])) == {"2"}
        assert reads_while_waiting > 5  # a reader queued behind the switch would complete at most one
    finally:
        stop.set()
        reader.close()
        store.close()
        _drop_postgres_tables(postgres_url, prefix)


# ------------------------------------------------------------------------------ crashes and unreachable servers


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_writer_killed_mid_write_leaves_expiring_values_swept_at_next_start(redis_url: str) -> None:
    """kill -9 runs no cleanup: what it leaves has a TTL, and the next start (or write) sweeps it."""
    import redis

    from serving.store import RedisStore

    prefix = f"test:store:{uuid.uuid4().hex[:12]}"
    url = f"{redis_url}?prefix={prefix}"
    client = redis.Redis.from_url(redis_url)
    try:
        crashed = open_store(url)
        assert isinstance(crashed, RedisStore)
        sid = "20240101t000000000000_deadbeef"
        keys = [f"{prefix}:snap:{sid}:{i}".encode() for i in range(1_500)]
        client.hset(f"{prefix}:snapshots", sid, str(time.time() - 300))  # last heartbeat five minutes ago
        crashed._write_pending(sid, keys, [b"x" * 8] * len(keys))  # the values, then the process dies
        ttl = client.pttl(keys[0])
        assert 0 < ttl <= RedisStore._PENDING_TTL_MS
        assert client.pttl(keys[-1]) > 0
        assert _physical_snapshots(url) == {sid}
        reopened = open_store(url)  # the next start
        assert _physical_snapshots(url) == set()
        assert client.hkeys(f"{prefix}:snapshots") == []
        info = reopened.write_snapshot(_frame(["1", "2"], np.ones((2, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        assert client.pttl(f"{prefix}:snap:{info.snapshot_id}:1") == -1  # published values are permanent
        assert set(reopened.read(["1", "2"])) == {"1", "2"}
        reopened.close()
        crashed.close()
    finally:
        client.close()
        _delete_redis_keys(redis_url, prefix)


def _ttls(client: object, prefix: str, snapshot_id: str) -> list[int]:
    """The remaining time to live (ms; -1 = never expires) of every value key of one snapshot."""
    keys = list(client.scan_iter(match=f"{prefix}:snap:{snapshot_id}:*", count=10_000))  # type: ignore[attr-defined]
    return [client.pttl(key) for key in keys]  # type: ignore[attr-defined]


def test_redis_write_refuses_to_publish_a_snapshot_whose_values_vanished(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer stalled past the sweep (a value deleted as a crashed write's) fails; nothing half is published, and
    the values it did write still expire (the atomic publish step gives them their TTL back)."""
    import redis

    from serving.store import RedisStore

    prefix = f"test:store:{uuid.uuid4().hex[:12]}"
    store = open_store(f"{redis_url}?prefix={prefix}")
    assert isinstance(store, RedisStore)
    client = redis.Redis.from_url(redis_url)
    try:
        first = store.write_snapshot(_frame(["1"], np.ones((1, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        monkeypatch.setattr(store, "_discard_unpublished", lambda snapshot_id: None)  # see what the publish left
        write_pending = store._write_pending
        seen: list[str] = []

        def pending_then_swept(sid: str, keys: list[bytes], blobs: list[bytes]) -> None:
            write_pending(sid, keys, blobs)
            seen.append(sid)
            client.delete(keys[0])

        monkeypatch.setattr(store, "_write_pending", pending_then_swept)
        n = 2_500  # more values than one publish batch
        ids = [str(i) for i in range(n)]
        with pytest.raises(RuntimeError, match=rf"1 of {n:,} values of snapshot .* nothing was published"):
            store.write_snapshot(_frame(ids, np.zeros((n, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        assert store.info() == first
        assert set(store.read(ids)) == {"1"} and store.read(["1"])["1"][0] == 1.0
        ttls = _ttls(client, prefix, seen[0])
        assert len(ttls) == n - 1
        assert all(0 < ttl <= RedisStore._PENDING_TTL_MS for ttl in ttls)
        assert client.exists(f"{prefix}:publishing:{seen[0]}") == 0
    finally:
        store.close()
        client.close()
        _delete_redis_keys(redis_url, prefix)


def test_redis_write_interrupted_before_publishing_leaves_only_expiring_values(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right before the publish step (no cleanup), every value of the unpublished snapshot has a TTL."""
    import redis

    from serving.store import RedisStore

    prefix = f"test:store:{uuid.uuid4().hex[:12]}"
    store = open_store(f"{redis_url}?prefix={prefix}")
    assert isinstance(store, RedisStore)
    client = redis.Redis.from_url(redis_url)
    try:
        first = store.write_snapshot(_frame(["1"], np.ones((1, 1)), ["f"]), as_of=DAY0, feature_columns=["f"])
        monkeypatch.setattr(store, "_discard_unpublished", lambda snapshot_id: None)  # kill -9 runs no cleanup
        seen: list[str] = []

        def killed(info: SnapshotInfo, keys: list[bytes]) -> bytes | None:
            seen.append(info.snapshot_id)
            raise KeyboardInterrupt  # the process dies here: the publish transaction is never sent

        monkeypatch.setattr(store, "_publish", killed)
        n = 2_500
        with pytest.raises(KeyboardInterrupt):
            store.write_snapshot(
                _frame([str(i) for i in range(n)], np.zeros((n, 1)), ["f"]), as_of=DAY0, feature_columns=["f"]
            )
        assert store.info() == first
        ttls = _ttls(client, prefix, seen[0])
        assert len(ttls) == n
        assert all(0 < ttl <= RedisStore._PENDING_TTL_MS for ttl in ttls)
        assert _ttls(client, prefix, first.snapshot_id) == [-1]  # the published snapshot's values stay
    finally:
        store.close()
        client.close()
        _delete_redis_keys(redis_url, prefix)


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_unreachable_store_opens_and_names_itself(scheme: str) -> None:
    from serving.store import ResilientStore, StoreUnavailable

    port = _free_port()  # nothing listens there
    url = f"redis://127.0.0.1:{port}/0" if scheme == "redis" else f"postgresql://u:secret@127.0.0.1:{port}/test"
    store = ResilientStore(url, retry_s=60)
    shown = url.replace(":secret@", ":***@")
    with pytest.raises(StoreUnavailable, match=f"^the online store {re.escape(shown)} is unavailable"):
        store.read(["1"])
    health = store.health()
    assert health["store"] == shown and health["available"] is False and health["error"]
    assert "secret" not in str(health)
    store.close()


def test_resilient_store_still_refuses_a_bad_url() -> None:
    from serving.store import ResilientStore

    with pytest.raises(ValueError, match="unsupported online store URL scheme"):
        ResilientStore("mysql://127.0.0.1/x")


def test_resilient_store_reconnects_when_the_server_comes_back(tmp_path: Path) -> None:
    """Down at start, up, down again, up again: reads follow the server (a redis-server this test starts and stops)."""
    from serving.store import ResilientStore, StoreUnavailable

    port = _free_port()
    store = ResilientStore(f"redis://127.0.0.1:{port}/0", retry_s=0.0)
    assert store.health()["available"] is False

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not store.health()["available"]:
            assert time.monotonic() < deadline, "redis-server did not come up"
            time.sleep(0.05)
        return proc

    def stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        proc.wait(20)

    proc = start()
    try:
        info = store.write_snapshot(_frame(["a"], np.full((1, 1), 2.5), ["f"]), as_of=DAY0, feature_columns=["f"])
        assert store.read_with_info(["a"])[0] == info
        stop(proc)
        with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
            store.read(["a"])
        assert store.health()["available"] is False
        proc = start()  # an empty server (no persistence): the store answers again, with nothing materialized
        assert store.read_with_info(["a"]) == (None, {})
        assert store.health() == {"store": f"redis://127.0.0.1:{port}/0", "available": True, "error": None}
    finally:
        if proc.poll() is None:
            stop(proc)
        store.close()
