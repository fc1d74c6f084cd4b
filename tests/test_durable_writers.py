"""The ORM writers: SQLAlchemy (sync and async sessions) and Django, on SQLite and PostgreSQL.

Each writes the event through the ORM's own connection, so it commits with the change and
vanishes with a rollback; a real relay then publishes what committed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from durable_db import PostgresDatabase
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from liveupdates import Invalidate, User
from liveupdates.backplanes import MemoryBackplane
from liveupdates.durable import DEFAULT_TABLE, OutboxRelay, create_outbox_table
from liveupdates.durable import sqlalchemy as lu_sqlalchemy
from liveupdates.testing.backplane import RecordingReceiver


async def relayed(url: str, table: str) -> list[Any]:
    """Run a relay over `table` until it is empty; the bodies published to user:alice."""
    backplane, recorder = MemoryBackplane(), RecordingReceiver()
    await backplane.start(recorder)
    await OutboxRelay(url, backplane, table=table).publish_pending()
    return [json.loads(pub.body) for pub in recorder.of("user:alice")]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # SQLAlchemy's asyncio extension
async def test_sqlalchemy_sync_session(outbox_db: Any) -> None:
    engine = create_engine(outbox_db.sqlalchemy_url)
    with Session(engine) as session:
        session.execute(text(f"INSERT INTO {outbox_db.jobs} VALUES (1, 'done')"))
        lu_sqlalchemy.write_event(session, Invalidate(["rolled-back"]), User("alice"),
                                  table=outbox_db.table)  # fmt: skip
        session.rollback()
        session.execute(text(f"INSERT INTO {outbox_db.jobs} VALUES (2, 'done')"))
        lu_sqlalchemy.write_event(session, Invalidate(["committed"]), User("alice"),
                                  table=outbox_db.table)  # fmt: skip
        session.commit()
    engine.dispose()
    assert await relayed(outbox_db.url, outbox_db.table) == [
        {"type": "invalidate", "keys": [["committed"]]}
    ]
    assert outbox_db.count(outbox_db.jobs) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sqlalchemy_async_session(outbox_db: Any) -> None:
    url = outbox_db.sqlalchemy_url.replace("sqlite://", "sqlite+aiosqlite://")
    engine = create_async_engine(url)
    async with async_sessionmaker(engine)() as session:
        await session.execute(text(f"INSERT INTO {outbox_db.jobs} VALUES (1, 'done')"))
        await lu_sqlalchemy.async_write_event(session, Invalidate(["rolled-back"]),
                                              User("alice"), table=outbox_db.table)  # fmt: skip
        await session.rollback()
        await lu_sqlalchemy.async_write_event(session, Invalidate(["committed"]), User("alice"),
                                              table=outbox_db.table)  # fmt: skip
        await session.commit()
    await engine.dispose()
    assert await relayed(outbox_db.url, outbox_db.table) == [
        {"type": "invalidate", "keys": [["committed"]]}
    ]


# Django -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_databases(
    tmp_path_factory: pytest.TempPathFactory, postgres_database: PostgresDatabase
) -> Iterator[dict[str, str]]:
    """A minimal Django settings (two databases: an SQLite file and the test PostgreSQL),
    each with the outbox table; the relay's URL of each alias."""
    import django
    from django.conf import settings
    from django.db import connections

    path = tmp_path_factory.mktemp("django") / "django.db"
    if not settings.configured:
        settings.configure(
            DATABASES={
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)},
                "pg": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": postgres_database.name,
                    "USER": "postgres",
                    "HOST": "127.0.0.1",
                    "PORT": "5432",
                },
            },
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    with sqlite3.connect(path) as conn:
        create_outbox_table(conn)
    conn.close()
    with psycopg.connect(postgres_database.url) as pg:
        create_outbox_table(pg)
    yield {"default": f"sqlite:///{path}", "pg": postgres_database.url}
    connections.close_all()


@pytest.mark.parametrize("alias", ["default", "pg"])
def test_django_atomic_block(django_databases: dict[str, str], alias: str) -> None:
    from django.db import transaction

    from liveupdates.durable.django import write_event

    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic\(\)"):
        write_event(Invalidate(["no-transaction"]), User("alice"), using=alias)
    with pytest.raises(ZeroDivisionError), transaction.atomic(using=alias):
        write_event(Invalidate(["rolled-back"]), User("alice"), using=alias)
        raise ZeroDivisionError
    with transaction.atomic(using=alias):
        write_event(Invalidate(["committed"]), User("alice"), using=alias)

    published = anyio.run(relayed, django_databases[alias], DEFAULT_TABLE)
    assert published == [{"type": "invalidate", "keys": [["committed"]]}]


def test_sqlite_url_takes_sqlalchemy_form(tmp_path: Path) -> None:
    """``sqlite:////abs/path`` (four slashes) is an absolute path, as in SQLAlchemy."""
    path = tmp_path / "abs.db"
    with sqlite3.connect(path) as conn:
        create_outbox_table(conn)
        conn.execute(f"INSERT INTO {DEFAULT_TABLE} (stream, body) VALUES ('user:alice', X'7B7D')")
    conn.close()
    assert anyio.run(relayed, f"sqlite:///{path}", DEFAULT_TABLE) == [{}]
