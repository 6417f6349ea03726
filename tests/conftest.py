"""Shared fixtures: real PostgreSQL and Redis servers on the loopback interface (started if down, and then stopped at
the end of the run), the settings cache, and one trained workspace shared by the integration tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

POSTGRES_ROLES = ("postgres", "root")
REDIS_URL = "redis://127.0.0.1:6379/0"


def _postgres_url(role: str) -> str:
    return f"postgresql://{role}@127.0.0.1:5432/test"


def _postgres_works(role: str) -> bool:
    try:
        import psycopg
    except ImportError:
        if shutil.which("psql") is None:
            return False
        cmd = ["psql", "-h", "127.0.0.1", "-U", role, "-d", "test", "-Atc", "select 1"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
        return False
    try:
        with psycopg.connect(_postgres_url(role), connect_timeout=3) as conn:
            return conn.execute("select 1").fetchone() == (1,)
    except Exception:
        return False


def _redis_works() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check: Callable[[], T], seconds: float = 30.0) -> T:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """After each test, forget the cached settings: a test that changed the environment leaves nothing behind."""
    from retention.settings import get_settings

    yield
    get_settings.cache_clear()


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder every pytest-xdist worker of this run sees (the base temp folder of the run)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def _pg_cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1] if versions else "?", "main"]


def _run(argv: list[str]) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(argv, capture_output=True, timeout=60)


def _start_postgres(shared: Path) -> None:
    _run([*_pg_cluster(), "start"])


def _stop_postgres(shared: Path) -> None:
    _run([*_pg_cluster(), "stop"])


def _start_redis(shared: Path) -> None:
    pidfile = shared / "redis-server.pid"
    _run(["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
          "--appendonly", "no", "--pidfile", str(pidfile), "--dir", str(shared)])  # fmt: skip


def _stop_redis(shared: Path) -> None:
    pidfile = shared / "redis-server.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)  # the server this run started, by its PID


@contextlib.contextmanager
def _lease(
    name: str, works: Callable[[], bool], start: Callable[[Path], None], stop: Callable[[Path], None], shared: Path
) -> Iterator[bool]:
    """Use a local server for this session: started when it is down, stopped when the last session that uses it
    ends -- only if this test run started it (a server that was already up is left alone).

    The pytest-xdist workers share a count of sessions using the server (a JSON file under a file lock), so the
    first worker to finish does not stop a server another worker still uses. Yields whether the server works.
    """
    state_file, lock_file = shared / f"{name}-lease.json", shared / f"{name}-lease.lock"

    def update(change: Callable[[dict], None]) -> None:
        with open(lock_file, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads(state_file.read_text()) if state_file.exists() else {"started": False, "users": 0}
            change(state)
            state_file.write_text(json.dumps(state))

    available = False

    def acquire(state: dict) -> None:
        nonlocal available
        if not works():
            start(shared)
            state["started"] = state["started"] or bool(_wait(works))
        available = works()
        state["users"] += available

    def release(state: dict) -> None:
        state["users"] -= 1
        if state["users"] == 0 and state["started"]:
            stop(shared)
            state["started"] = False

    update(acquire)
    try:
        yield available
    finally:
        if available:
            update(release)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory, worker_id: str) -> Iterator[str]:
    """URL of the local PostgreSQL database ``test`` (started if down and then stopped at the end; skips if it
    cannot be started)."""
    roles: list[str] = []

    def works() -> bool:
        roles[:] = [role for role in POSTGRES_ROLES if _postgres_works(role)][:1]
        return bool(roles)

    with _lease("postgres", works, _start_postgres, _stop_postgres, _shared_dir(tmp_path_factory, worker_id)) as ok:
        if not ok:
            pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable and could not be started")
        yield _postgres_url(roles[0])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, worker_id: str) -> Iterator[str]:
    """URL of the local Redis server, database 0 (started if down and then stopped at the end; skips if it cannot
    be started)."""
    with _lease("redis", _redis_works, _start_redis, _stop_redis, _shared_dir(tmp_path_factory, worker_id)) as ok:
        if not ok:
            pytest.skip("Redis on 127.0.0.1:6379 is not reachable and could not be started")
        yield REDIS_URL


# --- a trained workspace shared by the registry, service and batch tests -----------------------------------------


class Workspace:
    """A folder with generated transactions, an MLflow store and one trained, registered champion model."""

    AS_OF = "2024-12-30"

    def __init__(self, root):
        self.root = root
        self.transactions = root / "transactions.parquet"
        self.tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {"MLFLOW_TRACKING_URI": self.tracking_uri, "RETENTION_HOME": str(root / "home")}


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, worker_id: str) -> Workspace:
    """Generated once per test run (a file lock lets pytest-xdist workers share it) and trained through the CLI."""
    from cli_util import run_cli

    shared = _shared_dir(tmp_path_factory, worker_id)
    root = shared / "trained-workspace"
    root.mkdir(exist_ok=True)
    ws = Workspace(root)
    with open(shared / "trained-workspace.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            generated = run_cli(
                "generate", "--customers", "1500", "--days", "730", "--seed", "5", "--out", str(ws.transactions)
            )
            assert generated.returncode == 0, generated.stderr
            trained = run_cli(
                "train",
                "-t",
                str(ws.transactions),
                "--as-of",
                ws.AS_OF,
                "--horizon-days",
                "90",
                cwd=root,
                env=ws.env,
            )
            assert trained.returncode == 0, trained.stderr
            (root / "train.out").write_text(trained.stdout)
            (root / "done").write_text("ok")
        fcntl.flock(lock, fcntl.LOCK_UN)
    os.environ.setdefault("RETENTION_TEST_WORKSPACE", str(root))
    return ws
