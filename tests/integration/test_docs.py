"""Every command in the user guides runs: ``docs/data-scientist.md``, ``docs/crm-engineer.md``,
``docs/data-engineer.md``, ``docs/retention-manager.md`` and ``README.md`` (when it has runnable commands).

Each page is read top to bottom; its fenced blocks are handled like this:

* ``bash`` blocks are split into commands (``\\`` continuations and quotes spanning lines are joined, ``#``
  comments dropped, ``$NAME`` / ``${NAME}`` expanded from the page's environment):

  - ``export NAME=value`` sets a variable for the rest of the page; ``NAME=value retention ...`` for one command;
  - ``retention ...`` runs through the real CLI (``python -m retention``) and must exit 0;
  - ``retention serve ...`` starts in the background, the test waits until ``/readyz`` answers 200 and stops it
    (its process group) at the end of the page or before the next ``serve``;
  - ``curl ...`` is sent with httpx to that server; it must answer the status written as ``# -> NNN`` at the end
    of the command (200 when there is none). Supported options: ``-s -S -i -X -H -d --data --data-raw
    --data-binary`` (``@file`` too);
  - anything else (``mlflow ui``, ``bentoml``, ``docker``, ...) is shown to the reader, not run.

* A ``json`` block right after a ``bash`` block documents the output of that block's last command (the response
  body of a ``curl``, the stdout of a ``retention`` command): the real output must have the same shape -- the same
  keys in every object and the same nesting; values may differ. Every other ``json`` block must parse.
* ``python`` blocks run as scripts with the page's folder and environment and must exit 0.

Placeholders are literal, by convention: each page runs in a fresh folder holding the ``workspace`` fixture's
``transactions.parquet`` (1,500 customers over 730 days, seed 5) and a consistent copy of its MLflow store
``mlflow.db`` (champion version 1 trained as of 2024-12-30 with a 90-day horizon), so pages write
``transactions.parquet``, ``--as-of 2024-12-30``, ``sqlite:///mlflow.db`` and customer ids such as ``C0000042``
as they are. The environment starts with ``MLFLOW_TRACKING_URI`` and ``RETENTION_HOME`` pointing into that
folder. Port 3000 is replaced by a free port. ``postgresql://`` and ``redis://`` URLs are pointed at the test
servers of ``conftest.py`` with a prefix of their own (cleaned up afterwards); those commands are skipped when
the server cannot be reached. A page that uses ``demo/transactions.parquet`` (the README) gets that file
generated as ``scripts/demo.sh`` does, so its customer ids exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDES = (
    "docs/data-scientist.md",
    "docs/crm-engineer.md",
    "docs/data-engineer.md",
    "docs/retention-manager.md",
)
PAGES = (*GUIDES, "README.md")
CLI_COMMANDS = (
    "generate",
    "quality",
    "features",
    "train",
    "backtest",
    "btyd",
    "promote",
    "serve",
    "score",
    "plan",
    "materialize",
    "acquisition",
)
DOC_PORT = "3000"
READY_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 600
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
EXPECTED_STATUS = re.compile(r"#\s*->\s*(\d{3})\s*$")
VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


# --------------------------------------------------------------------------------------------------------------
# reading pages
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    text: str
    line: int


def blocks(markdown: str) -> list[Block]:
    """Fenced code blocks in page order, with the line their fence opens on."""
    return [Block(m[1].lower(), m[2], markdown.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(markdown)]


def commands(script: str) -> list[str]:
    """Shell commands of a bash block: continuations and multi-line quotes joined, blank and comment lines dropped."""
    out: list[str] = []
    buffer = ""
    for line in script.splitlines():
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buffer = f"{buffer}\n{line}" if buffer else line
        if buffer.endswith("\\"):
            buffer = buffer[:-1]
            continue
        try:
            shlex.split(buffer, comments=True)
        except ValueError:  # a quote is still open: the command goes on on the next line
            continue
        out.append(buffer.strip())
        buffer = ""
    assert not buffer, f"unterminated command: {buffer!r}"
    return out


def expand(text: str, env: dict[str, str]) -> str:
    return VARIABLE.sub(lambda m: env.get(m[1] or m[2], m[0]), text)


def split(command: str, env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``(one-command environment assignments, argv)`` of a shell command."""
    tokens = shlex.split(expand(command, env), comments=True)
    assignments: dict[str, str] = {}
    while tokens and ASSIGNMENT.match(tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        assignments[name] = value
    if tokens[-1:] == ["&"]:  # run in the background: what the test does with `serve` anyway
        tokens.pop()
    return assignments, tokens


@dataclass
class CurlRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


def parse_curl(argv: list[str], cwd: Path) -> CurlRequest:
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    body: bytes | None = None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-s", "-S", "-sS", "-i", "--silent", "--show-error", "--include"):
            continue
        if arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in ("-d", "--data", "--data-raw", "--data-binary"):
            data = next(args)
            body = (cwd / data[1:]).read_bytes() if data.startswith("@") and arg != "--data-raw" else data.encode()
        elif arg.startswith("-"):
            raise AssertionError(f"curl option {arg!r} is not supported by tests/test_docs.py")
        else:
            url = arg
    assert url, f"no URL in {argv}"
    return CurlRequest(method or ("POST" if body is not None else "GET"), url, headers, body)


# --------------------------------------------------------------------------------------------------------------
# running a page
# --------------------------------------------------------------------------------------------------------------


def children_cpu() -> float:
    """CPU seconds (user + system) of the finished child processes of this test process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_mlflow_store(source: Path, folder: Path) -> None:
    """A consistent copy of the workspace's MLflow SQLite store (other tests may be writing to it) whose
    experiments keep new run artifacts in ``folder/mlruns``; existing runs and model versions still point at
    the workspace's artifacts, which are only read."""
    target = folder / "mlflow.db"
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
        rows = dst.execute("select experiment_id from experiments").fetchall()
        for (experiment_id,) in rows:
            location = (folder / "mlruns" / str(experiment_id)).as_posix()
            dst.execute(
                "update experiments set artifact_location = ? where experiment_id = ?", (location, experiment_id)
            )
        dst.commit()
    finally:
        src.close()
        dst.close()


def same_shape(documented: Any, actual: Any, path: str = "$") -> None:
    """``actual`` has the documented structure: the same keys in every object, lists where lists are shown."""
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{path}: the page shows an object, the real output is {actual!r}"
        assert set(documented) == set(actual), f"{path}: page shows keys {sorted(documented)}, real {sorted(actual)}"
        for key, value in documented.items():
            same_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{path}: the page shows a list, the real output is {actual!r}"
        for i, (d, a) in enumerate(zip(documented, actual, strict=False)):
            same_shape(d, a, f"{path}[{i}]")
    else:
        assert not isinstance(actual, dict | list), f"{path}: the page shows {documented!r}, the real output {actual!r}"


class PageRun:
    """Runs the commands of one page in its folder, with one background server at most."""

    def __init__(self, page: str, folder: Path, env: dict[str, str], request: pytest.FixtureRequest):
        self.page = page
        self.folder = folder
        self.env = env
        self.request = request
        self.port = str(free_port())
        self.server: subprocess.Popen | None = None
        self.server_log = folder / "serve.log"
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.cleanups: list[Any] = []
        self.prefix = uuid.uuid4().hex[:8]
        self.served = False
        self.started = time.monotonic()
        self.cpu_started = children_cpu()

    # --- commands

    def timed(self, where: str) -> str:
        """``where`` with its wall time and the CPU time of the processes it ran (servers: counted when stopped)."""
        return f"{time.monotonic() - self.started:5.1f} s wall {children_cpu() - self.cpu_started:5.1f} s cpu  {where}"

    def run_block(self, block: Block) -> str | None:
        """Run a bash block; returns the output of its last command (None when that one was not run)."""
        last: str | None = None
        for command in commands(block.text):
            assignments, argv = split(command, self.env)
            where = f"{self.page}:{block.line}: {command.splitlines()[0]}"
            self.started, self.cpu_started = time.monotonic(), children_cpu()
            if not argv:
                self.env.update(assignments)
                continue
            if argv[0] == "export":
                for item in argv[1:]:
                    name, _, value = item.partition("=")
                    self.env[name] = value
                last = None
            elif argv[0] == "retention":
                last = self.retention(argv, assignments, where)
            elif argv[0] == "curl":
                last = self.curl(argv, command, where)
            else:
                self.skipped.append(where)
                last = None
        return last

    def retention(self, argv: list[str], assignments: dict[str, str], where: str) -> str | None:
        argv = [self.localize(a) for a in argv]
        if any(a is None for a in argv):
            self.skipped.append(f"{where} (server not reachable)")
            return None
        env = {**self.env, **assignments}
        if argv[1:2] == ["serve"]:
            self.start_server(argv, env, where)
            return None
        result = subprocess.run(
            [sys.executable, "-m", *argv],
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert result.returncode == 0, f"{where}\nexit {result.returncode}\n{result.stderr[-3000:]}"
        self.ran.append(self.timed(where))
        return result.stdout

    def localize(self, arg: str) -> str | None:
        """The documented port and database servers, mapped to the test's (None: server not reachable)."""
        if arg == DOC_PORT:
            return self.port
        for scheme, fixture, prefix in (
            ("postgresql://", "postgres_url", f"docs_{self.prefix}"),
            ("redis://", "redis_url", f"docs:{self.prefix}"),
        ):
            if arg.startswith(scheme):
                try:
                    base = self.request.getfixturevalue(fixture)
                except pytest.skip.Exception:
                    return None
                self.cleanups.append((scheme, base, prefix))
                return f"{base}?prefix={prefix}"
        return arg

    def curl(self, argv: list[str], command: str, where: str) -> str:
        import httpx

        assert self.server is not None, f"{where}: no `retention serve` earlier on the page"
        request = parse_curl(argv, self.folder)
        url = request.url.replace(f"localhost:{DOC_PORT}", f"127.0.0.1:{self.port}")
        url = url.replace(f"127.0.0.1:{DOC_PORT}", f"127.0.0.1:{self.port}")
        expected = EXPECTED_STATUS.search(command)
        status = int(expected[1]) if expected else 200
        response = httpx.request(request.method, url, headers=request.headers, content=request.body, timeout=120)
        assert response.status_code == status, (
            f"{where}\nexpected {status}, got {response.status_code}: {response.text}"
        )
        self.ran.append(self.timed(where))
        return response.text

    def run_python(self, block: Block) -> None:
        where = f"{self.page}:{block.line}: python block"
        self.started, self.cpu_started = time.monotonic(), children_cpu()
        result = subprocess.run(
            [sys.executable, "-c", block.text],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert result.returncode == 0, f"{where}\n{result.stderr[-3000:]}"
        self.ran.append(self.timed(where))

    # --- the server

    def start_server(self, argv: list[str], env: dict[str, str], where: str) -> None:
        import httpx

        self.stop_server()
        if "--port" not in argv:
            argv = [*argv, "--port", self.port]
        log = self.server_log.open("ab")
        self.server = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=self.folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers stop with it
        )
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.server.poll() is None, f"{where}: the server exited\n{self.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"{where}: /readyz not 200 after {READY_TIMEOUT_S} s\n{self.log_tail()}"
            time.sleep(0.5)
        self.ran.append(self.timed(where))
        self.served = True

    def log_tail(self) -> str:
        return self.server_log.read_text(errors="replace")[-4000:] if self.server_log.exists() else ""

    def stop_server(self) -> None:
        if self.server is None:
            return
        server, self.server = self.server, None
        if server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)

    def clean_up(self) -> None:
        self.stop_server()
        for scheme, base, prefix in self.cleanups:
            with contextlib.suppress(Exception):
                if scheme == "redis://":
                    import redis

                    client = redis.Redis.from_url(base)
                    keys = list(client.scan_iter(match=f"{prefix}:*", count=10_000))
                    if keys:
                        client.delete(*keys)
                    client.close()
                else:
                    import psycopg

                    with psycopg.connect(base, autocommit=True) as conn:
                        rows = conn.execute(
                            "select tablename from pg_tables where tablename like %s", (prefix + r"\_%",)
                        ).fetchall()
                        for (name,) in rows:
                            conn.execute(f'drop table if exists "{name}"')


def runnable(page: str) -> bool:
    path = ROOT / page
    if not path.exists():
        return False
    for block in blocks(path.read_text()):
        if block.lang in ("bash", "sh", "shell") and any(
            split(c, {})[1][:1] == ["retention"] for c in commands(block.text)
        ):
            return True
    return False


def demo_generate_args() -> list[str] | None:
    """The ``retention generate`` arguments ``scripts/demo.sh`` writes ``demo/transactions.parquet`` with."""
    script = ROOT / "scripts" / "demo.sh"
    if not script.exists():
        return None
    for line in script.read_text().splitlines():
        argv = shlex.split(line, comments=True)
        if "generate" in argv and "demo/transactions.parquet" in argv:
            return argv[argv.index("generate") :]
    return None


@contextlib.contextmanager
def page_run(page: str, folder: Path, workspace, request) -> Iterator[PageRun]:
    (folder / "transactions.parquet").write_bytes(workspace.transactions.read_bytes())
    copy_mlflow_store(workspace.root / "mlflow.db", folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETENTION_", "MLFLOW_"))}
    env.update(
        {
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
            "RETENTION_HOME": str(folder / "home"),
            # LightGBM's OpenMP threads busy-wait when the CPUs are oversubscribed (pytest-xdist workers): one
            # thread keeps `retention train` at seconds instead of minutes there. A user's setting wins.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
    )
    if "demo/transactions.parquet" in (ROOT / page).read_text():
        args = demo_generate_args()
        assert args, "the page uses demo/transactions.parquet but scripts/demo.sh does not generate it"
        made = subprocess.run(
            [sys.executable, "-m", "retention", *args], cwd=folder, env=env, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
    run = PageRun(page, folder, env, request)
    try:
        yield run
    finally:
        run.clean_up()


# --------------------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", GUIDES)
def test_guide_commands_parse(page: str) -> None:
    """Cheap checks that fail before anything runs: commands split, curls are supported, JSON examples parse."""
    found = []
    for block in blocks((ROOT / page).read_text()):
        if block.lang == "json":
            json.loads(block.text)
        if block.lang != "bash":
            continue
        for command in commands(block.text):
            _, argv = split(command, {})
            if argv[:1] == ["curl"]:
                parse_curl(argv, ROOT)
            if argv[:1] == ["retention"]:
                found.append(argv[1])
    assert found, f"{page} shows no retention command"


def test_every_cli_command_is_documented() -> None:
    documented = set()
    for page in GUIDES:
        for block in blocks((ROOT / page).read_text()):
            if block.lang == "bash":
                documented |= {split(c, {})[1][1] for c in commands(block.text) if split(c, {})[1][:1] == ["retention"]}
    assert set(CLI_COMMANDS) <= documented, f"not in any guide: {sorted(set(CLI_COMMANDS) - documented)}"


def test_block_parser() -> None:
    """The block parser handles continuations, multi-line quotes, comments, variables and expected statuses."""
    script = (
        "# comment\nexport A=1\n\n"
        'curl -s -X POST http://x:3000/p \\\n  -H "K: $A" \\\n  -d \'{\n  "a": 1\n}\'  # -> 401\n'
    )
    found = commands(script)
    assert found[0] == "export A=1" and len(found) == 2
    _, argv = split(found[1], {"A": "v"})
    request = parse_curl(argv, ROOT)
    assert request.method == "POST" and request.headers == {"K": "v"} and json.loads(request.body) == {"a": 1}
    assert EXPECTED_STATUS.search(found[1])[1] == "401"
    assert split("X=1 Y=2 retention serve --port 3000", {}) == (
        {"X": "1", "Y": "2"},
        ["retention", "serve", "--port", "3000"],
    )
    same_shape({"a": [{"b": 1}], "c": None}, {"a": [{"b": 2}, {"b": 3}], "c": 4.5})
    with pytest.raises(AssertionError):
        same_shape({"a": 1}, {"a": 1, "b": 2})


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run(page: str, workspace, tmp_path: Path, request) -> None:
    if not runnable(page):
        pytest.skip(f"{page} has no runnable retention command")
    markdown = (ROOT / page).read_text()
    with page_run(page, tmp_path, workspace, request) as run:
        previous: Block | None = None
        last_output: str | None = None
        for block in blocks(markdown):
            if block.lang in ("bash", "sh", "shell"):
                last_output = run.run_block(block)
            elif block.lang == "python":
                run.run_python(block)
            elif block.lang == "json":
                documented = json.loads(block.text)
                if previous is not None and previous.lang in ("bash", "sh", "shell") and last_output is not None:
                    try:
                        actual = json.loads(last_output)
                    except json.JSONDecodeError:
                        pytest.fail(f"{page}:{block.line}: the command before shows JSON, it printed {last_output!r}")
                    same_shape(documented, actual, f"{page}:{block.line}")
            previous = block
        print(f"\n{page}: ran {len(run.ran)}, not run {len(run.skipped)}")
        for where in run.ran:
            print(f"  ran {where}")
        for where in run.skipped:
            print(f"  not run: {where}")
    assert run.ran, f"{page}: nothing ran"
    if any(c.startswith("retention serve") for b in blocks(markdown) if b.lang == "bash" for c in commands(b.text)):
        assert run.served, f"{page}: `retention serve` is shown but never started"
