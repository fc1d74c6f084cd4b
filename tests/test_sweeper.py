"""The sweeper's pass over many connections lets the rest of the process run meanwhile."""

from __future__ import annotations

import time

import anyio
import anyio.lowlevel
import pytest

from liveupdates import Limits, Principal
from liveupdates.connection import Connection, ConnectionState
from liveupdates.sweeper import BATCH, sweep_pass

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
