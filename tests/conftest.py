"""Shared fixtures: real PostgreSQL and Redis servers on the loopback interface (started if down)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")

POSTGRES_ROLES = ("postgres", "root")
REDIS_URL = "redis://127.0.0.1:6379/0"
_PG_START = 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort | tail -n 1)" main start'
_REDIS_START = 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no'


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


def _start(command: str) -> None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(command, shell=True, capture_output=True, timeout=60)


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


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the local PostgreSQL database ``test`` (server started if down; skips if it cannot be)."""

    def working_role() -> str | None:
        return next((role for role in POSTGRES_ROLES if _postgres_works(role)), None)

    role = working_role()
    if role is None:
        _start(_PG_START)
        role = _wait(working_role)
    if role is None:
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable and could not be started")
    return _postgres_url(role)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the local Redis server, database 0 (started if down; skips if it cannot be)."""
    if not _redis_works():
        _start(_REDIS_START)
        if not _wait(_redis_works):
            pytest.skip("Redis on 127.0.0.1:6379 is not reachable and could not be started")
    return REDIS_URL


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
    import fcntl
    import os

    from cli_util import run_cli

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
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
