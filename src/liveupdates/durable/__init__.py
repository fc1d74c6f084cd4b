"""Durable publishing: events written in the data's transaction, published after the commit.

The transactional outbox. A writer inserts the event (encoded once, one row per target stream)
into the ``liveupdates_outbox`` table through the application's own connection, so it commits
or rolls back with the change. An `OutboxRelay` (in hub processes, or `run_relay` as a process
of its own) publishes committed rows through the backplane and deletes them. See
docs/durable-publishing.md for the guarantee, the DDL and tuning.

Writers: `write_event` (sqlite3 and psycopg connections),
`liveupdates.durable.sqlalchemy.write_event` / `async_write_event` (sessions and connections),
`liveupdates.durable.django.write_event` (the Django ORM's connection).
"""

from __future__ import annotations

from .relay import OutboxRelay as OutboxRelay
from .relay import RelayStats as RelayStats
from .relay import run_relay as run_relay
from .schema import DEFAULT_TABLE as DEFAULT_TABLE
from .schema import create_outbox_table as create_outbox_table
from .schema import outbox_ddl as outbox_ddl
from .writers import write_event as write_event

__all__ = (
    "DEFAULT_TABLE",
    "OutboxRelay",
    "RelayStats",
    "create_outbox_table",
    "outbox_ddl",
    "run_relay",
    "write_event",
)
