"""The real HTTP server (``retention serve`` in a subprocess) for integration tests: start, call, read its log, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, base: str, proc: subprocess.Popen):
        self.base = base
        self.proc = proc

    def post(self, path: str, json=None, **kw) -> httpx.Response:
        return httpx.post(self.base + path, json=json, timeout=30, **kw)

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30, **kw)


ADMIN_KEY = "admin-s3cret"
"""``RETENTION_ADMIN_KEY`` of every test server (``/admin/reload`` is refused without one); send ``ADMIN``."""
ADMIN = {"X-Admin-Key": ADMIN_KEY}
UNKNOWN_CUSTOMER = "unknown customer_id: not in the online store"


def start_server(workspace, store_url: str | None, model: str, extra_env=None, wait_ready=True) -> Server:
    port = free_port()
    env = {**os.environ, **workspace.env, "RETENTION_ADMIN_KEY": ADMIN_KEY, **(extra_env or {})}
    env.pop("RETENTION_API_KEY", None) if "RETENTION_API_KEY" not in (extra_env or {}) else None
    args = [sys.executable, "-m", "retention", "serve", "--model", model, "--port", str(port)]
    if store_url:
        args += ["--store", store_url]
    log = open(workspace.root / f"server-{port}.log", "wb")  # noqa: SIM115 - kept open for the life of the server
    proc = subprocess.Popen(args, cwd=workspace.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status = server.get("/readyz" if wait_ready else "/livez").status_code
            if status == 200:
                return server
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        time.sleep(0.3)
    stop(server)
    raise RuntimeError("server did not become ready")


def server_log(workspace, server: Server) -> str:
    """Everything the server (``retention serve`` and its BentoML worker) has written so far."""
    port = server.base.rsplit(":", 1)[1]
    return (workspace.root / f"server-{port}.log").read_text(errors="replace")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        server.proc.kill()


def assert_error_shape(response: httpx.Response, status: int) -> dict:
    """Every error answer has one JSON shape: ``{"error": sentence, "status": code[, "field"][, "detail"]}``."""
    assert response.status_code == status, response.text
    content_type = response.headers["content-type"]  # Schemathesis' responses keep a list per header
    assert (content_type[0] if isinstance(content_type, list) else content_type).startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"], body
    assert body["status"] == status
    assert set(body) <= {"error", "status", "field", "detail"}
    if "field" in body:
        assert body["field"] in body["error"]
    return body
