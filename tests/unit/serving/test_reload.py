"""The reload channel shared by a server's workers (:mod:`serving.reload`), with fake holders and two fake worker
PIDs: the first worker pins the reference and every worker loads that version, a reload publishes only what it
loaded, a follower loads exactly the pinned version, and ``lagging`` (what ``/readyz`` answers) says when a worker
has no model. Regression: a model without a version (a local model directory with no ``VERSION`` file) is a
loaded model, and the server is ready (the first multi-worker design took a null version for "no model")."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from serving import reload as reload_module
from serving.reload import Generation, ReloadChannel, all_on
from serving.supervise import prune_reload_dirs, reload_dir

WORKERS = (101, 102)
"""The fake worker PIDs of every channel in these tests (``worker_pids`` is replaced)."""
ALIAS = "models:/retention@champion"


class FakeHolder:
    """A model holder whose loads give the versions of ``versions`` in turn (an exception entry is raised)."""

    def __init__(self, reference: str, *versions: str | Exception | None):
        self.reference = reference
        self.model: types.SimpleNamespace | None = None
        self.loaded: list[str] = []
        self._versions = list(versions)

    def load(self, reference: str | None = None) -> types.SimpleNamespace:
        self.loaded.append(reference or self.reference)
        version = self._versions.pop(0)
        if isinstance(version, Exception):
            raise version
        self.model = types.SimpleNamespace(version=version)
        return self.model


@pytest.fixture
def champion(monkeypatch) -> list[str]:
    """The version the alias names now (append to move it); ``pin_reference`` and ``worker_pids`` are faked."""
    names = ["3"]

    def pin(reference: str) -> str:
        if reference != ALIAS:
            return reference
        if names[-1] == "missing":
            raise LookupError("model 'models:/retention@champion' is not in the registry")
        return f"models:/retention/{names[-1]}"

    monkeypatch.setattr(reload_module, "pin_reference", pin)
    monkeypatch.setattr(reload_module, "worker_pids", lambda server_pid: list(WORKERS))
    return names


def channel(tmp_path: Path, pid: int, holder: FakeHolder) -> ReloadChannel:
    return ReloadChannel(holder, tmp_path, server_pid=1, pid=pid)


def start(worker: ReloadChannel) -> None:
    """What :meth:`ReloadChannel.start`'s thread does first (the rest is the polling loop)."""
    worker._follow(worker._published_or_pinned())


def test_every_worker_loads_the_version_the_first_one_pinned(tmp_path: Path, champion: list[str]) -> None:
    first, second = channel(tmp_path, 101, FakeHolder(ALIAS, "3")), channel(tmp_path, 102, FakeHolder(ALIAS, "3"))
    start(first)
    assert first.published() == Generation(1, "models:/retention/3")
    champion.append("4")  # the alias moves while the second worker starts: it still loads version 3
    start(second)
    assert first.holder.loaded == second.holder.loaded == ["models:/retention/3"]
    assert (first.generation, second.generation) == (1, 1)
    assert first.lagging() is None and second.lagging() is None
    assert all_on(first.workers(), 1)


def test_a_model_without_a_version_is_loaded_and_ready(tmp_path: Path, champion, monkeypatch) -> None:
    """The regression: a local model directory with no VERSION file loads as version None, in 1 and in 2 workers."""
    bundle = str(tmp_path / "bundle")
    monkeypatch.setattr(reload_module, "worker_pids", lambda server_pid: [101])
    alone = channel(tmp_path / "one", 101, FakeHolder(bundle, None))
    start(alone)
    assert alone.published() == Generation(1, bundle)  # a local directory is pinned by its path
    assert alone.workers() == {101: {"generation": 1, "loaded": True, "version": None, "error": None}}
    assert alone.lagging() is None and all_on(alone.workers(), 1)

    monkeypatch.setattr(reload_module, "worker_pids", lambda server_pid: list(WORKERS))
    workers = [channel(tmp_path / "two", pid, FakeHolder(bundle, None)) for pid in WORKERS]
    for worker in workers:
        start(worker)
    assert [w.lagging() for w in workers] == [None, None]
    assert all_on(workers[0].workers(), 1)


def test_a_worker_not_through_its_first_load_or_without_a_model_is_not_ready(tmp_path: Path, champion) -> None:
    first = channel(tmp_path, 101, FakeHolder(ALIAS, "3"))
    start(first)
    reason = first.lagging()
    assert reason == "worker PID 102 is still loading the model; retry when /readyz answers 200"
    second = channel(tmp_path, 102, FakeHolder(ALIAS, RuntimeError("disk full")))
    start(second)
    reason = first.lagging()
    assert reason is not None and reason.startswith("worker PID 102 has no model: RuntimeError: disk full")


def test_a_follower_loads_the_pinned_version_and_a_failure_is_named(tmp_path: Path, champion: list[str]) -> None:
    first = channel(tmp_path, 101, FakeHolder(ALIAS, "3", "4", "5"))
    follower = channel(tmp_path, 102, FakeHolder(ALIAS, "3", RuntimeError("disk full"), "5"))
    start(first)
    start(follower)

    champion.append("4")
    model, generation = first.reload()
    assert (model.version, generation) == ("4", 2) and first.published() == Generation(2, "models:/retention/4")
    follower._follow(follower.published())  # it fails to load version 4 and keeps version 3
    assert follower.holder.loaded[-1] == "models:/retention/4" and follower.holder.model.version == "3"
    reason = first.lagging()
    assert reason is not None and "worker PID 102 failed to load models:/retention/4" in reason
    assert "keeps serving version 3" in reason and "disk full" in reason
    assert not all_on(first.workers(), 2)

    champion.append("5")  # the next reload reaches both: ready again
    assert first.reload()[1] == 3
    follower._follow(follower.published())
    follower._follow(follower.published())  # a generation already followed is not loaded twice
    assert follower.holder.loaded[-1] == "models:/retention/5" and len(follower.holder.loaded) == 3
    assert first.lagging() is None and all_on(first.workers(), 3)


def test_a_worker_serves_what_the_file_names_even_a_lower_number(tmp_path: Path, champion: list[str]) -> None:
    """A generation file made again from 1 (e.g. removed by a cleaner of old temporary files, then a worker that
    started later pinned anew) is followed too: the workers converge on the file, never split on two numbers."""
    worker = channel(tmp_path, 101, FakeHolder(ALIAS, "3", "4", "5"))
    start(worker)
    champion.append("4")
    assert worker.reload()[1] == 2
    worker.generation_path.unlink()
    champion.append("5")
    restarted = channel(tmp_path, 102, FakeHolder(ALIAS, "5"))
    start(restarted)
    assert restarted.published() == Generation(1, "models:/retention/5")
    worker._follow(worker.published())
    assert worker.holder.model.version == "5" and worker.generation == 1 and worker.lagging() is None


def test_a_failed_reload_publishes_nothing(tmp_path: Path, champion: list[str]) -> None:
    worker = channel(tmp_path, 101, FakeHolder(ALIAS, "3", ValueError("bundle.json does not match its sha256")))
    start(worker)
    champion.append("4")
    with pytest.raises(ValueError):
        worker.reload()
    champion.append("missing")
    with pytest.raises(LookupError):
        worker.reload()
    assert worker.published() == Generation(1, "models:/retention/3") and worker.generation == 1
    assert worker.holder.model.version == "3"


def test_an_unpinnable_reference_publishes_nothing_and_the_worker_reports_its_load(tmp_path, champion) -> None:
    champion.append("missing")
    worker = channel(tmp_path, 101, FakeHolder(ALIAS, LookupError("no such alias")))
    start(worker)
    assert worker.published() is None and worker.holder.loaded == [ALIAS]
    assert worker.workers()[101] == {
        "generation": 0,
        "loaded": False,
        "version": None,
        "error": "LookupError: no such alias",
    }


def test_the_shared_directory_is_private_per_server_and_a_gone_servers_is_pruned(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / f"retention-serve-{os.getuid()}"
    live = reload_dir(os.getpid())
    assert live == reload_dir(os.getpid()) and live.parent == root and live.name.startswith(f"{os.getpid()}-")
    assert root.stat().st_mode & 0o777 == 0o700
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_dir = reload_dir(gone.pid)
    gone.wait()
    reused = root / f"{os.getpid()}-1"  # this PID, but another process's start time
    for directory in (live, gone_dir, reused):
        directory.mkdir()
    prune_reload_dirs()
    assert sorted(root.iterdir()) == [live]


def test_a_shared_folder_others_can_write_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / f"retention-serve-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(tmp_path / f"retention-serve-{os.getuid()}", 0o777)
    with pytest.raises(PermissionError, match="must belong to this user alone"):
        reload_dir(os.getpid())
