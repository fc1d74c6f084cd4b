"""The relay's side of the outbox table: claim rows, delete the published ones, watch the backlog.

Every method is blocking (DB-API drivers are); the relay calls them in a worker thread, one at a
time per store. Two relays never publish rows of one stream at once, so each stream's rows leave
in id order:

- PostgreSQL: ``SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED`` claims rows inside a
  transaction that deletes them once they are published. A claimed row of a stream of which
  another relay holds a lower id is put back (left for that relay's next batch): a relay
  publishes only a prefix of every stream it touches.
- SQLite (no row locks): a lease. ``claimed_by`` and ``claimed_until`` are set in one
  ``BEGIN IMMEDIATE`` transaction; rows whose lease expired are free again. The same rule as on
  PostgreSQL keeps a stream's rows in order across relays.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .schema import checked_table, dialect_of

_CHUNK = 500  # ids per IN (...) list: far below SQLite's limit of host parameters


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    stream: str
    body: bytes
    slot: str | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Rows to publish in order; `held` rows were left to other relays; `deadline` is a
    `time.monotonic()` after which the claim may be taken over (a lease), or None."""

    rows: list[OutboxRow]
    held: int = 0
    deadline: float | None = None


class Store(Protocol):
    def claim(self, limit: int) -> Claim: ...

    def finish(self, published: list[int]) -> None:
        """Delete the published rows of the claim and end it (the others are free again)."""

    def backlog(self) -> tuple[int, float]:
        """Rows in the table and the age in seconds of the oldest (0.0 when empty)."""

    def listen_fileno(self) -> int | None:
        """A descriptor that becomes readable when rows may have been committed, or None."""

    def drain_notifications(self) -> None: ...

    def close(self) -> None: ...


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _prefixes(rows: list[OutboxRow], bounds: dict[str, int]) -> Claim:
    """Keep the rows of each stream below the lowest id another relay holds of it."""
    keep = [row for row in rows if row.id < bounds.get(row.stream, math.inf)]
    return Claim(keep, len(rows) - len(keep))


class PostgresStore:
    """Claims with row locks (psycopg 3); wakes on the table's NOTIFY channel."""

    def __init__(self, connect: Callable[[], Any], table: str, *, listen: bool = True) -> None:
        self.table = checked_table(table)
        self._connect = connect
        self.conn: Any = connect()
        self.listener: Any = None
        if listen:
            self.listener = connect()
            self.listener.autocommit = True
            self.listener.execute(f'LISTEN "{self.table}"')

    def claim(self, limit: int) -> Claim:
        t = self.table
        rows = [
            OutboxRow(*r)
            for r in self.conn.execute(
                f"SELECT id, stream, body, slot FROM {t} ORDER BY id LIMIT %s "
                "FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
        ]
        if not rows:
            self.conn.rollback()
            return Claim([])
        bounds = self.conn.execute(
            f"SELECT stream, min(id) FROM {t} WHERE stream = ANY(%s) AND id <> ALL(%s) "
            "GROUP BY stream",
            (sorted({row.stream for row in rows}), [row.id for row in rows]),
        ).fetchall()
        return _prefixes(rows, dict(bounds))

    def finish(self, published: list[int]) -> None:
        try:
            if published:
                self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", (published,))
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def backlog(self) -> tuple[int, float]:
        try:
            count, age = self.conn.execute(
                f"SELECT count(*), COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(created)),"
                f" 0) FROM {self.table}"
            ).fetchone()
        finally:
            self.conn.rollback()
        return int(count), float(age)

    def listen_fileno(self) -> int | None:
        return None if self.listener is None else int(self.listener.fileno())

    def drain_notifications(self) -> None:
        pgconn = self.listener.pgconn
        pgconn.consume_input()  # raises OperationalError when the connection is gone
        while pgconn.notifies() is not None:
            pass

    def close(self) -> None:
        for conn in (self.conn, self.listener):
            if conn is not None:
                conn.close()


class SqliteStore:
    """Claims with a lease (`lease` seconds); polled (SQLite has no notifications)."""

    def __init__(self, connect: Callable[[], Any], table: str, *, owner: str, lease: float) -> None:
        self.table = checked_table(table)
        self.owner = owner
        self.lease = lease
        self.conn: sqlite3.Connection = connect()
        self.conn.isolation_level = None  # transactions are explicit below

    def claim(self, limit: int) -> Claim:
        t, now = self.table, time.time()
        until, deadline = now + self.lease, time.monotonic() + self.lease * 0.8
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            rows = [
                OutboxRow(*r)
                for r in self.conn.execute(
                    f"SELECT id, stream, body, slot FROM {t} WHERE claimed_until IS NULL "
                    "OR claimed_until < ? ORDER BY id LIMIT ?",
                    (now, limit),
                ).fetchall()
            ]
            held = self.conn.execute(
                f"SELECT stream, min(id) FROM {t} WHERE claimed_until >= ? AND claimed_by <> ? "
                "GROUP BY stream",
                (now, self.owner),
            ).fetchall()
            claim = _prefixes(rows, dict(held))
            for ids in _chunks([row.id for row in claim.rows]):
                self.conn.execute(
                    f"UPDATE {t} SET claimed_by = ?, claimed_until = ? "
                    f"WHERE id IN ({', '.join('?' * len(ids))})",
                    (self.owner, until, *ids),
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return Claim(claim.rows, claim.held, deadline)

    def finish(self, published: list[int]) -> None:
        t = self.table
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for ids in _chunks(published):
                self.conn.execute(
                    f"DELETE FROM {t} WHERE claimed_by = ? AND id IN ({', '.join('?' * len(ids))})",
                    (self.owner, *ids),
                )
            self.conn.execute(
                f"UPDATE {t} SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?",
                (self.owner,),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def backlog(self) -> tuple[int, float]:
        count, age = self.conn.execute(
            f"SELECT count(*), COALESCE((julianday('now') - 2440587.5) * 86400.0 - min(created),"
            f" 0) FROM {self.table}"
        ).fetchone()
        return int(count), max(0.0, float(age))

    def listen_fileno(self) -> int | None:
        return None

    def drain_notifications(self) -> None:
        pass

    def close(self) -> None:
        self.conn.close()


def connector(database: str | Callable[[], Any]) -> Callable[[], Any]:
    """A function opening a connection: from ``postgresql://...``, ``sqlite:///path``, or
    a callable returning a psycopg or sqlite3 connection (given as it is)."""
    if callable(database):
        return database
    if database.startswith(("postgresql://", "postgres://")):
        import psycopg  # the [postgres] extra

        return lambda: psycopg.connect(database)
    if database.startswith("sqlite://"):
        path = database.removeprefix("sqlite://").removeprefix("/") or ":memory:"
        return lambda: sqlite3.connect(path, timeout=10.0, check_same_thread=False)
    raise ValueError(
        f"unknown outbox database URL {database!r}: postgresql://... or sqlite:///path"
    )


def open_store(
    connect: Callable[[], Any], table: str, *, owner: str, lease: float, listen: bool
) -> Store:
    """Open the store for the database `connect` reaches."""
    probe = connect()
    try:
        dialect = dialect_of(probe)
    finally:
        probe.close()
    if dialect == "postgresql":
        return PostgresStore(connect, table, listen=listen)
    return SqliteStore(connect, table, owner=owner, lease=lease)
