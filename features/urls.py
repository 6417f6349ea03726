"""Database and store URLs, through SQLAlchemy's :class:`~sqlalchemy.engine.URL` (parsing, query options, passwords).

The one place that reads and rewrites ``scheme://user:password@host:port/database?key=value`` text: SQL sources and
destinations (:mod:`features.sources`, batch outputs) and the online store URLs (:mod:`serving.store`) use it.
SQLAlchemy is imported on first use, not when this module is imported.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["parse_url", "redact_url", "render_url", "take_query", "url_scheme"]

REDACTED = "***"
"""What a hidden password reads as (SQLAlchemy's own mask)."""


def url_scheme(text: str) -> str | None:
    """The lower-cased scheme of ``scheme://...`` text (``"postgresql+psycopg"``), or None for anything else (paths)."""
    text = str(text)
    if "://" not in text:
        return None
    scheme = urllib.parse.urlsplit(text).scheme
    return scheme.lower() if scheme and text[len(scheme) : len(scheme) + 3] == "://" else None


def parse_url(text: str) -> URL:
    """``text`` as a SQLAlchemy URL; ``ValueError`` when it is not one (the message never repeats the text).

    Percent-escapes are decoded: ``postgresql://u:p%40ss@h/db`` has the password ``p@ss``.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(str(text))
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is not a number
        raise ValueError(
            f"not a valid URL ({exc}); expected scheme://[user[:password]@]host[:port]/database[?key=value...]"
        ) from None


def render_url(url: URL) -> str:
    """The full text of ``url``, password included (for drivers), with special characters percent-escaped."""
    return url.render_as_string(hide_password=False)


def redact_url(text: str) -> str:
    """``text`` with its password shown as ``***`` (for messages, logs and health answers).

    Text without a password, or that is not a URL, comes back unchanged: ``redis://:pw@host:6379/0`` becomes
    ``redis://:***@host:6379/0``, ``postgresql://u:secret@h/db?sslmode=require`` becomes
    ``postgresql://u:***@h/db?sslmode=require``, ``sqlite:///scores.db`` stays as it is. A malformed URL with
    credentials has all of them hidden: ``postgresql://u:pw@h:x/db`` becomes ``postgresql://***@h:x/db``.
    """
    try:
        url = parse_url(text)
    except ValueError:
        scheme = url_scheme(text)
        if scheme is None or "@" not in str(text):
            return str(text)
        return f"{scheme}://{REDACTED}@{str(text).rpartition('@')[2]}"
    if not url.password:
        return str(text)
    return url.render_as_string(hide_password=True)


def take_query(url: URL, *names: str) -> tuple[URL, dict[str, str]]:
    """``url`` without the query options ``names``, and their values (the last one when an option is repeated).

    Options not named stay on the URL; an option that is absent is absent from the dict.
    """
    values: dict[str, str] = {}
    for name in names:
        value = url.query.get(name)
        if value is not None:
            values[name] = value if isinstance(value, str) else value[-1]
    return url.difference_update_query(names), values
