"""Terminal progress for the person running a command: a live bar on a terminal, nothing when stderr is not a
terminal (logs stay clean), and one-line warnings on stderr.

This is user interface, not features or model logic: commands and training jobs call it; library code in
``features`` and ``serving`` should take a progress callback instead of importing it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
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


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on a terminal; a plain pass-through otherwise."""
    if not enabled():
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total if total is not None else len(items))  # type: ignore[arg-type]
        for item in items:
            yield item
            bar.advance(task)


def warn(message: str) -> None:
    """A warning for the person running the command: one line on stderr, terminal or not."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()
