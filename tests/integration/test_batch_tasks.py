"""Batch scoring as a service task, over real HTTP against a real server: submit (202 while the job runs, 200 once
done), poll, result equal to `retention score`'s, one run per submission, guarded paths, a failed job says why, a
killed server resumes."""

from __future__ import annotations

import contextlib
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import psutil
import pytest
from cli_util import run_cli
from server_util import Server, assert_error_shape, start_server, stop

MODEL = "models:/retention@champion"
POLL_SECONDS = 0.2


def cli_score(workspace, source: Path, out: Path, *extra: str) -> pd.DataFrame:
    """`retention score` on ``source``: the reference output of a batch task."""
    done = run_cli(
        "score", "-t", str(source), "--as-of", workspace.AS_OF, "--out", str(out), "--no-record", *extra,
        cwd=workspace.root, env=workspace.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return pd.read_parquet(out)


def serve(workspace, root: Path, home: Path) -> Server:
    return start_server(workspace, None, MODEL, {"RETENTION_BATCH_ROOT": str(root), "RETENTION_HOME": str(home)})


def poll(server: Server, job_id: str, until, deadline_seconds: float = 600, every: float = POLL_SECONDS) -> dict:
    """The job's status once ``until(status)`` holds (or it ended: done/failed)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        answer = server.post("/batch/status", {"job_id": job_id})
        assert answer.status_code == 200, answer.text
        status = answer.json()
        if until(status) or status["status"] in ("done", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(every)


def kill_tree(server: Server) -> None:
    """SIGKILL the server and every process under it (the BentoML supervisor and its worker), as a crash would."""
    main = psutil.Process(server.proc.pid)
    processes = [main, *main.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)
    server.proc.wait(30)


@pytest.fixture(scope="module")
def root(workspace, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch-root")
    (folder / "in").mkdir()
    shutil.copy(workspace.transactions, folder / "in" / "tx.parquet")
    return folder


@pytest.fixture(scope="module")
def server(workspace, root, tmp_path_factory) -> Iterator[Server]:
    s = serve(workspace, root, tmp_path_factory.mktemp("tasks-home"))
    yield s
    stop(s)


@pytest.fixture(scope="module")
def reference(workspace, root, tmp_path_factory) -> pd.DataFrame:
    return cli_score(workspace, root / "in" / "tx.parquet", tmp_path_factory.mktemp("cli") / "scores.parquet")


def test_submit_poll_result_equals_retention_score(workspace, server, root, reference) -> None:
    submitted = server.post("/batch/submit", {"source": "in/tx.parquet", "as_of": workspace.AS_OF})
    assert submitted.status_code == 202, submitted.text  # Accepted: started now
    job = submitted.json()
    assert job["status"] == "running" and len(job["job_id"]) == 24
    assert job["poll"] == {"method": "POST", "path": "/batch/status", "body": {"job_id": job["job_id"]}}
    status = poll(server, job["job_id"], lambda s: False)
    assert status["status"] == "done", status
    assert status["partitions_done"] == status["partitions_total"] == 8
    assert status["rows_done"] == len(pd.read_parquet(root / "in" / "tx.parquet"))
    result = server.post("/batch/result", {"job_id": job["job_id"]}).json()
    assert result["destination"] == str(root / "scores" / f"{job['job_id']}.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(result["destination"]), reference)
    summary = result["summary"]
    assert summary["rows_written"] == summary["customers_scored"] == len(reference)
    assert sum(summary["tier_counts"].values()) == len(reference)
    assert 0 < summary["top20_value_share"] <= 1 and set(summary["psi"]) and summary["report"]["rows_read"]
    assert summary["equity"] == pytest.approx(reference["expected_value"].sum(), rel=1e-12)
    assert 0 < summary["equity_low"] < summary["equity"] < summary["equity_high"]  # JSON numbers, the 80% interval


def test_the_same_submission_twice_is_one_job_and_one_run(workspace, server, root) -> None:
    body = {"source": str(root / "in" / "tx.parquet"), "as_of": workspace.AS_OF, "top_k": 25}
    started = server.post("/batch/submit", body)
    assert started.status_code == 202, started.text
    first = started.json()
    repeated = server.post("/batch/submit", body)  # while the first may still run: not started again
    second = repeated.json()
    assert second["job_id"] == first["job_id"]
    assert repeated.status_code == (200 if second["status"] == "done" else 202)  # running: 202, done already: 200
    status = poll(server, first["job_id"], lambda s: False)
    assert status["status"] == "done" and status["runs"] == 1
    finished = server.post("/batch/submit", body)  # finished: answered at once, no new run
    assert finished.status_code == 200, finished.text
    again = finished.json()
    assert again["status"] == "done" and again["runs"] == 1 and again["job_id"] == first["job_id"]
    assert "poll" not in again
    assert len(pd.read_parquet(status["destination"])) == 25
    other = server.post("/batch/submit", {**body, "top_k": 26}).json()
    assert other["job_id"] != first["job_id"]
    poll(server, other["job_id"], lambda s: False)


def test_bad_inputs_get_one_clear_error(workspace, server, root, tmp_path) -> None:
    outside = tmp_path / "outside.parquet"
    shutil.copy(workspace.transactions, outside)
    (root / "escape").symlink_to(tmp_path, target_is_directory=True)
    as_of = workspace.AS_OF
    cases = [
        ({"source": str(outside), "as_of": as_of}, 403, "source"),
        ({"source": "escape/outside.parquet", "as_of": as_of}, 403, "source"),
        ({"source": "in/../../outside.parquet", "as_of": as_of}, 422, "source"),
        ({"source": "in/missing.parquet", "as_of": as_of}, 422, "source"),
        ({"source": "sqlite:///x.db?table=t", "as_of": as_of}, 403, "source"),
        ({"source": "in/tx.parquet", "as_of": as_of, "destination": str(tmp_path / "o.parquet")}, 403, "destination"),
        ({"source": "in/tx.parquet", "as_of": as_of, "destination": "out/o.txt"}, 422, "destination"),
        ({"source": "in/tx.parquet", "as_of": "yesterday-ish"}, 422, "as_of"),
        ({"source": "in/tx.parquet", "as_of": as_of, "reasons": "some"}, 400, "reasons"),
        ({"source": "in/tx.parquet", "as_of": as_of, "top_k": 0}, 400, "top_k"),
    ]
    for body, status, field in cases:
        error = assert_error_shape(server.post("/batch/submit", body), status)
        assert error.get("field") == field, (body, error)
        assert str(tmp_path) not in error["error"] and str(root) not in error["error"]
    assert_error_shape(server.post("/batch/status", {"job_id": "../../etc"}), 422)
    assert_error_shape(server.post("/batch/status", {"job_id": "0" * 24}), 404)
    assert_error_shape(server.post("/batch/result", {"job_id": "0" * 24}), 404)


def test_a_failed_job_says_why_and_leaves_the_previous_output(workspace, server, root) -> None:
    (root / "bad.csv").write_text("who,when\na,2024-01-01\n")
    previous = pd.DataFrame({"customer_id": ["yesterday"]})
    previous.to_parquet(root / "failed-out.parquet")
    body = {"source": "bad.csv", "as_of": workspace.AS_OF, "destination": "failed-out.parquet"}
    job = server.post("/batch/submit", body).json()
    status = poll(server, job["job_id"], lambda s: False)
    assert status["status"] == "failed" and "customer_id" in status["error"], status
    pd.testing.assert_frame_equal(pd.read_parquet(root / "failed-out.parquet"), previous)
    error = assert_error_shape(server.post("/batch/result", {"job_id": job["job_id"]}), 409)
    assert "failed" in error["error"]


def test_a_killed_server_resumes_the_job_on_resubmission(workspace, root, tmp_path) -> None:
    """Kill the whole server (SIGKILL) once a partition is done, restart, resubmit: the job ends with the output an
    uninterrupted run writes, resuming from the finished partitions; the previous output is intact meanwhile.
    Without reasons (TreeSHAP would be most of the work and is not what resuming is about)."""
    tx = pd.read_parquet(workspace.transactions)
    copies = [tx.assign(customer_id=tx["customer_id"].astype(str) + f"-{i}") for i in range(12)]
    big = root / "big"
    big.mkdir()
    pd.concat(copies, ignore_index=True).to_parquet(big / "tx.parquet")
    expected = cli_score(workspace, big / "tx.parquet", tmp_path / "cli-big.parquet", "--reasons", "none")
    previous = pd.DataFrame({"customer_id": ["yesterday"]})
    previous.to_parquet(root / "nightly.parquet")
    body = {"source": "big/tx.parquet", "as_of": workspace.AS_OF, "destination": "nightly.parquet", "reasons": "none"}
    home = tmp_path / "home"

    first = serve(workspace, root, home)
    try:
        job = first.post("/batch/submit", body).json()
        status = poll(first, job["job_id"], lambda s: s["partitions_done"] >= 1, every=0.02)
        assert status["status"] == "running", f"the job ended before the kill, use a bigger input: {status}"
    finally:
        kill_tree(first)
    pd.testing.assert_frame_equal(pd.read_parquet(root / "nightly.parquet"), previous)

    second = serve(workspace, root, home)
    try:
        interrupted = second.post("/batch/status", {"job_id": job["job_id"]}).json()
        assert interrupted["status"] == "interrupted" and "submit it again" in interrupted["error"]
        restarted = second.post("/batch/submit", body)
        assert restarted.status_code == 202, restarted.text  # an interrupted job starts again: Accepted
        resumed = restarted.json()
        assert resumed["job_id"] == job["job_id"] and resumed["runs"] == 2
        done = poll(second, job["job_id"], lambda s: False)
        assert done["status"] == "done", done
        summary = second.post("/batch/result", {"job_id": job["job_id"]}).json()["summary"]
        assert summary["resumed_partitions"] >= status["partitions_done"]
    finally:
        stop(second)
    pd.testing.assert_frame_equal(pd.read_parquet(root / "nightly.parquet"), expected)


def test_api_key_guards_the_task_routes(workspace, root, tmp_path) -> None:
    s = start_server(
        workspace, None, MODEL,
        {"RETENTION_BATCH_ROOT": str(root), "RETENTION_HOME": str(tmp_path), "RETENTION_API_KEY": "k3y"},
    )  # fmt: skip
    try:
        for route in ("/batch/submit", "/batch/status", "/batch/result"):
            assert_error_shape(s.post(route, {"job_id": "0" * 24}), 401)
        ok = httpx.post(s.base + "/batch/status", json={"job_id": "0" * 24}, headers={"X-API-Key": "k3y"})
        assert_error_shape(ok, 404)
    finally:
        stop(s)


def test_routes_are_in_the_openapi_document(server) -> None:
    paths = server.get("/docs.json").json()["paths"]
    for route in ("/batch/submit", "/batch/status", "/batch/result"):
        assert "#/components/schemas/Error" in str(paths[route]["post"]["responses"]["422"])
    submit = paths["/batch/submit"]["post"]["responses"]
    assert submit["202"]["description"].startswith("Accepted") and "finished" in submit["200"]["description"]
    assert "202" not in paths["/batch/status"]["post"]["responses"]
    assert "source" in str(paths["/batch/submit"]["post"]["requestBody"])
