"""Read and write tabular data: CSV / Parquet files, directories of Parquet files, and SQL tables.

A source is a path (``.csv``, ``.parquet``/``.pq``, or a directory of Parquet files) or a SQLAlchemy URL. For a URL,
the table or query is given in the URL's query string: ``postgresql://host/db?table=transactions`` or
``sqlite:///file.db?query=SELECT * FROM tx``. Identifier-like columns are read as strings so that ids such as
``00042`` keep their leading zeros.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from features.contract import MIN_DATE, STRING_COLUMNS, ContractError
from features.urls import parse_url, redact_url, render_url, take_query, url_scheme

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def is_sql_url(location: str) -> bool:
    """Whether ``location`` is a database URL (``sqlite://``, ``postgresql[+driver]://``...) rather than a path."""
    scheme = url_scheme(str(location))
    return scheme is not None and scheme.split("+")[0] in SQL_SCHEMES


def split_sql_url(location: str, *, default_table: str | None = None) -> tuple[str, str | None, str | None]:
    """Split ``URL?table=T`` / ``URL?query=Q`` into ``(engine_url, table, query)``; other options stay on the URL.

    ``postgresql://`` and ``postgres://`` get the psycopg driver (``postgresql+psycopg://``). Raises
    :class:`ContractError` naming the URL (password hidden) when it cannot be parsed.
    """
    try:
        url = parse_url(location)
    except ValueError as exc:
        raise ContractError(f"'{redact_url(location)}' is {exc}") from None
    url, options = take_query(url, "table", "query")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return render_url(url), options.get("table", default_table), options.get("query")


def read_table(
    location: str | os.PathLike[str],
    columns: Mapping[str, str] | None = None,
    text_columns: Sequence[str] = STRING_COLUMNS,
) -> pd.DataFrame:
    """Read a whole source into a DataFrame; the ``text_columns`` (contract names, default the transaction
    contract's id columns; input names after the ``columns`` mapping) are read as text.

    Raises :class:`ContractError` with one sentence when the source cannot be read.
    """
    location = str(location)
    id_sources = {(columns or {}).get(name, name) for name in text_columns}
    if is_sql_url(location):
        return _read_sql(location, id_sources)
    path = Path(location)
    if not path.exists():
        raise ContractError(f"input '{location}' does not exist")
    try:
        if path.is_dir():
            files = parquet_files(path)
            return _ids_as_text(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), id_sources)
        if path.suffix.lower() in (".parquet", ".pq"):
            return _ids_as_text(pd.read_parquet(path), id_sources)
        if path.suffix.lower() in (".csv", ".txt") or path.suffix.lower() == ".gz":
            header = pd.read_csv(path, nrows=0)
            dtypes = {name: "str" for name in header.columns if name in id_sources}
            return pd.read_csv(path, dtype=dtypes, keep_default_na=True, na_values=[""])
    except ContractError:
        raise
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(f"cannot read '{location}': {first_line}") from exc
    raise ContractError(f"input '{location}' is neither .csv nor .parquet nor a directory of Parquet files")


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of a directory source, in reading order (:class:`ContractError` when there are none)."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix in (".parquet", ".pq"))
    if not files:
        raise ContractError(f"directory '{path}' holds no .parquet files")
    return files


def _ids_as_text(frame: pd.DataFrame, id_sources: set[str]) -> pd.DataFrame:
    for name in id_sources & set(frame.columns):
        col = frame[name]
        if not pd.api.types.is_string_dtype(col.dtype) or pd.api.types.is_object_dtype(col.dtype):
            frame[name] = col.astype("str").where(col.notna(), None)
    return frame


def _read_sql(location: str, id_sources: set[str]) -> pd.DataFrame:
    import sqlalchemy

    url, table, query = split_sql_url(location)
    if not table and not query:
        raise ContractError(f"SQL source '{redact_url(location)}' needs ?table=NAME or ?query=SELECT...")
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            frame = pd.read_sql_query(sqlalchemy.text(query), conn) if query else pd.read_sql_table(table, conn)
    except Exception as exc:  # driver errors vary by database; the message names the source
        raise ContractError(f"cannot read SQL source '{redact_url(location)}': {str(exc).splitlines()[0]}") from exc
    finally:
        if "engine" in locals():
            engine.dispose()
    return _ids_as_text(frame, id_sources)


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a frame to ``.csv`` or ``.parquet`` atomically (temporary file in the same folder, then rename).

    Raises :class:`ContractError` (one sentence) when the folder cannot be created or written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ContractError(f"output '{path}' must end in .csv or .parquet")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:  # an unwritable or missing folder, a full disk: the user's to fix
        blocked = next((p for p in path.parents if p.exists()), None)
        reason = f"'{blocked}' is not a folder" if blocked is not None and not blocked.is_dir() else exc.strerror
        raise ContractError(f"cannot write the output '{path}': {reason or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def load_transactions(
    location: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    as_of: str | None = None,
    strict: bool = False,
    normalize_float_ids: bool = False,
    min_date: dt.date | None = MIN_DATE,
):
    """Read a source and apply the contract: ``(transactions, DataQualityReport)``, one row per order.

    ``normalize_float_ids``: read ids an export turned into floats (``17850.0``) as ``17850`` (see
    :mod:`features.contract`); off by default, ids stay the text the source holds. ``min_date``: lines before
    this day are counted as ``implausible_timestamp`` (default 1990-01-01; None: no floor).
    """
    from features.contract import prepare_transactions

    raw = read_table(location, columns)
    return prepare_transactions(
        raw, columns=columns, as_of=as_of, strict=strict, normalize_float_ids=normalize_float_ids, min_date=min_date
    )
