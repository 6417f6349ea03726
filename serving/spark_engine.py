"""The nightly scoring job on Apache Spark: same contract, feature kernel, scorer and ranking as the local engine.

:func:`run_spark_job` has the signature and the result (:class:`~serving.batch.JobSummary`) of
:func:`serving.batch.run_score_job` and gives the same rows:

1. the source is read by Spark (CSV with every column as text, so ids such as ``"00042"`` stay text; a Parquet
   file or a directory of Parquet files); a SQL source is read by the pandas reader on the driver and split there,
   exactly as the local engine does, then handed to Spark;
2. every row gets the partition number of :func:`serving.batch.partition_of` (computed in a pandas UDF, from the
   id as the local reader would have typed it), so the Spark groups are exactly the local engine's partitions,
   and a row-order key (file, block, position) so that each group sees its rows in input order;
3. ``groupBy(partition).applyInPandas`` runs :func:`serving.batch.score_partition` -- contract, feature kernel at
   the as-of date, both LightGBM heads, tiers, segments, reason codes -- on each group. The model bundle (two
   booster text files and ``bundle.json``) is broadcast and loaded once per Python worker. Each group returns its
   scored rows plus one metadata row holding its data-quality report and drift bin counts as JSON;
4. the scored frame is persisted; only the metadata rows (one per part) come to the driver, where the local
   engine's :func:`serving.batch.check_parts` combines the reports and judges ``--strict``, the empty input and the
   as-of date before anything is written;
5. Spark ranks (:func:`ranked_frame`: global ``orderBy``, ranks from per-partition offsets, ``--top-k`` as the
   sorted frame's ``limit``) and :func:`write_ranked` writes: a directory destination by the executors (Parquet
   parts in rank order, staged then renamed), a single file or SQL table by the driver from the collected rows it
   writes (k rows with ``--top-k``). Tier counts and the customer equity are one Spark aggregate
   (``groupBy(tier)``: count, sum of ``expected_value`` and of its square -- the sufficient statistics of
   :func:`serving.intervals.equity_interval`, :class:`~serving.intervals.EquityMoments`, added up per partition
   by Spark, so no row travels for them); the Pareto share, the profit curve and the tier x segment matrix of
   :func:`serving.batch.population_summary` need every customer's ``expected_value``, ``expected_profit``,
   ``value_at_risk``, ``tier`` and ``segment`` (:data:`serving.batch.POPULATION_COLUMNS`, ~40 bytes per customer
   plus the two short labels) and the cause of :func:`serving.batch.summary_causes` (a third short label, computed by
   Spark): these columns are collected to the driver, as Arrow. The run summary is the local
   engine's :func:`serving.batch.summarise` of the parts' reports and drift counts and of that
   :class:`~serving.batch.Population`.

Spark handles spilling and retries, so there is no spool and no resume: ``spool_input`` is accepted for the
signature's sake and ignored, ``resumed_partitions`` is always 0. See ``docs/spark.md`` for cluster use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import pickle
import re
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contract import (
    MIN_DATE,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    STRING_COLUMNS,
    ContractError,
    DataQualityReport,
    needs_every_column,
    to_date,
)
from features.sources import _ids_as_text, is_sql_url
from retention.settings import get_settings
from serving.batch import (
    DEFAULT_PARTITIONS,
    FEATURE_PREFIX,
    OUTPUT_COLUMNS,
    POPULATION_COLUMNS,
    REASON_COLUMNS,
    UNEXPLAINED,
    JobSummary,
    PartitionResult,
    Population,
    ProgressCallback,
    check_output,
    check_parts,
    explain_rows,
    feature_column_names,
    input_file_warnings,
    partition_of,
    reason_mode,
    score_partition,
    split_in_memory,
    summarise,
    write_output,
)
from serving.causes import NO_CAUSE
from serving.economics import Economics
from serving.intervals import EquityMoments
from serving.model import ScoringModel
from serving.scorecard import ScorecardWeights
from serving.scoring import CAUSE_FIELD, OPTIONAL_FIELDS, SCORECARD_TIER

MASTER_ENV = "RETENTION_SPARK_MASTER"
DEFAULT_MASTER = "local[2]"
SESSION_DEFAULTS: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
"""pandas writes TIMESTAMP(NANOS) Parquet columns, which Spark only reads as longs (nanoseconds since the epoch)."""

SCORE_COLUMNS = (
    "customer_id",
    "churn_probability",
    "expected_value",
    "value_at_risk",
    "expected_profit",
    "tier",
    "segment",
    *OPTIONAL_FIELDS,
    SCORECARD_TIER,
    "reason_1",
    "reason_2",
    "reason_3",
    CAUSE_FIELD,
)
_PART, _POS, _META, _PAYLOAD, _CAUSE = "_part", "_pos", "_meta", "_payload", "_cause"
_PID, _MID = "__rt_pid", "__rt_mid"
_ORDER = ("__rt_file", "__rt_block", "__rt_row")
_FILE_PATH = "__rt_path"
RESULT_SCHEMA = (
    f"{_PART} int, {_POS} long, customer_id string, churn_probability double, expected_value double, "
    f"value_at_risk double, expected_profit double, tier string, segment string, "
    f"{', '.join(f'{c} double' for c in OPTIONAL_FIELDS)}, {SCORECARD_TIER} string, "
    f"reason_1 string, reason_2 string, reason_3 string, {CAUSE_FIELD} string, {_META} string"
)
"""The rows a group returns; a ``--reasons top-k`` job adds the feature columns (:func:`_result_schema`)."""
_CONTRACT_ERROR = re.compile(r"ContractError: (.+)")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
try:  # the strings pandas' CSV reader turns into missing values by default
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA
except ImportError:  # pragma: no cover - private location moved
    _PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"}
    _PANDAS_NA |= {"<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}
CSV_NA_VALUES: frozenset[str] = frozenset(_PANDAS_NA)
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


# --- session -----------------------------------------------------------------------------------------------------


def spark_session(conf: Mapping[str, str] | None = None) -> Any:
    """The active (or default) SparkSession, else a new one.

    Master: ``$RETENTION_SPARK_MASTER``; else the one given by ``spark-submit``/``pyspark`` when running under
    them; else ``local[2]``. New sessions get quiet logs (WARN), few shuffle partitions, the UTC session time zone
    and, in local mode, this interpreter as the Python of the workers and the loopback address for the driver.
    ``conf`` adds or overrides settings of a new session (an active session is returned as it is).
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession() or SparkSession._instantiatedSession  # this thread's, or the default
    if active is not None and _alive(active):
        return active
    master = get_settings().spark_master or (None if "PYSPARK_GATEWAY_PORT" in os.environ else DEFAULT_MASTER)
    settings = dict(SESSION_DEFAULTS)
    if master is not None and master.startswith("local"):
        # workers are forked from the Python named at context start (default: "python3" on the PATH)
        if not os.environ.get("PYSPARK_PYTHON"):
            os.environ["PYSPARK_PYTHON"] = sys.executable
        if not os.environ.get("SPARK_LOCAL_IP"):  # one machine: stay on the loopback interface
            os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        # one task per core already: LightGBM's OpenMP threads in every worker would only oversubscribe the cores
        settings["spark.executorEnv.OMP_NUM_THREADS"] = "1"
    settings |= dict(conf or {})
    builder = SparkSession.builder.appName("retention-score")
    if master is not None:
        builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


def _alive(session: Any) -> bool:
    try:
        return session.sparkContext._jsc is not None  # a stopped session keeps its Python object
    except Exception:  # Spark Connect: no SparkContext on this side
        return True


# --- the model on the workers --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Bundle:
    """A model bundle as text (the three files of :meth:`ScoringModel.save`), shipped to the workers."""

    files: dict[str, str]
    version: str | None

    @property
    def key(self) -> str:
        digest = hashlib.sha1(str(self.version).encode())
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + self.files[name].encode())
        return digest.hexdigest()

    @classmethod
    def of(cls, model: ScoringModel) -> _Bundle:
        with tempfile.TemporaryDirectory(prefix="retention-bundle-") as folder:
            model.save(folder)
            files = {f.name: f.read_text() for f in Path(folder).iterdir() if f.is_file()}  # a BTYD head has no booster
        return cls(files, model.version)


_MODELS: dict[str, ScoringModel] = {}
_MODELS_LOCK = threading.Lock()


def _model_loader(bundle: _Bundle, shipped: Any) -> Callable[[], ScoringModel]:
    """What the executors call to get the model: the ``shipped`` broadcast of ``bundle``, or (no broadcast: Spark
    Connect) the bundle itself travelling with the function, loaded once per worker (:func:`_worker_model`)."""
    carrier: Any = shipped if shipped is not None else bundle  # only one of them travels with the functions

    def load() -> ScoringModel:
        return _worker_model(carrier if isinstance(carrier, _Bundle) else carrier.value)

    return load


def _worker_model(bundle: _Bundle) -> ScoringModel:
    """Load a shipped bundle with :meth:`ScoringModel.load`, once per Python worker process."""
    key = bundle.key
    with _MODELS_LOCK:
        if key not in _MODELS:
            with tempfile.TemporaryDirectory(prefix="retention-bundle-") as folder:
                for name, text in bundle.files.items():
                    (Path(folder) / name).write_text(text)
                _MODELS[key] = ScoringModel.load(folder, version=bundle.version)
        return _MODELS[key]


# --- reading the source --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How Spark's view of the input differs from the local reader's, undone on the workers.

    ``csv``: every column was read as text; pandas' default missing-value strings become missing.
    ``id_sources``: id columns (after mapping) the local reader turns into text (:func:`_ids_as_text`).
    ``id_dtypes``: pandas dtypes recorded in the Parquet metadata of id columns (nullable integers).
    ``timestamps``: column -> ``"us"`` (Spark timestamp shipped as micros since the epoch), ``"ns"`` / ``"ns_naive"``
    (Parquet TIMESTAMP(NANOS), read as a long).
    ``files``: Parquet file path -> its position in the local reader's order.
    """

    csv: bool
    id_column: str
    id_sources: frozenset[str]
    id_dtypes: dict[str, str]
    timestamps: dict[str, str]
    files: dict[str, int]

    def restore(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Give a frame of Spark rows the column types the local engine's reader would have given them."""
        if self.csv:
            for name in frame.columns:
                column = frame[name]
                frame[name] = column.where(~column.isin(CSV_NA_VALUES), None)
            return frame
        for name, unit in self.timestamps.items():
            if name in frame.columns:
                values = frame[name].astype("Int64")
                frame[name] = pd.to_datetime(values, unit=unit[:2], utc=unit != "ns_naive")
        for name, dtype in self.id_dtypes.items():
            if name in frame.columns:
                with contextlib.suppress(TypeError, ValueError):
                    frame[name] = frame[name].astype(dtype)
        return _ids_as_text(frame, set(self.id_sources))

    def partition_ids(self, ids: pd.Series, partitions: int, normalize_float_ids: bool = False) -> np.ndarray:
        """:func:`partition_of` of ids as the local reader would have typed them (and normalised, on request)."""
        frame = self.restore(pd.DataFrame({self.id_column: ids.reset_index(drop=True)}))
        return partition_of(frame[self.id_column].fillna(""), partitions, normalize_float_ids=normalize_float_ids)

    def file_rank(self, paths: pd.Series) -> pd.Series:
        """Position of each row's file in the local reader's order (-1: unknown, then ordered by path)."""
        lookup = {p: self.files.get(_local_path(p), -1) for p in paths.unique()}
        return paths.map(lookup).astype("int64")


def _local_path(location: str) -> str:
    """A local path or ``file:`` URI as an absolute, resolved path; other URIs unchanged."""
    location = str(location)
    if location.startswith("file:"):
        return os.path.realpath(urllib.parse.unquote(urllib.parse.urlsplit(location).path))
    if _URI.match(location):
        return location
    return os.path.realpath(location)


def _input_kind(source: str) -> str:
    """``csv``, ``parquet`` or ``dir``, by the same rules as :func:`features.sources.read_table`."""
    if _is_remote(source):
        return "csv" if source.lower().rstrip("/").endswith((".csv", ".txt", ".gz")) else "parquet"
    path = Path(_local_path(source))
    if path.is_dir():
        return "dir"
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt", ".gz"):
        return "csv"
    raise ContractError(f"input '{source}' is neither .csv nor .parquet nor a directory of Parquet files")


@dataclasses.dataclass(frozen=True)
class _Footer:
    """What the local reader's types depend on, from one Parquet file's footer."""

    names: list[str]
    nanos: dict[str, str]
    """Columns of TIMESTAMP(NANOS) type (Spark reads them as longs): ``"ns"`` (UTC) or ``"ns_naive"``."""
    pandas: dict[str, Any] | None
    """The ``pandas`` key-value metadata that pandas restores dtypes from."""


REMOTE_FOOTERS = 64
"""Footers read (through the JVM) from remote storage: the first files in path order; column types are per dataset."""


def _is_remote(source: str) -> bool:
    return bool(_URI.match(source)) and not source.startswith("file:")


def _parquet_footers(spark: Any, source: str, kind: str) -> tuple[list[str], list[_Footer]]:
    """The Parquet files of ``source`` in the local reader's order, and their footers."""
    if _is_remote(source):
        try:
            return _remote_footers(spark, source)
        except ContractError:
            raise
        except Exception:  # no JVM on this side (Spark Connect): Spark lists the files, footers are not read
            return [source], []
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(_local_path(source))
    if kind == "dir":
        paths = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".pq"))
        if not paths:
            raise ContractError(f"directory '{source}' holds no .parquet files")
    else:
        paths = [path]
    footers = []
    for file in paths:
        schema = pq.read_schema(file)
        nanos = {
            f.name: "ns" if f.type.tz else "ns_naive"
            for f in schema
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
        }
        footers.append(_Footer(list(schema.names), nanos, schema.pandas_metadata))
    return [str(p) for p in paths], footers


def _remote_footers(spark: Any, source: str) -> tuple[list[str], list[_Footer]]:
    """Files and footers on storage the JVM reaches (HDFS, S3, GCS...), through Hadoop's and Parquet's classes."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    root = jvm.org.apache.hadoop.fs.Path(source)
    fs = root.getFileSystem(conf)
    directory = fs.getFileStatus(root).isDirectory()
    files = []
    listing = fs.listFiles(root, True)
    while listing.hasNext():
        name = listing.next().getPath().toString()
        if not directory or name.lower().endswith((".parquet", ".pq")):
            files.append(name)
    files.sort()
    if not files:
        raise ContractError(f"directory '{source}' holds no .parquet files")
    footers = []
    for name in files[:REMOTE_FOOTERS]:
        input_file = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
            jvm.org.apache.hadoop.fs.Path(name), conf
        )
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(input_file)
        try:
            meta = reader.getFooter().getFileMetaData()
            fields = list(meta.getSchema().getFields())
            pandas_text = meta.getKeyValueMetaData().get("pandas")
        finally:
            reader.close()
        nanos = {}
        for field in fields:
            logical = str(field.getLogicalTypeAnnotation()) if field.isPrimitive() else ""
            found = re.fullmatch(r"TIMESTAMP\(NANOS,(true|false)\)", logical)
            if found:
                nanos[str(field.getName())] = "ns" if found.group(1) == "true" else "ns_naive"
        names = [str(field.getName()) for field in fields]
        footers.append(_Footer(names, nanos, json.loads(pandas_text) if pandas_text else None))
    return files, footers


def _footer_types(footers: list[_Footer], wanted: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Nanosecond timestamp columns and nullable-integer pandas dtypes among the ``wanted`` columns."""
    nanos: dict[str, str] = {}
    dtypes: dict[str, str] = {}
    for footer in footers:
        nanos |= {name: unit for name, unit in footer.nanos.items() if name in wanted}
        for column in (footer.pandas or {}).get("columns", []):
            numpy_type = str(column.get("numpy_type", ""))
            if column.get("name") in wanted and re.fullmatch(r"U?Int(8|16|32|64)", numpy_type):
                dtypes[column["name"]] = numpy_type
    return nanos, dtypes


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _contract_input_columns(names: list[str], columns: Mapping[str, str] | None) -> list[str]:
    """The input columns the contract reads (after renaming by ``columns``), in input order.

    Every column when the contract compares whole rows (exact duplicate lines of an order, see
    :func:`~features.contract.needs_every_column`): two products of one order may differ only in a column the
    contract does not map.
    """
    if needs_every_column(names, columns):
        return list(names)
    rename = {source: target for target, source in (columns or {}).items()}
    wanted = set(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
    return [name for name in names if rename.get(name, name) in wanted]


def _read_files(spark: Any, source: str, columns: Mapping[str, str] | None) -> tuple[Any, _Layout, list[str]]:
    """Spark DataFrame of the contract's input columns plus the row-order key, and how to restore local types."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    kind = _input_kind(source)
    id_column = (columns or {}).get("customer_id", "customer_id")
    id_sources = frozenset((columns or {}).get(name, name) for name in STRING_COLUMNS)
    nanos: dict[str, str] = {}
    dtypes: dict[str, str] = {}
    files: list[str] = []
    if kind == "csv":
        reader = spark.read.option("header", True).option("inferSchema", False).option("escape", '"')
        sdf = reader.option("encoding", "UTF-8").csv(source)
        for name in sdf.columns:  # pandas drops a UTF-8 byte-order mark, Spark keeps it in the first name
            if name.startswith("\ufeff"):
                sdf = sdf.withColumnRenamed(name, name[1:])
        if not sdf.columns:
            raise ContractError(f"cannot read '{source}': No columns to parse from file")
    else:
        files, footers = _parquet_footers(spark, source, kind)
        names = list(dict.fromkeys(name for footer in footers for name in footer.names))
        nanos, dtypes = _footer_types(footers, set(_contract_input_columns(names, columns)))
        # several files: the union of their columns, like pandas' concatenation
        sdf = spark.read.option("mergeSchema", len(files) > 1).parquet(*files)
    if id_column not in sdf.columns:
        raise ContractError(f"required column '{id_column}' is missing from the input")
    keep = _contract_input_columns(sdf.columns, columns)
    types = {field.name: field.dataType for field in sdf.schema.fields}
    timestamps = {name: unit for name, unit in nanos.items() if name in keep}
    selected = []
    for name in keep:
        column = F.col(_quote(name))
        if isinstance(types[name], T.TimestampType):  # an instant: ship it as micros, free of session time zones
            timestamps[name] = "us"
            column = F.unix_micros(column)
        selected.append(column.alias(name))
    selected += [
        F.col("_metadata.file_path").alias(_FILE_PATH),
        F.col("_metadata.file_block_start").alias(_ORDER[1]),
        F.monotonically_increasing_id().alias(_ORDER[2]),
    ]
    layout = _Layout(
        csv=kind == "csv",
        id_column=id_column,
        id_sources=id_sources,
        id_dtypes=dtypes,
        timestamps=timestamps,
        files={_local_path(f): i for i, f in enumerate(files)},
    )
    return sdf.select(*selected), layout, keep


# --- scoring one group ---------------------------------------------------------------------------------------------


def _empty_result(
    model: ScoringModel,
    as_of: dt.date,
    raw: pd.DataFrame,
    columns: Mapping[str, str] | None,
    normalize_float_ids: bool = False,
) -> PartitionResult:
    """What a part without any row gives (zero counts, zero drift): :func:`score_partition` of no rows of ``raw``'s
    shape -- so a missing required column fails here, on the driver, before any Spark job."""
    return _score_part(raw.iloc[:0], model, as_of, columns, normalize_float_ids, reasons="none")


def _score_part(
    raw: pd.DataFrame,
    model: ScoringModel,
    as_of: dt.date,
    columns: Mapping[str, str] | None,
    normalize_float_ids: bool = False,
    reasons: str = "all",
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> PartitionResult:
    """:func:`serving.batch.score_partition` -- the local engine's function -- on one group of rows; ``reasons``:
    ``all`` explains every row, ``top-k`` keeps the feature rows instead (explained after the rank), ``none``;
    ``economics``: the run's (``expected_profit``); ``scorecard_weights``: the run's composite weights."""
    return score_partition(
        raw, model, as_of, columns=columns, normalize_float_ids=normalize_float_ids, reasons=reasons,
        economics=economics, scorecard_weights=scorecard_weights,
    )  # fmt: skip


def _result_schema(features: int) -> str:
    """:data:`RESULT_SCHEMA` plus ``features`` feature columns (:func:`serving.batch.feature_column_names`)."""
    return ", ".join([RESULT_SCHEMA, *(f"{_quote(name)} double" for name in feature_column_names(features))])


def _plain_strings(column: pd.Series) -> pd.Series:
    """A text column as plain Python objects (None for missing): PySpark cannot convert pandas' Arrow-backed
    strings once they are chunked (concat)."""
    return column.astype(object).where(column.notna(), None)


def _result_frame(part: int, result: PartitionResult) -> pd.DataFrame:
    """The scored rows of one part (``_pos`` = row order), after one row carrying its report and drift counts; with
    the rows' feature columns when the part kept them (``--reasons top-k``)."""
    scores = result.scores[list(SCORE_COLUMNS)].reset_index(drop=True)
    if result.features is not None:
        names = feature_column_names(result.features.shape[1])
        scores = pd.concat([scores, pd.DataFrame(result.features, columns=names)], axis=1)
    scores.insert(0, _POS, np.arange(len(scores), dtype=np.int64))
    meta = {"report": dataclasses.asdict(result.report), "drift_counts": result.drift_counts}
    head = pd.DataFrame({_POS: np.array([-1], dtype=np.int64), _META: [json.dumps(meta)]})
    out = pd.concat([head, scores], ignore_index=True)
    out.insert(0, _PART, np.int32(part))
    for name in ("customer_id", "tier", "segment", SCORECARD_TIER, *REASON_COLUMNS, CAUSE_FIELD, _META):
        out[name] = _plain_strings(out[name])
    return out


def summary_cause_column() -> Any:
    """:func:`serving.batch.summary_causes` as a Spark column (only the short label travels to the driver)."""
    from pyspark.sql import functions as F

    return (
        F.when(F.col(CAUSE_FIELD).isNotNull(), F.col(CAUSE_FIELD))
        .when(F.col(REASON_COLUMNS[0]).isNotNull(), F.lit(NO_CAUSE))
        .otherwise(F.lit(UNEXPLAINED))
    )


def _explain_written(ranked: Any, load_model: Callable[[], ScoringModel]) -> Any:
    """The ranked rows of a ``--reasons top-k`` job (only the written ones: the frame is already cut to ``top_k``)
    with their reasons, computed by the executors from the feature columns the rows kept, which are dropped:
    :func:`serving.batch.explain_rows` -- the local engine's, through the one scorer -- on each Arrow batch. A
    narrow map: partitions and row order (the rank order) stay as they were."""
    from pyspark.sql.types import StructType

    names = [name for name in ranked.columns if name.startswith(FEATURE_PREFIX)]
    schema = StructType([field for field in ranked.schema.fields if field.name not in names])

    def explain(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            ids = pdf["customer_id"].to_numpy(dtype=object)
            texts = explain_rows(load_model(), ids, pdf[names].to_numpy(dtype=np.float64))
            out = pdf.drop(columns=names)
            for name, values in texts.items():
                out[name] = _plain_strings(pd.Series(values, index=out.index))
            yield out

    return ranked.mapInPandas(explain, schema)


def _translate(exc: Exception) -> Exception:
    """A worker's ContractError comes back wrapped in Spark's exception: give it back its type and message."""
    found = _CONTRACT_ERROR.search(str(exc))
    return ContractError(found.group(1).strip()) if found else exc


# --- the job -------------------------------------------------------------------------------------------------------


def run_spark_job(
    source: str,
    as_of: str | dt.date,
    dest: str,
    model: ScoringModel,
    *,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    top_k: int | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    spool_input: bool | None = None,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = MIN_DATE,
    allow_future_as_of: bool = False,
    reasons: str = "top-k",
    on_progress: ProgressCallback | None = None,
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> JobSummary:
    """Score every customer of ``source`` at ``as_of`` on Spark and write the ranked list to ``dest``.

    Same arguments, checks, rows and summary as :func:`serving.batch.run_score_job`; ``spool_input`` is ignored.
    ``normalize_float_ids``: ids are normalised before the rows are grouped into partitions, as locally.
    ``min_date``: only the default floor (1990-01-01) on Spark so far. ``on_progress``
    (:data:`~serving.batch.ProgressCallback`): Spark scores every partition in one job, so it is told once, when all
    are done (``partitions, partitions, rows read``); None: not told (Spark shows no bar).
    """
    from pyspark.sql import functions as F

    del spool_input  # Spark spills to disk on its own
    if min_date != MIN_DATE:
        raise ContractError(f"--min-date other than {MIN_DATE} is not supported by the spark engine yet")
    start = time.perf_counter()
    as_of_date = to_date(as_of)
    assert as_of_date is not None
    if top_k is not None and top_k < 1:
        raise ContractError(f"--top-k must be at least 1, got {top_k}")
    if partitions < 1:
        raise ContractError(f"--partitions must be at least 1, got {partitions}")
    if not is_sql_url(source) and not _is_remote(source) and not Path(_local_path(source)).exists():
        raise ContractError(f"input '{source}' does not exist")
    reasons = reason_mode(reasons, top_k)
    if not _is_remote(dest):
        check_output(dest)
    columns = dict(columns or {})

    spark = spark_session()
    bundle = _Bundle.of(model)
    try:
        shipped: Any = spark.sparkContext.broadcast(bundle)
    except Exception:  # Spark Connect has no broadcast variables: the bundle travels with the function
        shipped = None
    restore_nanos = spark.conf.get(NANOS_AS_LONG, None)
    spark.conf.set(NANOS_AS_LONG, "true")
    scored = None
    try:
        load_model = _model_loader(bundle, shipped)
        results, scored, rows = _run(
            spark,
            source,
            as_of_date,
            model,
            load_model,
            columns,
            partitions,
            normalize_float_ids,
            reasons,
            economics,
            scorecard_weights,
        )
        if on_progress is not None:
            on_progress(partitions, partitions, sum(r.report.rows_read for r in results))
        # the local engine's checks (--strict, empty input, future as-of) on the parts' reports only, before
        # anything is written; the rows are ranked and written below, by Spark
        report = check_parts(results, as_of_date, strict=strict, allow_future_as_of=allow_future_as_of)
        by_tier = tier_aggregates(rows)
        collected = rows.select(*POPULATION_COLUMNS, summary_cause_column().alias(_CAUSE)).toArrow()
        ranked = ranked_frame(rows, top_k)
        if reasons == "top-k":  # scored without reasons: explain the written rows only
            ranked = _explain_written(ranked, load_model)
        ranked = ranked.withColumns({"model_version": F.lit(str(model.version or "")), "as_of": F.lit(str(as_of_date))})
        written = write_ranked(ranked.select(*OUTPUT_COLUMNS), dest)
    finally:
        if restore_nanos is None:
            spark.conf.unset(NANOS_AS_LONG)
        else:
            spark.conf.set(NANOS_AS_LONG, restore_nanos)
        if shipped is not None:
            shipped.unpersist()
        if scored is not None:
            scored.unpersist()
    population = Population(
        expected_value=collected.column("expected_value").to_numpy(),
        moments=tier_moments(by_tier, model.meta.tier_names),
        tier_counts={tier: n for tier, (n, _, _) in by_tier.items()},
        expected_profit=collected.column("expected_profit").to_numpy(),
        value_at_risk=collected.column("value_at_risk").to_numpy(),
        tier=collected.column("tier").to_numpy(),
        segment=collected.column("segment").to_numpy(),
        cause=collected.column(_CAUSE).to_numpy(zero_copy_only=False).astype(object),
    )
    return summarise(
        results, report, model, as_of_date, dest, population, rows_written=written, partitions=partitions,
        resumed=0, started=start,
        input_warnings=input_file_warnings(source, columns, MIN_DATE) if not _is_remote(source) else [],
        economics=economics,
    )  # fmt: skip


def tier_aggregates(rows: Any) -> dict[str, tuple[int, float, float]]:
    """Per tier of the scored ``rows``: ``(customers, sum of max(expected_value, 0), sum of its square)`` -- one
    Spark aggregate (partial sums per partition, then merged), only one small row per tier reaches the driver."""
    from pyspark.sql import functions as F

    value = F.greatest(F.col("expected_value"), F.lit(0.0))
    found = rows.groupBy("tier").agg(F.count(F.lit(1)), F.sum(value), F.sum(value * value)).collect()
    return {str(tier): (int(n), float(total or 0.0), float(squares or 0.0)) for tier, n, total, squares in found}


def tier_moments(by_tier: Mapping[str, tuple[int, float, float]], tier_names: tuple[str, ...]) -> EquityMoments:
    """The :class:`~serving.intervals.EquityMoments` of the customers from :func:`tier_aggregates` (tiers in
    ``tier_names`` order, 0 for a tier without customers): what :func:`serving.batch.population_moments` gives
    the local engine, summed in another order."""
    empty = (0, 0.0, 0.0)
    return EquityMoments(
        total=sum(by_tier.get(t, empty)[1] for t in tier_names),
        squares=tuple(by_tier.get(t, empty)[2] for t in tier_names),
    )


def ranked_frame(rows: Any, top_k: int | None = None) -> Any:
    """``rows`` (one per customer) in retention order, numbered ``retention_rank`` from 1, sorted by Spark.

    The order is :func:`serving.ranking.rank_order`'s: value at risk descending on exact doubles (NaN, which the
    scorer never gives, last), then customer id ascending by Spark's binary string order, i.e. UTF-8 bytes, i.e.
    code points. ``orderBy`` range-partitions the rows (one shuffle; with ``top_k`` Spark keeps the first k of every
    partition and merges them instead). The ranks are numbered without moving rows: each sorted partition tags its
    rows with ``monotonically_increasing_id`` (increasing within a partition), a small job counts the rows of every
    partition, and a rank is the partition's offset (rows in the partitions before it) plus the position. The
    tagged frame is persisted so that the counts and the numbering see the same partitions.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    risk = F.col("value_at_risk")
    order = [F.desc_nulls_last(F.when(F.isnan(risk), None).otherwise(risk)), F.asc("customer_id")]
    ordered = rows.orderBy(*order)
    if top_k is not None:
        ordered = ordered.limit(top_k)
    tagged = ordered.select("*", F.spark_partition_id().alias(_PID), F.monotonically_increasing_id().alias(_MID))
    tagged = tagged.persist(StorageLevel.MEMORY_AND_DISK)
    spans = tagged.groupBy(_PID).agg(F.count(F.lit(1)).alias("n"), F.min(_MID).alias("first")).collect()
    base, offset = {}, 1
    for pid, n, first in sorted(spans):
        base[int(pid)] = offset - int(first)  # rank = base + id: the first row of the partition gets ``offset``
        offset += int(n)
    start = F.create_map(*[F.lit(v) for item in base.items() for v in item])[F.col(_PID)] if base else F.lit(0)
    rank = (start + F.col(_MID)).cast("long").alias("retention_rank")
    names = [F.col(_quote(name)) for name in rows.columns if name != "customer_id"]
    return tagged.select("customer_id", rank, *names)


def write_ranked(ranked: Any, dest: str) -> int:
    """Write the ranked Spark frame to ``dest``; the number of rows written.

    A directory (no ``.csv``/``.parquet``/``.pq`` suffix, not a SQL URL): Parquet part files written by the
    executors in rank order (``part-00000`` first) into a staging directory next to ``dest``, then renamed into
    place (the previous output, if any, is replaced only once the new one is complete). A single file or a SQL
    table: the driver collects the rows it writes (Arrow; only k rows with ``top_k``) and writes them with the
    local engine's atomic :func:`serving.batch.write_output`.
    """
    if is_sql_url(dest) or Path(dest).suffix.lower() in (".csv", ".parquet", ".pq"):
        frame = ranked.toArrow().to_pandas()
        write_output(frame, dest)
        return len(frame)
    spark = ranked.sparkSession
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(dest if _is_remote(dest) else Path(_local_path(dest)).as_uri())
    fs = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    token = f"{os.getpid()}-{int(time.time() * 1e6)}"
    staging = jvm.org.apache.hadoop.fs.Path(target.getParent(), f".{target.getName()}.staging-{token}")
    old = jvm.org.apache.hadoop.fs.Path(target.getParent(), f".{target.getName()}.old-{token}")
    try:
        ranked.write.mode("errorifexists").parquet(staging.toString())
        count = spark.read.parquet(staging.toString()).count()  # footers only
        had_old = fs.exists(target)
        if had_old and not fs.rename(target, old):
            raise ContractError(f"cannot replace the output '{dest}'")
        if not fs.rename(staging, target):
            if had_old:
                fs.rename(old, target)
            raise ContractError(f"cannot write the output '{dest}'")
        if had_old:
            fs.delete(old, True)
    finally:
        if fs.exists(staging):
            fs.delete(staging, True)
    return int(count)


def _run(
    spark: Any,
    source: str,
    as_of: dt.date,
    model: ScoringModel,
    worker_model: Callable[[], ScoringModel],
    columns: dict[str, str],
    partitions: int,
    normalize_float_ids: bool = False,
    reasons: str = "all",
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> tuple[list[PartitionResult], Any, Any]:
    """Score every partition on Spark (``reasons`` as :func:`_score_part`): one :class:`PartitionResult` per
    partition number, in order, with its report and drift counts but no rows; the persisted scored frame (the
    caller unpersists it) and its rows (``SCORE_COLUMNS``, then the feature columns in ``top-k`` mode)."""
    from pyspark.sql import functions as F

    normalize = normalize_float_ids  # ids hashed for partitions as the contract reads them
    features = len(model.feature_columns) if reasons == "top-k" else 0

    if is_sql_url(source):
        # the pandas reader on the driver, split exactly as the local engine splits it
        parts: Iterator[tuple[int, pd.DataFrame]] = split_in_memory(
            source, columns, partitions, normalize_float_ids=normalize_float_ids
        )
        rows = [(p, pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)) for p, raw in parts]
        empty_raw = pickle.loads(rows[0][1]).iloc[:0] if rows else pd.DataFrame()
        _empty_result(model, as_of, empty_raw, columns, normalize)  # a missing required column fails on the driver
        grouped = spark.createDataFrame(rows, f"{_PART} int, {_PAYLOAD} binary").repartition(partitions, _PART)

        def score_group(pdf: pd.DataFrame) -> pd.DataFrame:
            part = int(pdf[_PART].iloc[0])
            raw = pickle.loads(pdf[_PAYLOAD].iloc[0])
            scored = _score_part(raw, worker_model(), as_of, columns, normalize, reasons, economics, scorecard_weights)
            return _result_frame(part, scored)

    else:
        sdf, layout, keep = _read_files(spark, source, columns)
        empty_raw = pd.DataFrame({name: pd.Series([], dtype=object) for name in keep})
        _empty_result(model, as_of, empty_raw, columns, normalize)  # a missing required column fails on the driver

        @F.pandas_udf("int")  # type: ignore[call-overload]
        def partition_number(ids: pd.Series) -> pd.Series:
            return pd.Series(layout.partition_ids(ids, partitions, normalize), dtype="int32")

        grouped = sdf.withColumn(_PART, partition_number(F.col(_quote(layout.id_column))))
        grouped = grouped.repartition(partitions, _PART)

        def score_group(pdf: pd.DataFrame) -> pd.DataFrame:
            part = int(pdf[_PART].iloc[0])
            pdf[_ORDER[0]] = layout.file_rank(pdf[_FILE_PATH])
            pdf = pdf.sort_values([_ORDER[0], _FILE_PATH, *_ORDER[1:]], kind="stable")
            raw = layout.restore(pdf[keep].reset_index(drop=True))
            scored = _score_part(raw, worker_model(), as_of, columns, normalize, reasons, economics, scorecard_weights)
            return _result_frame(part, scored)

    from pyspark import StorageLevel

    scored = grouped.groupBy(_PART).applyInPandas(score_group, _result_schema(features))
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        metas = scored.filter(F.col(_POS) < 0).select(_PART, _META).collect()  # runs the scoring, fills the cache
    except Exception as exc:
        scored.unpersist()
        raise _translate(exc) from exc
    empty = _empty_result(model, as_of, empty_raw, columns, normalize)
    results = [empty] * partitions
    for part, text in metas:
        info = json.loads(text)
        results[int(part)] = PartitionResult(empty.scores, DataQualityReport(**info["report"]), info["drift_counts"])
    kept = [F.col(_quote(name)) for name in feature_column_names(features)]
    rows = scored.filter(F.col(_POS) >= 0).select(*SCORE_COLUMNS, *kept)
    return results, scored, rows
