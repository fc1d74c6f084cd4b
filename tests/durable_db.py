"""Databases for the durable-publishing tests: the machine's PostgreSQL and SQLite files.

`PostgresDatabase` creates a database of its own (``lu_test_<hex>``) on the PostgreSQL at
127.0.0.1:5432 (user postgres, trust auth) and drops it at the end; it touches no other
database. `OutboxDatabase` is one outbox table (a unique name, created with
`create_outbox_table`) in either kind of database, with the URL and connections a test needs.
The fixtures built on them (`postgres_database`, `outbox_db`) are in tests/conftest.py.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from liveupdates.durable import create_outbox_table

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_available() -> bool:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


class PostgresDatabase:
    """A database of the test session's own on the local PostgreSQL."""

    def __init__(self) -> None:
        self.name = "lu_test_" + secrets.token_hex(4)
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def create(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class OutboxDatabase:
    """One outbox table (a unique name) in PostgreSQL or an SQLite file."""

    def __init__(self, kind: str, *, postgres: PostgresDatabase | None, directory: Path) -> None:
        self.kind = kind
        self.table = "outbox_" + secrets.token_hex(4)
        if kind == "postgresql":
            assert postgres is not None
            self.url = postgres.url
        else:
            self.path = directory / "app.db"
            self.url = f"sqlite:///{self.path}"  # sqlite:////abs/path
        conn = self.connect()
        try:
            create_outbox_table(conn, self.table)
            conn.execute(f"CREATE TABLE jobs_{self.table} (id INT, status TEXT)")
            conn.commit()
        finally:
            conn.close()

    @property
    def jobs(self) -> str:
        """A table of application data beside the outbox."""
        return f"jobs_{self.table}"

    def connect(self) -> Any:
        """A new DB-API connection (psycopg or sqlite3)."""
        if self.kind == "postgresql":
            return psycopg.connect(self.url)
        conn = sqlite3.connect(self.path, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def count(self, table: str | None = None) -> int:
        conn = self.connect()
        try:
            (n,) = conn.execute(f"SELECT count(*) FROM {table or self.table}").fetchone()
            return int(n)
        finally:
            conn.close()

    @property
    def sqlalchemy_url(self) -> str:
        if self.kind == "postgresql":
            return self.url.replace("postgresql://", "postgresql+psycopg://")
        return f"sqlite:///{self.path}"
