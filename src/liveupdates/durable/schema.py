"""The outbox table: its DDL on PostgreSQL and SQLite, its one INSERT, and its row format.

A row is what the publish side (`prepare`) produced for one stream: the stream's name, the
event's encoded body and its slot. The relay publishes those bytes as they are, so it needs
neither the application's event classes nor its encoders. An event for several targets is one
row per stream, written in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Literal

from .._pipeline.publisher import prepare
from ..events import Event
from ..targets import Target

DEFAULT_TABLE = "liveupdates_outbox"
"""The outbox table's name unless a writer, the relay or the DDL is given another."""
Dialect = Literal["postgresql", "sqlite"]
Row = tuple[str, bytes, str | None]  # stream, body, slot

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,50}")

_POSTGRESQL = """\
CREATE TABLE IF NOT EXISTS {table} (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream TEXT NOT NULL,
    body BYTEA NOT NULL,
    slot TEXT,
    created TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {table}_stream ON {table} (stream, id);
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_NAME, '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {table}_notify ON {table};
CREATE TRIGGER {table}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"""

_SQLITE = """\
CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    body BLOB NOT NULL,
    slot TEXT,
    created REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    claimed_by TEXT,
    claimed_until REAL
);
CREATE INDEX IF NOT EXISTS {table}_stream ON {table} (stream, id);
"""


def checked_table(table: str) -> str:
    """`table` if it is a plain lower-case SQL name (it is written into SQL text)."""
    if not _NAME.fullmatch(table):
        raise ValueError(f"outbox table name {table!r}: use [a-z_][a-z0-9_]*, at most 51 chars")
    return table


def outbox_ddl(dialect: Dialect, table: str = DEFAULT_TABLE) -> str:
    """The statements that create the outbox table (idempotent), for a migration tool.

    On PostgreSQL they also create the trigger whose ``NOTIFY`` (channel: the table's name)
    wakes relays when a transaction that wrote rows commits.
    """
    if dialect == "postgresql":
        return _POSTGRESQL.format(table=checked_table(table))
    if dialect == "sqlite":
        return _SQLITE.format(table=checked_table(table))
    raise ValueError(f"unknown dialect {dialect!r} (postgresql, sqlite)")


def insert_sql(paramstyle: Literal["qmark", "format", "named"], table: str = DEFAULT_TABLE) -> str:
    """The one INSERT of every writer, in the driver's parameter style."""
    values = {"qmark": "?, ?, ?", "format": "%s, %s, %s", "named": ":stream, :body, :slot"}
    return f"INSERT INTO {checked_table(table)} (stream, body, slot) VALUES ({values[paramstyle]})"


def rows_of(event: Event, to: Target | Iterable[Target]) -> list[Row]:
    """The outbox rows of `event` for `to`: encoded once, one row per stream.

    Raises TypeError or ValueError at the call site, as `Hub.publish` does.
    """
    prepared = prepare(event, to)
    return [(stream, prepared.body, prepared.slot) for stream in prepared.streams]


def dialect_of(connection: Any) -> Dialect:
    """The dialect of a DB-API connection: sqlite3's or psycopg's (version 3)."""
    module = type(connection).__module__
    if module.startswith("sqlite3"):
        return "sqlite"
    if module.startswith("psycopg"):
        return "postgresql"
    raise TypeError(
        f"unsupported connection {type(connection).__qualname__} from {module}: "
        "sqlite3 or psycopg (3) connections"
    )


def create_outbox_table(connection: Any, table: str = DEFAULT_TABLE) -> None:
    """Create the outbox table (and on PostgreSQL its NOTIFY trigger) if it does not exist.

    `connection` is a sqlite3 or psycopg connection; the statements are committed.
    """
    ddl = outbox_ddl(dialect_of(connection), table)
    if dialect_of(connection) == "sqlite":
        connection.executescript(ddl)  # commits
        return
    with connection.cursor() as cursor:
        cursor.execute(ddl)
    connection.commit()
