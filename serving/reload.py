"""One model version in every BentoML worker process: a reload reaches all of them.

A reload (``POST /admin/reload`` on whichever worker answers, or ``SIGHUP`` to ``retention serve``'s main PID,
which passes it to one worker) loads the model reference in that worker first. Only when it loaded is a new
*reload generation* published: ``generation.json`` under ``<RETENTION_HOME>/serve/<BentoML server PID>/``
(:func:`serving.supervise.reload_dir`) holds the number and the *pinned* reference of that version
(``models:/NAME/VERSION`` for an alias such as ``@champion``). Every worker polls the file (one ``stat`` every
:data:`POLL_SECONDS`, in a background thread) and loads the pinned reference when the number grows, so all
workers converge on the exact version the first one loaded, even when the alias moves again meanwhile. A worker
started later (BentoML restarts a dead one) loads the published version, not the alias.

Each worker writes its own state after its start-up load and each load it follows (``worker-<PID>.json``:
generation, version, error). ``/admin/reload`` waits (at most :data:`FOLLOW_SECONDS`) until every live worker has
the new generation and answers with the version each one serves. ``/readyz`` (on any worker) answers 200 only
when every live worker has a model: 503 naming a worker still loading, or one that failed to follow (it keeps
its old model) until a later reload succeeds everywhere.

A response never mixes versions: a request reads the holder's model once and scores with that one object
(:meth:`serving.online.OnlineScorer.score_checked`); its ``model_version`` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from serving.http_errors import error_body, normalize_error
from serving.loader import ALIAS_URI
from serving.model import ScoringModel
from serving.online import ModelHolder
from serving.responses import send_json
from serving.supervise import reload_dir, worker_pids

__all__ = [
    "FOLLOW_SECONDS",
    "POLL_SECONDS",
    "ReloadChannel",
    "ReloadReadinessMiddleware",
    "reload_dir",
    "watch_reloads",
]

log = logging.getLogger("retention.reload")
POLL_SECONDS = 0.5
"""How often a worker looks for a newer reload generation (one ``stat`` of a small file)."""
FOLLOW_SECONDS = 60.0
"""How long ``/admin/reload`` waits for the other workers to load the new version before it answers anyway."""
STATE_FILE = "generation.json"


def pinned_reference(reference: str, model: ScoringModel) -> str:
    """The reference of exactly the version ``model`` is: ``models:/NAME/VERSION`` for an alias reference."""
    match = ALIAS_URI.match(reference)
    return f"models:/{match['name']}/{model.version}" if match and model.version else reference


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old or the new file, never half of one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclasses.dataclass
class ReloadChannel:
    """This worker's side of the shared reload state: start-up load, reload-and-publish, following the others."""

    holder: ModelHolder
    directory: Path
    generation: int = 0  # the generation this worker has followed (loaded, or failed to load)
    _lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    @classmethod
    def for_this_worker(cls, holder: ModelHolder) -> ReloadChannel:
        """The channel shared by the workers of this worker's BentoML server (its parent process)."""
        return cls(holder, reload_dir(os.getppid()))

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def _status_path(self, pid: int) -> Path:
        return self.directory / f"worker-{pid}.json"

    def published(self) -> dict[str, Any] | None:
        """The latest published generation: ``{"generation", "reference", "version", "by"}``, or None."""
        return _read_json(self.state_path)

    def start(self) -> threading.Thread:
        """Load the published version (the reference when none is) and follow new generations, in a thread."""
        thread = threading.Thread(target=self._follow_forever, name="model-reload", daemon=True)
        thread.start()
        return thread

    def _follow_forever(self) -> None:
        self._follow(self.published())
        stamp = None
        while True:
            time.sleep(POLL_SECONDS)
            with contextlib.suppress(OSError):
                if (current := self.state_path.stat().st_mtime_ns) != stamp:
                    stamp = current
                    state = self.published()
                    if state and state["generation"] > self.generation:
                        self._follow(state)

    def _follow(self, state: dict[str, Any] | None) -> None:
        """Load the version of ``state`` (None: the holder's reference); a failure keeps the old model."""
        with self._lock:
            if state is not None and state["generation"] <= self.generation:
                return  # this worker published it, or followed it already
            error = None
            try:
                self.holder.load(state["reference"] if state else None)
            except Exception as exc:  # logged by the holder; reported on /readyz by every worker
                error = f"{type(exc).__name__}: {exc}"
            if state is not None:
                self.generation = state["generation"]
            self._write_status(error)

    def reload(self) -> tuple[ScoringModel, int]:
        """Load the holder's reference here, then publish it as a new generation the other workers follow.

        Raises when it does not load: nothing is published and every worker keeps its version."""
        with self._lock:
            model = self.holder.load()
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(self.directory / "generation.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one increment at a time across the workers
                previous = self.published()
                generation = (previous["generation"] if previous else 0) + 1
                reference = pinned_reference(self.holder.reference, model)
                state = {"generation": generation, "reference": reference, "version": model.version}
                _write_json(self.state_path, {**state, "by": os.getpid()})
            self.generation = generation
            self._write_status(None)
            log.info(
                "reload generation %d: version %s (%s) published to the other workers",
                generation,
                model.version,
                reference,
            )
            return model, generation

    def reload_in_background(self) -> threading.Thread:
        """:meth:`reload` in a thread (``SIGHUP``); a failure is logged and keeps every worker's version."""

        def run() -> None:
            with contextlib.suppress(Exception):
                self.reload()

        thread = threading.Thread(target=run, name="model-reload-now", daemon=True)
        thread.start()
        return thread

    def _write_status(self, error: str | None) -> None:
        model = self.holder.model
        status = {"generation": self.generation, "version": model.version if model else None, "error": error}
        with contextlib.suppress(OSError):
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_json(self._status_path(os.getpid()), status)

    def workers(self) -> dict[int, dict[str, Any] | None]:
        """Each live worker of this server (its PID) and its last written state (None: none written yet)."""
        pids = sorted({*worker_pids(os.getppid()), os.getpid()})
        return {pid: _read_json(self._status_path(pid)) for pid in pids}

    async def wait_for_workers(self, generation: int, timeout: float = FOLLOW_SECONDS) -> dict[int, dict | None]:
        """The live workers' states once every one has followed ``generation`` (or after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            workers = await asyncio.to_thread(self.workers)
            done = all(s is not None and s["generation"] >= generation for s in workers.values())
            if done or time.monotonic() >= deadline:
                return workers
            await asyncio.sleep(POLL_SECONDS / 2)

    def lagging(self) -> str | None:
        """Why not every live worker serves a model, or the published version (it failed to load it), or None."""
        state = self.published()
        for pid, status in self.workers().items():
            if status is None or status["version"] is None:
                why = f": {status['error']}" if status and status["error"] else " yet"
                return f"worker PID {pid} has no model loaded{why}; retry when /readyz answers 200"
            if state is not None and status["generation"] == state["generation"] and status["error"]:
                return (
                    f"worker PID {pid} failed to load version {state['version']} (reload generation"
                    f" {state['generation']}: {status['error']}) and keeps serving version {status['version']};"
                    " fix the model and POST /admin/reload or send SIGHUP"
                )
        return None

    def describe(self) -> dict[str, Any]:
        """This worker in ``/model``: its PID and the reload generation it follows."""
        return {"worker_pid": os.getpid(), "reload_generation": self.generation}


class ReloadReadinessMiddleware:
    """``/readyz`` answers 503 with the reason while a worker has no model yet, or failed to load the published
    version (it keeps serving its old one, so the workers do not serve one version)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        channel = _channel.get("channel")
        reason = None
        if scope["type"] == "http" and scope.get("path") == "/readyz" and channel is not None:
            reason = await asyncio.to_thread(channel.lagging)
        if reason:
            await send_json(send, 503, normalize_error(503, error_body(503, reason)))
            return
        await self.app(scope, receive, send)


_channel: dict[str, ReloadChannel] = {}


def watch_reloads(channel: ReloadChannel) -> None:
    """At service start: ``/readyz`` reports on the workers of this channel from now on."""
    _channel["channel"] = channel
