"""The backplane conformance kit: checks a `Backplane` against the rules in `backplanes.base`.

Run every check from any async test::

    await check_backplane(BackplaneFactory(make, shared_store=True))

or get one pytest test per check by subclassing `BackplaneConformance` (see its docstring).
`make(history_size=..., history_ttl=...)` returns a new, not yet started backplane. Each check
starts the backplanes it makes, uses fresh stream names and closes them again. A check that
fails raises `ConformanceError` (an `AssertionError`) saying what the contract wanted.

The age check waits about `history_ttl` (1 s) of real time: age is measured by the
backplane's clock, which the kit cannot advance.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio

from ..backplanes.base import Backplane
from ..errors import LiveUpdatesError
from ..positions import Position, Publication, Replay

__all__ = (
    "CHECKS",
    "BackplaneConformance",
    "BackplaneFactory",
    "ConformanceError",
    "MakeBackplane",
    "RecordingReceiver",
    "check_backplane",
)

_AGE_TTL = 1.0  # seconds of history_ttl in the age check
_POLL = 0.02
_BODIES = (
    b"{}",
    b'{"type":"invalidate","keys":[["jobs"],["stats",7]]}',
    '{"type":"t","s":"caf\u00e9 \u2713 \U0001f600"}'.encode(),
    b'{"type":"big","pad":"' + b"x" * 65_536 + b'"}',
)
_SLOTS = (None, "inv", 'set:["jobs",7,"\u00e9"]', "")


class ConformanceError(AssertionError):
    """A backplane broke the contract; the message says which rule and how."""


class MakeBackplane(Protocol):
    """Returns a new backplane, not started, with these history bounds."""

    def __call__(self, *, history_size: int, history_ttl: float) -> Backplane: ...


@dataclass(frozen=True, slots=True)
class BackplaneFactory:
    """What the kit needs to know about the implementation under test.

    `shared_store`: two backplanes made by `make` share one store (one Redis server and key
    prefix), so each sees the other's publications. `timeout`: seconds to wait for a delivery.
    """

    make: MakeBackplane
    shared_store: bool = False
    timeout: float = 5.0


class RecordingReceiver:
    """A `Receiver` that records what it gets, for tests: `publications` and `resets`."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.resets = 0
        self._changed: anyio.Event | None = None

    def deliver(self, publication: Publication) -> None:
        """Record `publication` and wake `wait_for`."""
        self.publications.append(publication)
        self._wake()

    def reset(self) -> None:
        """Count the reset and wake `wait_for`."""
        self.resets += 1
        self._wake()

    def of(self, stream: str) -> list[Publication]:
        """The recorded publications of `stream`, in delivery order."""
        return [pub for pub in self.publications if pub.stream == stream]

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds, checking it after each delivery and reset.

        Bound the wait with ``anyio.fail_after``.
        """
        while not predicate():
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


@asynccontextmanager
async def _started(
    factory: BackplaneFactory, *, history_size: int = 1000, history_ttl: float = 600.0
) -> AsyncIterator[tuple[Backplane, RecordingReceiver]]:
    backplane = factory.make(history_size=history_size, history_ttl=history_ttl)
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        yield backplane, receiver
    finally:
        await backplane.aclose()


def _streams(count: int) -> list[str]:
    run = secrets.token_hex(4)
    return [f"topic:lu-kit-{run}-{index}" for index in range(count)]


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


async def _delivered(
    factory: BackplaneFactory, receiver: RecordingReceiver, stream: str, count: int
) -> list[Publication]:
    try:
        with anyio.fail_after(factory.timeout):
            await receiver.wait_for(lambda: len(receiver.of(stream)) >= count)
    except TimeoutError:
        got = len(receiver.of(stream))
        raise ConformanceError(
            f"rule 3: {got} of {count} publications on listened stream {stream!r} reached "
            f"Receiver.deliver within {factory.timeout} s"
        ) from None
    return receiver.of(stream)


def _same(replay: Replay, expected: Sequence[Publication], what: str) -> None:
    _expect(replay.complete, f"rule 4: {what}: replay is not complete")
    got = [(pub.offset, pub) for pub in replay.publications]
    want = [(pub.offset, pub) for pub in expected]
    _expect(got == want, f"rule 4: {what}: replayed {got!r}, expected {want!r}")


async def check_offsets(factory: BackplaneFactory) -> None:
    """Rule 2: offsets of a stream grow by one per publication; streams are independent."""
    a, b = _streams(2)
    async with _started(factory) as (backplane, _):
        head_b = (await backplane.replay(b, None)).head
        published = [await backplane.publish(a, b"{}") for _ in range(5)]
        for before, after in itertools.pairwise(published):
            _expect(
                after.epoch == before.epoch and after.offset == before.offset + 1,
                f"rule 2: offsets must grow by one: {before.position} then {after.position}",
            )
        _expect(
            (await backplane.replay(b, None)).head == head_b,
            "rule 2: publishing on one stream moved the head of another",
        )
        first_b = await backplane.publish(b, b"{}")
        _expect(
            first_b.position == Position(head_b.epoch, head_b.offset + 1),
            f"rule 2: the first publication on a fresh stream whose head was {head_b} is at "
            f"{first_b.position}; the epoch must not change without a loss of history",
        )
        last_a = await backplane.publish(a, b"{}")
        _expect(
            last_a.offset == published[-1].offset + 1,
            "rule 2: publishing on another stream changed this stream's offsets",
        )


async def check_round_trip(factory: BackplaneFactory) -> None:
    """Body, slot and ts come back unchanged from publish, deliver and replay."""
    (stream,) = _streams(1)
    async with _started(factory) as (backplane, receiver):
        await backplane.listen(stream)
        start = (await backplane.replay(stream, None)).head
        published = []
        for body in _BODIES:
            for slot in _SLOTS:
                before = time.time()
                pub = await backplane.publish(stream, body, slot)
                _expect(
                    (pub.stream, pub.body, pub.slot) == (stream, body, slot),
                    f"publish returned {pub.stream!r}/{pub.slot!r}/{len(pub.body)} bytes for "
                    f"{stream!r}/{slot!r}/{len(body)} bytes",
                )
                _expect(
                    before - 60 <= pub.ts <= time.time() + 60,
                    f"ts must be the publisher's wall-clock time, got {pub.ts}",
                )
                published.append(pub)
        delivered = await _delivered(factory, receiver, stream, len(published))
        _expect(delivered == published, "delivered publications differ from published ones")
        replay = await backplane.replay(stream, start)
        _same(replay, published, "replay of every published body")


async def check_delivery_order(factory: BackplaneFactory) -> None:
    """Rule 3: concurrent publications reach the receiver once each, in offset order."""
    (stream,) = _streams(1)
    tasks, each = 4, 25
    async with _started(factory) as (backplane, receiver):
        await backplane.listen(stream)
        published: list[Publication] = []

        async def publisher(index: int) -> None:
            for number in range(each):
                body = b'{"type":"n","p":%d,"n":%d}' % (index, number)
                published.append(await backplane.publish(stream, body))

        async with anyio.create_task_group() as tg:
            for index in range(tasks):
                tg.start_soon(publisher, index)
        last = await backplane.publish(stream, b'{"type":"last"}')
        published.append(last)
        delivered = await _delivered(factory, receiver, stream, len(published))
        offsets = [pub.offset for pub in delivered]
        _expect(
            offsets == sorted(set(offsets)),
            f"rule 3: deliveries out of offset order or repeated: {offsets}",
        )
        _expect(
            delivered == sorted(published, key=lambda pub: pub.offset),
            "rule 3: the delivered publications are not exactly the published ones",
        )
        _expect(receiver.resets == 0, "Receiver.reset was called while nothing was lost")


async def check_listen_unlisten(factory: BackplaneFactory) -> None:
    """Listened streams are delivered; unlisten breaks nothing; listening again works."""
    a, b = _streams(2)
    async with _started(factory) as (backplane, receiver):
        await backplane.listen(a)
        await backplane.listen(b)
        await backplane.publish(a, b"{}")
        await backplane.publish(b, b"{}")
        await _delivered(factory, receiver, a, 1)
        await _delivered(factory, receiver, b, 1)
        await backplane.unlisten(a)
        await backplane.unlisten("topic:never-listened")
        after_a = await backplane.publish(a, b"{}")
        await backplane.publish(b, b"{}")
        await _delivered(factory, receiver, b, 2)
        await backplane.listen(a)
        again = await backplane.publish(a, b"{}")
        delivered = await _delivered(factory, receiver, a, 2)
        _expect(
            delivered[-1] == again and after_a.offset + 1 == again.offset,
            "a stream listened to again must be delivered again",
        )


async def check_replay_head(factory: BackplaneFactory) -> None:
    """`replay(stream, None)`: the head only, complete, stable while nothing is published."""
    (stream,) = _streams(1)
    async with _started(factory) as (backplane, _):
        fresh = await backplane.replay(stream, None)
        _expect(
            fresh.complete and not fresh.publications,
            f"replay(None) must be complete and empty, got {fresh!r}",
        )
        _expect(
            (await backplane.replay(stream, None)).head == fresh.head,
            "the head of an idle stream changed between two replay(None)",
        )
        for _ in range(3):
            last = await backplane.publish(stream, b"{}")
        head = await backplane.replay(stream, None)
        _expect(
            head.head == last.position and head.complete and not head.publications,
            f"replay(None) after publishing must be the last position {last.position}, "
            f"got {head!r}",
        )


async def check_replay_exact(factory: BackplaneFactory) -> None:
    """Rule 4: replay after any retained position is every later publication, in order."""
    (stream,) = _streams(1)
    async with _started(factory) as (backplane, _):
        start = (await backplane.replay(stream, None)).head
        published = [await backplane.publish(stream, b'{"n":%d}' % n) for n in range(5)]
        positions = [start] + [pub.position for pub in published]
        for index, since in enumerate(positions):
            replay = await backplane.replay(stream, since)
            _same(replay, published[index:], f"replay since {since}")
            _expect(replay.head == published[-1].position, f"wrong head {replay.head}")


async def check_replay_incomplete(factory: BackplaneFactory) -> None:
    """Rule 4: a position of another epoch, or ahead of the head, is not complete."""
    (stream,) = _streams(1)
    async with _started(factory) as (backplane, _):
        pub = await backplane.publish(stream, b"{}")
        for since, why in (
            (Position(pub.epoch + "x", pub.offset), "of another epoch"),
            (Position("", 0), "of the empty epoch"),
            (Position(pub.epoch, pub.offset + 1), "ahead of the head"),
            (Position(pub.epoch, pub.offset + 1000), "far ahead of the head"),
        ):
            replay = await backplane.replay(stream, since)
            _expect(
                not replay.complete and not replay.publications,
                f"rule 4: replay since a position {why} must be complete=False and empty, "
                f"got {replay!r}",
            )
            _expect(replay.head == pub.position, f"wrong head {replay.head} ({why})")


async def check_history_count(factory: BackplaneFactory) -> None:
    """History keeps `history_size` publications: older positions are not complete."""
    (stream,) = _streams(1)
    async with _started(factory, history_size=3) as (backplane, _):
        start = (await backplane.replay(stream, None)).head
        published = [await backplane.publish(stream, b"{}") for _ in range(5)]
        _same(
            await backplane.replay(stream, published[1].position),
            published[2:],
            "replay of exactly history_size publications",
        )
        for since in (start, published[0].position):
            replay = await backplane.replay(stream, since)
            _expect(
                not replay.complete and not replay.publications,
                f"rule 4: with history_size=3, replay since {since} (4 or 5 behind) must be "
                f"complete=False and empty, got {replay!r}",
            )


async def check_history_age(factory: BackplaneFactory) -> None:
    """History keeps publications younger than `history_ttl`; older ones make a gap."""
    (stream,) = _streams(1)
    async with _started(factory, history_ttl=_AGE_TTL) as (backplane, _):
        start = (await backplane.replay(stream, None)).head
        first_at = time.monotonic()
        first = await backplane.publish(stream, b"{}")
        await anyio.sleep(_AGE_TTL * 0.6)
        second_at = time.monotonic()
        second = await backplane.publish(stream, b"{}")
        if time.monotonic() - first_at < _AGE_TTL * 0.9:
            _same(await backplane.replay(stream, start), [first, second], "young history")
        polls = round((_AGE_TTL + factory.timeout) / _POLL)
        for _ in range(polls):  # the backplane's clock must move past first + history_ttl
            if not (await backplane.replay(stream, start)).complete:
                break
            await anyio.sleep(_POLL)
        else:
            raise ConformanceError(
                f"a publication older than history_ttl={_AGE_TTL} s was still replayed after "
                f"{_AGE_TTL + factory.timeout} s"
            )
        replay = await backplane.replay(stream, first.position)
        if time.monotonic() - second_at < _AGE_TTL * 0.9:  # else too late to tell
            _same(replay, [second], "replay of the publication younger than history_ttl")


async def check_shared_store(factory: BackplaneFactory) -> None:
    """Two backplanes on one store see each other's publications and share offsets."""
    if not factory.shared_store:
        return
    (stream,) = _streams(1)
    async with AsyncExitStack() as stack:
        one, one_got = await stack.enter_async_context(_started(factory))
        two, two_got = await stack.enter_async_context(_started(factory))
        await one.listen(stream)
        await two.listen(stream)
        first = await one.publish(stream, b'{"from":1}')
        second = await two.publish(stream, b'{"from":2}')
        _expect(
            second.position == Position(first.epoch, first.offset + 1),
            f"two backplanes on one store must share offsets: {first.position} then "
            f"{second.position}",
        )
        for receiver in (one_got, two_got):
            delivered = await _delivered(factory, receiver, stream, 2)
            _expect(delivered == [first, second], f"delivered {delivered!r}")
        _same(await one.replay(stream, Position(first.epoch, first.offset - 1)),
              [first, second], "replay from the other backplane")  # fmt: skip


async def check_closed(factory: BackplaneFactory) -> None:
    """`aclose` is idempotent; publishing afterwards raises a LiveUpdatesError."""
    (stream,) = _streams(1)
    async with _started(factory) as (backplane, _):
        await backplane.publish(stream, b"{}")
    await backplane.aclose()
    try:
        await backplane.publish(stream, b"{}")
    except LiveUpdatesError:
        return
    except Exception as exc:
        raise ConformanceError(
            f"publish after aclose raised {exc!r}, not a LiveUpdatesError"
        ) from exc
    raise ConformanceError("rule 1: publish after aclose did not raise")


async def check_publish_only(factory: BackplaneFactory) -> None:
    """`start_publishing`: publish and replay work as after `start`; with a shared store, a
    backplane started with `start` receives what the publish-only one publishes."""
    (stream,) = _streams(1)
    async with AsyncExitStack() as stack:
        listener: RecordingReceiver | None = None
        if factory.shared_store:
            other, listener = await stack.enter_async_context(_started(factory))
            await other.listen(stream)
        backplane = factory.make(history_size=1000, history_ttl=600.0)
        stack.push_async_callback(backplane.aclose)
        try:
            await backplane.start_publishing(RecordingReceiver())
            head = (await backplane.replay(stream, None)).head
            published = [await backplane.publish(stream, b'{"n":%d}' % n) for n in range(3)]
            replay = await backplane.replay(stream, head)
        except LiveUpdatesError as exc:
            raise ConformanceError(
                f"a backplane started with start_publishing failed to publish or replay: {exc!r}"
            ) from exc
        for before, after in itertools.pairwise([head, *(pub.position for pub in published)]):
            _expect(
                after == Position(before.epoch, before.offset + 1),
                f"rule 2: publish-only, offsets must grow by one: {before} then {after}",
            )
        _same(replay, published, "replay through a publish-only backplane")
        if listener is not None:
            delivered = await _delivered(factory, listener, stream, len(published))
            _expect(
                delivered == published,
                "rule 1: a listening backplane must receive what a publish-only one publishes",
            )


Check = Callable[[BackplaneFactory], Awaitable[None]]

CHECKS: tuple[Check, ...] = (
    check_offsets,
    check_round_trip,
    check_delivery_order,
    check_listen_unlisten,
    check_replay_head,
    check_replay_exact,
    check_replay_incomplete,
    check_history_count,
    check_history_age,
    check_shared_store,
    check_publish_only,
    check_closed,
)
"""Every check of the kit, in the order `check_backplane` runs them."""


async def check_backplane(factory: BackplaneFactory) -> None:
    """Run every check in `CHECKS`; raise `ConformanceError` at the first failure."""
    for check in CHECKS:
        try:
            await check(factory)
        except ConformanceError as exc:
            raise ConformanceError(f"{check.__name__}: {exc}") from exc


class BackplaneConformance:
    """One test per check of the kit: subclass it in a test module.

    For example::

        @pytest.mark.anyio
        class TestMyBackplane(BackplaneConformance):
            @pytest.fixture
            def backplane_factory(self) -> BackplaneFactory:
                return BackplaneFactory(make_my_backplane, shared_store=True)
    """

    async def test_offsets(self, backplane_factory: BackplaneFactory) -> None:
        await check_offsets(backplane_factory)

    async def test_round_trip(self, backplane_factory: BackplaneFactory) -> None:
        await check_round_trip(backplane_factory)

    async def test_delivery_order(self, backplane_factory: BackplaneFactory) -> None:
        await check_delivery_order(backplane_factory)

    async def test_listen_unlisten(self, backplane_factory: BackplaneFactory) -> None:
        await check_listen_unlisten(backplane_factory)

    async def test_replay_head(self, backplane_factory: BackplaneFactory) -> None:
        await check_replay_head(backplane_factory)

    async def test_replay_exact(self, backplane_factory: BackplaneFactory) -> None:
        await check_replay_exact(backplane_factory)

    async def test_replay_incomplete(self, backplane_factory: BackplaneFactory) -> None:
        await check_replay_incomplete(backplane_factory)

    async def test_history_count(self, backplane_factory: BackplaneFactory) -> None:
        await check_history_count(backplane_factory)

    async def test_history_age(self, backplane_factory: BackplaneFactory) -> None:
        await check_history_age(backplane_factory)

    async def test_shared_store(self, backplane_factory: BackplaneFactory) -> None:
        if not backplane_factory.shared_store:
            import pytest  # only ever imported while pytest runs this test

            pytest.skip("the backplane does not share a store between instances")
        await check_shared_store(backplane_factory)

    async def test_publish_only(self, backplane_factory: BackplaneFactory) -> None:
        await check_publish_only(backplane_factory)

    async def test_closed(self, backplane_factory: BackplaneFactory) -> None:
        await check_closed(backplane_factory)
