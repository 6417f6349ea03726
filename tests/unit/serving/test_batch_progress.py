"""The nightly job's progress callback: ``on_progress(partitions_done, partitions_total, rows_done)`` after each
finished or resumed partition, with the input rows of the partitions done; the command line's bar is the same
callback (``retention.progress.counter``)."""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pytest
from model_util import make_model

from retention import progress
from serving import batch

AS_OF = "2024-10-01"
PARTITIONS = 3


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """40 transactions of 13 customers (one to four rows each), one row without a customer id (read, broken)."""
    rows = [(f"c{i % 13:02d}", f"2024-0{1 + i % 9}-1{i % 10}", 5.0 + i) for i in range(40)]
    rows.append((None, "2024-03-01", 1.0))
    path = tmp_path / "tx.csv"
    pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount"]).to_csv(path, index=False)
    return path


def rows_per_partition(path: Path) -> list[int]:
    """Input rows of each partition, from the partition rule itself (a missing id hashes like the empty id)."""
    ids = pd.read_csv(path, dtype={"customer_id": "str"})["customer_id"].fillna("")
    counts = pd.Series(batch.partition_of(ids, PARTITIONS)).value_counts()
    return counts.reindex(range(PARTITIONS), fill_value=0).tolist()


def test_progress_after_each_partition_with_its_input_rows(source: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, int]] = []
    summary = batch.run_score_job(
        str(source), AS_OF, str(tmp_path / "out.parquet"), make_model("1"), partitions=PARTITIONS,
        on_progress=lambda *call: calls.append(call),
    )  # fmt: skip
    a, b, c = rows_per_partition(source)
    assert calls == [(1, 3, a), (2, 3, a + b), (3, 3, a + b + c)]
    assert a + b + c == summary.report.rows_read == 41 and min(a, b, c) > 0


def test_a_resumed_job_reports_its_resumed_partitions_first(source, tmp_path, monkeypatch) -> None:
    dest = tmp_path / "out" / "scores.parquet"
    model = make_model("1")
    with monkeypatch.context() as patch:  # keep the staging folder of a finished job, as a killed job leaves it
        patch.setattr(batch, "shutil", types.SimpleNamespace(rmtree=lambda *a, **k: None))
        batch.run_score_job(str(source), AS_OF, str(dest), model, partitions=PARTITIONS, on_progress=lambda *c: None)
    [staging] = (dest.parent / ".scores.parquet.parts").iterdir()
    (staging / "part-00001.json").unlink()  # partition 1 was not finished
    calls: list[tuple[int, int, int]] = []
    summary = batch.run_score_job(
        str(source), AS_OF, str(dest), model, partitions=PARTITIONS, on_progress=lambda *call: calls.append(call)
    )
    a, b, c = rows_per_partition(source)
    assert summary.resumed_partitions == 2
    assert calls == [(1, 3, a), (2, 3, a + c), (3, 3, a + b + c)]  # partitions 0 and 2 resumed, then 1 scored


def test_without_a_callback_nobody_is_told_and_the_bar_takes_the_callback_arguments(
    source, tmp_path, monkeypatch
) -> None:
    """Library code shows no bar (the command line hands :func:`retention.progress.counter`'s callable to the job);
    the counter takes the callback's arguments and, off a terminal, does nothing."""
    opened: list[str] = []
    monkeypatch.setattr(progress, "counter", lambda description: opened.append(description))
    summary = batch.run_score_job(
        str(source), AS_OF, str(tmp_path / "out.parquet"), make_model("1"), partitions=PARTITIONS
    )
    assert opened == [] and summary.partitions == PARTITIONS
    monkeypatch.undo()
    monkeypatch.setattr(progress, "enabled", lambda: False)
    with progress.counter("x") as update:
        assert update(1, 3, 7) is None


def test_the_terminal_bar_follows_the_callback(monkeypatch) -> None:
    """On a terminal the bar's completed and total are the callback's first two arguments."""
    from rich.progress import Progress

    monkeypatch.setattr(progress, "enabled", lambda: True)
    states: list[tuple] = []
    original = Progress.update

    def update(self, task, **fields):
        original(self, task, **fields)
        found = self.tasks[0]
        states.append((found.description, found.completed, found.total))

    monkeypatch.setattr(Progress, "update", update)
    with progress.counter("scoring partitions") as tell:
        tell(1, 4, 100)
        tell(4, 4, 400)
    assert states == [("scoring partitions", 1, 4), ("scoring partitions", 4, 4)]
    assert list(progress.track(iter("abc"), "items", total=3)) == ["a", "b", "c"]
