"""Durable publishing across crashes, with real processes, redis-server and databases.

- A web process commits a change and its event, then is killed (SIGKILL) before it publishes:
  a browser-like WebSocket client connected to another hub process still gets the event,
  through that process's relay.
- A relay process killed in the middle of a batch loses nothing: the batch's rows stay in the
  table, and another relay publishes every one of them, each stream in order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from durable_db import OutboxDatabase
from processes import AppProcesses
from redis_server import RedisServer
from support import ws_client

from liveupdates import Invalidate, Topic
from liveupdates.backplanes import backplane_from_url
from liveupdates.durable import OutboxRelay, write_event
from liveupdates.testing.backplane import RecordingReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.redis]
APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Redis-dependent tests run on asyncio


async def test_web_process_killed_after_commit_still_delivers(
    outbox_db: OutboxDatabase,
    redis_server: RedisServer,
    redis_prefix: str,
    app_processes: AppProcesses,
) -> None:
    (hub_process,) = app_processes.start(
        "apps.durable_app:app",
        env={
            "LIVEUPDATES_BACKPLANE": redis_server.backplane_url(prefix=redis_prefix),
            "LIVEUPDATES_OUTBOX_DB": outbox_db.url,
            "LIVEUPDATES_OUTBOX_TABLE": outbox_db.table,
        },
    )
    async with ws_client(hub_process) as client:
        await client.handshake(token="alice")
        died = await anyio.run_process(
            [sys.executable, str(APPS / "commit_and_die.py"), outbox_db.url, outbox_db.table,
             "alice"],
            check=False,
        )  # fmt: skip
        assert died.returncode == -signal.SIGKILL, died.stderr.decode()
        with anyio.fail_after(15):
            (event,) = await client.events(1)
    assert event["type"] == "invalidate" and event["keys"] == [["jobs", 7]]
    assert event["stream"] == "user:alice"
    assert outbox_db.count(outbox_db.jobs) == 1


async def test_relay_killed_mid_batch_loses_nothing(
    outbox_db: OutboxDatabase, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    url = redis_server.backplane_url(prefix=redis_prefix)
    streams = [Topic(f"s{n}") for n in range(5)]
    conn = outbox_db.connect()
    for i in range(10_000):
        write_event(conn, Invalidate([["n", i]]), streams[i % 5], table=outbox_db.table)
    conn.commit()
    conn.close()

    backplane, recorder = backplane_from_url(url), RecordingReceiver()
    await backplane.start(recorder)
    for topic in streams:
        await backplane.listen(f"topic:{topic.name}")
    log = (tmp_path / "relay.log").open("wb")
    relay_process = await anyio.open_process(
        [sys.executable, str(APPS / "relay_process.py"), outbox_db.url, url, outbox_db.table],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with anyio.fail_after(20):
            await recorder.wait_for(lambda: len(recorder.publications) >= 300)
    finally:
        relay_process.kill()  # mid-batch: the batch is 10,000 rows
        await relay_process.wait()
        log.close()
    first = len(recorder.publications)
    assert first < 10_000, "the relay finished its batch before it was killed"
    assert outbox_db.count() == 10_000  # nothing was deleted: the batch never finished

    relay = OutboxRelay(outbox_db.url, backplane, table=outbox_db.table, poll_interval=0.1)
    with anyio.fail_after(40):
        async with relay:  # on SQLite it waits until the dead relay's lease expires
            await recorder.wait_for(lambda: len(recorder.publications) >= first + 10_000)
    await backplane.aclose()

    assert outbox_db.count() == 0
    for n, topic in enumerate(streams):
        keys = [json.loads(p.body)["keys"][0][1] for p in recorder.of(f"topic:{topic.name}")]
        expected = list(range(n, 10_000, 5))
        # what the killed relay published (a prefix, in order), then everything again, in order
        assert keys[len(keys) - len(expected) :] == expected
        assert keys[: len(keys) - len(expected)] == expected[: len(keys) - len(expected)]
