"""Batch scoring as a service task: submit a job, poll its progress, fetch its result location and run summary.

A campaign tool or a scheduler calls the service (routes in :mod:`serving.service`, API key like every route):

- ``POST /batch/submit`` ``{source, as_of, destination?, top_k?, reasons?}`` answers at once with the job's record
  (``job_id``, ``status``): **202 Accepted** for a job started now or already running, with a ``poll`` hint (the
  route and body of its status, :func:`poll_hint`); **200** for an identical job that already finished
  (:func:`submit_status`). The job runs :func:`serving.batch.run_score_job` -- the very function behind
  ``retention score`` (atomic output, resumable staging, same rows) -- in a background thread of the worker;
- ``POST /batch/status`` ``{job_id}``: ``queued | running | done | failed | interrupted``, partitions done of the
  total and input rows done (transaction rows of the finished partitions), the error of a failed job;
- ``POST /batch/result`` ``{job_id}``: the output location and the run summary (:class:`serving.batch.JobSummary`:
  rows, Pareto share, customer equity with its 80% interval, tiers, drift, data-quality counts); 409 while the
  job is not done.

Why not BentoML 1.4's ``@bentoml.task``: its ``/submit`` gives every call a new random task id (no idempotency:
the same submission twice scores twice), its result store is an SQLite file of the serving process that knows
nothing of a job interrupted by a restart (it is never resumed), it has no progress, and nothing stops two workers
from running the same job. Here, instead:

- **Idempotent**: the job id is a digest of (source fingerprint, as-of date, model version, destination, top_k,
  reasons) (:func:`job_id`); a finished job answers at once, a running one is not started again.
- **Durable**: one JSON record per job under ``<RETENTION_HOME>/tasks`` (:class:`JobStore`), replaced atomically.
- **One runner, across workers**: a job runs only while its runner holds an exclusive ``flock`` on
  ``<job_id>.lock``; the kernel drops the lock when the process dies, so a job whose record says ``running`` but
  whose lock is free was interrupted (``interrupted``) and is started again by the next submission -- resuming
  from the partitions the batch job had finished (its own staging, next to the destination).
- **Guarded paths**: sources and destinations are paths inside ``RETENTION_BATCH_ROOT`` only (resolved, symlinks
  followed, ``..`` refused: :func:`resolve_location`); SQL URLs only with ``RETENTION_BATCH_SQL=1``. Unset root:
  every task route answers 403. The default destination is ``<root>/scores/<job_id>.parquet``.

Progress comes from the job itself: :func:`~serving.batch.run_score_job`'s ``on_progress`` callback writes the
partitions done (finished or resumed) and their input rows to the record after each partition.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import inspect
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from features.contract import ContractError, to_date
from features.sources import is_sql_url
from features.urls import redact_url, url_scheme
from retention.settings import Settings
from serving.batch import DEFAULT_PARTITIONS, run_score_job, source_fingerprint
from serving.economics import economics_of_settings
from serving.model import ScoringModel
from serving.scorecard import weights_of_settings

__all__ = [
    "JOB_ID_LENGTH",
    "BatchTasks",
    "JobStore",
    "TaskError",
    "job_id",
    "poll_hint",
    "resolve_location",
    "submit_status",
]

log = logging.getLogger("retention.batch_tasks")
JOB_ID_LENGTH = 24
"""Hex digits of a job id (96 bits of SHA-256)."""
DISABLED = "batch tasks are disabled: set RETENTION_BATCH_ROOT on the server to the folder tasks may read and write"


class TaskError(Exception):
    """A submission or lookup the service refuses: HTTP ``status``, one sentence, the offending ``field``."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


def job_id(
    fingerprint: str, as_of: dt.date, model_version: str | None, destination: str | None, top_k: int | None,
    reasons: str | None,
) -> str:  # fmt: skip
    """The job's id: SHA-256 of what decides its output -- the source's fingerprint (files, sizes, mtimes; or the
    URL), the as-of date, the model version, the destination as resolved (None: the default one), ``top_k`` and
    ``reasons`` -- as :data:`JOB_ID_LENGTH` hex digits. The same submission gives the same id."""
    text = json.dumps([fingerprint, str(as_of), model_version, destination, top_k, reasons])
    return hashlib.sha256(text.encode()).hexdigest()[:JOB_ID_LENGTH]


def resolve_location(text: str, root: Path, *, field: str, allow_sql: bool, must_exist: bool) -> str:
    """``text`` (a path, absolute or relative to ``root``, or a SQL URL) as the job will use it: an absolute path
    inside ``root`` after resolving symlinks, or the SQL URL when ``allow_sql``.

    Raises :class:`TaskError`: 422 for a ``..`` part, a non-SQL URL, a NUL byte or (``must_exist``) a missing path;
    403 for a path outside ``root`` (also through a symlink) or a SQL URL while they are not allowed.
    """
    if is_sql_url(text):
        if not allow_sql:
            raise TaskError(403, f"{field}: SQL URLs are not allowed here (set RETENTION_BATCH_SQL=1)", field)
        return text
    if url_scheme(text) is not None or "\x00" in text or not text.strip():
        raise TaskError(422, f"{field}: must be a path inside the batch root or a SQL URL", field)
    path = Path(text)
    if ".." in path.parts:
        raise TaskError(422, f"{field}: '..' is not allowed in a path", field)
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise TaskError(403, f"{field}: the path is outside the batch root (RETENTION_BATCH_ROOT)", field)
    if must_exist and not resolved.exists():
        raise TaskError(422, f"{field}: '{resolved.relative_to(root)}' does not exist in the batch root", field)
    return str(resolved)


def poll_hint(job: str) -> dict[str, Any]:
    """Where to follow a job that is not done (a ``Location`` in the body: the status route takes a JSON body)."""
    return {"method": "POST", "path": "/batch/status", "body": {"job_id": job}}


def submit_status(answer: dict[str, Any]) -> int:
    """The HTTP status of a ``/batch/submit`` answer: 200 when the job is done (its record is final), 202 Accepted
    while it runs (started by this submission or already running: poll ``/batch/status``)."""
    return 200 if answer["status"] == "done" else 202


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class JobStore:
    """The job records: ``<folder>/<job_id>.json`` (replaced atomically) and the runner's lock ``<job_id>.lock``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def read(self, job: str) -> dict[str, Any] | None:
        """The record of ``job``, or None when there is none (or it cannot be read)."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.folder / f"{job}.json").read_text())
        return None

    def write(self, record: dict[str, Any]) -> None:
        """Replace the record atomically (temporary file + rename): a reader never sees half of one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{record['job_id']}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)

    def try_lock(self, job: str) -> int | None:
        """The open descriptor holding the exclusive lock of ``job``, or None when another runner (thread or
        process) holds it. Closing the descriptor -- or the process dying -- releases it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / f"{job}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def is_running(self, job: str) -> bool:
        """Whether a runner holds the lock of ``job`` now."""
        fd = self.try_lock(job)
        if fd is None:
            return True
        os.close(fd)
        return False


class BatchTasks:
    """The service's batch tasks: :meth:`submit`, :meth:`status`, :meth:`result` (blocking: call them off the
    event loop). Settings are read once, at service start."""

    def __init__(self, settings: Settings):
        self.root = settings.batch_root.resolve() if settings.batch_root is not None else None
        self.allow_sql = settings.batch_sql
        self.store = JobStore(settings.tasks_dir)
        self.economics = economics_of_settings(settings)
        """The service's economics (``RETENTION_ECONOMICS``): what ``expected_profit`` means in a task's list."""
        self.scorecard_weights = weights_of_settings(settings)
        """The service's composite weights (``RETENTION_SCORECARD_WEIGHTS``; None: 1/3 each)."""
        self._write_lock = threading.Lock()

    def _root(self) -> Path:
        if self.root is None:
            raise TaskError(403, DISABLED)
        return self.root

    def _shown(self, location: str) -> str:
        return redact_url(location) if is_sql_url(location) else location

    def submit(
        self, model: ScoringModel, source: str, as_of: str, destination: str | None = None,
        top_k: int | None = None, reasons: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Start the job (or find it): a copy of its record, with a ``poll`` hint (:func:`poll_hint`) unless it is
        done; answered with :func:`submit_status`. A finished job's record comes back as it is; a job another
        runner holds is not started again; a new, failed or interrupted one starts in a background thread."""
        record = self._start(model, source, as_of, destination, top_k, reasons)
        return dict(record) if record["status"] == "done" else {**record, "poll": poll_hint(record["job_id"])}

    def _start(
        self, model: ScoringModel, source: str, as_of: str, destination: str | None, top_k: int | None,
        reasons: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        """:meth:`submit`'s work: the job's record (the runner's own dict when this call started it)."""
        root = self._root()
        if reasons is not None and "reasons" not in inspect.signature(run_score_job).parameters:
            raise TaskError(422, "reasons: this server's batch job does not take 'reasons' yet", "reasons")
        try:
            as_of_date = to_date(as_of)
        except ContractError as exc:
            raise TaskError(422, f"as_of: {exc}", "as_of") from None
        assert as_of_date is not None
        src = resolve_location(source, root, field="source", allow_sql=self.allow_sql, must_exist=True)
        dest = None
        if destination is not None:
            dest = resolve_location(destination, root, field="destination", allow_sql=self.allow_sql, must_exist=False)
            if not is_sql_url(dest) and Path(dest).suffix.lower() not in (".parquet", ".csv"):
                raise TaskError(422, "destination: must end in .parquet or .csv", "destination")
        job = job_id(source_fingerprint(src), as_of_date, model.version, dest, top_k, reasons)
        dest = dest or str(root / "scores" / f"{job}.parquet")
        record = self.store.read(job)
        if record is not None and record["status"] == "done":
            return record
        fd = self.store.try_lock(job)
        if fd is None:  # another thread or worker runs it
            return self.store.read(job) or {"job_id": job, "status": "running"}
        record = self.store.read(job)
        if record is not None and record["status"] == "done":  # finished between the first read and the lock
            os.close(fd)
            return record
        record = {
            "job_id": job,
            "status": "running",
            "source": self._shown(src),
            "as_of": str(as_of_date),
            "destination": self._shown(dest),
            "top_k": top_k,
            "reasons": reasons,
            "model_version": model.version,
            "partitions_total": DEFAULT_PARTITIONS,
            "partitions_done": 0,
            "rows_done": 0,
            "runs": (record or {}).get("runs", 0) + 1,
            "submitted_at": (record or {}).get("submitted_at", _now()),
            "started_at": _now(),
            "finished_at": None,
            "error": None,
            "summary": None,
        }
        self.store.write(record)
        runner = threading.Thread(
            target=self._run, args=(fd, record, model, src, dest), name=f"batch-task-{job}", daemon=True
        )
        runner.start()
        return record

    def _update(self, record: dict[str, Any], **changes: Any) -> None:
        with self._write_lock:
            record.update(changes)
            self.store.write(record)

    def _run(self, fd: int, record: dict[str, Any], model: ScoringModel, src: str, dest: str) -> None:
        """The job, holding the lock ``fd``: :func:`run_score_job`, its progress written to the record after each
        partition; the record ends ``done`` with the summary or ``failed`` with the reason (the previous output stays
        as it was)."""

        def on_progress(done: int, total: int, rows: int) -> None:
            self._update(record, partitions_done=done, partitions_total=total, rows_done=rows)

        extra = {"reasons": record["reasons"]} if record["reasons"] is not None else {}
        try:
            summary = run_score_job(
                source=src, as_of=record["as_of"], dest=dest, model=model, top_k=record["top_k"],
                partitions=DEFAULT_PARTITIONS, on_progress=on_progress, economics=self.economics,
                scorecard_weights=self.scorecard_weights, **extra,
            )  # fmt: skip
        except Exception as exc:
            if not isinstance(exc, ContractError):
                log.exception("batch task %s failed", record["job_id"])
            message = str(exc) if isinstance(exc, ContractError) else f"{type(exc).__name__}: {exc}"
            self._update(record, status="failed", error=message, finished_at=_now())
        else:
            result = summary.to_dict()
            result["output"] = self._shown(result["output"])
            self._update(
                record, status="done", partitions_done=summary.partitions, rows_done=summary.report.rows_read,
                summary=result, finished_at=_now(),
            )  # fmt: skip
        finally:
            os.close(fd)

    def _record(self, job: str) -> dict[str, Any]:
        self._root()
        if len(job) != JOB_ID_LENGTH or any(c not in "0123456789abcdef" for c in job):
            raise TaskError(422, f"job_id: must be {JOB_ID_LENGTH} lowercase hex digits", "job_id")
        record = self.store.read(job)
        if record is None:
            raise TaskError(404, f"job_id: no batch job '{job}'", "job_id")
        if record["status"] == "running" and not self.store.is_running(job):
            record["status"] = "interrupted"
            record["error"] = "the server stopped during the job: submit it again to resume from its finished parts"
        return record

    def status(self, job: str) -> dict[str, Any]:
        """The job's record without the summary (:meth:`result` has it)."""
        return {k: v for k, v in self._record(job).items() if k != "summary"}

    def result(self, job: str) -> dict[str, Any]:
        """Where the finished job wrote its ranked list, and its run summary; 409 until it is done."""
        record = self._record(job)
        if record["status"] != "done":
            reason = f": {record['error']}" if record.get("error") else ""
            raise TaskError(409, f"job_id: job {job} is {record['status']}{reason}", "job_id")
        return {k: record[k] for k in ("job_id", "status", "destination", "model_version", "as_of", "summary")}
