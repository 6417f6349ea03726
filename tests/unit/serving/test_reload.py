"""The reload channel shared by the workers: a reload publishes the pinned version it loaded, a follower loads
exactly that one, and a follower that fails keeps its model and is named by :meth:`ReloadChannel.lagging`."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from serving.reload import ReloadChannel, pinned_reference


class FakeHolder:
    """A model holder whose loads give the versions of ``versions`` in turn (an exception entry is raised)."""

    def __init__(self, reference: str, *versions: str | Exception):
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


def test_an_alias_is_pinned_to_the_version_loaded() -> None:
    model = types.SimpleNamespace(version="7")
    assert pinned_reference("models:/retention@champion", model) == "models:/retention/7"
    assert pinned_reference("/models/bundle", model) == "/models/bundle"


def test_a_follower_loads_the_pinned_version_and_a_failure_is_reported(tmp_path: Path) -> None:
    first = ReloadChannel(FakeHolder("models:/retention@champion", "3", "4"), tmp_path)
    model, generation = first.reload()
    assert (model.version, generation) == ("3", 1)
    assert first.published() == {"generation": 1, "reference": "models:/retention/3", "version": "3", "by": os.getpid()}
    assert first.lagging() is None

    follower = ReloadChannel(FakeHolder("models:/retention@champion", "3", RuntimeError("disk full")), tmp_path)
    follower._follow(follower.published())
    assert follower.holder.loaded == ["models:/retention/3"] and follower.generation == 1

    assert first.reload()[1] == 2  # the next generation; the follower fails to load it and keeps version 3
    follower._follow(follower.published())
    assert follower.holder.model.version == "3" and follower.generation == 2
    reason = follower.lagging()
    assert reason is not None and "failed to load version 4" in reason and "keeps serving version 3" in reason
    assert "disk full" in reason


def test_a_failed_reload_publishes_nothing(tmp_path: Path) -> None:
    channel = ReloadChannel(FakeHolder("models:/retention@champion", ValueError("no such alias")), tmp_path)
    with pytest.raises(ValueError):
        channel.reload()
    assert channel.published() is None and channel.generation == 0
