"""The writer for plain DB-API connections: sqlite3 and psycopg (version 3).

::

    with db:  # sqlite3: one transaction, committed at the end of the block
        db.execute("UPDATE jobs SET status = 'done' WHERE id = ?", (job_id,))
        write_event(db, Invalidate(["jobs"]), to=User(owner))

The rows are written through `connection`, so they commit or roll back with the change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..events import Event
from ..targets import Target
from .schema import DEFAULT_TABLE, dialect_of, insert_sql, rows_of


def write_event(
    connection: Any, event: Event, to: Target | Iterable[Target], *, table: str = DEFAULT_TABLE
) -> None:
    """Write `event` for `to` into the outbox, in `connection`'s current transaction.

    Nothing is published until the transaction commits and a relay reads the rows; a
    rollback discards them. Raises TypeError or ValueError for an event that cannot be
    encoded or a bad target, as `Hub.publish` does.
    """
    rows = rows_of(event, to)
    if dialect_of(connection) == "sqlite":
        connection.executemany(insert_sql("qmark", table), rows)
        return
    with connection.cursor() as cursor:
        cursor.executemany(insert_sql("format", table), rows)
