"""The Spark engine gives the local engine's rows and summary: same customers, ranks, scores, tiers, segments,
reasons and data-quality counts, from Parquet (file and directory), CSV with a column mapping and SQL inputs.

One local-mode SparkSession and one small model (trained here without MLflow) serve the whole module.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyspark")

from features.contract import ContractError
from serving.batch import FEATURE_PREFIX, OUTPUT_COLUMNS, REASON_COLUMNS, JobSummary, run_score_job
from serving.economics import Economics

pytestmark = [
    pytest.mark.spark,
    pytest.mark.xdist_group("spark"),  # one JVM and one model per run with --dist loadgroup
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

AS_OF = dt.date(2024, 1, 31)
HORIZON_DAYS = 60
FLOAT_COLUMNS = ("churn_probability", "expected_value", "value_at_risk", "expected_profit")
MAPPING = {"customer_id": "cust", "transaction_id": "txn", "timestamp": "order_ts", "amount": "total"}


def _write_data(root) -> pd.DataFrame:
    """Generated transactions as a Parquet file and as a directory of Parquet files."""
    from features.synthetic import generate_transactions

    tx = generate_transactions(800, 400, seed=11)
    tx.to_parquet(root / "tx.parquet", index=False)
    folder = root / "tx_dir"
    folder.mkdir()
    customers = tx["customer_id"].unique()
    for i, chunk in enumerate(np.array_split(customers, 3)):
        # row blocks of the same customers in different files: the order of files matters for duplicates
        part = tx[tx["customer_id"].isin(chunk)]
        part.iloc[: len(part) // 2].to_parquet(folder / f"part-{i}-a.parquet", index=False)
        part.iloc[len(part) // 2 :].to_parquet(folder / f"part-{i}-b.parquet", index=False)
    # first in name order but smallest (Spark reads big files first): re-used transaction ids with other amounts,
    # i.e. a second line of 40 orders, summed with the original line (mapped as transactions: the report warns);
    # which line is the order's first (its category, channel) and the order of the floating-point sum depend on
    # reading the files in the local engine's order
    early = tx.sample(40, random_state=1).assign(amount=lambda f: f["amount"] * 3 + 1)
    early.to_parquet(folder / "part-0-0.parquet", index=False)
    return tx


def _exact_copies(tx: pd.DataFrame) -> int:
    """Rows that repeat an earlier row in every column: the synthetic log's duplicates (rule ``duplicate_line``)."""
    return int(tx.duplicated().sum())


def _warm_up(spark, source: str) -> None:
    """Start one Python worker per core with the scoring code imported (LightGBM pulls in scikit-learn: seconds),
    then run the engine's read, partition UDF and shuffle once: what the session's first job pays for otherwise.
    """
    from pyspark.sql import functions as F

    from serving.spark_engine import NANOS_AS_LONG, _read_files

    def touch(batches):  # nested: pickled by value (the workers cannot import this test module)
        import lightgbm  # noqa: F401

        import serving.spark_engine  # noqa: F401

        yield from batches

    def count(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"n": [len(frame)]})

    cores = spark.sparkContext.defaultParallelism
    spark.range(0, cores, numPartitions=cores).mapInPandas(touch, "id long").collect()
    spark.conf.set(NANOS_AS_LONG, "true")
    try:
        frame = _read_files(spark, source, None)[0]
        group = F.pandas_udf(lambda ids: ids.str.len() % 2, "int")
        frame = frame.withColumn("g", group("customer_id")).repartition(2, "g")
        frame.groupBy("g").applyInPandas(count, "n long").toArrow()
    finally:
        spark.conf.unset(NANOS_AS_LONG)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """``(spark, data)``: the JVM starts and runs a first job while the model trains in a thread."""
    if shutil.which("java") is None:
        pytest.skip("no Java runtime on the PATH")
    from features.kernel import index_transactions
    from serving.spark_engine import spark_session
    from training.pipeline import fit_pipeline

    root = tmp_path_factory.mktemp("spark-parity")
    tx = _write_data(root)
    box: dict = {}

    def fit() -> None:
        try:
            # one thread: OpenMP spinning on a shared machine makes more threads much slower here
            box["model"] = fit_pipeline(index_transactions(tx), AS_OF, HORIZON_DAYS, num_threads=1).model
        except BaseException as exc:  # re-raised in the main thread
            box["error"] = exc

    worker = threading.Thread(target=fit, daemon=True)
    worker.start()
    session = spark_session(
        {
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",  # short jobs: cheap JIT
        }
    )
    _warm_up(session, str(root / "tx.parquet"))
    worker.join()
    if "error" in box:
        raise box["error"]
    box["model"].version = "parity-1"
    yield session, {"root": root, "tx": tx, "model": box["model"]}
    session.stop()


@pytest.fixture(scope="module")
def spark(env):
    return env[0]


@pytest.fixture(scope="module")
def data(env):
    return env[1]


@pytest.fixture(scope="module")
def messy_csv(data):
    """The transactions as a CSV export: other column names, numeric-looking ids with leading zeros, broken rows."""
    tx = data["tx"].copy()
    tx["customer_id"] = tx["customer_id"].str[1:].str[-5:]  # "C0000042" -> "00042"
    tx["timestamp"] = tx["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    tx["amount"] = tx["amount"].map(lambda v: f"{v:.2f}").astype(object)
    tx["category"] = tx["category"] + ", misc"  # quoted field with a comma
    n = len(tx)
    rng = np.random.default_rng(3)
    rows = rng.choice(n, size=60, replace=False)
    tx.loc[tx.index[rows[:10]], "customer_id"] = None
    tx.loc[tx.index[rows[10:15]], "customer_id"] = "NA"  # pandas reads this as missing: so must Spark
    tx.loc[tx.index[rows[15:25]], "timestamp"] = "not a date"
    tx.loc[tx.index[rows[25:35]], "amount"] = "abc"
    tx.loc[tx.index[rows[35:45]], "timestamp"] = "2024-01-05"  # date only
    tx.loc[tx.index[rows[45:50]], "timestamp"] = "2024-01-05T10:00:00+02:00"  # another offset
    tx.loc[tx.index[rows[50:60]], "transaction_id"] = tx["transaction_id"].iloc[0]  # duplicates across customers
    tx = tx.rename(columns=MAPPING)
    path = data["root"] / "messy.csv"
    tx.to_csv(path, index=False)
    return path


def run_both(spark, data, source, name, **kwargs) -> tuple[JobSummary, pd.DataFrame, JobSummary, pd.DataFrame]:
    from serving.spark_engine import run_spark_job

    out = data["root"] / name
    local = run_score_job(source, AS_OF, str(out / "local.parquet"), data["model"], **kwargs)
    remote = run_spark_job(source, AS_OF, str(out / "spark.parquet"), data["model"], **kwargs)
    print(f"{name}: local {local.seconds:.1f} s, spark {remote.seconds:.1f} s")
    return local, pd.read_parquet(out / "local.parquet"), remote, pd.read_parquet(out / "spark.parquet")


def assert_same(local: JobSummary, local_rows: pd.DataFrame, remote: JobSummary, remote_rows: pd.DataFrame) -> None:
    assert list(remote_rows.columns) == list(OUTPUT_COLUMNS)
    assert len(local_rows) > 0
    assert set(remote_rows["customer_id"]) == set(local_rows["customer_id"])
    assert remote_rows["customer_id"].tolist() == local_rows["customer_id"].tolist()  # identical ranking
    assert remote_rows["retention_rank"].tolist() == local_rows["retention_rank"].tolist()
    for column in FLOAT_COLUMNS:
        np.testing.assert_allclose(remote_rows[column], local_rows[column], rtol=1e-9, atol=0)
    rest = [c for c in OUTPUT_COLUMNS if c not in FLOAT_COLUMNS]
    pd.testing.assert_frame_equal(remote_rows[rest], local_rows[rest])
    assert remote.report == local.report  # every rule count, coverage, dates and amounts
    assert remote.report.rows_read == remote.report.rows_valid + sum(remote.report.rule_counts.values())
    assert (remote.customers_scored, remote.rows_written) == (local.customers_scored, local.rows_written)
    assert remote.tier_counts == local.tier_counts
    assert remote.psi.keys() == local.psi.keys()
    for name, value in local.psi.items():
        assert remote.psi[name] == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert remote.drift_warnings == local.drift_warnings
    assert remote.top20_value_share == pytest.approx(local.top20_value_share, rel=1e-9)
    # customer equity from Spark's per-tier sums (no rows collected) = the local engine's equity_interval
    assert remote.horizon_days == local.horizon_days == HORIZON_DAYS
    assert local.equity_low is not None and local.equity_low < local.equity < local.equity_high
    for field in ("equity", "equity_low", "equity_high"):
        assert getattr(remote, field) == pytest.approx(getattr(local, field), rel=1e-9)
    assert (remote.model_version, remote.as_of, remote.partitions) == (local.model_version, local.as_of, 4)
    assert remote.economics == local.economics
    assert_close(remote.population, local.population)  # serving.batch.population_summary of the same customers


def assert_close(remote, local, where: str = "population") -> None:
    """Nested dicts and lists equal, numbers to 1e-9 (Spark's rows come in another order: sums round apart)."""
    if isinstance(local, dict):
        assert remote.keys() == local.keys(), where
        for key in local:
            assert_close(remote[key], local[key], f"{where}.{key}")
    elif isinstance(local, list):
        assert len(remote) == len(local), where
        for k, (r, v) in enumerate(zip(remote, local, strict=True)):
            assert_close(r, v, f"{where}[{k}]")
    elif isinstance(local, float):
        assert remote == pytest.approx(local, rel=1e-9, abs=1e-9), where
    else:
        assert remote == local, where


def test_parquet_file_parity(spark, data):
    told: list[tuple[int, int, int]] = []
    economics = Economics(gross_margin=0.5, cost_to_serve_per_order=6.0, cost_per_refund=4.0)
    local, local_rows, remote, remote_rows = run_both(
        spark, data, str(data["root"] / "tx.parquet"), "file", partitions=4, on_progress=lambda *t: told.append(t),
        economics=economics,
    )  # fmt: skip
    assert_same(local, local_rows, remote, remote_rows)
    assert local.economics == economics.to_dict() and local.population["unprofitable"]["customers"] > 0
    # progress: the local engine after each of its 4 partitions, Spark once when all are done
    assert [t[:2] for t in told] == [(1, 4), (2, 4), (3, 4), (4, 4), (4, 4)]
    assert told[-2] == told[-1] == (4, 4, local.report.rows_read)
    assert remote.report.rule_counts["after_as_of"] > 0
    assert remote.report.rule_counts["duplicate_line"] == _exact_copies(data["tx"]) > 0
    assert remote.report.multi_line_orders == 0 and not remote.report.looks_like_order_lines
    assert remote.resumed_partitions == 0
    assert "scored" in remote.render()


def test_top_k_and_directory_parity(spark, data):
    local, local_rows, remote, remote_rows = run_both(
        spark, data, str(data["root"] / "tx_dir"), "top_k", partitions=4, top_k=50
    )
    assert len(remote_rows) == 50
    tx = data["tx"]
    early = pd.read_parquet(data["root"] / "tx_dir" / "part-0-0.parquet")
    # the re-used ids are second lines of their orders: summed, not dropped; only exact copies are duplicates
    assert remote.report.rule_counts["duplicate_line"] == _exact_copies(tx)
    assert remote.report.rows_read == len(tx) + len(early)
    in_scope = int((early["timestamp"].dt.date <= AS_OF).sum())  # a line after the as-of date is not summed
    assert early["transaction_id"].is_unique and in_scope >= 30
    assert remote.report.multi_line_orders == remote.report.undeclared_line_orders == in_scope
    assert remote.report.looks_like_order_lines
    assert remote.customers_scored > 50
    assert_same(local, local_rows, remote, remote_rows)


def test_reasons_are_not_computed_in_the_groups_unless_every_row_is_explained(spark, data):
    """``--reasons top-k`` with ``--top-k`` and ``--reasons none``: the groups score without TreeSHAP (null reasons);
    ``top-k`` keeps each row's feature columns for the written rows' reasons after the rank (explained and compared
    with the local engine in ``test_top_k_and_directory_parity``); ``all`` explains every row in the groups."""
    from serving.spark_engine import NANOS_AS_LONG, _Bundle, _model_loader, _run

    model = data["model"]
    load = _model_loader(_Bundle.of(model), None)
    source = str(data["root"] / "tx.parquet")
    spark.conf.set(NANOS_AS_LONG, "true")
    try:
        for reasons, explained, keeps in (("none", False, False), ("top-k", False, True), ("all", True, False)):
            _, scored, rows = _run(spark, source, AS_OF, model, load, {}, 4, False, reasons)
            try:
                frame = rows.toPandas()
            finally:
                scored.unpersist()
            assert len(frame) > 0 and frame["reason_1"].notna().all() == explained, reasons
            assert frame[list(REASON_COLUMNS)].isna().all().all() != explained, reasons
            kept = [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]
            assert len(kept) == (len(model.feature_columns) if keeps else 0), reasons
    finally:
        spark.conf.unset(NANOS_AS_LONG)


def test_csv_with_column_mapping_and_zero_padded_ids(spark, data, messy_csv):
    local, local_rows, remote, remote_rows = run_both(spark, data, str(messy_csv), "csv", partitions=4, columns=MAPPING)
    assert_same(local, local_rows, remote, remote_rows)
    ids = remote_rows["customer_id"].tolist()
    assert all(isinstance(i, str) and len(i) == 5 for i in ids)
    assert "00042" in ids
    counts = remote.report.rule_counts
    assert counts["null_customer_id"] == 15  # empty and "NA", like pandas' reader
    assert counts["bad_timestamp"] == 10
    assert counts["bad_amount"] == 10
    assert counts["duplicate_line"] > 0  # the synthetic log's exact copies (a transaction id re-used by another
    # customer is another order: rows 50-60 are not duplicates)


def test_strict_fails_the_same_way(spark, data, messy_csv):
    from serving.spark_engine import run_spark_job

    out = data["root"] / "strict"
    kwargs = {"columns": MAPPING, "strict": True, "partitions": 4}
    with pytest.raises(ContractError) as local_error:
        run_score_job(str(messy_csv), AS_OF, str(out / "local.parquet"), data["model"], **kwargs)
    with pytest.raises(ContractError) as spark_error:
        run_spark_job(str(messy_csv), AS_OF, str(out / "spark.parquet"), data["model"], **kwargs)
    assert str(spark_error.value) == str(local_error.value)
    assert not (out / "spark.parquet").exists()
    with pytest.raises(ContractError, match="required column 'cust' is missing"):
        run_spark_job(str(data["root"] / "tx.parquet"), AS_OF, str(out / "x.parquet"), data["model"], columns=MAPPING)


def test_sql_source_parity(spark, data):
    database = data["root"] / "tx.db"
    with sqlite3.connect(database) as conn:
        frame = data["tx"].iloc[:4000].copy()
        frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
        frame.to_sql("transactions", conn, index=False)
    source = f"sqlite:///{database}?table=transactions"
    assert_same(*run_both(spark, data, source, "sql", partitions=4))


def test_partitions_without_customers(spark, data):
    """More partitions than customers, and a customer whose rows all break the contract, still score."""
    from serving.spark_engine import run_spark_job

    path = data["root"] / "tiny.csv"
    pd.DataFrame(
        {
            "customer_id": ["007", "007", "042", "x"],
            "timestamp": ["2024-01-02", "2024-01-20", "2024-01-03", "not a date"],
            "amount": [10.0, 5.5, 99.0, 1.0],
        }
    ).to_csv(path, index=False)
    summary = run_spark_job(str(path), AS_OF, str(data["root"] / "tiny.parquet"), data["model"], partitions=16)
    rows = pd.read_parquet(data["root"] / "tiny.parquet")
    assert sorted(rows["customer_id"]) == ["007", "042"]
    assert summary.report.rows_read == 4
    assert summary.report.rule_counts["bad_timestamp"] == 1
    assert summary.report.customers == 2


def test_parquet_footers_through_the_jvm(spark, data):
    """Remote storage (HDFS, S3...) is listed and its footers read through the JVM: same files and types as pyarrow."""
    from serving.spark_engine import _parquet_footers, _remote_footers

    folder = data["root"] / "tx_dir"
    remote_files, remote_footers = _remote_footers(spark, folder.as_uri())
    local_files, local_footers = _parquet_footers(spark, str(folder), "dir")
    assert [f.removeprefix("file:") for f in remote_files] == local_files
    assert remote_footers == local_footers
    assert remote_footers[0].nanos == {"timestamp": "ns"}  # pandas writes nanoseconds: Spark reads them as longs


def test_normalize_ids_before_partitioning(spark, data):
    """``17850.0`` and ``17850`` fall in different partitions as written; normalised first, both engines see one
    customer (in one partition)."""
    from serving.batch import partition_of

    partitions = next(p for p in range(2, 64) if len(set(partition_of(pd.Series(["17850.0", "17850"]), p))) == 2)
    path = data["root"] / "float_ids.csv"
    pd.DataFrame(
        {
            "customer_id": ["17850.0", "17850", "13047.0", "13047.0"],
            "timestamp": ["2024-01-02", "2024-01-20", "2024-01-03", "2024-01-03"],
            "amount": [10.0, 5.5, 99.0, 99.0],
        }
    ).to_csv(path, index=False)
    local, local_rows, remote, remote_rows = run_both(
        spark, data, str(path), "float_ids", partitions=partitions, normalize_float_ids=True
    )
    assert sorted(remote_rows["customer_id"]) == sorted(local_rows["customer_id"]) == ["13047", "17850"]
    pd.testing.assert_frame_equal(remote_rows, local_rows)
    assert remote.report == local.report and remote.report.customers == 2 and remote.report.float_like_ids == 0


def test_spark_sort_is_rank_order(spark):
    """Spark's global sort and numbering give :func:`rank_frame`'s order: exact values, ties by code point (ids
    outside the BMP sort after U+FFFD by code point, before it in UTF-16), across several sorted partitions."""
    from serving.ranking import rank_frame
    from serving.spark_engine import ranked_frame

    ids = ["b", "a", "B", "é", "z", "\ufffd", "\U0001f600", "a0", "A", "", "10", "9", "ß", "e\u0301"]
    risk = [1.0, 1.0, 1.0, 1.0, 2.5, 1.0, 1.0, 1.0 + 2**-52, 0.0, 1.0, 2.5, 2.5, 1.0, 1.0]
    table = pd.DataFrame({"customer_id": ids, "value_at_risk": risk, "tier": [f"t{i}" for i in range(len(ids))]})
    expected = rank_frame(table)
    rows = spark.createDataFrame(table).repartition(3)
    got = ranked_frame(rows).toPandas()
    assert got["customer_id"].tolist() == expected["customer_id"].tolist()
    assert got["retention_rank"].tolist() == list(range(1, len(ids) + 1))
    assert got["tier"].tolist() == expected["tier"].tolist()
    top = ranked_frame(rows, top_k=5).toPandas()
    assert top["customer_id"].tolist() == expected["customer_id"].tolist()[:5]
    assert top["retention_rank"].tolist() == [1, 2, 3, 4, 5]


def test_directory_destination_written_by_spark(spark, data):
    """A directory destination is written by the executors (Parquet parts in rank order): read back, it is the local
    engine's list; a second run replaces it (here a top-k list without reasons)."""
    from serving.spark_engine import run_spark_job

    source = str(data["root"] / "tx.parquet")
    out = data["root"] / "directory"
    local = run_score_job(source, AS_OF, str(out / "local.parquet"), data["model"], partitions=4)
    local_rows = pd.read_parquet(out / "local.parquet")
    remote = run_spark_job(source, AS_OF, str(out / "list"), data["model"], partitions=4)
    assert (out / "list").is_dir() and len(list((out / "list").glob("part-*.parquet"))) >= 1
    assert not [p for p in out.iterdir() if p.name.startswith(".list")]  # no staging left behind
    assert_same(local, local_rows, remote, pd.read_parquet(out / "list"))

    top = run_spark_job(source, AS_OF, str(out / "list"), data["model"], partitions=4, top_k=30, reasons="none")
    rows = pd.read_parquet(out / "list")
    assert top.rows_written == len(rows) == 30 and top.customers_scored == local.customers_scored
    assert rows["customer_id"].tolist() == local_rows["customer_id"].head(30).tolist()
    explained = ["reason_1", "reason_2", "reason_3", "churn_cause"]  # what the reasons fill
    assert rows[explained].isna().all().all()
    pd.testing.assert_frame_equal(rows.drop(columns=explained), local_rows.head(30).drop(columns=explained))
