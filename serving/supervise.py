"""``retention serve``'s main process: starts ``bentoml serve`` as its child and turns ``SIGHUP`` into a model reload.

Sent to BentoML's own main process (its circus arbiter), ``SIGHUP`` restarts the workers: every request in flight and
every request until the new worker has loaded the model gets 503. So ``retention serve`` stays the main process,
prints its PID, and on ``SIGHUP`` signals one worker process instead, which reloads the model in the background
(checked in a child process first) while the old version keeps answering, then publishes the version it loaded to
the other workers (``RETENTION_WORKERS``), which load the same one (:mod:`serving.reload`). ``SIGTERM`` and
``SIGINT`` stop the server gracefully and remove the workers' shared reload state; the exit status is the server's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from serving.bento_patches import WORKER_MARK


def runtime_root() -> Path:
    """Where running servers keep their workers' shared reload state: ``<tmp>/retention-serve-<uid>`` (the system's
    temporary folder, ``TMPDIR`` if set), private to this user (mode 0700). Not under ``RETENTION_HOME``: the state
    lives only as long as its server, and serving writes nothing into the data directory. Raises when the folder
    exists but is not this user's alone (whoever can write there chooses the model that is served)."""
    root = Path(tempfile.gettempdir()) / f"retention-serve-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    status = root.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{root} must belong to this user alone (mode 0700): it holds the served model's name")
    return root


def reload_dir(server_pid: int) -> Path:
    """The directory where the workers of the BentoML server ``server_pid`` share their reload state
    (:mod:`serving.reload`): ``<runtime_root>/<server_pid>-<its start time in 1/100 s>``, so that a PID reused
    after a server was killed never finds that server's state."""
    import psutil

    started = round(psutil.Process(server_pid).create_time() * 100)
    return runtime_root() / f"{server_pid}-{started}"


def prune_reload_dirs() -> None:
    """Remove the reload state of servers that are gone (killed before they could remove their own)."""
    for directory in runtime_root().glob("*-*"):
        pid = directory.name.split("-", 1)[0]
        with contextlib.suppress(Exception):  # a live server keeps its directory; a gone PID raises
            if pid.isdigit() and reload_dir(int(pid)) == directory:
                continue
        shutil.rmtree(directory, ignore_errors=True)


def server_of_this_process() -> int:
    """The PID of the BentoML server this process is a worker of (its parent), or this process's own PID when it is
    not a BentoML worker (e.g. a service made in a test): its workers then are this process alone."""
    import psutil

    with contextlib.suppress(psutil.Error):
        if WORKER_MARK in " ".join(psutil.Process().cmdline()):
            return os.getppid()
    return os.getpid()


def worker_pids(server_pid: int) -> list[int]:
    """PIDs of the BentoML worker processes (the ones that hold the model, found by :data:`WORKER_MARK` in their
    command line) under the server process ``server_pid``."""
    import psutil

    pids = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if WORKER_MARK in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # gone in the meantime
            continue
    return pids


def run(command: list[str], env: dict[str, str]) -> int:
    """Run the server ``command`` until it exits; returns its exit status (128 + signal when killed)."""
    prune_reload_dirs()
    server = subprocess.Popen(command, env=env)
    shared = reload_dir(server.pid)

    def reload(*_: object) -> None:
        # one worker reloads and publishes the version it loaded: the others follow it (serving.reload)
        for pid in worker_pids(server.pid):
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                continue
            note = f"reloading the model in worker PID {pid}; the other workers load the same version after it"
            break
        else:
            note = "no worker running yet"
        print(f"retention serve: SIGHUP: {note}", file=sys.stderr, flush=True)

    def stop(*_: object) -> None:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGHUP, reload)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"retention serve: main PID {os.getpid()} (kill -HUP {os.getpid()} reloads the model without a restart;"
        f" SIGTERM or Ctrl-C stops), BentoML server PID {server.pid}",
        flush=True,
    )
    try:
        status = server.wait()
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    return status if status >= 0 else 128 - status
