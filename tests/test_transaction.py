"""Publish after commit: held until the transaction commits, dropped when it rolls back."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from liveupdates import Hub, Invalidate, User
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.auth import AuthRequest, Principal
from liveupdates.errors import TransactionClosed
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

pytestmark = pytest.mark.anyio


def as_user(request: AuthRequest) -> Principal:
    return Principal(user="u")


@asynccontextmanager
async def hub_and_client() -> AsyncIterator[tuple[Hub, AsgiWebSocket]]:
    async with Hub(authenticate=as_user) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello"})
        await ws.receive_until(lambda m: m.get("stream") == "user:u")
        yield hub, ws


async def next_keys(ws: AsgiWebSocket) -> Any:
    return (await ws.receive_until(lambda m: m.get("type") == "invalidate"))["keys"]


async def test_sqlite3_commit_publishes_and_rollback_drops() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT)")
    async with hub_and_client() as (hub, ws):
        with pytest.raises(sqlite3.IntegrityError):
            async with hub.transaction() as tx:
                with db:
                    db.execute("INSERT INTO jobs VALUES (1, 'queued')")
                    tx.publish(Invalidate(["rolled-back"]), to=User("u"))
                    db.execute("INSERT INTO jobs VALUES (1, 'duplicate')")  # fails: rollback
        async with hub.transaction() as tx:
            with db:
                db.execute("INSERT INTO jobs VALUES (2, 'queued')")
                tx.publish(Invalidate(["jobs"]), to=User("u"))
                assert len(tx) == 1
            # committed: a fresh connection sees the row before anything is published
            assert db.execute("SELECT status FROM jobs WHERE id = 2").fetchone() == ("queued",)
        assert await next_keys(ws) == [["jobs"]]  # and the rolled-back event never came
        with pytest.raises(TransactionClosed):
            tx.publish(Invalidate(["late"]), to=User("u"))


async def test_sqlalchemy_session_events_publish_after_commit_from_a_worker_thread(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY)"))
    async with hub_and_client() as (hub, ws):

        def bind(session: Session) -> Any:
            tx = session.info["liveupdates"] = hub.transaction()
            return tx

        @event.listens_for(Session, "after_commit")
        def after_commit(session: Session) -> None:
            if (tx := session.info.pop("liveupdates", None)) is not None:
                tx.schedule_commit()

        @event.listens_for(Session, "after_rollback")
        def after_rollback(session: Session) -> None:
            if (tx := session.info.pop("liveupdates", None)) is not None:
                tx.rollback()

        def sync_view(job_id: int, fail: bool) -> None:  # a sync endpoint, in a worker thread
            with Session(engine) as session:
                tx = bind(session)
                session.execute(text("INSERT INTO jobs VALUES (:id)"), {"id": job_id})
                tx.publish(Invalidate(["jobs", job_id]), to=User("u"))
                if fail:
                    session.rollback()
                else:
                    session.commit()

        try:
            await anyio.to_thread.run_sync(sync_view, 1, True)
            await anyio.to_thread.run_sync(sync_view, 2, False)
            assert await next_keys(ws) == [["jobs", 2]]
        finally:
            event.remove(Session, "after_commit", after_commit)
            event.remove(Session, "after_rollback", after_rollback)
