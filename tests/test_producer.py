"""The publish-only client (`Producer`, `SyncProducer`) on the in-memory backplane: what it
publishes, what it refuses, threads, timeouts and fork. Over Redis and to a browser: see
test_producer_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import anyio
import pytest

from liveupdates import (
    BackplaneUnavailable,
    Everyone,
    HubClosed,
    Invalidate,
    Producer,
    Set,
    SyncProducer,
    Topic,
    User,
)
from liveupdates._pipeline.control import CONTROL_SLOT, ResyncStream, decode_control
from liveupdates.backplanes import MemoryBackplane
from liveupdates.errors import ProducerClosed
from liveupdates.positions import Publication
from liveupdates.testing import RecordingReceiver


class Outage(MemoryBackplane):
    down = False

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if self.down:
            raise BackplaneUnavailable("down (test)")
        return await super().publish(stream, body, slot)


@pytest.mark.anyio
async def test_publishes_what_hub_publish_would_and_returns_positions() -> None:
    backplane, seen = MemoryBackplane(), RecordingReceiver()
    await backplane.start(seen)
    async with Producer(backplane) as producer:
        first = await producer.publish(Invalidate(["jobs"]), to=[User("alice"), Topic("jobs")])
        (second,) = await producer.publish(Set(["jobs", 7], {"done": 1}), to=Everyone)
    assert [(p.stream, p.offset) for p in first] == [("user:alice", 1), ("topic:jobs", 1)]
    assert seen.publications == [*first, second]
    assert second.body == b'{"type":"set","key":["jobs",7],"data":{"done":1}}'
    assert producer.publishes == 2


@pytest.mark.anyio
async def test_refuses_bad_events_at_the_call_site_and_publishing_when_closed() -> None:
    producer = Producer("memory://")
    with pytest.raises(ProducerClosed, match="not running"):
        await producer.publish(Invalidate(["jobs"]), to=Everyone)
    async with producer:
        with pytest.raises(ValueError, match="query key"):
            await producer.publish(Invalidate([]), to=Everyone)
        with pytest.raises(ValueError, match="at least one target"):
            await producer.publish(Invalidate(["jobs"]), to=[])
    with pytest.raises(HubClosed):  # ProducerClosed is a HubClosed, as for Hub.publish
        await producer.publish(Invalidate(["jobs"]), to=Everyone)


@pytest.mark.anyio
async def test_a_producer_that_could_not_connect_can_be_started_again() -> None:
    class Flaky(MemoryBackplane):
        refuse = True

        async def start(self, receiver: object) -> None:
            if self.refuse:
                raise BackplaneUnavailable("Redis is unavailable (connect): refused (test)")
            await super().start(receiver)  # type: ignore[arg-type]

    backplane = Flaky()
    producer = Producer(backplane)
    with pytest.raises(BackplaneUnavailable, match="refused"):
        await producer.start()
    backplane.refuse = False
    async with producer:
        (publication,) = await producer.publish(Invalidate(["jobs"]), to=Everyone)
    assert publication.offset == 1


@pytest.mark.anyio
async def test_a_transaction_publishes_on_commit_and_nothing_on_rollback() -> None:
    backplane, seen = MemoryBackplane(), RecordingReceiver()
    await backplane.start(seen)
    async with Producer(backplane) as producer:
        with pytest.raises(RuntimeError, match="rolled back"):
            async with producer.transaction() as tx:
                tx.publish(Invalidate(["rolled back"]), to=Everyone)
                raise RuntimeError("rolled back")
        async with producer.transaction() as tx:
            tx.publish(Invalidate(["a"]), to=Everyone)
            tx.publish(Invalidate(["b"]), to=Everyone)
            assert seen.publications == []  # held until the commit
    assert [p.body for p in seen.publications] == [
        b'{"type":"invalidate","keys":[["a"]]}',
        b'{"type":"invalidate","keys":[["b"]]}',
    ]


@pytest.mark.anyio
async def test_a_failed_publish_is_announced_when_the_backplane_reconnects() -> None:
    backplane, seen = Outage(), RecordingReceiver()
    await backplane.start(seen)
    async with Producer(backplane) as producer:
        backplane.down = True
        with pytest.raises(BackplaneUnavailable):
            await producer.publish(Invalidate(["jobs", 7]), to=Topic("jobs"))
        assert producer.unannounced == {"topic:jobs"}
        backplane.down = False
        for receiver in backplane._receivers:  # the backplane is back (as Redis calls it)
            receiver.reset()
        with anyio.fail_after(5):
            await seen.wait_for(lambda: any(p.slot == CONTROL_SLOT for p in seen.publications))
    (announced,) = seen.publications
    assert announced.stream == "topic:jobs"
    assert isinstance(decode_control(announced.body), ResyncStream)
    assert producer.unannounced == frozenset()


@pytest.fixture
def sync_producer() -> Iterator[tuple[SyncProducer, MemoryBackplane]]:
    backplanes: list[MemoryBackplane] = []

    def make() -> MemoryBackplane:
        backplanes.append(MemoryBackplane())
        return backplanes[-1]

    producer = SyncProducer(make, timeout=5)
    producer.publish(Invalidate(["warm up"]), to=Everyone)
    try:
        yield producer, backplanes[0]
    finally:
        producer.close()


def test_sync_publishes_from_many_threads_on_one_connection(
    sync_producer: tuple[SyncProducer, MemoryBackplane],
) -> None:
    producer, backplane = sync_producer
    offsets: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        for i in range(20):
            (p,) = producer.publish(Set(["jobs", n, i], i), to=Topic("jobs"))
            with lock:
                offsets.append(p.offset)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(offsets) == list(range(1, 161))
    assert backplane._streams["topic:jobs"].offset == 160  # one backplane for every thread


def test_sync_transaction_commits_after_the_block_and_drops_on_error(
    sync_producer: tuple[SyncProducer, MemoryBackplane],
) -> None:
    producer, backplane = sync_producer
    with pytest.raises(KeyError), producer.transaction() as tx:
        tx.publish(Invalidate(["dropped"]), to=Topic("t"))
        raise KeyError("rollback")
    with producer.transaction() as tx:
        tx.publish(Invalidate(["kept"]), to=Topic("t"))
    history = [p.body for _, p in backplane._streams["topic:t"].history]
    assert history == [b'{"type":"invalidate","keys":[["kept"]]}']


def test_sync_errors_are_clear_and_bounded() -> None:
    with pytest.raises(ValueError, match="unknown backplane URL scheme"):
        SyncProducer("http://localhost")

    class Stuck(MemoryBackplane):
        async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
            await anyio.sleep_forever()
            raise AssertionError

    with (
        SyncProducer(Stuck, timeout=0.2) as producer,
        pytest.raises(BackplaneUnavailable, match=r"did not answer within 0.2 s"),
    ):
        producer.publish(Invalidate(["jobs"]), to=Everyone)
    with pytest.raises(ProducerClosed, match="closed"):
        producer.publish(Invalidate(["jobs"]), to=Everyone)

    class Unreachable(MemoryBackplane):
        async def start(self, receiver: object) -> None:
            raise BackplaneUnavailable("Redis is unavailable (connect): refused (test)")

    with SyncProducer(Unreachable) as producer:
        for _ in range(2):  # each call tries again
            with pytest.raises(BackplaneUnavailable, match="refused"):
                producer.publish(Invalidate(["jobs"]), to=Everyone)


def test_a_child_forked_while_another_thread_connects_publishes_on_its_own() -> None:
    """Fork while a thread of the parent holds the producer (connecting): the child does not
    wait for that thread (it does not exist in the child), it opens its own connection."""
    script = textwrap.dedent(
        """
        import os, signal, threading
        from liveupdates import Invalidate, SyncProducer, Topic
        from liveupdates.backplanes import MemoryBackplane

        parent, entered, gate = os.getpid(), threading.Event(), threading.Event()

        class Slow(MemoryBackplane):
            async def start(self, receiver):
                if os.getpid() == parent:  # the parent's first connection takes a while
                    entered.set()
                    gate.wait(10)
                await super().start(receiver)

        producer = SyncProducer(Slow, timeout=5)
        worker = threading.Thread(
            target=lambda: producer.publish(Invalidate(["parent"]), to=Topic("t"))
        )
        worker.start()
        assert entered.wait(10)
        pid = os.fork()
        if pid == 0:
            signal.alarm(15)  # a child that hangs does not outlive the test
            try:
                (p,) = producer.publish(Invalidate(["child"]), to=Topic("t"))
                print("child", p.offset, flush=True)
                os._exit(0)
            except BaseException as exc:
                print("child failed:", repr(exc), flush=True)
                os._exit(1)
        gate.set()
        worker.join(10)
        _, status = os.waitpid(pid, 0)
        (p,) = producer.publish(Invalidate(["parent again"]), to=Topic("t"))
        print("parent", p.offset, "child exit", os.waitstatus_to_exitcode(status))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
        env={**os.environ},
    )  # fmt: skip
    assert done.stdout.splitlines() == ["child 1", "parent 2 child exit 0"], done.stderr
