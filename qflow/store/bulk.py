"""Many rows or names at a time: a big run's rows written as they are made (COPY on
PostgreSQL), and lists too long for one ``IN (...)`` split into several statements."""
from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator, Sequence

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Float,
    Integer,
    SmallInteger,
    String,
    Table,
)

INSERT_CHUNK = 5000     # rows per executemany INSERT where there is no COPY
# PostgreSQL takes at most 65,535 bind parameters a statement (psycopg refuses more before
# sending it), SQLite 32,766 or 250,000 as built: a list for an IN goes in parts of this.
IN_CHUNK = 10_000


def in_chunks(values: Iterable) -> Iterator[list]:
    """``values`` in lists of at most :data:`IN_CHUNK`, for one ``IN (...)`` each: a map
    of 100,000 elements or a task with 100,000 children is several statements, not one
    that the driver refuses."""
    values, size = iter(values), IN_CHUNK
    while chunk := list(islice(values, size)):
        yield chunk


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str],
                rows: Iterable[Sequence]) -> None:
    """Insert rows of ``table``, each a sequence of values in the order of ``columns``, in
    the current transaction as they come: a run of a million tasks is never a list of a
    million rows in memory. With COPY on PostgreSQL (several times faster than INSERT for
    a big run's rows), executemany INSERTs of :data:`INSERT_CHUNK` rows elsewhere."""
    if conn.dialect.name != "postgresql":
        statement, rows = table.insert(), iter(rows)
        while chunk := [dict(zip(columns, row, strict=True))
                         for row in islice(rows, INSERT_CHUNK)]:
            conn.execute(statement, chunk)
        return
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(n) for n in columns)
    types = _binary_types(table, columns)
    binary = " (FORMAT BINARY)" if types else ""
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {quote.format_table(table)} ({names}) FROM STDIN{binary}") as copy:
        if types:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# COPY's binary format, where every column's type is one of these: psycopg writes a row
# of a million-task run's in a third of the time it takes in the text format (1M task
# rows and 2M edges: ~12 s less of the client's CPU), and the server reads it with less
# work. Both formats store the same values (a string too long for its column, a number
# out of range fail either way).
_BINARY = ((BigInteger, "int8"), (SmallInteger, "int2"), (Integer, "int4"), (String, "text"),
           (Boolean, "bool"))


def _binary_types(table: Table, columns: Sequence[str]) -> list[str] | None:
    """The PostgreSQL type of each column, for a binary COPY; None if one is of a type
    not listed in :data:`_BINARY` (the text format then)."""
    found = []
    for name in columns:
        kind = table.c[name].type
        if isinstance(kind, DateTime):
            found.append("timestamptz" if kind.timezone else "timestamp")
            continue
        if isinstance(kind, Float) and (kind.precision or 53) > 24:     # not a real
            found.append("float8")
            continue
        pg = next((pg for sa, pg in _BINARY if isinstance(kind, sa)), None)
        if pg is None:
            return None
        found.append(pg)
    return found
