"""Read-only connections through the DBAPI driver alone (sqlite3, psycopg), for `status`.

They run the statements of :mod:`qflow.store.queries` as rendered into
:mod:`qflow.store.rendered` and return the rows SQLAlchemy would (times as datetimes,
booleans as bools), without importing SQLAlchemy, whose import costs more CPU than the
rest of the command. Only URLs read here exactly as SQLAlchemy reads them are opened;
for any other, :func:`connect` returns None and the caller takes the full path.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, unquote

from qflow.errors import UnreachableError
from qflow.store.rendered import STATEMENTS

# The URLs read without SQLAlchemy, as its make_url reads them (user, password and
# database unquoted); not several hosts, IPv6 brackets, a port that is not a number,
# repeated query keys, nor a SQLite path with escapes: those are make_url's to read.
_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///([^?#%]*)")
_POSTGRES = re.compile(r"postgresql\+psycopg://(?:([^:/@]*)(?::([^@]*))?@)?"
                       r"([^/:?@%\[\],]*)(?::(\d{1,5}))?/([^?@]*)(?:\?([^@]*))?")

# How long SQLite waits for a lock (the full path's engines too: qflow.store.db).
BUSY_TIMEOUT_MS = 30_000

# What SQLite's driver returns for a time or a boolean, turned into what SQLAlchemy does
# (see qflow.store.queries).
_FROM_SQLITE = {"datetime": dt.datetime.fromisoformat, "boolean": bool}


def sqlite_database(url: str) -> str | None:
    """The database of a ``sqlite:///...`` URL as SQLAlchemy reads it; None for a URL
    read here only by SQLAlchemy."""
    found = _SQLITE.fullmatch(url)
    return found.group(1) if found else None


def postgres_args(url: str) -> dict[str, Any] | None:
    """psycopg.connect's arguments for a ``postgresql+psycopg://`` URL, as SQLAlchemy's
    dialect passes them; None for a URL read here only by SQLAlchemy."""
    found = _POSTGRES.fullmatch(url)
    if found is None:
        return None
    user, password, host, port, dbname, query = found.groups()
    pairs = parse_qsl(query or "")
    if port is not None and not 0 < int(port) < 65536 or \
            len({k for k, _ in pairs}) != len(pairs):
        return None
    named = {"user": unquote(user or ""), "password": unquote(password or ""),
             "host": host, "port": int(port) if port else None, "dbname": unquote(dbname)}
    return {**{k: v for k, v in named.items() if v}, **dict(pairs)}


class Unavailable(Exception):
    """The plain connection cannot answer: the full path must (and says why)."""


class PlainConnection:
    """One read transaction on a DBAPI connection."""

    def __init__(self, dbapi: Any, dialect: str, errors: type[Exception]):
        self.dbapi, self.dialect, self.errors = dbapi, dialect, errors

    def rows(self, name: str, params: dict[str, Any]) -> list[tuple]:
        """The rows of statement ``name`` (see qflow.store.queries); Unavailable on any
        error of the driver."""
        return [row for batch in self._batches(name, params, None) for row in batch]

    def stream(self, name: str, params: dict[str, Any], size: int) -> Iterator[tuple]:
        """The rows of statement ``name``, fetched ``size`` at a time (on PostgreSQL
        through a server-side cursor); Unavailable on any error of the driver."""
        for batch in self._batches(name, params, size):
            yield from batch

    def _batches(self, name: str, params: dict[str, Any], size: int | None
                 ) -> Iterator[list[tuple]]:
        statement = STATEMENTS.get(name)
        if statement is None:
            raise Unavailable(f"{name} is not rendered")
        params = {**statement[f"{self.dialect}_values"], **params}
        if self.dialect == "sqlite":
            params = {k: _sqlite_time(v) if k in statement["sqlite_times"] else v
                      for k, v in params.items()}
        convert = [(i, _FROM_SQLITE[kind]) for i, kind in statement["sqlite_convert"].items()
                   ] if self.dialect == "sqlite" else []
        try:
            named = {"name": "qflow_stream"} if size and self.dialect != "sqlite" else {}
            cursor = self.dbapi.cursor(**named)
            cursor.execute(statement[self.dialect], params)
            while True:
                rows = cursor.fetchmany(size) if size else cursor.fetchall()
                if rows:
                    yield [_converted(row, convert) for row in rows] if convert else rows
                if not rows or not size:
                    break
            cursor.close()
        except self.errors as exc:
            raise Unavailable(str(exc)) from exc

    def close(self) -> None:
        self.dbapi.close()

    def __enter__(self) -> PlainConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _sqlite_time(value: dt.datetime) -> str:
    """A naive UTC time as SQLAlchemy writes it in SQLite (always with microseconds: the
    text is compared as text)."""
    return value.isoformat(" ", "microseconds")


def _converted(row: tuple, convert: list) -> tuple:
    values = list(row)
    for i, fn in convert:
        if values[i] is not None:
            values[i] = fn(values[i])
    return tuple(values)


def connect(url: str) -> PlainConnection | None:
    """A read transaction on the DB at ``url``, or None when this module does not read
    the URL or finds nothing there (the full path says what is wrong). A PostgreSQL server
    that cannot be reached is UnreachableError, as on the full path."""
    database = sqlite_database(url)
    if database is not None:
        return _sqlite(database)
    args = postgres_args(url)
    return None if args is None else _postgres(url, args)


def _sqlite(database: str) -> PlainConnection | None:
    import sqlite3

    path = Path(database)
    # SQLAlchemy opens "~/x.db" as written, where the full path looks for a file after
    # expanding it: that one says which.
    if database.startswith("~") or database == ":memory:" or not path.is_file():
        return None
    try:
        # mode=rw: never create a file (the full path's read-only commands do not either).
        dbapi = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True,
                                timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        dbapi.execute("BEGIN")         # one snapshot for every statement of the command
    except sqlite3.Error:
        return None
    return PlainConnection(dbapi, "sqlite", sqlite3.Error)


def _postgres(url: str, args: dict[str, Any]) -> PlainConnection | None:
    try:
        import psycopg
    except ImportError:
        return None
    try:
        dbapi = psycopg.connect(**args)
        # One snapshot for every statement of the command, as SQLite's BEGIN above.
        dbapi.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    except psycopg.OperationalError as exc:
        raise UnreachableError("results DB", url, exc) from None
    except psycopg.Error:
        return None
    return PlainConnection(dbapi, "postgresql", psycopg.Error)
