"""The conformance kit fails every check on a backplane that breaks what it checks."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable

import pytest

import liveupdates.testing
from liveupdates.backplanes.base import Backplane, Receiver
from liveupdates.backplanes.memory import MemoryBackplane
from liveupdates.positions import Position, Publication, Replay
from liveupdates.testing import BackplaneFactory, ConformanceError, check_backplane
from liveupdates.testing import backplane as kit

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


class _Wrapped:
    """A receiver that lets `change` decide what reaches the real one."""

    def __init__(self, inner: Receiver, change: Callable[[Publication], list[Publication]]):
        self.inner, self.change = inner, change

    def deliver(self, publication: Publication) -> None:
        for pub in self.change(publication):
            self.inner.deliver(pub)

    def reset(self) -> None:
        self.inner.reset()


class SkipsOffsets(MemoryBackplane):
    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        await super().publish(stream, b"{}", slot)
        return await super().publish(stream, body, slot)


class NewEpochPerFreshStream(MemoryBackplane):
    async def replay(self, stream: str, since: Position | None) -> Replay:
        replay = await super().replay(stream, since)
        if replay.head.offset == 0:
            return Replay(Position(secrets.token_hex(4), 0), [], replay.complete)
        return replay


class DropsSlots(MemoryBackplane):
    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        return await super().publish(stream, body, None)


class SwapsPairs(MemoryBackplane):
    async def start(self, receiver: Receiver) -> None:
        held: list[Publication] = []

        def swap(pub: Publication) -> list[Publication]:
            held.append(pub)
            return [held.pop(), held.pop()] if len(held) == 2 else []

        await super().start(_Wrapped(receiver, swap))


class DeliversTwice(MemoryBackplane):
    async def start(self, receiver: Receiver) -> None:
        await super().start(_Wrapped(receiver, lambda pub: [pub, pub]))


class ResetsOnPublish(MemoryBackplane):
    async def start(self, receiver: Receiver) -> None:
        def reset_too(pub: Publication) -> list[Publication]:
            receiver.reset()
            return [pub]

        await super().start(_Wrapped(receiver, reset_too))


class ForgetsUnlistened(MemoryBackplane):
    """Never delivers a stream again once it was unlistened."""

    forgotten: set[str]

    async def start(self, receiver: Receiver) -> None:
        self.forgotten = set()
        keep = lambda pub: [] if pub.stream in self.forgotten else [pub]  # noqa: E731
        await super().start(_Wrapped(receiver, keep))

    async def unlisten(self, stream: str) -> None:
        self.forgotten.add(stream)


class AlwaysComplete(MemoryBackplane):
    async def replay(self, stream: str, since: Position | None) -> Replay:
        replay = await super().replay(stream, since)
        return Replay(replay.head, replay.publications, True)


class ReplaysSinceToo(MemoryBackplane):
    """Off by one: replays the publication at `since` as well."""

    async def replay(self, stream: str, since: Position | None) -> Replay:
        if since is None or since.offset == 0:
            return await super().replay(stream, since)
        return await super().replay(stream, Position(since.epoch, since.offset - 1))


class PublishOnlyNotStarted(MemoryBackplane):
    """`start_publishing` that forgets to start."""

    async def start_publishing(self, receiver: Receiver) -> None:
        pass


class StaysOpen(MemoryBackplane):
    async def aclose(self) -> None:
        pass


class FailsOddlyWhenClosed(MemoryBackplane):
    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if not self._receivers:
            raise RuntimeError("closed")
        return await super().publish(stream, body, slot)


def make(
    cls: type[MemoryBackplane], size: int | None = None, ttl: float | None = None
) -> Callable[..., Backplane]:
    def factory(*, history_size: int, history_ttl: float) -> Backplane:
        return cls(history_size=size or history_size, history_ttl=ttl or history_ttl)

    return factory


BROKEN = [
    pytest.param(kit.check_offsets, make(SkipsOffsets), id="offsets-skip"),
    pytest.param(kit.check_offsets, make(NewEpochPerFreshStream), id="offsets-new-epoch"),
    pytest.param(kit.check_round_trip, make(DropsSlots), id="round-trip-slot"),
    pytest.param(kit.check_delivery_order, make(SwapsPairs), id="order-swapped"),
    pytest.param(kit.check_delivery_order, make(DeliversTwice), id="order-duplicates"),
    pytest.param(kit.check_delivery_order, make(ResetsOnPublish), id="order-spurious-reset"),
    pytest.param(kit.check_listen_unlisten, make(ForgetsUnlistened), id="relisten"),
    pytest.param(kit.check_replay_head, make(NewEpochPerFreshStream), id="head-unstable"),
    pytest.param(kit.check_replay_exact, make(ReplaysSinceToo), id="exact-off-by-one"),
    pytest.param(kit.check_replay_incomplete, make(AlwaysComplete), id="incomplete"),
    pytest.param(kit.check_history_count, make(MemoryBackplane, size=10**6), id="count"),
    pytest.param(kit.check_history_age, make(MemoryBackplane, ttl=3600.0), id="age"),
    pytest.param(kit.check_publish_only, make(PublishOnlyNotStarted), id="publish-only"),
    pytest.param(kit.check_closed, make(StaysOpen), id="closed-open"),
    pytest.param(kit.check_closed, make(FailsOddlyWhenClosed), id="closed-wrong-error"),
]


@pytest.mark.parametrize(("check", "broken"), BROKEN)
async def test_check_fails_on_broken_backplane(check: kit.Check, broken: kit.MakeBackplane) -> None:
    with pytest.raises(ConformanceError):
        await check(BackplaneFactory(broken, timeout=0.5))


async def test_shared_store_fails_on_separate_stores() -> None:
    with pytest.raises(ConformanceError, match="share offsets"):
        await kit.check_shared_store(BackplaneFactory(MemoryBackplane, shared_store=True))


async def test_check_backplane_names_the_failed_check() -> None:
    with pytest.raises(ConformanceError, match=r"^check_offsets: rule 2"):
        await check_backplane(BackplaneFactory(make(SkipsOffsets), timeout=0.5))


async def test_check_backplane_passes_memory() -> None:
    await check_backplane(BackplaneFactory(MemoryBackplane))


def test_every_check_is_a_test_of_the_pytest_class() -> None:
    tests = {name for name in vars(kit.BackplaneConformance) if name.startswith("test_")}
    assert tests == {check.__name__.replace("check_", "test_", 1) for check in kit.CHECKS}


def test_the_kit_exports_and_imports_little() -> None:
    assert isinstance(liveupdates.testing.__all__, tuple)
    assert all(hasattr(liveupdates.testing, name) for name in liveupdates.testing.__all__)
    code = (
        "import sys, liveupdates.testing; "
        "print(','.join(m for m in ('pytest', 'redis', 'trio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""  # usable without pytest; redis only for the redis backplane
