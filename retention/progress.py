"""Terminal progress for the person running a command: a live bar on a terminal, nothing when stderr is not a
terminal (logs stay clean), and one-line warnings on stderr.

This is user interface, not features or model logic: commands and training jobs call it; library code in
``features`` and ``serving`` should take a progress callback instead of importing it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def enabled() -> bool:
    """Whether progress is shown: stderr is a terminal."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Announce a step and its duration on a terminal: ``message ... done in 1.2 s``."""
    if not enabled():
        yield
        return
    start = time.perf_counter()
    sys.stderr.write(f"{message} ...")
    sys.stderr.flush()
    try:
        yield
    finally:
        sys.stderr.write(f" done in {time.perf_counter() - start:.1f} s\n")
        sys.stderr.flush()


@contextlib.contextmanager
def counter(description: str) -> Iterator[Callable[..., None]]:
    """A progress bar driven by calls ``update(done, total, *details)`` (``details`` ignored), so that ``update`` can
    be handed to a job as its progress callback (e.g. ``on_progress`` of :func:`serving.batch.run_score_job`); on a
    terminal only, a callable that does nothing otherwise. The bar is removed when the block ends."""
    if not enabled():
        yield lambda done, total, *details: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total, *details: bar.update(task, completed=done, total=total)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal (:func:`counter`); a plain pass-through otherwise."""
    if not enabled():
        yield from items
        return
    count = total if total is not None else len(items)  # type: ignore[arg-type]
    with counter(description) as update:
        update(0, count)
        for done, item in enumerate(items, 1):
            yield item
            update(done, count)


def warn(message: str) -> None:
    """A warning for the person running the command: one line on stderr, terminal or not."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()
