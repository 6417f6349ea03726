"""One model version in every BentoML worker process: the start-up load and every reload reach all of them.

The workers of one server share a small directory (:func:`serving.supervise.reload_dir`: a private folder under
the system's temporary folder, one per running server). In it, ``generation.json`` names the version every
worker serves: a *generation* number and the *pinned* reference of that version (``models:/NAME/VERSION`` for an
alias such as ``@champion``, see :func:`serving.loader.pin_reference`; a local model directory as it is). It is
written atomically (a reader sees the old file or the new one, never half of one), under a file lock so that two
writers never hand out the same number.

- Start-up: the first worker to start pins the model reference and publishes it as generation 1; every worker
  (that one too) then loads the published reference. A worker started later (BentoML restarts a dead one) loads
  the published version, not whatever the alias names by then.
- Reload (``POST /admin/reload`` on whichever worker answers, or ``SIGHUP`` to ``retention serve``'s main PID, which
  passes it to one worker): that worker pins the reference and loads it, and only once it loaded publishes the next
  generation. A reload that fails publishes nothing: every worker keeps its version.
- Follow: each worker looks at the file every :data:`POLL_SECONDS` (one ``stat``, in a background thread) and
  loads the pinned reference of a generation other than the one it serves (the next one, normally), so all
  converge on the exact version the reloading worker loaded, even when the alias moves again meanwhile. A worker
  switches when its own load is done: during a reload some workers answer with the old version for the few
  seconds the others take to load the new one.

Each worker writes its own state after every load it makes or fails (``worker-<PID>.json``: generation, whether a
model is loaded, its version, the error). Whether a worker *has a model* is ``loaded``, never its version: a local
model directory without a ``VERSION`` file serves with version ``null``. ``/readyz``
(:mod:`serving.readiness`) answers 200 only when every live worker has a model and none failed to load the
published generation (:meth:`ReloadChannel.lagging`).

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving.loader import pin_reference
from serving.model import ScoringModel
from serving.online import ModelHolder
from serving.supervise import reload_dir, server_of_this_process, worker_pids

__all__ = ["FOLLOW_SECONDS", "POLL_SECONDS", "Generation", "ReloadChannel", "all_on", "worker_list"]

log = logging.getLogger("retention.reload")
POLL_SECONDS = 0.5
"""How often a worker looks for another generation (one ``stat`` of a small file), in seconds."""
FOLLOW_SECONDS = 60.0
"""How long ``/admin/reload`` waits for the other workers to load the new version before it answers anyway, in
seconds."""
GENERATION_FILE = "generation.json"
LOCK_FILE = "generation.lock"


@dataclasses.dataclass(frozen=True)
class Generation:
    """A published model version: its ``number`` (1 at start-up, +1 per reload) and pinned ``reference``."""

    number: int
    reference: str


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
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
    """This worker's side of the shared state of ``directory``: start-up load, reload-and-publish, following the
    other workers' reloads. ``server_pid``: the BentoML server whose workers share the directory."""

    holder: ModelHolder
    directory: Path
    server_pid: int
    pid: int = dataclasses.field(default_factory=os.getpid)
    """This worker's PID (its state file is ``worker-<pid>.json``)."""
    generation: int = 0
    """The generation this worker last loaded (or failed to load); 0 before the first."""
    _error: str | None = None
    """Why this worker's last load failed (None: it did not)."""
    _lock: threading.RLock = dataclasses.field(default_factory=threading.RLock, repr=False)

    @classmethod
    def for_this_worker(cls, holder: ModelHolder) -> ReloadChannel:
        """The channel shared by the workers of this process's BentoML server (a process that is not a BentoML
        worker, e.g. the service made in a test, gets a channel of its own)."""
        server = server_of_this_process()
        return cls(holder, reload_dir(server), server)

    # --- the published generation ------------------------------------------------------------------------------

    @property
    def generation_path(self) -> Path:
        return self.directory / GENERATION_FILE

    def published(self) -> Generation | None:
        """The latest published generation, or None before the first."""
        data = _read_json(self.generation_path)
        return Generation(data["number"], data["reference"]) if data else None

    @contextlib.contextmanager
    def _publishing(self) -> Iterator[None]:
        """Hold the file lock that makes reading the last number and writing the next one a single step."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _publish(self, reference: str) -> Generation:
        """Publish ``reference`` as the next generation (call with :meth:`_publishing` held)."""
        previous = self.published()
        generation = Generation((previous.number if previous else 0) + 1, reference)
        _write_json(self.generation_path, {**dataclasses.asdict(generation), "by": self.pid})
        return generation

    def _published_or_pinned(self) -> Generation | None:
        """The published generation; when there is none yet (this is the first worker to start), the holder's
        reference pinned and published as generation 1. None when it cannot be pinned (e.g. an unknown alias):
        this worker then loads the reference as it is, which reports why."""
        with self._publishing():
            published = self.published()
            if published is not None:
                return published
            try:
                return self._publish(pin_reference(self.holder.reference))
            except Exception as exc:
                log.error("model %s cannot be pinned to a version: %s", self.holder.reference, exc)
                return None

    # --- this worker ---------------------------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Load the published version (publishing it first when this is the first worker), then follow newer
        generations, in a background thread."""
        thread = threading.Thread(target=self._run, name="model-reload", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        self._follow(self._published_or_pinned())
        seen = None
        while True:
            time.sleep(POLL_SECONDS)
            with contextlib.suppress(OSError):
                status = self.generation_path.stat()
                if (stamp := (status.st_ino, status.st_mtime_ns)) != seen:
                    seen = stamp
                    if (published := self.published()) is not None:
                        self._follow(published)
            if not self._state_path(self.pid).exists():  # removed meanwhile (e.g. a cleaner of old temporary files)
                self._write_state(self._error)

    def _follow(self, generation: Generation | None) -> None:
        """Load ``generation``'s reference unless this worker has it already (None: the holder's reference as it
        is); a failure keeps the old model and is written to this worker's state."""
        with self._lock:
            if generation is not None and generation.number == self.generation:
                return  # this worker published it, or followed it already (a different number: serve that one)
            error = None
            try:
                self.holder.load(generation.reference if generation else None)
            except Exception as exc:  # logged by the holder; /readyz names it
                error = f"{type(exc).__name__}: {exc}"
            if generation is not None:
                self.generation = generation.number
            self._write_state(error)

    def reload(self) -> tuple[ScoringModel, int]:
        """Pin the holder's reference and load it here, then publish it as the next generation, which every other
        worker follows; returns the model and its generation. Raises when it cannot be pinned or loaded: then
        nothing is published and every worker keeps its version."""
        with self._lock:
            reference = pin_reference(self.holder.reference)
            model = self.holder.load(reference)
            with self._publishing():
                generation = self._publish(reference)
            self.generation = generation.number
            self._write_state(None)
            log.info("reload generation %d: version %s (%s) published", generation.number, model.version, reference)
            return model, generation.number

    def reload_in_background(self) -> threading.Thread:
        """:meth:`reload` in a thread (``SIGHUP``); a failure is logged and keeps every worker's version."""

        def run() -> None:
            try:
                self.reload()
            except Exception as exc:
                log.warning("reload of %s failed; every worker keeps its version: %s", self.holder.reference, exc)

        thread = threading.Thread(target=run, name="model-reload-now", daemon=True)
        thread.start()
        return thread

    def _state_path(self, pid: int) -> Path:
        return self.directory / f"worker-{pid}.json"

    def _write_state(self, error: str | None) -> None:
        self._error = error
        model = self.holder.model
        state = {
            "generation": self.generation,
            "loaded": model is not None,
            "version": model.version if model is not None else None,
            "error": error,
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_json(self._state_path(self.pid), state)
        except OSError as exc:  # /readyz then reports this worker as still loading
            log.error("cannot write the worker state under %s: %s", self.directory, exc)

    def describe(self) -> dict[str, Any]:
        """This worker in ``/model``: its PID and the generation it serves."""
        return {"worker_pid": self.pid, "reload_generation": self.generation}

    # --- all workers ---------------------------------------------------------------------------------------------

    def workers(self) -> dict[int, dict[str, Any] | None]:
        """Each live worker of this server (by PID) and its last written state (None: not through its first load
        yet)."""
        pids = sorted({*worker_pids(self.server_pid), self.pid})
        return {pid: _read_json(self._state_path(pid)) for pid in pids}

    async def wait_for_workers(self, generation: int, timeout: float = FOLLOW_SECONDS) -> dict[int, dict | None]:
        """The live workers' states once every one has loaded (or failed to load) ``generation``, or after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            workers = await asyncio.to_thread(self.workers)
            if all(s is not None and s["generation"] >= generation for s in workers.values()):
                return workers
            if time.monotonic() >= deadline:
                return workers
            await asyncio.sleep(POLL_SECONDS / 2)

    def lagging(self) -> str | None:
        """Why not every live worker serves the published version, in one sentence, or None: a worker has no model
        yet (starting, or its load failed), or it failed to load the latest generation and keeps an older one."""
        published = self.published()
        for pid, state in self.workers().items():
            if state is None:
                return f"worker PID {pid} is still loading the model; retry when /readyz answers 200"
            if not state["loaded"]:
                return (
                    f"worker PID {pid} has no model: {state['error'] or 'not loaded'}; fix the model and POST"
                    " /admin/reload or send SIGHUP"
                )
            if published is not None and state["generation"] == published.number and state["error"]:
                return (
                    f"worker PID {pid} failed to load {published.reference} (reload generation {published.number}:"
                    f" {state['error']}) and keeps serving version {state['version']}; fix the model and POST"
                    " /admin/reload or send SIGHUP"
                )
        return None


NO_STATE = {"generation": None, "loaded": False, "version": None, "error": None}
"""The state shown for a worker that is not through its first load yet."""


def worker_list(workers: dict[int, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """``workers`` (:meth:`ReloadChannel.workers`) as a JSON list, one object per worker with the same keys:
    ``worker_pid``, ``generation``, ``loaded``, ``version``, ``error``."""
    return [{"worker_pid": pid, **(state or NO_STATE)} for pid, state in workers.items()]


def all_on(workers: dict[int, dict[str, Any] | None], generation: int) -> bool:
    """Whether every worker of ``workers`` (:meth:`ReloadChannel.workers`) serves ``generation``."""
    return all(s is not None and s["generation"] == generation and s["error"] is None for s in workers.values())
