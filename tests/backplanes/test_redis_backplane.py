"""What only the Redis backplane has: URL options, key layout, eviction, the client it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis_server import RedisServer

from liveupdates.backplanes import backplane_from_url
from liveupdates.backplanes.redis import RedisBackplane
from liveupdates.positions import Position
from liveupdates.testing import RecordingReceiver

STREAM = "topic:jobs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


@asynccontextmanager
async def started(
    server: RedisServer, prefix: str, options: str = ""
) -> AsyncIterator[tuple[RedisBackplane, RecordingReceiver]]:
    backplane = RedisBackplane.from_url(f"{server.url}?prefix={prefix}{options}")
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        yield backplane, receiver
    finally:
        await backplane.aclose()


def test_from_url_options() -> None:
    backplane = backplane_from_url(
        "redis://127.0.0.1:1/3?prefix=app&history_size=50&history_ttl=2.5&timeout=0.25"
        "&health_check_interval=0&max_reconnect_delay=1&socket_keepalive=true"
    )
    assert isinstance(backplane, RedisBackplane)
    assert (backplane.prefix, backplane.history_size, backplane.history_ttl) == ("app", 50, 2.5)
    kwargs = backplane._client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["socket_timeout"], kwargs["socket_keepalive"]) == (3, 0.25, True)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("history_size=0", "history_size must be >= 1"),
        ("history_size=x", "invalid redis:// backplane option"),
        ("history_ttl=0", "history_ttl >= 0.001"),
        ("timeout=0", "timeouts and delays > 0"),
        ("prefix={x}", "prefix must be non-empty"),
        ("nope=1", "unknown redis:// option"),
    ],
)
def test_from_url_rejects_bad_options(query: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RedisBackplane.from_url(f"redis://127.0.0.1:1/0?{query}")


@pytest.mark.redis
@pytest.mark.anyio
async def test_key_layout(redis_server: RedisServer, redis_prefix: str) -> None:
    async with started(redis_server, redis_prefix, "&history_ttl=30") as (backplane, _):
        pub = await backplane.publish(STREAM, b'{"type":"x"}', "inv")
    names = backplane.names(STREAM)
    tag = "{" + redis_prefix + ":topic:jobs}"
    assert names == (tag + ":meta", tag + ":log", tag + ":ch")
    assert len({key_slot(name.encode()) for name in names}) == 1
    meta = redis_server.command("HGETALL", names.meta)
    assert meta[b"epoch"].decode() == pub.epoch
    assert meta[b"offset"] == b"1"
    assert meta[b"server"] == redis_server.command("INFO", "server")["run_id"].encode()
    ((_id, fields),) = redis_server.command("XRANGE", names.log, "-", "+")
    assert fields[b"o"] == b"1"
    for key in names[:2]:
        assert 0 < redis_server.command("PTTL", key) <= 30_000


@pytest.mark.redis
@pytest.mark.anyio
async def test_history_is_trimmed_approximately_and_replayed_exactly(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with started(redis_server, redis_prefix, "&history_size=10") as (backplane, _):
        published = [await backplane.publish(STREAM, b"{}") for _ in range(500)]
        assert redis_server.command("XLEN", backplane.names(STREAM).log) < 150
        replay = await backplane.replay(STREAM, published[-11].position)
        assert replay.complete and replay.publications == published[-10:]
        assert not (await backplane.replay(STREAM, published[-12].position)).complete


@pytest.mark.redis
@pytest.mark.anyio
async def test_evicted_keys(redis_server: RedisServer, redis_prefix: str) -> None:
    async with started(redis_server, redis_prefix) as (backplane, _):
        names = backplane.names(STREAM)
        old = [await backplane.publish(STREAM, b"{}") for _ in range(3)]
        redis_server.command("DEL", names.log)  # history evicted, position kept
        assert not (await backplane.replay(STREAM, old[0].position)).complete
        assert (await backplane.replay(STREAM, old[-1].position)).complete
        redis_server.command("DEL", names.meta)  # position evicted: a new epoch
        new = await backplane.publish(STREAM, b"{}")
        assert new.epoch != old[0].epoch and new.offset == 1
        assert not (await backplane.replay(STREAM, old[-1].position)).complete


@pytest.mark.redis
@pytest.mark.anyio
async def test_given_client_with_decoded_responses(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    backplane = RedisBackplane(client, prefix=redis_prefix)
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b'{"type":"x","s":"\xc3\xa9"}', "inv")
        with anyio.fail_after(5):
            await receiver.wait_for(lambda: receiver.publications == [pub])
        replay = await backplane.replay(STREAM, Position(pub.epoch, 0))
        assert replay.publications == [pub]
    finally:
        await backplane.aclose()
    assert await client.ping()  # not closed: the application owns it
    await client.aclose()


@pytest.mark.redis
@pytest.mark.anyio
async def test_foreign_messages_on_a_channel_are_dropped(
    redis_server: RedisServer, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with started(redis_server, redis_prefix) as (backplane, receiver):
        await backplane.listen(STREAM)
        redis_server.command("PUBLISH", backplane.names(STREAM).channel, "not msgpack")
        pub = await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(5):
            await receiver.wait_for(lambda: bool(receiver.publications))
        assert receiver.publications == [pub]
        assert receiver.resets == 0
    assert "not a Publication" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_refuses_to_start_on_trio() -> None:
    backplane = RedisBackplane.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError, match="asyncio"):
        await backplane.start(RecordingReceiver())


@pytest.mark.redis
@pytest.mark.anyio
async def test_more_concurrent_commands_than_connections_wait_for_one(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A burst of handshakes (one replay each) must not look like Redis being down."""
    async with started(redis_server, redis_prefix, "&max_connections=4") as (backplane, receiver):
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b"{}")
        replays = []

        async def replay() -> None:
            replays.append(await backplane.replay(STREAM, Position(pub.epoch, 0)))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(replay)
        assert all(r.publications == [pub] for r in replays) and len(replays) == 200
        assert (backplane.reconnects, receiver.resets) == (0, 0)
