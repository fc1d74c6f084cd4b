"""Throttling: leading and trailing edges; the last update arrives, at most two per window."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveupdates import Hub, Invalidate, Set, ThrottleRule, Topic
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.events import encode_event, event_slot
from liveupdates.testing.websocket import connect_asgi
from liveupdates.throttle import Throttle

WINDOW = 1.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


steps = st.lists(
    st.tuples(
        st.one_of(st.floats(0, 0.2 * WINDOW), st.floats(0, 2.5 * WINDOW)),
        st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=500)
@given(steps=steps)
def test_last_update_of_every_key_arrives_and_at_most_two_per_window(
    steps: list[tuple[float, str]],
) -> None:
    clock = FakeClock()
    throttle = Throttle([ThrottleRule(WINDOW, type="set")], clock)
    delivered: dict[str, list[tuple[float, int]]] = {}
    offered: dict[str, list[tuple[float, int]]] = {}

    def deliver(body: bytes, at: float) -> None:
        data = json.loads(body)
        delivered.setdefault(data["key"][0], []).append((at, data["data"]))

    for value, (advance, key) in enumerate(steps):
        # windows that ended before this step release their trailing edge on time
        while (
            deadline := throttle.next_deadline()
        ) is not None and deadline <= clock.now + advance:
            clock.now = max(clock.now, deadline)
            for _, body, _ in throttle.due(clock.now):
                deliver(body, clock.now)
        clock.now += advance
        event = Set([key], value)
        offered.setdefault(key, []).append((clock.now, value))
        body = encode_event(event)
        if throttle.admit("topic:t", event, body, event_slot(event)):
            deliver(body, clock.now)
    while (deadline := throttle.next_deadline()) is not None:
        clock.now = max(clock.now, deadline)
        for _, body, _ in throttle.due(clock.now):
            deliver(body, clock.now)

    for key, offers in offered.items():
        times_values = delivered[key]
        last_time, last_value = offers[-1]
        assert times_values[-1][1] == last_value, "the last update was lost"
        assert times_values[-1][0] - last_time <= WINDOW + 1e-9, "late by more than a window"
        values = [v for _, v in times_values]
        assert values == sorted(values), "an older value overtook a newer one"
        times = [t for t, _ in times_values]
        for start in times:
            in_window = [t for t in times if start <= t < start + WINDOW - 1e-9]
            assert len(in_window) <= 2, f"{key}: {len(in_window)} deliveries in one window"


def test_rules_match_by_type_and_topic() -> None:
    rule = ThrottleRule(0.5, type="set", topic="jobs")
    assert rule.matches("topic:jobs", "set")
    assert not rule.matches("topic:jobs", "invalidate")
    assert not rule.matches("topic:other", "set")
    assert ThrottleRule(0.5).matches("user:x", "anything")
    with pytest.raises(ValueError, match="positive"):
        ThrottleRule(0)


@pytest.mark.anyio
async def test_a_flood_through_the_hub_sends_the_first_and_the_last() -> None:
    rules = [ThrottleRule(0.2, type="set"), ThrottleRule(0.2, topic="jobs")]
    async with Hub(throttle=rules) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello", "topics": ["jobs"]})
        await ws.receive_until(lambda m: m.get("stream") == "topic:jobs")
        for value in range(200):
            await hub.publish(Set(["job", 1, "progress"], value), to=Topic("jobs"))
            await hub.publish(Invalidate(["jobs"]), to=Topic("jobs"))
        received: list[dict[str, object]] = []
        invalidations = 0
        # both trailing edges: the last `set`, and the second invalidation (they are published
        # one after the other, and the first may reach the client before the second goes out)
        while not received or received[-1].get("data") != 199 or invalidations < 2:
            message = await ws.receive_message()
            if message.get("type") == "set":
                received.append(message)
            elif message.get("type") == "invalidate":
                invalidations += 1
        assert [m["data"] for m in received] == [0, 199]
        assert invalidations == 2
        assert hub.stats().throttled == 2 * 199
        assert hub.stats().publishes == 4  # leading and trailing edges of two keys
