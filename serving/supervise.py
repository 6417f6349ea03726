"""``retention serve``'s main process: starts ``bentoml serve`` as its child and turns ``SIGHUP`` into a model reload.

Sent to BentoML's own main process (its circus arbiter), ``SIGHUP`` restarts the workers: every request in flight and
every request until the new worker has loaded the model gets 503. So ``retention serve`` stays the main process,
prints its PID, and on ``SIGHUP`` signals the worker processes instead, which reload the model in the background
(checked in a child process first) while the old version keeps answering. ``SIGTERM`` and ``SIGINT`` stop the
server gracefully; the exit status is the server's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from serving.bento_patches import WORKER_MARK


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
    server = subprocess.Popen(command, env=env)

    def reload(*_: object) -> None:
        pids = worker_pids(server.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                continue
        note = f"reloading the model in worker PID {', '.join(map(str, pids))}" if pids else "no worker running yet"
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
    status = server.wait()
    return status if status >= 0 else 128 - status
