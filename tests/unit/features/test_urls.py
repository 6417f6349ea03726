"""features.urls: URL parsing, query options and password hiding (through SQLAlchemy's URL), with exact texts."""

from __future__ import annotations

import pytest

from features.sources import is_sql_url, split_sql_url
from features.urls import parse_url, redact_url, render_url, take_query, url_scheme


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("postgresql://u:secret@127.0.0.1:5432/test", "postgresql://u:***@127.0.0.1:5432/test"),
        ("postgresql://u:s%40c%3Aret@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql+psycopg://u:p@[::1]:5432/db", "postgresql+psycopg://u:***@[::1]:5432/db"),
        ("rediss://user:pw@h:6380/1?prefix=crm", "rediss://user:***@h:6380/1?prefix=crm"),
        # no password, or not a URL: the text comes back as it was (no re-encoding of ':' in the prefix)
        ("redis://127.0.0.1:6379/0?prefix=test:store:1", "redis://127.0.0.1:6379/0?prefix=test:store:1"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),
        ("sqlite:////data/online_store.db", "sqlite:////data/online_store.db"),
        ("data/transactions.parquet", "data/transactions.parquet"),
        ("postgresql://u:p@h:notaport/db", "postgresql://***@h:notaport/db"),  # malformed: all credentials hidden
    ],
)
def test_redact_url(text: str, shown: str) -> None:
    assert redact_url(text) == shown


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("sqlite:///x.db", "sqlite"),
        ("PostgreSQL+psycopg://h/db", "postgresql+psycopg"),
        ("s3://bucket/key", "s3"),
        ("sqlite://", "sqlite"),
        ("no-scheme.db", None),
        ("data/part-0.parquet", None),
        ("C:\\data\\tx.csv", None),
        ("mailto:someone@example.com", None),
    ],
)
def test_url_scheme(text: str, scheme: str | None) -> None:
    assert url_scheme(text) == scheme


def test_parse_url_decodes_and_render_url_round_trips() -> None:
    url = parse_url("postgresql://u:s%40c%3Aret@h:5433/db?sslmode=require")
    assert (url.username, url.password, url.host, url.port, url.database) == ("u", "s@c:ret", "h", 5433, "db")
    assert render_url(url) == "postgresql://u:s%40c%3Aret@h:5433/db?sslmode=require"


@pytest.mark.parametrize("text", ["data/tx.parquet", "postgresql://u:secret@h:notaport/db"])
def test_parse_url_refuses_without_repeating_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not a valid URL \(") as exc:
        parse_url(text)
    assert "secret" not in str(exc.value)


def test_take_query() -> None:
    url, options = take_query(parse_url("redis://h:6379/0?prefix=a&prefix=b&socket_timeout=5"), "prefix", "absent")
    assert options == {"prefix": "b"}  # a repeated option: the last one
    assert render_url(url) == "redis://h:6379/0?socket_timeout=5"
    url, options = take_query(parse_url("sqlite:///x.db"), "prefix")
    assert options == {} and render_url(url) == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("postgresql://u:pw@h:5432/db?table=tx", ("postgresql+psycopg://u:pw@h:5432/db", "tx", None)),
        ("postgres://h/db?table=tx&sslmode=require", ("postgresql+psycopg://h/db?sslmode=require", "tx", None)),
        ("postgresql+psycopg://h/db?table=tx", ("postgresql+psycopg://h/db", "tx", None)),
        ("sqlite:///x.db?query=SELECT * FROM tx", ("sqlite:///x.db", None, "SELECT * FROM tx")),
        ("sqlite:////abs/scores.db", ("sqlite:////abs/scores.db", "retention_scores", None)),
    ],
)
def test_split_sql_url(location: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_sql_url(location, default_table="retention_scores" if "scores" in location else None) == expected


def test_split_sql_url_names_a_bad_url_without_its_password() -> None:
    from features.contract import ContractError

    with pytest.raises(ContractError, match=r"^'postgresql://\*\*\*@h:x/db' is not a valid URL \(") as exc:
        split_sql_url("postgresql://u:pw@h:x/db")
    assert "pw" not in str(exc.value)


@pytest.mark.parametrize(
    ("location", "sql"),
    [
        ("sqlite:///x.db?table=t", True),
        ("postgresql+psycopg://h/db", True),
        ("mysql://h/db", True),
        ("s3://bucket/tx.parquet", False),
        ("tx.parquet", False),
        ("C:\\data\\tx.csv", False),
    ],
)
def test_is_sql_url(location: str, sql: bool) -> None:
    assert is_sql_url(location) is sql
