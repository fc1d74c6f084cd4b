"""The publish side on its own (no hub): a failed publish is announced before the next one."""

from __future__ import annotations

import pytest

from liveupdates import BackplaneUnavailable, Invalidate, Topic
from liveupdates._pipeline.control import CONTROL_SLOT, ResyncStream, decode_control
from liveupdates._pipeline.publisher import Publisher, prepare
from liveupdates.backplanes import MemoryBackplane
from liveupdates.positions import Publication
from liveupdates.testing import RecordingReceiver

pytestmark = pytest.mark.anyio


class Outage(MemoryBackplane):
    down = False

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if self.down:
            raise BackplaneUnavailable("down (test)")
        return await super().publish(stream, body, slot)


async def test_a_failed_publish_is_announced_before_the_next_publish() -> None:
    backplane, receiver = Outage(), RecordingReceiver()
    await backplane.start(receiver)
    publisher = Publisher(backplane)
    await publisher.publish_all([prepare(Invalidate(["jobs"]), to=Topic("a"))])
    backplane.down = True
    with pytest.raises(BackplaneUnavailable):
        await publisher.publish_all([prepare(Invalidate(["jobs", 7]), to=Topic("a"))])
    with pytest.raises(BackplaneUnavailable):  # still down: no second attempt hides it
        await publisher.publish_all([prepare(Invalidate(["jobs", 8]), to=Topic("b"))])
    assert publisher.unannounced == {"topic:a", "topic:b"}
    backplane.down = False  # back, and no reset: a publish-only producer gets none

    await publisher.publish_all([prepare(Invalidate(["stats"]), to=Topic("c"))])
    seen = [(p.stream, p.slot) for p in receiver.publications]
    assert seen == [
        ("topic:a", "inv"),
        ("topic:a", CONTROL_SLOT),
        ("topic:b", CONTROL_SLOT),
        ("topic:c", "inv"),
    ]
    assert all(
        isinstance(decode_control(p.body), ResyncStream)
        for p in receiver.publications
        if p.slot == CONTROL_SLOT
    )
    assert publisher.unannounced == set()
