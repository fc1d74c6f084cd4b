"""Durable publishing: writers, the relay's claims, order, rollbacks, wake-ups and figures.

Every test runs against SQLite (a file) and the machine's PostgreSQL (a database of the
session's own), with a real relay publishing to a backplane a `RecordingReceiver` listens to.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from durable_db import OutboxDatabase

from liveupdates import Invalidate, Set, Topic, User
from liveupdates.backplanes import MemoryBackplane
from liveupdates.durable import OutboxRelay, write_event
from liveupdates.testing.backplane import RecordingReceiver

pytestmark = pytest.mark.anyio


def bodies(recorder: RecordingReceiver, stream: str) -> list[Any]:
    return [json.loads(pub.body) for pub in recorder.of(stream)]


async def recording() -> tuple[MemoryBackplane, RecordingReceiver]:
    backplane, recorder = MemoryBackplane(history_size=20_000), RecordingReceiver()
    await backplane.start(recorder)
    return backplane, recorder


def commit_event(db: OutboxDatabase, event: Any, to: Any, *, rollback: bool = False) -> None:
    """A change and its event in one transaction of the application's connection."""
    conn = db.connect()
    try:
        conn.execute(f"INSERT INTO {db.jobs} (id, status) VALUES (7, 'done')")
        write_event(conn, event, to, table=db.table)
        conn.rollback() if rollback else conn.commit()
    finally:
        conn.close()


async def test_committed_event_is_published_once_per_stream(outbox_db: OutboxDatabase) -> None:
    backplane, recorder = await recording()
    commit_event(outbox_db, Invalidate([["jobs", 7]]), [User("alice"), Topic("jobs")])
    assert outbox_db.count() == 2  # one row per target stream

    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table)
    assert await relay.publish_pending() == 2

    assert bodies(recorder, "user:alice") == [{"type": "invalidate", "keys": [["jobs", 7]]}]
    assert bodies(recorder, "topic:jobs") == [{"type": "invalidate", "keys": [["jobs", 7]]}]
    assert outbox_db.count() == 0 and outbox_db.count(outbox_db.jobs) == 1
    stats = relay.stats()
    assert (stats.published, stats.batches, stats.errors, stats.pending) == (2, 1, 0, 0)


async def test_rollback_publishes_nothing(outbox_db: OutboxDatabase) -> None:
    backplane, recorder = await recording()
    commit_event(outbox_db, Invalidate([["secret"]]), User("alice"), rollback=True)
    commit_event(outbox_db, Invalidate([["after"]]), User("alice"))

    assert await OutboxRelay(outbox_db.url, backplane, table=outbox_db.table).publish_pending() == 1
    assert bodies(recorder, "user:alice") == [{"type": "invalidate", "keys": [["after"]]}]
    assert outbox_db.count(outbox_db.jobs) == 1  # the rolled-back change is gone too


async def test_set_keeps_its_slot(outbox_db: OutboxDatabase) -> None:
    backplane, recorder = await recording()
    commit_event(outbox_db, Set(["job", 7], {"progress": 45}), User("bob"))
    await OutboxRelay(outbox_db.url, backplane, table=outbox_db.table).publish_pending()
    (pub,) = recorder.of("user:bob")
    assert json.loads(pub.body) == {"type": "set", "key": ["job", 7], "data": {"progress": 45}}
    assert pub.slot is not None


async def test_ten_thousand_rows_two_relays_keep_order_per_stream(
    outbox_db: OutboxDatabase,
) -> None:
    """10,000 rows committed at once, published by two relays at the same time: every row
    arrives, and each stream's rows arrive in commit order."""
    backplane, recorder = await recording()
    streams = [Topic(f"s{n}") for n in range(7)]
    conn = outbox_db.connect()
    for i in range(10_000):
        write_event(conn, Invalidate([["n", i]]), streams[i % 7], table=outbox_db.table)
    conn.commit()
    conn.close()

    relays = [
        OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, batch_size=300, lease=60)
        for _ in range(2)
    ]
    with anyio.fail_after(50):
        async with relays[0], relays[1]:
            await recorder.wait_for(lambda: len(recorder.publications) >= 10_000)

    assert len(recorder.publications) == 10_000  # each row published once (no crash here)
    for n, topic in enumerate(streams):
        keys = [body["keys"][0][1] for body in bodies(recorder, f"topic:{topic.name}")]
        assert keys == list(range(n, 10_000, 7))
    assert sum(relay.stats().published for relay in relays) == 10_000
    assert outbox_db.count() == 0


async def test_relay_wakes_on_notify_without_polling(outbox_db: OutboxDatabase) -> None:
    """PostgreSQL: the commit's NOTIFY wakes a relay that would otherwise poll once a minute."""
    if outbox_db.kind != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    backplane, recorder = await recording()
    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, poll_interval=60)
    async with relay:
        with anyio.fail_after(10):
            await relay.wait_for(lambda s: s.cycles >= 1)  # its first (empty) look: it waits
            await anyio.to_thread.run_sync(
                commit_event, outbox_db, Invalidate(["jobs"]), User("alice")
            )
            await recorder.wait_for(lambda: len(recorder.of("user:alice")) == 1)


async def test_errors_are_logged_counted_and_retried(
    outbox_db: OutboxDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """A missing table: every cycle fails, is logged, counted and retried; once the table is
    back the rows are published."""
    backplane, recorder = await recording()
    conn = outbox_db.connect()
    conn.execute(f"ALTER TABLE {outbox_db.table} RENAME TO {outbox_db.table}_away")
    conn.commit()
    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, retry_max=0.2)
    with caplog.at_level(logging.WARNING, "liveupdates.durable"), anyio.fail_after(20):
        async with relay:
            await relay.wait_for(lambda s: s.errors >= 2)
            assert relay.stats().last_error is not None
            assert outbox_db.table in relay.stats().last_error  # type: ignore[operator]
            conn.execute(f"ALTER TABLE {outbox_db.table}_away RENAME TO {outbox_db.table}")
            conn.commit()
            conn.close()
            commit_event(outbox_db, Invalidate(["back"]), User("alice"))
            await recorder.wait_for(lambda: len(recorder.of("user:alice")) == 1)
    messages = [r.getMessage() for r in caplog.records if r.name == "liveupdates.durable"]
    assert messages and all(m.startswith(f"outbox relay ({outbox_db.table}): ") for m in messages)
    assert "retrying in" in messages[0]


async def test_backlog_figures_and_prometheus(outbox_db: OutboxDatabase) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from liveupdates.prometheus import RelayCollector

    backplane, _ = await recording()
    for i in range(3):
        commit_event(outbox_db, Invalidate([["n", i]]), User("alice"))
    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, batch_size=2)
    store = await relay._open_store()
    await relay._check_backlog(store, idle=True)
    assert relay.stats().pending == 3 and relay.stats().lag > 0

    await relay.publish_pending()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    text = generate_latest(registry).decode()
    assert f'liveupdates_outbox_pending{{table="{outbox_db.table}"}} 0.0' in text
    assert f'liveupdates_outbox_published_total{{table="{outbox_db.table}"}} 3.0' in text
    assert f'liveupdates_outbox_errors_total{{table="{outbox_db.table}"}} 0.0' in text
    assert f'liveupdates_outbox_lag_seconds{{table="{outbox_db.table}"}} 0.0' in text
    await relay._close_store()


async def test_relay_survives_losing_its_listen_connection(outbox_db: OutboxDatabase) -> None:
    """PostgreSQL closes the relay's LISTEN connection (a restart, a proxy timeout): the relay
    opens its connections again and still wakes on the next commit."""
    if outbox_db.kind != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    backplane, recorder = await recording()
    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, poll_interval=60)
    async with relay:
        with anyio.fail_after(15):
            await relay.wait_for(lambda s: s.cycles >= 1)
            conn = outbox_db.connect()  # this test's own database only
            (killed,) = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = %s",
                (f'LISTEN "{outbox_db.table}"',),
            ).fetchone()
            conn.close()
            assert killed == 1
            await relay.wait_for(lambda s: s.cycles >= 2)  # woken, reopened, looked again
            await anyio.to_thread.run_sync(
                commit_event, outbox_db, Invalidate(["jobs"]), User("alice")
            )
            await recorder.wait_for(lambda: len(recorder.of("user:alice")) == 1)
    assert relay.stats().errors == 0


async def test_a_hubs_stats_report_its_relays_figures(outbox_db: OutboxDatabase) -> None:
    from liveupdates import Hub

    for i in range(3):
        commit_event(outbox_db, Invalidate([["n", i]]), User("alice"))
    async with Hub(MemoryBackplane(), drain_signals=()) as hub:
        relay = OutboxRelay.in_hub(hub, outbox_db.url, table=outbox_db.table, poll_interval=0.05)
        assert (hub.stats().outbox_published, hub.stats().outbox_pending) == (0, 0)
        async with relay:
            with anyio.fail_after(10):
                await relay.wait_for(lambda s: s.published == 3 and s.pending == 0)
        figures = hub.stats()
    assert (figures.outbox_published, figures.outbox_errors) == (3, 0)
    assert (figures.outbox_pending, figures.outbox_lag) == (0, 0.0)
