"""The nightly scoring job: ranked output, nothing lost or duplicated, atomic, resumable, idempotent."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_util import run_cli

from serving.batch import OUTPUT_COLUMNS


def score(workspace, out: str, *extra: str):
    return run_cli(
        "score",
        "-t",
        str(workspace.transactions),
        "--as-of",
        workspace.AS_OF,
        "--out",
        out,
        *extra,
        cwd=workspace.root,
        env=workspace.env,
    )


@pytest.fixture(scope="module")
def scored(workspace, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    result = score(workspace, str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_one_row_per_customer_ranked_by_value_at_risk(workspace, scored) -> None:
    out, result = scored
    table = pd.read_parquet(out)
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    customers = pd.read_parquet(workspace.transactions)["customer_id"].unique()
    assert table["customer_id"].is_unique and set(table["customer_id"]) == set(customers)
    assert table["retention_rank"].tolist() == list(range(1, len(table) + 1))
    assert table["value_at_risk"].is_monotonic_decreasing
    assert (table["model_version"] == "1").all() and (table["as_of"] == workspace.AS_OF).all()
    assert table["customer_id"].str.match(r"^C\d{7}$").all(), "ids keep their zero padding"
    assert set(table["tier"]) == {"platinum", "gold", "silver", "bronze"}
    assert table["reason_1"].notna().all()
    assert f"scored {len(table):,} customers" in result.stdout
    assert "top 20% of customers hold" in result.stdout and "tiers: platinum" in result.stdout
    assert "customer equity over the next 90 days: " in result.stdout and "(80% interval " in result.stdout


def test_rerun_is_idempotent_and_top_k(workspace, scored, tmp_path) -> None:
    out, _ = scored
    again = tmp_path / "again.csv"
    assert score(workspace, str(again), "--partitions", "3", "--no-record").returncode == 0
    first = pd.read_parquet(out)
    second = pd.read_csv(again, dtype={"customer_id": str, "model_version": str, "as_of": str})
    pd.testing.assert_series_equal(first["customer_id"], second["customer_id"])
    pd.testing.assert_series_equal(first["value_at_risk"], second["value_at_risk"], rtol=1e-9)
    top = tmp_path / "top.parquet"
    assert score(workspace, str(top), "--top-k", "10", "--no-record").returncode == 0
    pd.testing.assert_frame_equal(pd.read_parquet(top), first.head(10))


def test_spooled_partitions_give_the_same_rows(workspace, scored, tmp_path) -> None:
    out, _ = scored
    spooled = tmp_path / "spooled.parquet"
    result = score(workspace, str(spooled), "--spool", "--partitions", "5", "--no-record")
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(spooled), pd.read_parquet(out))


def test_killed_job_leaves_previous_output_and_resumes(workspace, scored, tmp_path) -> None:
    out, _ = scored
    dest = tmp_path / "nightly.parquet"
    previous = pd.DataFrame({"customer_id": ["yesterday"]})
    previous.to_parquet(dest)
    env = {**os.environ, **workspace.env}
    command = [
        sys.executable,
        "-m",
        "retention",
        "score",
        "-t",
        str(workspace.transactions),
        "--as-of",
        workspace.AS_OF,
        "--out",
        str(dest),
        "--partitions",
        "40",
        "--no-record",
    ]
    proc = subprocess.Popen(command, cwd=workspace.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    parts = tmp_path / ".nightly.parquet.parts"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.exists() and len(list(parts.rglob("part-*.json"))) >= 3:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # killed mid-job: the previous output is intact, nothing partial is visible
        pd.testing.assert_frame_equal(pd.read_parquet(dest), previous)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("nightly") and p != dest]
        finished = len(list(parts.rglob("part-*.json")))
        resumed = subprocess.run(command, cwd=workspace.root, env=env, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr
        assert f"{finished} resumed" in resumed.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(dest), pd.read_parquet(out))
    assert not parts.exists(), "staging parts are removed after a successful job"


def test_sqlite_and_postgres_destinations(workspace, scored, tmp_path, postgres_url) -> None:
    import sqlalchemy

    out, _ = scored
    expected = pd.read_parquet(out)
    for url in (
        f"sqlite:///{tmp_path / 'scores.db'}?table=retention_list",
        f"{postgres_url}?table=retention_test_scores",
    ):
        for _ in range(2):  # the second run swaps the table in place
            result = score(workspace, url, "--no-record")
            assert result.returncode == 0, result.stderr
        engine_url = url.split("?")[0].replace("postgresql://", "postgresql+psycopg://")
        engine = sqlalchemy.create_engine(engine_url)
        table = url.split("table=")[1]
        got = pd.read_sql_table(table, engine).sort_values("retention_rank", ignore_index=True)
        assert got["customer_id"].tolist() == expected["customer_id"].tolist()
        assert len(got) == len(expected)
        with engine.begin() as conn:
            names = sqlalchemy.inspect(conn).get_table_names()
            assert not [n for n in names if n.startswith(f"{table}__staging")]
            if "postgresql" in engine_url:
                conn.execute(sqlalchemy.text(f"DROP TABLE {table}"))
        engine.dispose()


def test_postgres_source(workspace, scored, tmp_path, postgres_url) -> None:
    import sqlalchemy

    out, _ = scored
    engine = sqlalchemy.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    pd.read_parquet(workspace.transactions).to_sql("retention_test_tx", engine, if_exists="replace", index=False)
    try:
        dest = tmp_path / "from_pg.parquet"
        result = run_cli(
            "score",
            "-t",
            f"{postgres_url}?table=retention_test_tx",
            "--as-of",
            workspace.AS_OF,
            "--out",
            str(dest),
            "--no-record",
            cwd=workspace.root,
            env=workspace.env,
        )
        assert result.returncode == 0, result.stderr
        pd.testing.assert_frame_equal(pd.read_parquet(dest), pd.read_parquet(out))
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS retention_test_tx"))
        engine.dispose()


def test_run_is_recorded_in_mlflow_with_drift(workspace, scored) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=workspace.tracking_uri)
    experiment = client.get_experiment_by_name("retention-scoring")
    runs = client.search_runs([experiment.experiment_id])
    assert runs
    run = runs[-1]
    assert run.data.params["model_version"] == "1"
    assert run.data.metrics["customers_scored"] > 0
    metrics = run.data.metrics
    assert 0 < metrics["equity_low"] < metrics["equity"] < metrics["equity_high"]
    assert "psi_recency_days" in run.data.metrics


def test_bad_inputs_exit_2(workspace, tmp_path) -> None:
    missing = score(workspace, str(tmp_path / "x.parquet"), "--engine", "flink")
    assert missing.returncode == 2 and "--engine" in missing.stderr
    bad_out = score(workspace, str(tmp_path / "x.json"), "--no-record")
    assert bad_out.returncode == 2 and "must end in .csv or .parquet" in bad_out.stderr
    no_model = score(workspace, str(tmp_path / "x.parquet"), "--model", "models:/nope@champion")
    assert no_model.returncode == 2 and "not in the registry" in no_model.stderr


def test_more_partitions_than_customers_and_ids_as_text(workspace, tmp_path) -> None:
    source = tmp_path / "tiny.csv"
    source.write_text("customer_id,timestamp,amount\n00042,2024-01-01,10\n0042,2024-02-01,5\n")
    out = tmp_path / "tiny.csv.out.csv"
    result = run_cli(
        "score",
        "-t",
        str(source),
        "--as-of",
        workspace.AS_OF,
        "--out",
        str(out),
        "--partitions",
        "8",
        "--no-record",
        "--allow-future-as-of",  # the as-of date lies ten months after these two purchases
        cwd=workspace.root,
        env=workspace.env,
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out, dtype={"customer_id": str})
    assert sorted(table["customer_id"]) == ["00042", "0042"]


def _small_source(workspace, tmp_path: Path) -> Path:
    tx = pd.read_parquet(workspace.transactions)
    keep = tx["customer_id"].isin(tx["customer_id"].unique()[:200])
    path = tmp_path / "small.parquet"
    tx[keep].to_parquet(path, index=False)
    return path


def test_resume_recomputes_parts_saved_by_an_older_contract(workspace, tmp_path, monkeypatch) -> None:
    """A part whose saved report has other rules (saved before ``duplicate_transaction_id`` became
    ``duplicate_line``) or is torn is computed again; the other parts are resumed."""
    import json
    import types

    from serving import batch
    from serving.loader import load_model

    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    model = load_model("models:/retention@champion")
    source = _small_source(workspace, tmp_path)
    dest = tmp_path / "out" / "scores.parquet"
    with monkeypatch.context() as patch:  # keep the staging folder of a finished job, as a killed job leaves it
        patch.setattr(batch, "shutil", types.SimpleNamespace(rmtree=lambda *a, **k: None))
        first = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4)
    expected = pd.read_parquet(dest)
    [staging] = (dest.parent / ".scores.parquet.parts").iterdir()
    old = staging / "part-00001.json"
    meta = json.loads(old.read_text())
    counts = meta["report"]["rule_counts"]
    counts["duplicate_transaction_id"] = counts.pop("duplicate_line")
    old.write_text(json.dumps(meta))
    (staging / "part-00002.json").write_text('{"report": {')  # torn
    dest.unlink()

    again = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4)
    assert again.resumed_partitions == 2
    pd.testing.assert_frame_equal(pd.read_parquet(dest), expected)
    assert again.report == first.report
    assert not (dest.parent / ".scores.parquet.parts").exists()


def test_normalize_ids_before_partitioning(workspace, tmp_path) -> None:
    """``17850.0`` and ``17850`` hash to different partitions as written: normalised first, they are one customer."""
    from serving.batch import partition_of

    partitions = next(p for p in range(2, 64) if len(set(partition_of(pd.Series(["17850.0", "17850"]), p))) == 2)
    source = tmp_path / "floats.csv"
    source.write_text("customer_id,timestamp,amount\n17850.0,2024-01-01,10\n17850,2024-02-01,5\n13047.0,2024-01-03,7\n")
    out = tmp_path / "floats.out.csv"
    args = ("score", "-t", str(source), "--as-of", workspace.AS_OF, "--out", str(out), "--no-record")
    args += ("--partitions", str(partitions), "--allow-future-as-of")  # months after these purchases
    plain = run_cli(*args, cwd=workspace.root, env=workspace.env)
    assert plain.returncode == 0, plain.stderr
    assert sorted(pd.read_csv(out, dtype={"customer_id": str})["customer_id"]) == ["13047.0", "17850", "17850.0"]
    for extra in ((), ("--spool",)):
        result = run_cli(*args, "--normalize-ids", *extra, cwd=workspace.root, env=workspace.env)
        assert result.returncode == 0, result.stderr
        assert sorted(pd.read_csv(out, dtype={"customer_id": str})["customer_id"]) == ["13047", "17850"]
        assert "data quality: 3 valid of 3 rows" in result.stdout


# --- issue 14: corrupted partitions, unwritable outputs, future as-of dates ---------------------------------------


def test_a_corrupted_parquet_file_is_counted_and_named(workspace, tmp_path) -> None:
    """One file of a Parquet directory reads as dates in 1682: counted as implausible_timestamp, named in a warning,
    and --strict fails (it used to exit 0 and score with the garbled dates)."""
    tx = pd.read_parquet(workspace.transactions)
    ids = tx["customer_id"].unique()[:300]
    folder = tmp_path / "export"
    folder.mkdir()
    for k in range(3):
        part = tx[tx["customer_id"].isin(ids[k::3])].reset_index(drop=True)
        if k == 1:
            part["timestamp"] = pd.Timestamp("1682-03-01", tz="UTC") + pd.to_timedelta(part.index, unit="h")
            garbled = len(part)
        part.to_parquet(folder / f"part-{k}.parquet", index=False)
    out = tmp_path / "scores.csv"
    args = ("score", "-t", str(folder), "--as-of", workspace.AS_OF, "--out", str(out), "--no-record")
    result = run_cli(*args, cwd=workspace.root, env=workspace.env)
    assert result.returncode == 0, result.stderr
    assert f"implausible timestamp {garbled:,}" in result.stdout
    assert f"WARNING input: input file 'part-1.parquet': {garbled:,} of {garbled:,} rows (100%)" in result.stdout
    assert "part-0.parquet" not in result.stdout and "part-2.parquet" not in result.stdout
    scored = pd.read_csv(out, dtype={"customer_id": str})
    assert not set(scored["customer_id"]) & set(ids[1::3])  # no garbled customer was scored
    strict = run_cli(*args, "--strict", cwd=workspace.root, env=workspace.env)
    assert strict.returncode == 2, strict.stderr
    assert f"{garbled} implausible timestamp" in strict.stderr and "Traceback" not in strict.stderr


@pytest.mark.parametrize(
    "out",
    ["{tmp}/a-file/scores.csv", "sqlite:///{tmp}/no/such/folder/scores.db?table=retention_scores"],
    ids=["file-under-a-file", "sqlite-folder-missing"],
)
def test_an_output_that_cannot_be_written_exits_2_before_scoring(workspace, tmp_path, out: str) -> None:
    (tmp_path / "a-file").write_text("")
    dest = out.format(tmp=tmp_path)
    result = run_cli(
        "score", "-t", str(workspace.transactions), "--as-of", workspace.AS_OF, "--out", dest, "--no-record",
        cwd=workspace.root, env=workspace.env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    if dest.startswith("sqlite"):
        assert errors[0] == (
            f"error: the folder '{tmp_path}/no/such/folder' of the SQLite output database "
            f"'{tmp_path}/no/such/folder/scores.db' does not exist"
        )
    else:
        assert (
            errors[0]
            == f"error: output folder '{tmp_path}/a-file' is not writable: '{tmp_path}/a-file' is not a folder"
        )
    assert "scoring partitions" not in result.stderr


def test_score_refuses_a_future_as_of_date(workspace, tmp_path) -> None:
    out = tmp_path / "scores.csv"
    for as_of in ("2030-01-01", "9999-12-31"):
        result = run_cli(
            "score", "-t", str(workspace.transactions), "--as-of", as_of, "--out", str(out), "--no-record",
            cwd=workspace.root, env=workspace.env,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert f"error: as-of date {as_of} is" in result.stderr and "--allow-future-as-of" in result.stderr
        assert not out.exists()


@pytest.fixture(scope="module")
def champion(workspace):
    """The workspace's champion loaded in this process (the job itself, without a CLI start per run)."""
    from serving.loader import load_model

    with pytest.MonkeyPatch.context() as patch:
        for name, value in workspace.env.items():
            patch.setenv(name, value)
        yield load_model("models:/retention@champion")


def run_job(workspace, model, dest: Path, **options):
    from serving import batch

    return batch.run_score_job(str(workspace.transactions), workspace.AS_OF, str(dest), model, **options)


def assert_equity_of(summary, scored: pd.DataFrame, model) -> None:
    """The summary's customer equity is :func:`serving.intervals.equity_interval` of the scored list (every
    customer's ``expected_value`` and tier; summed in another order, so equal to rounding)."""
    from serving.intervals import equity_interval

    tiers = pd.Index(model.meta.tier_names).get_indexer(scored["tier"])
    low, high, total = equity_interval(scored["expected_value"].to_numpy(), tiers, model.intervals)
    assert summary.equity == pytest.approx(total, rel=1e-12) and total == pytest.approx(scored["expected_value"].sum())
    assert summary.equity_low == pytest.approx(low, rel=1e-12)
    assert summary.equity_high == pytest.approx(high, rel=1e-12)
    assert 0 < low < total < high and summary.horizon_days == 90


def test_top_k_with_default_reasons_equals_the_head_of_the_full_list(workspace, scored, champion, tmp_path) -> None:
    """``--top-k K`` explains only its K rows (after the rank); every column equals the first K rows of the full
    ``--reasons all`` list exactly, as does ``--top-k K --reasons all`` (everyone explained in the partitions).
    The CLI runs once (its flags reach the job); the other modes run the same job in this process."""
    full = tmp_path / "all.parquet"
    summary = run_job(workspace, champion, full, reasons="all")
    expected = pd.read_parquet(full)
    assert_equity_of(summary, expected, champion)
    pd.testing.assert_frame_equal(expected, pd.read_parquet(scored[0]), check_exact=True)
    k = 57
    top = tmp_path / "top-cli.parquet"
    result = score(workspace, str(top), "--top-k", str(k), "--partitions", "3", "--no-record")
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(top), expected.head(k), check_exact=True)
    for reasons in ("top-k", "all"):
        top = tmp_path / f"top-{reasons}.parquet"
        top_summary = run_job(workspace, champion, top, top_k=k, partitions=3, reasons=reasons)
        assert_equity_of(top_summary, expected, champion)  # every scored customer, not the K written
        pd.testing.assert_frame_equal(pd.read_parquet(top), expected.head(k), check_exact=True)
    assert expected.head(k)["reason_1"].notna().all()


def test_reasons_none_keeps_scores_order_and_columns_with_null_reasons(workspace, scored, champion, tmp_path) -> None:
    none = tmp_path / "none.parquet"
    run_job(workspace, champion, none, reasons="none")
    table, expected = pd.read_parquet(none), pd.read_parquet(scored[0])
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    assert table.dtypes.equals(expected.dtypes), "same schema, reasons null"
    reasons = ["reason_1", "reason_2", "reason_3", "churn_cause"]  # what the reasons fill
    assert table[reasons].isna().all().all()
    rest = [c for c in OUTPUT_COLUMNS if c not in reasons]
    pd.testing.assert_frame_equal(table[rest], expected[rest], check_exact=True)
    refused = score(workspace, str(none), "--reasons", "some", "--no-record")
    assert refused.returncode == 2 and "--reasons" in refused.stderr, refused.stderr


def test_resumed_top_k_job_gives_the_same_bytes(workspace, tmp_path, monkeypatch) -> None:
    """A top-K job resumed from its part files (scores + feature rows, no reasons) writes the same bytes; parts of
    another reasons mode are not reused (the job key holds the mode)."""
    import types

    from serving import batch
    from serving.loader import load_model

    for name, value in workspace.env.items():
        monkeypatch.setenv(name, value)
    model = load_model("models:/retention@champion")
    source = _small_source(workspace, tmp_path)
    dest = tmp_path / "out" / "top.parquet"
    staging_root = dest.parent / ".top.parquet.parts"
    with monkeypatch.context() as patch:  # keep the staging folder of a finished job, as a killed job leaves it
        patch.setattr(batch, "shutil", types.SimpleNamespace(rmtree=lambda *a, **k: None))
        first = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4, top_k=25)
        expected = dest.read_bytes()
        [staging] = staging_root.iterdir()
        part = pd.read_parquet(staging / "part-00000.parquet")
        assert part["reason_1"].isna().all() and any(c.startswith(batch.FEATURE_PREFIX) for c in part.columns)
        dest.unlink()
        again = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4, top_k=25)
        assert (first.resumed_partitions, again.resumed_partitions) == (0, 4)
        assert dest.read_bytes() == expected
        other = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4, reasons="none")
        assert other.resumed_partitions == 0
    full = batch.run_score_job(str(source), workspace.AS_OF, str(dest), model, partitions=4, reasons="all")
    assert full.resumed_partitions == 0
    pd.testing.assert_frame_equal(pd.read_parquet(dest).head(25), pd.read_parquet(io.BytesIO(expected)))
    assert not staging_root.exists()
