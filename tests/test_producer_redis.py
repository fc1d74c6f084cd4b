"""The publish-only client on a real redis-server: a `Producer` starts the Redis backplane
publish-only (`start_publishing`), so a worker holds one connection to Redis (its command
pipeline), not a pub/sub connection besides; a hub on the same URL keeps both of its
connections. The link's health comes from the command connection: it is PINGed, and when it
is lost the producer reconnects and announces the publishes that failed meanwhile.

Each process's connections are told apart in ``CLIENT LIST`` by the ``client_name`` of its URL.
(On Sentinel and Cluster: tests/backplanes/test_redis_deployment.py, test_redis_cluster.py.)
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path

import anyio
import pytest
import redis
from redis_server import RedisServer

from liveupdates import BackplaneUnavailable, Hub, Invalidate, Producer, Topic
from liveupdates._pipeline.control import CONTROL_SLOT, ResyncStream, decode_control
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes import Receiver
from liveupdates.backplanes.redis import RedisBackplane
from liveupdates.durable import create_outbox_table, run_relay, write_event
from liveupdates.positions import Position, Publication
from liveupdates.testing import RecordingReceiver
from liveupdates.testing.websocket import connect_asgi

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

STREAM = "topic:jobs"
TIMINGS = {"health_check_interval": 0.1, "timeout": 0.5, "max_reconnect_delay": 0.2}
PROMPT = 2.0  # seconds within which a publish must fail while Redis is down (timeout: 0.5 s)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


def clients(server: RedisServer, name: str) -> list[dict[str, str]]:
    """The connections named `name` (``client_name``) in the server's ``CLIENT LIST``."""
    with redis.Redis(port=server.port, socket_timeout=2) as client:
        listed: list[dict[str, str]] = client.client_list()
    return [entry for entry in listed if entry["name"] == name]


def is_pubsub(entry: dict[str, str]) -> bool:
    return int(entry["sub"]) + int(entry["psub"]) + int(entry.get("ssub", 0)) > 0


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (what redis-server, another process, sees), for at most 10 s."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but time
            await anyio.sleep(0.01)


class _Both:
    """Hands every call on to the producer's receiver, then to a recording one."""

    def __init__(self, first: Receiver, then: RecordingReceiver) -> None:
        self.first, self.then = first, then

    def deliver(self, publication: Publication) -> None:
        self.first.deliver(publication)
        self.then.deliver(publication)

    def reset(self) -> None:
        self.first.reset()
        self.then.reset()


class SeenBackplane(RedisBackplane):
    """A Redis backplane that also records what it hands its producer (`seen.resets`)."""

    seen: RecordingReceiver

    async def start_publishing(self, receiver: Receiver) -> None:
        self.seen = RecordingReceiver()
        await super().start_publishing(_Both(receiver, self.seen))


def seen_backplane(url: str) -> SeenBackplane:
    backplane = SeenBackplane.from_url(url)
    assert isinstance(backplane, SeenBackplane)
    return backplane


def named_producer_backplane(server: RedisServer) -> tuple[str, SeenBackplane]:
    """A producer's backplane with short timings, whose connections `clients` finds by name."""
    name = "producer-" + secrets.token_hex(4)
    return name, seen_backplane(server.backplane_url(client_name=name, **TIMINGS))


async def publish_fails_promptly(producer: Producer) -> None:
    """A publish while Redis is unreachable raises `BackplaneUnavailable` within `PROMPT`."""
    with anyio.fail_after(PROMPT), pytest.raises(BackplaneUnavailable):
        await producer.publish(Invalidate(["jobs", 7]), to=Topic("jobs"))


async def test_a_producer_holds_one_connection_and_reaches_a_listening_backplane(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    name = "producer-" + redis_prefix
    listener = RedisBackplane.from_url(redis_server.backplane_url(prefix=redis_prefix))
    received = RecordingReceiver()
    await listener.start(received)
    try:
        await listener.listen(STREAM)
        url = redis_server.backplane_url(prefix=redis_prefix, client_name=name)
        async with Producer(url) as producer:
            # The pooled connection of the checks at start is closed: Redis sees it go.
            await until(lambda: len(clients(redis_server, name)) == 1)
            (link,) = clients(redis_server, name)
            assert not is_pubsub(link), link
            published = [
                (await producer.publish(Invalidate(["jobs", n]), to=Topic("jobs")))[0]
                for n in range(3)
            ]
            with anyio.fail_after(10):
                await received.wait_for(lambda: received.of(STREAM) == published)
            (now,) = clients(redis_server, name)
            assert now["id"] == link["id"]  # one connection carried every publish
        await until(lambda: clients(redis_server, name) == [])  # and left with the producer
        assert (received.resets, listener.reconnects) == (0, 0)
    finally:
        await listener.aclose()


async def test_a_hub_on_the_same_url_keeps_its_pubsub_and_command_connections(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    hub_name, producer_name = "hub-" + redis_prefix, "producer-" + redis_prefix
    hub_url = redis_server.backplane_url(prefix=redis_prefix, client_name=hub_name)
    producer_url = redis_server.backplane_url(prefix=redis_prefix, client_name=producer_name)
    async with (
        Hub(hub_url) as hub,
        connect_asgi(WebSocketEndpoint(hub)) as ws,
        Producer(producer_url) as producer,
    ):
        await ws.send_json({"type": "hello", "topics": ["jobs"]})
        await ws.receive_until(lambda m: m.get("stream") == STREAM)
        (published,) = await producer.publish(Invalidate(["jobs", 7]), to=Topic("jobs"))
        with anyio.fail_after(10):
            got = await ws.receive_until(lambda m: m.get("type") == "invalidate")
        assert (got["stream"], got["offset"], got["keys"]) == (
            STREAM,
            published.offset,
            [["jobs", 7]],
        )
        await until(lambda: len(clients(redis_server, producer_name)) == 1)
        hub_clients = clients(redis_server, hub_name)
        # As before: the pub/sub connection (subscribed to the stream's channel; the pooled
        # connection the checks at start used) and the command pipeline.
        assert len(hub_clients) == 2, hub_clients
        (pubsub,) = [entry for entry in hub_clients if is_pubsub(entry)]
        assert int(pubsub["sub"]) >= 1  # (topic:jobs, and the client's other streams)
        assert not any(is_pubsub(entry) for entry in clients(redis_server, producer_name))


async def test_the_producer_reconnects_and_announces_what_failed_while_redis_was_down(
    own_redis_server: RedisServer,
) -> None:
    name, backplane = named_producer_backplane(own_redis_server)
    async with Producer(backplane) as producer:
        (before,) = await producer.publish(Invalidate(["jobs"]), to=Topic("jobs"))
        own_redis_server.kill9()
        await publish_fails_promptly(producer)
        await publish_fails_promptly(producer)  # at once
        assert producer.unannounced == {STREAM}
        assert backplane.seen.resets == 0

        own_redis_server.start()  # empty: no persistence
        with anyio.fail_after(10):
            await backplane.seen.wait_for(lambda: backplane.seen.resets >= 1)
        (after,) = await producer.publish(Invalidate(["jobs", 8]), to=Topic("jobs"))
        assert producer.unannounced == frozenset()
        # The announcement went first: a resync of the stream, in the new epoch.
        assert after.epoch != before.epoch and after.offset == 2
        replay = await backplane.replay(STREAM, Position(after.epoch, 0))
        announced, published = replay.publications
        assert published == after
        assert announced.slot == CONTROL_SLOT
        assert isinstance(decode_control(announced.body), ResyncStream)
        assert (backplane.seen.resets, backplane.reconnects) == (1, 1)
        await until(lambda: len(clients(own_redis_server, name)) == 1)  # one link again
        assert not is_pubsub(clients(own_redis_server, name)[0])


async def test_a_lost_command_connection_is_noticed_by_its_ping_and_reset(
    own_redis_server: RedisServer,
) -> None:
    """The command connection is the link: killed while idle (no publish to find it broken),
    the PING through it notices, the producer reconnects and resets, with one connection."""
    name, backplane = named_producer_backplane(own_redis_server)
    async with Producer(backplane) as producer:
        (first,) = await producer.publish(Invalidate(["jobs"]), to=Topic("jobs"))
        await until(lambda: len(clients(own_redis_server, name)) == 1)
        (killed,) = clients(own_redis_server, name)
        own_redis_server.command("CLIENT", "KILL", "ID", killed["id"])
        with anyio.fail_after(10):
            await backplane.seen.wait_for(lambda: backplane.seen.resets == 1)
        (second,) = await producer.publish(Invalidate(["jobs"]), to=Topic("jobs"))
        assert second.position == Position(first.epoch, first.offset + 1)  # nothing was lost
        (now,) = clients(own_redis_server, name)
        assert now["id"] != killed["id"] and not is_pubsub(now)
        assert backplane.reconnects == 1


async def test_a_paused_redis_fails_the_ping_and_publishing_resumes_after(
    own_redis_server: RedisServer,
) -> None:
    _, backplane = named_producer_backplane(own_redis_server)
    async with Producer(backplane) as producer:
        (before,) = await producer.publish(Invalidate(["jobs"]), to=Topic("jobs"))
        own_redis_server.pause()
        try:
            await until(lambda: not backplane.connected)  # no publish: the PING noticed
            await publish_fails_promptly(producer)
        finally:
            own_redis_server.resume()
        with anyio.fail_after(10):
            await backplane.seen.wait_for(lambda: backplane.seen.resets >= 1)
        (after,) = await producer.publish(Invalidate(["jobs", 8]), to=Topic("jobs"))
        assert after.epoch == before.epoch  # the server kept its data
        assert producer.unannounced == frozenset()
        replay = await backplane.replay(STREAM, before.position)
        assert replay.complete and replay.publications[-1] == after
        assert any(p.slot == CONTROL_SLOT for p in replay.publications)  # the announcement


async def test_a_relay_process_holds_one_connection(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """`run_relay` (`liveupdates relay`) only publishes: it starts its backplane publish-only
    too, and what is committed to the outbox reaches a listening backplane."""
    name = "relay-" + redis_prefix
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as db:
        create_outbox_table(db)
    listener = RedisBackplane.from_url(redis_server.backplane_url(prefix=redis_prefix))
    received = RecordingReceiver()
    await listener.start(received)
    try:
        await listener.listen(STREAM)
        url = redis_server.backplane_url(prefix=redis_prefix, client_name=name)
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_relay, f"sqlite:///{path}", url, handle_signals=False))
            with closing(sqlite3.connect(path)) as db, db:
                write_event(db, Invalidate(["jobs", 1]), to=Topic("jobs"))
            with anyio.fail_after(10):  # (published once the relay has started)
                await received.wait_for(lambda: len(received.of(STREAM)) == 1)
            await until(lambda: len(clients(redis_server, name)) == 1)
            (link,) = clients(redis_server, name)
            assert not is_pubsub(link), link
            tg.cancel_scope.cancel()
    finally:
        await listener.aclose()
