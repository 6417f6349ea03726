"""The batch task routes' guards and identity: the path allow-list, the job id, the runner's lock."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from retention.settings import Settings
from serving.batch_tasks import JOB_ID_LENGTH, BatchTasks, JobStore, TaskError, job_id, resolve_location

DAY = dt.date(2024, 12, 30)


def resolve(text: str, root: Path, *, allow_sql: bool = False, must_exist: bool = False) -> str:
    return resolve_location(text, root, field="source", allow_sql=allow_sql, must_exist=must_exist)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = (tmp_path / "root").resolve()
    (folder / "in").mkdir(parents=True)
    (folder / "in" / "tx.parquet").write_bytes(b"x")
    return folder


def test_paths_inside_the_root_resolve_to_absolute_paths(root: Path) -> None:
    assert resolve("in/tx.parquet", root, must_exist=True) == str(root / "in" / "tx.parquet")
    assert resolve(str(root / "in" / "tx.parquet"), root) == str(root / "in" / "tx.parquet")
    assert resolve("out/new.parquet", root) == str(root / "out" / "new.parquet")  # need not exist yet


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("/etc/passwd", 403),
        ("in/../../x.parquet", 422),
        ("../root/in/tx.parquet", 422),  # '..' is refused even when it would land inside the root
        ("file:///etc/passwd", 422),
        ("s3://bucket/x.parquet", 422),
        ("in/\x00.parquet", 422),
        ("  ", 422),
        ("sqlite:///x.db?table=t", 403),
    ],
)
def test_paths_outside_the_root_and_other_urls_are_refused(root: Path, text: str, status: int) -> None:
    with pytest.raises(TaskError) as caught:
        resolve(text, root)
    assert caught.value.status == status and caught.value.field == "source"
    assert str(caught.value).startswith("source: ")


def test_a_symlink_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.parquet").write_bytes(b"x")
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    (root / "file-link.parquet").symlink_to(tmp_path / "secret.parquet")
    for text in ("link/secret.parquet", "file-link.parquet"):
        with pytest.raises(TaskError) as caught:
            resolve(text, root)
        assert caught.value.status == 403


def test_a_missing_source_and_sql_urls_when_allowed(root: Path) -> None:
    with pytest.raises(TaskError) as caught:
        resolve("in/missing.parquet", root, must_exist=True)
    assert caught.value.status == 422 and "does not exist" in str(caught.value)
    assert resolve("sqlite:///x.db?table=t", root, allow_sql=True) == "sqlite:///x.db?table=t"


def test_the_job_id_is_a_digest_of_what_decides_the_output() -> None:
    base = ("fp", DAY, "3", None, None, None)
    first = job_id(*base)
    assert first == job_id(*base) and len(first) == JOB_ID_LENGTH and int(first, 16) >= 0
    changed = [
        ("fp2", DAY, "3", None, None, None),
        ("fp", DAY + dt.timedelta(days=1), "3", None, None, None),
        ("fp", DAY, "4", None, None, None),
        ("fp", DAY, "3", "/r/out.parquet", None, None),
        ("fp", DAY, "3", None, 10, None),
        ("fp", DAY, "3", None, None, "none"),
    ]
    assert len({job_id(*c) for c in changed} | {first}) == len(changed) + 1


def test_one_runner_holds_a_job_at_a_time(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "tasks")
    held = store.try_lock("a" * JOB_ID_LENGTH)
    assert held is not None
    assert store.try_lock("a" * JOB_ID_LENGTH) is None and store.is_running("a" * JOB_ID_LENGTH)
    assert store.try_lock("b" * JOB_ID_LENGTH) is not None  # another job is free
    os.close(held)
    assert not store.is_running("a" * JOB_ID_LENGTH)


def test_without_a_root_every_task_call_answers_403(tmp_path: Path) -> None:
    tasks = BatchTasks(Settings(home=tmp_path, batch_root=None))
    for call in (lambda: tasks.status("a" * JOB_ID_LENGTH), lambda: tasks.result("a" * JOB_ID_LENGTH)):
        with pytest.raises(TaskError) as caught:
            call()
        assert caught.value.status == 403 and "RETENTION_BATCH_ROOT" in str(caught.value)
    with pytest.raises(TaskError) as caught:
        tasks.submit(None, "in/tx.parquet", "2024-12-30")  # type: ignore[arg-type]
    assert caught.value.status == 403
