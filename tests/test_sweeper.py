"""The sweeper's pass over many connections lets the rest of the process run meanwhile."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from liveupdates import Limits, Principal
from liveupdates._pipeline.connection import Connection, ConnectionState
from liveupdates._pipeline.sweeper import _PING, BATCH, sweep_once, sweep_pass

pytestmark = pytest.mark.anyio


def no_events(stream: str) -> float:
    """`Streams.sent_at` of a hub whose streams never fanned out an event."""
    return 0.0


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
        await sweep_pass(conns, limits, time.monotonic, no_events)
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


async def test_connections_opened_together_are_not_pinged_together(anyio_backend: str) -> None:
    """After a deploy every client reconnects at once: their pings (and pongs) spread over a
    quarter of the heartbeat interval instead of coming all in one pass, every interval."""
    limits = Limits()
    opened = time.monotonic()
    conns = []
    for i in range(1000):
        conn = Connection(str(i), Principal(user=None), "websocket", limits, opened)
        conn.state = ConnectionState.OPEN
        conns.append(conn)
    pinged_per_pass = []
    for second in range(1, int(limits.heartbeat_interval / 2) + 2):
        now = opened + second
        sweep_once(conns, limits, now, time.time(), no_events)
        pinged = [conn for conn in conns if conn.outbox.drain() is not None]
        for conn in pinged:
            conn.last_sent = now  # (as the flusher records a frame it sent)
        pinged_per_pass.append(len(pinged))
    assert sum(pinged_per_pass) == 1000  # each one pinged once within half an interval
    assert max(pinged_per_pass) < 1000 / 4  # spread over about six passes, not one


async def test_a_cohort_with_steady_traffic_is_pinged_evenly_over_the_interval(
    anyio_backend: str,
) -> None:
    """Connections opened together, whose stream has an event every half second and whose
    clients answer each ping at once: only the rule "heard nothing for an interval" pings them.
    Their pings spread over the interval, as evenly as random draws spread them, from the first
    interval on and every interval after (a jitter drawn once per connection kept classes of
    the cohort in step: each connection at a fixed period of its own, rounded to whole passes,
    up to a quarter of the cohort in one pass, interval after interval)."""
    limits = Limits()
    interval, n = limits.heartbeat_interval, 2000
    conns = []
    for i in range(n):
        conn = Connection(str(i), Principal(user=None), "websocket", limits, 0.0)
        conn.state = ConnectionState.OPEN
        conn.streams.add("topic:jobs")
        conns.append(conn)
    per_pass, last_ping = [], dict.fromkeys(conns, 0.0)
    longest = 0.0  # the longest a client went without a ping (its watchdog: 2 intervals)
    for second in range(1, 8 * int(interval)):
        now = float(second)
        events = {"topic:jobs": now - 0.25}  # an event every half second
        sweep_once(conns, limits, now, time.time(), events.__getitem__)
        pinged = [conn for conn in conns if conn.outbox.drain() is not None]
        for conn in pinged:
            conn.last_sent = conn.last_received = now  # sent, and answered at once
            longest = max(longest, now - last_ping[conn])
            last_ping[conn] = now
        per_pass.append(len(pinged))
    assert longest <= interval + 1  # each one pinged at least every interval (and a pass)
    even = n / (0.75 * interval)  # pings per pass, spread evenly (mean period: 3/4 interval)
    assert max(per_pass) < 2.5 * even  # (in step: 1,222 of 5,000 in one pass, 6.5 x even)
    assert max(per_pass[2 * int(interval) :]) < 1.75 * even
