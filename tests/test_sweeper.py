"""The sweeper's pass over many connections lets the rest of the process run meanwhile."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from liveupdates import Limits, Principal
from liveupdates.connection import Connection, ConnectionState
from liveupdates.sweeper import _PING, BATCH, sweep_once, sweep_pass

pytestmark = pytest.mark.anyio


async def test_a_pass_over_many_connections_lets_others_run(anyio_backend: str) -> None:
    """At 20,000 connections a pass takes about 11 ms: in one go, it would hold up every
    send of the process for that long, once a second."""
    limits = Limits()
    now = time.monotonic()
    conns = []
    for i in range(2 * BATCH + 10):
        conn = Connection(str(i), Principal(user=None), "websocket", limits, now)
        conn.state = ConnectionState.OPEN
        conn.last_received = conn.last_sent = now - limits.heartbeat_interval  # idle: pinged
        conns.append(conn)
    turns = 0

    async def another_task() -> None:
        nonlocal turns
        while True:
            await anyio.lowlevel.checkpoint()
            turns += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(another_task)
        await anyio.lowlevel.checkpoint()
        before = turns
        await sweep_pass(conns, limits, time.monotonic)
        ran = turns - before
        tg.cancel_scope.cancel()
    assert ran >= 1  # during the pass (in one go: 0)
    assert all(len(conn.outbox) == 1 for conn in conns)  # every idle one got its ping


async def test_a_connection_whose_streams_had_events_lately_is_not_pinged(
    anyio_backend: str,
) -> None:
    """An event sent straight to the sockets records nothing per connection: the stream's last
    fan-out counts as a send to each of its connections. Idle for half the heartbeat interval,
    on every one of its streams, a connection is pinged."""
    limits = Limits()
    now = time.monotonic()
    half = limits.heartbeat_interval / 2
    events = {"topic:busy": now - 1.0, "topic:quiet": now - half - 1.0}
    conns = {}
    for name, streams in [("busy", {"topic:busy", "topic:quiet"}), ("quiet", {"topic:quiet"})]:
        conn = Connection(name, Principal(user=None), "websocket", limits, now - half - 2.0)
        conn.state = ConnectionState.OPEN
        conn.last_received = now  # it answers
        conn.streams |= streams
        conns[name] = conn
    sweep_once(conns.values(), limits, now, time.time(), lambda stream: events.get(stream, 0.0))
    assert len(conns["busy"].outbox) == 0
    assert list(conns["quiet"].outbox.items.values()) == [_PING]
