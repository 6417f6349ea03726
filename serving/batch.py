"""The nightly scoring job: every customer scored, ranked by value at risk, written atomically.

Work goes by customer partitions (``hash(customer_id) % P``), so memory is bounded by one partition:

1. the input is split into ``P`` customer-disjoint parts -- in memory for inputs that fit, or spooled to Parquet
   files batch by batch (``spool=True``, automatic above ``RETENTION_SPOOL_BYTES``, default 1 GiB) for inputs
   larger than memory;
2. each part goes through the input contract, the feature kernel at the as-of date and the scorer
   (:func:`score_partition`, the same function the Spark engine runs) and is written to a part file, atomically;
3. the parts are merged, ranked globally (1 = act first) and the output written atomically: a temporary file
   renamed over the destination, or a staging table swapped in one transaction.

A killed job leaves the previous output untouched and no partial output visible; run again, it resumes from the
finished parts (they live in a staging folder named by the job key = as-of date + model version + input
fingerprint + partitions + reasons mode + economics). The same job gives the same rows.

Every row carries ``expected_profit`` under the job's economics (:mod:`serving.economics`, CLI ``--economics``);
the summary logs those economics and describes the scored population for reports (:func:`population_summary`:
value pyramid by tier, tier x segment matrix, Pareto and cumulative-profit curves, unprofitable customers, value at
risk by churn-cause family: :func:`at_risk_by_cause`). Every row also carries the contribution x loyalty x potential
scorecard (:mod:`serving.scorecard`, ``scorecard_tier``) and its ``churn_cause`` (:mod:`serving.causes`).

Reasons (TreeSHAP, ~85% of a job that explains every customer) follow ``reasons`` (CLI ``--reasons``):
``top-k`` (default) explains the rows that are written: without ``top_k`` that is every row, explained inside the
partitions; with ``top_k`` the partitions are scored without contributions and keep their feature rows in their
part files, and after the global rank only the K written rows are explained (same :func:`score_customers`, so
their reasons are exactly what ``all`` gives them). ``all`` explains every customer inside the partitions;
``none`` writes the same columns with null reasons.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import (
    BROKEN_RULES,
    MIN_DATE,
    RULES,
    ContractError,
    DataQualityReport,
    combine_reports,
    future_as_of_problem,
    normalize_id_text,
    prepare_transactions,
    to_date,
)
from features.kernel import compute_feature_arrays, index_transactions
from features.sources import is_sql_url, parquet_files, read_table, split_sql_url
from features.urls import redact_url
from retention.settings import get_settings
from serving.causes import FAMILIES, NO_CAUSE, OTHER, family_text
from serving.drift import PSI_WARNING, bin_shares, psi
from serving.economics import Economics
from serving.intervals import EquityMoments, IntervalCalibration, equity_interval_of, equity_moments
from serving.model import ScoringModel, tier_index
from serving.pareto import gains_curve, ordered_by_score, top_share
from serving.ranking import rank_frame
from serving.scorecard import DEFAULT_WEIGHTS, ScorecardWeights
from serving.scoring import (
    CAUSE_FIELD,
    OPTIONAL_FIELDS,
    REASONS,
    SCORECARD_TIER,
    SEGMENTS,
    feature_matrix,
    output_columns,
    score_customers,
)

OUTPUT_COLUMNS = (
    "customer_id",
    "retention_rank",
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
    "model_version",
    "as_of",
)
DEFAULT_PARTITIONS = 8
REASON_MODES = ("all", "top-k", "none")
"""``--reasons``: explain every customer, the rows written (the default), or none (null reason columns)."""
REASON_COLUMNS = tuple(f"reason_{r + 1}" for r in range(REASONS))
EXPLAINED_COLUMNS = (*REASON_COLUMNS, CAUSE_FIELD)
"""The columns a row's reasons fill (empty when it is scored without them): the reason texts and the churn cause."""
FEATURE_PREFIX = "feature:"
"""Prefix of the feature columns a part file (or the Spark engine's scored frame) keeps when its reasons are
computed after the rank."""
EXPLAIN_CHUNK_ROWS = 65_536
"""Rows per :func:`score_customers` call when the written rows are explained after the rank (bounds memory:
TreeSHAP output is rows x (features + 1) float64)."""
SPOOL_BYTES_ENV = "RETENTION_SPOOL_BYTES"
ProgressCallback = Callable[[int, int, int], None]
"""``on_progress(partitions_done, partitions_total, rows_done)`` of a job: called after each finished or resumed
partition (in the job's thread); ``rows_done`` counts the input (transaction) rows read by the partitions done."""
log = logging.getLogger("retention.batch")


@dataclasses.dataclass
class PartitionResult:
    """One partition's scored rows (unranked), its data-quality report and its drift bin counts.

    ``features``: the rows' feature matrix (rows of ``scores``, model column order, float64) when the rows were
    scored without reasons so that the written ones get theirs after the global rank; None when the rows carry
    their reasons already (or need none).
    """

    scores: pd.DataFrame
    report: DataQualityReport
    drift_counts: dict[str, list[float]]
    features: np.ndarray | None = None


def partition_of(customer_ids: pd.Series, partitions: int, *, normalize_float_ids: bool = False) -> np.ndarray:
    """Stable partition number of each customer id (same id, same partition, on every engine).

    ``normalize_float_ids``: hash the ids as the contract reads them then (``17850.0`` as ``17850``), so the rows
    of one customer written both ways land in one partition.

    The hash is ``pd.util.hash_array`` of the ids as text (``categorize=True``: each distinct id is hashed once);
    the distinct ids are found on the column as it is (Arrow strings stay Arrow) rather than after turning every
    row into a Python object, which gives the same numbers in a fraction of the time.
    """
    ids = customer_ids.astype("str")
    if normalize_float_ids:
        ids = normalize_id_text(ids)
    codes, uniques = pd.factorize(ids, sort=False)
    hashed = pd.util.hash_array(np.asarray(uniques, dtype=object), categorize=False)
    hashed = hashed.take(codes) if len(hashed) else np.zeros(len(codes), dtype=np.uint64)
    hashed[codes < 0] = np.iinfo(np.uint64).max  # a missing id hashes like pandas' categorical NaN
    return (hashed % np.uint64(partitions)).astype(np.int64)


def score_partition(
    raw: pd.DataFrame,
    model: ScoringModel,
    as_of: dt.date,
    *,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = MIN_DATE,
    reasons: str = "all",
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> PartitionResult:
    """Contract, features at ``as_of`` and scores for one customer-disjoint part of the input.

    ``reasons``: ``all`` explains every row here; ``top-k`` scores without contributions and keeps the feature
    matrix in the result (explained after the rank by :func:`finish_ranking`); ``none`` leaves the reasons null.
    ``economics``: what the rows' ``expected_profit`` subtracts (None: the default economics);
    ``scorecard_weights``: the composite's (:class:`serving.scorecard.ScorecardWeights`; None: 1/3 each).
    """
    tx, report = prepare_transactions(
        raw,
        columns=columns,
        as_of=as_of,
        strict=strict,
        allow_empty=True,
        normalize_float_ids=normalize_float_ids,
        min_date=min_date,
    )
    ids, arrays = compute_feature_arrays(index_transactions(tx), as_of)
    names = model.feature_columns
    n = len(ids)
    X = feature_matrix(arrays, names, n)
    drift = {
        c: (bin_shares(X[:, j], np.asarray(model.meta.feature_reference[c]["edges"])) * n).tolist()
        for j, c in enumerate(names)
        if c in model.meta.feature_reference
    }
    explain = reasons == "all"
    scored = score_customers(
        model, ids, X, reasons=REASONS if explain else 0, economics=economics, scorecard_weights=scorecard_weights
    )
    table = output_columns(scored)
    return PartitionResult(table, report, drift, X if reasons == "top-k" else None)


def reason_mode(reasons: str, top_k: int | None) -> str:
    """The ``--reasons`` mode the partitions run in (every engine): ``reasons`` checked against
    :data:`REASON_MODES` (:class:`ContractError` otherwise); ``top-k`` without ``top_k`` is ``all`` (every row is
    written: explained inside the partitions, no feature rows to keep)."""
    if reasons not in REASON_MODES:
        raise ContractError(f"--reasons must be one of {', '.join(REASON_MODES)}, got '{reasons}'")
    return "all" if reasons == "top-k" and top_k is None else reasons


def feature_column_names(count: int) -> list[str]:
    """Names of the ``count`` feature columns kept beside scored rows for the reasons after the rank
    (:data:`FEATURE_PREFIX` + the model column's position: ``feature:0000``...)."""
    return [f"{FEATURE_PREFIX}{j:04d}" for j in range(count)]


def _top20_share(expected_value: np.ndarray) -> float:
    """The Pareto figure of a run (:func:`serving.pareto.top_share`); 0 for a run without customers or value."""
    return top_share(expected_value, 0.2) if len(expected_value) and expected_value.sum() > 0 else 0.0


def population_moments(scores: pd.DataFrame, model: ScoringModel) -> EquityMoments:
    """The :class:`~serving.intervals.EquityMoments` of the scored customers (``expected_value`` and the tier index
    of :func:`serving.model.tier_index`, the tiers the scorer gave them)."""
    ev = scores["expected_value"].to_numpy(dtype=np.float64)
    return equity_moments(ev, tier_index(ev, model.meta.tier_thresholds), len(model.meta.tier_names))


def equity_fields(
    moments: EquityMoments, calibration: IntervalCalibration | None
) -> tuple[float, float | None, float | None]:
    """A run summary's customer equity ``(equity, equity_low, equity_high)``: the sum of ``expected_value`` over the
    scored customers (currency after level, margin and discount, over the model's horizon) and its 80% interval from
    :func:`serving.intervals.equity_interval_of` (the backtest's equity interval, from the customers' moments);
    None bounds when the bundle cannot give one (saved before intervals, or no value calibration: BTYD-only)."""
    if calibration is None:
        return moments.total, None, None
    low, high, total = equity_interval_of(moments, calibration)
    if not (math.isfinite(low) and math.isfinite(high)):
        return total, None, None
    return total, low, high


def short_amount(value: float) -> str:
    """``value`` to three significant digits with a k / M / B suffix: ``1_234_567`` -> ``1.23M``, ``950`` -> ``950``."""
    rounded = float(f"{value:.3g}")
    for unit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(rounded) >= unit:
            return f"{rounded / unit:g}{suffix}"
    return f"{rounded:g}"


def explain_rows(
    model: ScoringModel, customer_ids: np.ndarray, X: np.ndarray
) -> dict[str, pd.api.extensions.ExtensionArray]:
    """:data:`EXPLAINED_COLUMNS` (``reason_1..3`` texts, ``churn_cause``) for these rows (feature matrix ``X``, model
    column order), computed by
    :func:`score_customers` -- the one scorer -- :data:`EXPLAIN_CHUNK_ROWS` rows at a time (a row's TreeSHAP values
    do not depend on the other rows of a call, so the texts equal those of a whole-partition call)."""
    chunks = [
        output_columns(score_customers(model, customer_ids[i : i + EXPLAIN_CHUNK_ROWS], X[i : i + EXPLAIN_CHUNK_ROWS]))
        for i in range(0, len(X), EXPLAIN_CHUNK_ROWS)
    ] or [output_columns(score_customers(model, customer_ids, X))]
    return {c: pd.concat([f[c] for f in chunks], ignore_index=True).array for c in EXPLAINED_COLUMNS}


def finish_ranking(
    scores: pd.DataFrame,
    model_version: str | None,
    as_of: dt.date,
    top_k: int | None,
    *,
    model: ScoringModel | None = None,
    features: np.ndarray | None = None,
) -> pd.DataFrame:
    """Rank globally, keep the ``top_k`` first, add version and as-of: the written list (:data:`OUTPUT_COLUMNS`).

    ``features`` (rows of ``scores``) with ``model``: the rows were scored without reasons; the kept rows are
    explained here (:func:`explain_rows`), so a top-K list pays TreeSHAP for K rows only.
    """
    ranked = rank_frame(scores if features is None else scores.assign(_row=np.arange(len(scores))))
    if top_k is not None:
        ranked = ranked.head(top_k).copy()
    if features is not None:
        if model is None:
            raise ValueError("finish_ranking: features given without the model to explain them")
        rows = ranked.pop("_row").to_numpy()
        ids = ranked["customer_id"].to_numpy(dtype=object)
        for name, texts in explain_rows(model, ids, features[rows]).items():
            ranked[name] = texts
    ranked["model_version"] = pd.array([str(model_version or "")] * len(ranked), dtype="str")
    ranked["as_of"] = str(as_of)
    return ranked[list(OUTPUT_COLUMNS)]


# --- input partitioning ------------------------------------------------------------------------------------------


def source_fingerprint(source: str) -> str:
    """What identifies an input's content in a job key: its files' paths, sizes and modification times (a SQL URL:
    the URL itself), hashed; a changed input gets a new key and is scored afresh."""
    if is_sql_url(source):
        return hashlib.sha1(source.encode()).hexdigest()
    path = Path(source)
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    parts = [f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _source_bytes(source: str) -> int:
    if is_sql_url(source):
        return 0
    path = Path(source)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def split_in_memory(
    source: str, columns: Mapping[str, str] | None, partitions: int, *, normalize_float_ids: bool = False
) -> Iterator[tuple[int, pd.DataFrame]]:
    raw = read_table(source, columns)
    id_column = (columns or {}).get("customer_id", "customer_id")
    if id_column not in raw.columns:
        raise ContractError(f"required column '{id_column}' is missing from the input")
    part = partition_of(raw[id_column].fillna(""), partitions, normalize_float_ids=normalize_float_ids)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    for p in range(partitions):
        yield p, raw.iloc[order[bounds[p] : bounds[p + 1]]].reset_index(drop=True)


def spool(
    source: str,
    columns: Mapping[str, str] | None,
    partitions: int,
    folder: Path,
    *,
    normalize_float_ids: bool = False,
) -> list[Path]:
    """Stream the input batch by batch into ``partitions`` customer-disjoint Parquet files (bounded memory)."""
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    id_column = (columns or {}).get("customer_id", "customer_id")
    path = Path(source)
    if path.suffix.lower() == ".csv":
        reader = pacsv.open_csv(
            path, convert_options=pacsv.ConvertOptions(column_types={id_column: pa.string()}, strings_can_be_null=True)
        )
        batches = iter(reader)
    elif path.is_file():  # one row group at a time: a dataset scan reads ahead most of the file (~1 GB at 10M rows)
        batches = pq.ParquetFile(path).iter_batches(batch_size=1_000_000)
    else:
        batches = pads.dataset(path, format="parquet").to_batches(
            batch_size=1_000_000, batch_readahead=0, fragment_readahead=0
        )
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[int, Any] = {}
    files = [folder / f"spool-{p:05d}.parquet" for p in range(partitions)]
    try:
        for batch in batches:
            frame = batch.to_pandas()
            if id_column not in frame.columns:
                raise ContractError(f"required column '{id_column}' is missing from the input")
            part = partition_of(frame[id_column].fillna(""), partitions, normalize_float_ids=normalize_float_ids)
            order = np.argsort(part, kind="stable")  # rows grouped by partition, input order kept within each
            table = pa.Table.from_pandas(frame, preserve_index=False).take(pa.array(order))
            bounds = np.searchsorted(part[order], np.arange(partitions + 1))
            for p in np.flatnonzero(np.diff(bounds)):
                chunk = table.slice(bounds[p], bounds[p + 1] - bounds[p])
                if p not in writers:
                    writers[p] = pq.ParquetWriter(files[p], chunk.schema)
                writers[p].write_table(chunk)
    finally:
        for writer in writers.values():
            writer.close()
    return [f if f.exists() else None for f in files]  # type: ignore[misc]


# --- output ------------------------------------------------------------------------------------------------------


def check_output(dest: str) -> None:
    """Raise :class:`ContractError` (one sentence) when ``dest`` cannot be written: checked before any scoring.

    A file output's folder must exist or be creatable and take a file; a SQLite output's database folder must exist.
    """
    if is_sql_url(dest):
        import sqlalchemy

        url, _, _ = split_sql_url(dest, default_table="retention_scores")
        try:
            parsed = sqlalchemy.engine.make_url(url)
        except sqlalchemy.exc.ArgumentError as exc:
            raise ContractError(f"output URL '{redact_url(dest)}' is not a valid database URL: {exc}") from exc
        database = parsed.database
        if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
            folder = Path(database).parent
            if not folder.is_dir():
                raise ContractError(f"the folder '{folder}' of the SQLite output database '{database}' does not exist")
        return
    folder = Path(dest).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{Path(dest).name}.probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        blocked = next((p for p in folder.parents if p.exists()), None) if not folder.exists() else folder
        reason = f"'{blocked}' is not a folder" if blocked is not None and not blocked.is_dir() else exc.strerror
        raise ContractError(f"output folder '{folder}' is not writable: {reason or exc}") from None


def write_output(frame: pd.DataFrame, dest: str) -> None:
    """Write atomically: temp file + rename, or staging table + swap in one transaction."""
    if is_sql_url(dest):
        _write_sql(frame, dest)
        return
    from features.sources import write_frame

    try:
        write_frame(frame, dest)
    except OSError as exc:
        raise ContractError(f"cannot write the output '{dest}' ({exc.strerror or exc})") from None


def _write_sql(frame: pd.DataFrame, dest: str) -> None:
    import sqlalchemy

    url, table, _ = split_sql_url(dest, default_table="retention_scores")
    staging = f"{table}__staging_{uuid.uuid4().hex[:8]}"
    try:
        engine = sqlalchemy.create_engine(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ContractError(f"output URL '{redact_url(dest)}' is not a valid database URL: {exc}") from exc
    try:
        frame.to_sql(staging, engine, index=False, chunksize=50_000, method="multi" if len(frame) < 200_000 else None)
        preparer = engine.dialect.identifier_preparer
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {preparer.quote(table)}"))
            conn.execute(sqlalchemy.text(f"ALTER TABLE {preparer.quote(staging)} RENAME TO {preparer.quote(table)}"))
    except sqlalchemy.exc.OperationalError as exc:  # database unreachable or its file cannot be opened
        with contextlib.suppress(Exception), engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {engine.dialect.identifier_preparer.quote(staging)}"))
        raise ContractError(
            f"cannot write the output table to '{redact_url(dest)}': {str(exc.orig).splitlines()[0]}"
        ) from None
    except Exception:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {engine.dialect.identifier_preparer.quote(staging)}"))
        raise
    finally:
        engine.dispose()


def _staging_root(dest: str) -> Path:
    if is_sql_url(dest):
        base = get_settings().batch_dir
        return base / hashlib.sha1(dest.encode()).hexdigest()[:12]
    path = Path(dest)
    return path.parent / f".{path.name}.parts"


# --- the job -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class JobSummary:
    output: str
    model_version: str | None
    as_of: str
    customers_scored: int
    rows_written: int
    report: DataQualityReport
    top20_value_share: float
    horizon_days: int
    equity: float
    """Customer equity: the sum of ``expected_value`` over every scored customer (not only the rows written)."""
    equity_low: float | None
    equity_high: float | None
    """The 80% interval of ``equity`` (:func:`equity_fields`); None when the model gives none."""
    tier_counts: dict[str, int]
    psi: dict[str, float]
    drift_warnings: list[str]
    partitions: int
    resumed_partitions: int
    seconds: float
    input_warnings: list[str] = dataclasses.field(default_factory=list)
    economics: dict[str, Any] = dataclasses.field(default_factory=lambda: Economics().to_dict())
    """The run's :class:`serving.economics.Economics` (:meth:`~serving.economics.Economics.to_dict`), logged with it."""
    population: dict[str, Any] = dataclasses.field(default_factory=dict)
    """What reports draw of the scored customers: :func:`population_summary` (tiers, tier x segment matrix, Pareto
    and profit curves, unprofitable customers)."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["report"] = self.report.to_dict()
        return out

    def render(self) -> str:
        tiers = ", ".join(f"{k} {v:,}" for k, v in self.tier_counts.items())
        lines = [
            f"scored {self.customers_scored:,} customers as of {self.as_of} with model version {self.model_version}",
            f"wrote {self.rows_written:,} rows to {self.output} in {self.seconds:.1f} s "
            f"({self.partitions} partitions, {self.resumed_partitions} resumed)",
            f"top 20% of customers hold {self.top20_value_share:.1%} of total expected value",
            self.render_equity(),
            *([self.render_unprofitable()] if self.population else []),
            *([self.render_causes()] if self.population.get("at_risk_by_cause") else []),
            *([self.render_economics()] if self.render_economics() else []),
            f"tiers: {tiers}",
            f"data quality: {self.report.rows_valid:,} valid of {self.report.rows_read:,} rows, "
            + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in self.report.rule_counts.items()),
        ]
        lines += [f"WARNING drift: {w}" for w in self.drift_warnings]
        lines += [f"WARNING input: {w}" for w in self.input_warnings]
        return "\n".join(lines)

    def render_economics(self) -> str:
        """``economics: gross margin 0.4, cost to serve per order 3, ...``: the fields set (none: empty)."""
        given = [
            f"{name.replace('_', ' ')} {value:g}"
            for name, value in self.economics.items()
            if name != "offers" and value not in (None, 0, 0.0)
        ]
        return f"economics: {', '.join(given)}" if given else ""

    def render_unprofitable(self) -> str:
        """``1,234 customers (12.3%) are unprofitable: together -5,678 expected profit over the next 90 days``."""
        lost = self.population["unprofitable"]
        share = lost["customers"] / self.customers_scored if self.customers_scored else 0.0
        return (
            f"{lost['customers']:,} customers ({share:.1%}) are unprofitable: together {lost['expected_profit']:,.0f}"
            f" expected profit over the next {self.horizon_days} days"
        )

    def render_causes(self) -> str:
        """``value at risk by cause: engagement fading 12.3k (45%), service dissatisfaction 5k (18%), ...`` (families
        with value at risk, largest first; the customers scored without reasons last)."""
        entries = self.population["at_risk_by_cause"]
        shown = sorted(
            (e for e in entries if e["value_at_risk"] > 0 and e["cause"] != UNEXPLAINED),
            key=lambda e: -e["value_at_risk"],
        )
        parts = [f"{e['label']} {short_amount(e['value_at_risk'])} ({e['share']:.0%})" for e in shown]
        unexplained = next((e for e in entries if e["cause"] == UNEXPLAINED), None)
        if unexplained and unexplained["customers"]:
            parts.append(f"{unexplained['customers']:,} customers scored without reasons")
        return f"value at risk by cause: {', '.join(parts) or 'none'}"

    def render_equity(self) -> str:
        """``customer equity over the next 90 days: 1,234,567 (80% interval 1.13M-1.42M)``."""
        head = f"customer equity over the next {self.horizon_days} days: {self.equity:,.0f}"
        if self.equity_low is None or self.equity_high is None:
            return f"{head} (no interval: the model has no value calibration)"
        return f"{head} (80% interval {short_amount(self.equity_low)}-{short_amount(self.equity_high)})"


def run_score_job(
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
    """Score every customer of ``source`` at ``as_of`` and write the ranked list to ``dest``.

    ``economics`` (CLI ``--economics`` and its flags; None: the default): what ``expected_profit`` subtracts; part of
    the job key (parts scored under other economics are not resumed) and logged in the summary.
    ``scorecard_weights``: the composite score's weights (:class:`serving.scorecard.ScorecardWeights`; None: 1/3
    each), part of the job key when not the default.

    ``reasons`` (CLI ``--reasons``): ``top-k`` (default) = reasons for every written row, paid for the written rows
    only; ``all`` = every customer explained in its partition (same output, the cost of explaining everyone);
    ``none`` = null reason columns (same columns, scores and order).

    ``normalize_float_ids`` (CLI ``--normalize-ids``): ids an export turned into floats (``17850.0``) are read as
    ``17850`` -- before the input is split, so one customer's rows stay in one partition (see
    :mod:`features.contract`). ``min_date``: floor of plausible transaction days (``implausible_timestamp``).
    An ``as_of`` after the last valid transaction by more than the tolerance raises :class:`ContractError` unless
    ``allow_future_as_of``. An output that cannot be written raises :class:`ContractError` before any scoring.

    ``on_progress`` (:data:`ProgressCallback`): told after each resumed partition (first, when the job resumes) and
    each newly scored one (the command line passes its bar, :func:`retention.progress.counter`); None: nobody is told.
    """
    start = time.perf_counter()
    as_of_date = to_date(as_of)
    assert as_of_date is not None
    if top_k is not None and top_k < 1:
        raise ContractError(f"--top-k must be at least 1, got {top_k}")
    if partitions < 1:
        raise ContractError(f"--partitions must be at least 1, got {partitions}")
    reasons = reason_mode(reasons, top_k)
    if not is_sql_url(source) and not Path(source).exists():
        raise ContractError(f"input '{source}' does not exist")
    check_output(dest)
    key_text = f"{as_of_date}|{model.version}|{source_fingerprint(source)}|{partitions}|{json.dumps(columns or {})}"
    if normalize_float_ids:
        key_text += "|normalize-ids"
    if min_date != MIN_DATE:
        key_text += f"|min-date={min_date}"
    if reasons != "all":  # parts of another mode hold other columns
        key_text += f"|reasons={reasons}"
    economics = economics or Economics()
    scored_under = dataclasses.replace(economics, offers=())  # what the parts' expected_profit depends on
    if scored_under != Economics():
        key_text += f"|economics={json.dumps(scored_under.to_dict(), sort_keys=True)}"
    if scorecard_weights is not None and scorecard_weights != DEFAULT_WEIGHTS:
        key_text += f"|scorecard={json.dumps(scorecard_weights.to_dict(), sort_keys=True)}"
    job_key = hashlib.sha1(key_text.encode()).hexdigest()[:16]
    root = _staging_root(dest)
    staging = root / job_key
    if root.exists():  # parts of other jobs (another as-of, model or input) are stale
        for other in root.iterdir():
            if other.name != job_key:
                shutil.rmtree(other, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)

    def part_path(p: int) -> Path:
        return staging / f"part-{p:05d}.parquet"

    saved = {p: _read_part(part_path(p)) for p in range(partitions)}
    done = {p for p, result in saved.items() if result is not None}
    resumed = len(done)
    tell = _Progress(partitions, on_progress or _no_progress)
    for p in sorted(done):
        tell.finished(saved[p])  # type: ignore[arg-type]
    if len(done) < partitions:
        if spool_input is None:
            spool_input = _source_bytes(source) > get_settings().spool_bytes
        if spool_input and not is_sql_url(source):
            spool_dir = staging / "spool"
            files = spool(source, columns, partitions, spool_dir, normalize_float_ids=normalize_float_ids)
            parts: Iterator[tuple[int, pd.DataFrame]] = (
                (p, pd.read_parquet(f) if f is not None else pd.DataFrame())
                for p, f in enumerate(files)
                if p not in done
            )
        else:
            split = split_in_memory(source, columns, partitions, normalize_float_ids=normalize_float_ids)
            parts = ((p, raw) for p, raw in split if p not in done)
        for p, raw in parts:
            saved[p] = _score_raw_part(
                raw, model, as_of_date, columns, normalize_float_ids, min_date, reasons, economics, scorecard_weights
            )
            _write_part(saved[p], part_path(p))  # type: ignore[arg-type]
            tell.finished(saved[p])  # type: ignore[arg-type]
        shutil.rmtree(staging / "spool", ignore_errors=True)

    results = [saved[p] for p in range(partitions)]
    report = check_parts(results, as_of_date, strict=strict, allow_future_as_of=allow_future_as_of)
    scores, written = rank_and_write(results, model, as_of_date, dest, top_k)
    summary = summarise(
        results, report, model, as_of_date, dest, population_of(scores, model), rows_written=written,
        partitions=partitions, resumed=resumed, started=start,
        input_warnings=input_file_warnings(source, columns, min_date), economics=economics,
    )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    return summary


def _no_progress(partitions_done: int, partitions_total: int, rows_done: int) -> None:
    """The progress callback of a job nobody watches."""


@dataclasses.dataclass
class _Progress:
    """A job's partitions done and their input rows, told to ``callback`` (:data:`ProgressCallback`) at each one."""

    total: int
    callback: ProgressCallback
    done: int = 0
    rows: int = 0

    def finished(self, result: PartitionResult) -> None:
        self.done += 1
        self.rows += result.report.rows_read
        self.callback(self.done, self.total, self.rows)


def check_parts(
    results: list[PartitionResult], as_of: dt.date, *, strict: bool, allow_future_as_of: bool = False
) -> DataQualityReport:
    """The partitions' reports combined (every engine's, in partition order), judged before anything is written:
    :class:`ContractError` for an input without a valid transaction, broken rows under ``--strict`` and an ``as_of``
    too far after the last valid transaction (unless ``allow_future_as_of``)."""
    report = combine_reports([r.report for r in results])
    if report.rows_valid == 0:
        raise ContractError(f"no valid transaction in the input ({report.rows_read} rows read)")
    if strict and report.rows_broken:
        broken = ", ".join(
            f"{report.rule_counts[rule]} {rule.replace('_', ' ')}" for rule in BROKEN_RULES if report.rule_counts[rule]
        )
        raise ContractError(f"--strict: {report.rows_broken} row(s) break the input contract ({broken})")
    future = future_as_of_problem(report.last_date, as_of)
    if future and not allow_future_as_of:
        raise ContractError(future)
    return report


def rank_and_write(
    results: list[PartitionResult], model: ScoringModel, as_of: dt.date, dest: str, top_k: int | None
) -> tuple[pd.DataFrame, int]:
    """The local engine's end: merge the partitions' rows, rank globally, explain the written rows when the parts
    kept their feature rows (:func:`finish_ranking`), write atomically; every scored row (unranked) and the number
    of rows written."""
    frames = [r.scores for r in results]
    scores = pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
    kept = [r.features for r in results]
    features = np.concatenate(kept) if kept and all(f is not None for f in kept) else None
    ranked = finish_ranking(scores, model.version, as_of, top_k, model=model, features=features)
    write_output(ranked, dest)
    return scores, len(ranked)


@dataclasses.dataclass(frozen=True)
class Population:
    """What a run summary needs of the scored customers, however an engine gathers it: every customer's
    ``expected_value`` (the Pareto share), their :class:`~serving.intervals.EquityMoments` (the customer equity and
    its interval), the customers per tier, and every customer's ``expected_profit``, ``value_at_risk``, ``tier`` and
    ``segment`` (:func:`population_summary`), aligned with ``expected_value``; ``cause``: each customer's
    :func:`summary_causes` (None: not given, the summary has no ``at_risk_by_cause``)."""

    expected_value: np.ndarray
    moments: EquityMoments
    tier_counts: Mapping[str, int]
    expected_profit: np.ndarray
    value_at_risk: np.ndarray
    tier: np.ndarray
    segment: np.ndarray
    cause: np.ndarray | None = None


POPULATION_COLUMNS = ("expected_value", "expected_profit", "value_at_risk", "tier", "segment")
"""The scored columns a :class:`Population` holds for every customer, besides its cause (:func:`summary_causes`)."""
UNEXPLAINED = "unexplained"
"""The summary's cause of a customer scored without reasons (``--reasons none``, or beyond ``--top-k`` in the
partitions)."""
CAUSE_ORDER = (*FAMILIES, OTHER, NO_CAUSE, UNEXPLAINED)
"""The entries of ``at_risk_by_cause``, in order: the families, ``other``, ``none`` (no reason raises churn risk),
``unexplained``."""


def summary_causes(churn_cause: np.ndarray, reason_1: np.ndarray) -> np.ndarray:
    """Each customer's cause in the summary: their ``churn_cause`` (the family of their largest reason that raises
    churn risk); :data:`serving.causes.NO_CAUSE` when they were explained but no reason raises it;
    :data:`UNEXPLAINED` when they were scored without reasons."""
    cause = pd.Series(churn_cause, dtype=object)
    explained = pd.Series(reason_1, dtype=object).notna().to_numpy()
    out = np.where(cause.notna().to_numpy(), cause.to_numpy(), np.where(explained, NO_CAUSE, UNEXPLAINED))
    return out.astype(object)


def at_risk_by_cause(value_at_risk: np.ndarray, cause: np.ndarray) -> list[dict[str, Any]]:
    """Value at risk by churn-cause family (:data:`CAUSE_ORDER`; ``other`` only when some customer has it): per
    entry ``cause``, ``label`` (:func:`serving.causes.family_text`), ``customers``, ``value_at_risk`` (the sum,
    currency units over the horizon) and ``share`` of the total value at risk (0 without any).

    Attribution: each customer's whole value at risk (churn probability x expected value) goes to one family, that
    of their largest reason that raises churn risk -- what an agent would act on first -- rather than being split by
    contribution shares (which would spread a customer over features the agent cannot act on together)."""
    var = np.asarray(value_at_risk, dtype=np.float64)
    cause = np.asarray(cause, dtype=object)
    total = float(var.sum())
    out = []
    for name in CAUSE_ORDER:
        mine = cause == name
        if name == OTHER and not mine.any():
            continue
        value = float(var[mine].sum())
        out.append(
            {
                "cause": name,
                "label": family_text(name),
                "customers": int(mine.sum()),
                "value_at_risk": value,
                "share": value / total if total > 0 else 0.0,
            }
        )
    return out


CURVE_POINTS = 101
"""Points of the summary's curves: customer shares 0, 0.01, ..., 1."""


def population_of(scores: pd.DataFrame, model: ScoringModel) -> Population:
    """The :class:`Population` of scored rows held in memory (the local engine's); without causes when the rows
    lack ``churn_cause`` or ``reason_1``."""
    return Population(
        expected_value=scores["expected_value"].to_numpy(dtype=np.float64),
        moments=population_moments(scores, model),
        tier_counts=scores["tier"].value_counts().to_dict(),
        expected_profit=scores["expected_profit"].to_numpy(dtype=np.float64),
        value_at_risk=scores["value_at_risk"].to_numpy(dtype=np.float64),
        tier=scores["tier"].to_numpy(dtype=object),
        segment=scores["segment"].to_numpy(dtype=object),
        cause=(
            summary_causes(scores[CAUSE_FIELD].to_numpy(dtype=object), scores["reason_1"].to_numpy(dtype=object))
            if CAUSE_FIELD in scores.columns and "reason_1" in scores.columns
            else None
        ),
    )


def _curve_at_shares(values: np.ndarray, by: np.ndarray) -> tuple[list[float], list[float]]:
    """``(customer_share, cumulative sum of values)`` at :data:`CURVE_POINTS` shares, customers ordered by ``by``
    (highest first, ties as their group's mean: :func:`serving.pareto.ordered_by_score`), linear between customers."""
    x = np.linspace(0.0, 1.0, CURVE_POINTS)
    if not len(values):
        return x.tolist(), [0.0] * CURVE_POINTS
    cumulative = np.r_[0.0, np.cumsum(ordered_by_score(values, by))]
    return x.tolist(), np.interp(x, np.arange(len(values) + 1) / len(values), cumulative).tolist()


def population_summary(population: Population, tier_names: tuple[str, ...]) -> dict[str, Any]:
    """The ``population`` part of a run summary (every engine's: :func:`summarise` calls it), money in currency
    units over the model's horizon:

    - ``tiers``: per tier, best first: customers and the sums of ``expected_value``, ``expected_profit`` and
      ``value_at_risk``;
    - ``matrix``: customers and the sum of ``expected_value`` per tier x segment (every pair, tiers best first,
      segments in :data:`serving.scoring.SEGMENTS` order);
    - ``pareto``: the Pareto curve by expected value (:func:`serving.pareto.gains_curve`) at :data:`CURVE_POINTS`
      customer shares (value shares all 0 when there is no value);
    - ``profit_curve``: cumulative expected profit of the customers ranked by expected profit, highest first, at
      the same shares (it rises while customers earn, then falls through the unprofitable ones);
    - ``unprofitable``: how many customers have a negative expected profit and the sum of their profits;
    - ``at_risk_by_cause`` (when the population has causes): why value is at risk, :func:`at_risk_by_cause`.
    """
    ev, profit = population.expected_value, population.expected_profit
    tier, segment = np.asarray(population.tier, dtype=object), np.asarray(population.segment, dtype=object)
    tiers, matrix = [], []
    for name in tier_names:
        mine = tier == name
        tiers.append(
            {
                "tier": name,
                "customers": int(mine.sum()),
                "expected_value": float(ev[mine].sum()),
                "expected_profit": float(profit[mine].sum()),
                "value_at_risk": float(population.value_at_risk[mine].sum()),
            }
        )
        for seg in SEGMENTS:
            cell = mine & (segment == seg)
            matrix.append(
                {"tier": name, "segment": seg, "customers": int(cell.sum()), "expected_value": float(ev[cell].sum())}
            )
    x = np.linspace(0.0, 1.0, CURVE_POINTS)
    if len(ev) and ev.sum() > 0:
        share, gains = gains_curve(ev)
        value_share = np.interp(x, share, gains).tolist()
    else:
        value_share = [0.0] * CURVE_POINTS
    customer_share, cumulative_profit = _curve_at_shares(profit, profit)
    losing = profit < 0
    out = {
        "tiers": tiers,
        "matrix": matrix,
        "pareto": {"customer_share": x.tolist(), "value_share": value_share},
        "profit_curve": {"customer_share": customer_share, "cumulative_profit": cumulative_profit},
        "unprofitable": {"customers": int(losing.sum()), "expected_profit": float(profit[losing].sum())},
    }
    if population.cause is not None:
        out["at_risk_by_cause"] = at_risk_by_cause(population.value_at_risk, population.cause)
    return out


def summarise(
    results: list[PartitionResult],
    report: DataQualityReport,
    model: ScoringModel,
    as_of: dt.date,
    dest: str,
    population: Population,
    *,
    rows_written: int,
    partitions: int,
    resumed: int,
    started: float,
    input_warnings: list[str] | None = None,
    economics: Economics | None = None,
) -> JobSummary:
    """The run summary of every engine: the data-quality ``report`` (:func:`check_parts`), drift (PSI per feature
    from the partitions' bin counts, warnings above :data:`~serving.drift.PSI_WARNING`), a warning per input file
    (``input_warnings``) or partition whose rows mostly break a rule, and from the scored ``population``: the
    Pareto share, the customer equity with its 80% interval (:func:`equity_fields`), the tier counts and the
    :func:`population_summary`; ``economics``: the run's (logged in the summary).
    ``started``: the job's ``time.perf_counter()`` at start (the summary's ``seconds``)."""
    counts: dict[str, np.ndarray] = {}
    for result in results:
        for name, c in result.drift_counts.items():
            counts[name] = np.add(counts.get(name, 0), c)
    notes = list(input_warnings or [])
    for p, result in enumerate(results):
        part = result.report
        if part.rows_read and part.rows_broken * 2 > part.rows_read:
            share = part.rows_broken / part.rows_read
            notes.append(f"partition {p}: {part.rows_broken:,} of {part.rows_read:,} rows ({share:.0%}) break a rule")
    psi_by_feature = {
        name: psi(model.meta.feature_reference[name]["shares"], c / max(c.sum(), 1)) for name, c in counts.items()
    }
    warnings = [f"{n} PSI {v:.2f} > {PSI_WARNING}" for n, v in sorted(psi_by_feature.items()) if v > PSI_WARNING]
    equity, equity_low, equity_high = equity_fields(population.moments, model.intervals)
    return JobSummary(
        output=dest,
        model_version=model.version,
        as_of=str(as_of),
        customers_scored=len(population.expected_value),
        rows_written=rows_written,
        report=report,
        top20_value_share=_top20_share(population.expected_value),
        horizon_days=model.meta.horizon_days,
        equity=equity,
        equity_low=equity_low,
        equity_high=equity_high,
        tier_counts={t: int(population.tier_counts.get(t, 0)) for t in model.meta.tier_names},
        psi=psi_by_feature,
        drift_warnings=warnings,
        partitions=partitions,
        resumed_partitions=resumed,
        seconds=time.perf_counter() - started,
        input_warnings=notes,
        economics=(economics or Economics()).to_dict(),
        population=population_summary(population, model.meta.tier_names),
    )


def _score_raw_part(
    raw: pd.DataFrame,
    model: ScoringModel,
    as_of: dt.date,
    columns: Mapping[str, str] | None,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = MIN_DATE,
    reasons: str = "all",
    economics: Economics | None = None,
    scorecard_weights: ScorecardWeights | None = None,
) -> PartitionResult:
    """Score one part; ``--strict`` is judged once on the combined report, so every part is counted first."""
    if raw.empty and not len(raw.columns):  # a spool partition that received no row
        raw = pd.DataFrame({"customer_id": pd.Series([], dtype="str"), "timestamp": [], "amount": []})
        columns = None
    return score_partition(
        raw, model, as_of, columns=columns, normalize_float_ids=normalize_float_ids, min_date=min_date,
        reasons=reasons, economics=economics, scorecard_weights=scorecard_weights,
    )  # fmt: skip


def input_file_warnings(source: str, columns: Mapping[str, str] | None, min_date: dt.date | None) -> list[str]:
    """One warning per file of a Parquet directory whose timestamps are mostly unreadable or before ``min_date``
    (a corrupted file: its rows are counted under the rules, the warning says where they come from)."""
    if is_sql_url(source) or not Path(source).is_dir():
        return []
    from features.contract import parse_timestamps

    column = (columns or {}).get("timestamp", "timestamp")
    floor = pd.Timestamp(min_date, tz="UTC") if min_date is not None else None
    out = []
    for path in parquet_files(Path(source)):
        try:
            values = pd.read_parquet(path, columns=[column])[column]
        except Exception:  # a file the job could read whole but not by column: nothing to add
            continue
        stamps = parse_timestamps(values)
        bad = int(stamps.isna().sum()) + (int((stamps < floor).sum()) if floor is not None else 0)
        if len(stamps) and bad * 2 > len(stamps):
            name = path.relative_to(source)
            out.append(
                f"input file '{name}': {bad:,} of {len(stamps):,} rows ({bad / len(stamps):.0%}) have a bad or"
                " implausible timestamp; the file may be corrupted"
            )
    return out


def _read_part(path: Path) -> PartitionResult | None:
    """A finished part saved by :func:`_write_part`, or None when it must be (re)computed: missing, unreadable, or
    saved by another version of the contract (its report has other rules or fields, e.g. a part saved before the
    rule ``duplicate_transaction_id`` became ``duplicate_line``)."""
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        fields = meta["report"]
        if set(fields.get("rule_counts", ())) != set(RULES):
            return None
        report = DataQualityReport(**fields)
        frame = pd.read_parquet(path)
        kept = [c for c in frame.columns if c.startswith(FEATURE_PREFIX)]
        features = frame[kept].to_numpy(dtype=np.float64) if kept else None
        return PartitionResult(frame.drop(columns=kept), report, meta["drift_counts"], features)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # a torn or foreign file: recompute the part
        log.info("recomputing partition %s: %s", path.name, exc)
        return None


def _write_part(result: PartitionResult, path: Path) -> None:
    """Write one part's rows (with its feature rows as ``feature:<name>`` float64 columns when it keeps them), then
    its metadata; the metadata file marks the part as finished."""
    tmp = path.with_name(path.name + ".tmp")
    frame = result.scores
    if result.features is not None:
        names = feature_column_names(result.features.shape[1])
        frame = pd.concat([frame, pd.DataFrame(result.features, columns=names, index=frame.index)], axis=1)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    meta_tmp = path.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps({"report": dataclasses.asdict(result.report), "drift_counts": result.drift_counts}))
    os.replace(meta_tmp, path.with_suffix(".json"))
