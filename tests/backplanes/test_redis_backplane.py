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
from liveupdates.errors import BackplaneError, BackplaneUnavailable
from liveupdates.positions import Position, Publication
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
    assert isinstance(backplane._client, aioredis.Redis)
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
async def test_a_burst_of_concurrent_commands_is_not_mistaken_for_redis_down(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """A burst of handshakes (one replay each) must not look like Redis being down."""
    async with started(redis_server, redis_prefix) as (backplane, receiver):
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


@pytest.mark.redis
@pytest.mark.anyio
async def test_concurrent_publishes_each_get_their_own_position(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Publishes share one pipelined connection: each must get the reply to its own command
    (the offsets of its stream, in its epoch), whatever the others do meanwhile."""
    streams = {f"topic:s{i}": i + 1 for i in range(8)}  # stream -> publishes, all different
    async with started(redis_server, redis_prefix) as (backplane, _receiver):
        got: dict[str, list[Publication]] = {stream: [] for stream in streams}

        async def publish(stream: str) -> None:
            got[stream].append(await backplane.publish(stream, stream.encode()))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for round_ in range(max(streams.values())):
                    for stream, count in streams.items():
                        if round_ < count:
                            tg.start_soon(publish, stream)
        for stream, count in streams.items():
            publications = got[stream]
            assert sorted(p.offset for p in publications) == list(range(1, count + 1))
            assert {p.body for p in publications} == {stream.encode()}
            assert len({p.epoch for p in publications}) == 1
            head = (await backplane.replay(stream, None)).head
            assert head == Position(publications[0].epoch, count)  # the epoch Redis has


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_publish_cancelled_in_flight_leaves_the_next_ones_their_replies(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    async with started(redis_server, redis_prefix) as (backplane, receiver):
        await backplane.listen(STREAM)
        first = await backplane.publish(STREAM, b"1")
        with anyio.move_on_after(0):  # cancelled once written, before its reply arrives
            await backplane.publish(STREAM, b"2")
        third = await backplane.publish(STREAM, b"3")
        assert third.position == Position(first.epoch, first.offset + 2)  # "2" ran all the same
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: len(receiver.of(STREAM)) == 3)
        assert [p.body for p in receiver.of(STREAM)] == [b"1", b"2", b"3"]
        assert (backplane.reconnects, receiver.resets) == (0, 0)


@pytest.mark.redis
@pytest.mark.anyio
async def test_an_error_reply_fails_its_publish_only(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Redis refusing one command (here a key of the wrong type) is that publish's error, not a
    lost connection: the commands around it get their replies, nothing reconnects."""
    async with started(redis_server, redis_prefix) as (backplane, receiver):
        broken = "topic:broken"
        redis_server.command("SET", backplane.names(broken).meta, "not a hash")
        results: dict[str, Publication | BaseException] = {}

        async def publish(stream: str) -> None:
            try:
                results[stream] = await backplane.publish(stream, b"{}")
            except BackplaneError as exc:
                results[stream] = exc

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for stream in ("topic:a", broken, "topic:b"):
                    tg.start_soon(publish, stream)
        assert isinstance(results[broken], BackplaneError)
        assert not isinstance(results[broken], BackplaneUnavailable)
        assert "WRONGTYPE" in str(results[broken])
        for stream in ("topic:a", "topic:b"):
            assert isinstance(results[stream], Publication)
            assert results[stream].offset == 1  # type: ignore[union-attr]
        assert (await backplane.publish("topic:a", b"{}")).offset == 2
        assert (backplane.reconnects, receiver.resets) == (0, 0)


@pytest.mark.redis
@pytest.mark.anyio
async def test_with_the_hiredis_parser(redis_server: RedisServer, redis_prefix: str) -> None:
    """The `[hiredis]` extra: redis-py then parses with hiredis, whose RESP3 push messages are
    a list subclass (they were once taken for something else: no SUBSCRIBE was confirmed).
    Runs where hiredis is installed (``pip install 'liveupdates[redis,hiredis]'``)."""
    pytest.importorskip("hiredis")
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    async with started(redis_server, redis_prefix) as (backplane, receiver):
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(5):
            await receiver.wait_for(lambda: receiver.publications == [pub])
        assert (await backplane.replay(STREAM, Position(pub.epoch, 0))).publications == [pub]


@pytest.mark.redis
@pytest.mark.anyio
async def test_a_publish_only_backplane_publishes_and_replays_but_refuses_to_listen(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    backplane = RedisBackplane.from_url(f"{redis_server.url}?prefix={redis_prefix}")
    receiver = RecordingReceiver()
    await backplane.start_publishing(receiver)
    try:
        with pytest.raises(RuntimeError, match=r"start_publishing.*cannot listen"):
            await backplane.listen(STREAM)
        await backplane.unlisten(STREAM)  # nothing to do
        pub = await backplane.publish(STREAM, b"{}")
        assert (await backplane.replay(STREAM, Position(pub.epoch, 0))).publications == [pub]
        assert backplane.connected and receiver.publications == []
    finally:
        await backplane.aclose()
