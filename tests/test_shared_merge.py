"""Invalidations merge once per stream: connections at the same position share one merged frame.

A burst of invalidations piles up in the outbox of every connection of a stream. The merge (the
union of the keys) and the merged message's text are made once, by the first connection, and
every other connection that holds the same pending invalidations takes the same result; a
connection whose pending output went another way (it drained earlier, got a replayed event,
collapsed into a resync) merges on its own. What each client receives is what it received when
every connection merged its own: the property test below runs the same pushes and drains with
shared messages and with a private copy of every message per connection, and compares every
frame, and checks each merged invalidation against the keys that connection was sent.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import serve_hub, ws_client

from liveupdates import Event, Hub, Invalidate, Set, Topic
from liveupdates._pipeline.outbox import Message, Outbox, event_message, position_prefix
from liveupdates.events import encode_event, event_slot


class Note(Event, tag="note"):
    text: str


KEYS = [["jobs", 1], ["jobs", 2], ["jobs", 3], ["dashboard-stats"]]  # (none covers another)
STREAMS = ["topic:a", "topic:b"]


def message(stream: str, offset: int, event: Event) -> Message:
    prefix = position_prefix(stream, "e1")
    return event_message(prefix, stream, "e1", offset, encode_event(event), event_slot(event), 0)


def invalidate(stream: str, offset: int, keys: list[list[Any]]) -> Message:
    return message(stream, offset, Invalidate(keys))


def keys_of(frame: str, stream: str) -> list[Any]:
    (found,) = [m for m in json.loads(frame) if m.get("stream") == stream]
    assert found["type"] == "invalidate"
    return [tuple(key) for key in found["keys"]]


def test_connections_at_the_same_position_drain_the_very_same_merged_frame() -> None:
    """The union of the keys and the merged message's text are made once, not per connection."""
    outboxes = [Outbox(1000, 1 << 20) for _ in range(3)]
    for offset in range(1, 6):
        shared = invalidate("topic:a", offset, [["jobs", offset], ["dashboard-stats"]])
        for outbox in outboxes:
            outbox.push(shared)
    frames = [outbox.drain() for outbox in outboxes]
    assert frames[0] is frames[1] is frames[2]  # one string, built once
    assert frames[0] is not None
    assert json.loads(frames[0]) == [
        {"stream": "topic:a", "epoch": "e1", "offset": 5, "type": "invalidate",
         "keys": [["jobs", 1], ["dashboard-stats"], ["jobs", 2], ["jobs", 3], ["jobs", 4],
                  ["jobs", 5]]},
    ]  # fmt: skip


def test_a_connection_that_drained_earlier_or_fell_behind_gets_exactly_its_own_keys() -> None:
    ahead, behind, joined = Outbox(1000, 1 << 20), Outbox(1000, 1 << 20), Outbox(1000, 1 << 20)
    first = invalidate("topic:a", 1, [["jobs", 1]])
    second = invalidate("topic:a", 2, [["jobs", 2]])
    for outbox in (ahead, behind):
        outbox.push(first)
        outbox.push(second)
    assert keys_of(ahead.drain() or "", "topic:a") == [("jobs", 1), ("jobs", 2)]  # drains early
    joined.push(invalidate("topic:a", 2, [["jobs", 9]]))  # a replayed event: its own message
    third = invalidate("topic:a", 3, [["jobs", 3], ["dashboard-stats"]])
    fourth = invalidate("topic:a", 4, [["jobs", 4]])
    for outbox in (ahead, behind, joined):
        outbox.push(third)
        outbox.push(fourth)
    assert keys_of(ahead.drain() or "", "topic:a") == [("jobs", 3), ("dashboard-stats",),
                                                        ("jobs", 4)]  # fmt: skip
    behind_frame = behind.drain() or ""
    assert keys_of(behind_frame, "topic:a") == [
        ("jobs", 1), ("jobs", 2), ("jobs", 3), ("dashboard-stats",), ("jobs", 4),
    ]  # fmt: skip
    assert json.loads(behind_frame)[0]["offset"] == 4
    assert keys_of(joined.drain() or "", "topic:a") == [
        ("jobs", 9), ("jobs", 3), ("dashboard-stats",), ("jobs", 4),
    ]  # fmt: skip


def test_a_run_extended_by_one_connection_does_not_leak_into_another() -> None:
    """Two connections share merged keys; one gets an event the other does not: neither sees
    the other's keys, though both merged from the same shared run."""
    left, right = Outbox(1000, 1 << 20), Outbox(1000, 1 << 20)
    for offset, key in ((1, ["jobs", 1]), (2, ["jobs", 2])):
        shared = invalidate("topic:a", offset, [key])
        left.push(shared)
        right.push(shared)
    left.push(invalidate("topic:a", 3, [["jobs", 3]]))  # left extends the shared run first
    right.push(invalidate("topic:a", 3, [["dashboard-stats"]]))  # right goes another way
    assert keys_of(left.drain() or "", "topic:a") == [("jobs", 1), ("jobs", 2), ("jobs", 3)]
    assert keys_of(right.drain() or "", "topic:a") == [
        ("jobs", 1), ("jobs", 2), ("dashboard-stats",),
    ]  # fmt: skip


# -- the property: shared messages change nothing a client receives -------------------------

kinds = st.sampled_from(["inv", "inv", "inv", "note", "set"]).flatmap(  # mostly what merges
    lambda kind: st.tuples(
        st.just(kind),
        st.lists(st.sampled_from(range(len(KEYS))), min_size=1, max_size=3, unique=True)
        if kind == "inv"
        else st.integers(0, 3 if kind == "note" else 1),
    )
)
conns = st.integers(0, 3)
steps = {
    "publish": st.tuples(st.just("publish"), st.sampled_from(STREAMS), kinds),
    "own": st.tuples(st.just("own"), conns, st.sampled_from(STREAMS), kinds),
    "drain": st.tuples(st.just("drain"), conns),
    "resync": st.tuples(st.just("resync"), conns, st.sampled_from(STREAMS)),
    "pong": st.tuples(st.just("pong"), conns),
}
operations = st.lists(
    st.sampled_from(["publish"] * 6 + ["own", "drain", "drain", "resync", "pong"]).flatmap(
        steps.__getitem__
    ),
    min_size=5,
    max_size=80,
)


def build(stream: str, offset: int, kind: tuple[str, Any]) -> Message:
    name, value = kind
    if name == "inv":
        return invalidate(stream, offset, [KEYS[i] for i in value])
    if name == "note":
        return message(stream, offset, Note(str(value) * 20))
    return message(stream, offset, Set(["progress", value], offset))


class Run:
    """Four connections' outboxes (each on some of the streams) and what they drained."""

    def __init__(self, subscriptions: list[set[str]], max_messages: int, max_bytes: int) -> None:
        self.subscriptions = subscriptions
        self.outboxes = [Outbox(max_messages, max_bytes) for _ in subscriptions]
        self.frames: list[list[str]] = [[] for _ in subscriptions]

    def publish(self, stream: str, make: Callable[[], Message], shared: bool) -> None:
        one = make()
        for outbox, streams in zip(self.outboxes, self.subscriptions, strict=True):
            if stream in streams:
                outbox.push(one if shared else make())

    def drain(self, conn: int) -> str | None:
        frame = self.outboxes[conn].drain()
        if frame is not None:
            self.frames[conn].append(frame)
        return frame

    def state(self) -> list[tuple[int, int, int, int, int]]:
        return [(len(o), o.pending_bytes, o.merged, o.overflows, o.overflow_resyncs)
                for o in self.outboxes]  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subscriptions=st.lists(st.sets(st.sampled_from(STREAMS), min_size=1), min_size=4, max_size=4),
    max_messages=st.integers(2, 40),
    max_bytes=st.integers(150, 4000),
    ops=operations,
)
def test_shared_merges_deliver_what_private_ones_do(
    subscriptions: list[set[str]], max_messages: int, max_bytes: int, ops: list[Any]
) -> None:
    shared, private = (Run(subscriptions, max_messages, max_bytes) for _ in range(2))
    offsets = dict.fromkeys(STREAMS, 0)
    # per connection and stream: the keys and newest offset of invalidations since its drain
    sent: list[dict[str, tuple[set[tuple[Any, ...]], int]]] = [{} for _ in subscriptions]
    resynced: list[set[str]] = [set() for _ in subscriptions]

    def record(conn: int, stream: str, kind: tuple[str, Any], offset: int) -> None:
        if kind[0] == "inv":
            keys, _ = sent[conn].get(stream, (set(), 0))
            sent[conn][stream] = keys | {tuple(KEYS[i]) for i in kind[1]}, offset

    for op in ops:
        if op[0] in ("publish", "own"):
            stream, kind = op[-2], op[-1]
            offsets[stream] += 1
            offset = offsets[stream]
            receivers = range(4) if op[0] == "publish" else [op[1]]
            make = functools.partial(build, stream, offset, kind)
            for run in (shared, private):
                if op[0] == "publish":
                    run.publish(stream, make, run is shared)
                else:  # an event for one connection only (a replay): its own message
                    run.outboxes[op[1]].push(build(stream, offset, kind))
            for conn in receivers:
                if stream in subscriptions[conn] or op[0] == "own":
                    record(conn, stream, kind, offset)
        elif op[0] == "drain":
            conn = op[1]
            private.drain(conn)
            check_frame(shared.drain(conn), sent[conn], resynced[conn])
            sent[conn], resynced[conn] = {}, set()
        elif op[0] == "resync":
            conn, stream = op[1], op[2]
            for run in (shared, private):
                run.outboxes[conn].resync(stream, "e1", offsets[stream], "backplane")
            resynced[conn].add(stream)
        else:
            for run in (shared, private):
                run.outboxes[op[1]].push(Message('{"type":"pong"}'))
        # what each outbox counts against its bounds, its merges and its collapses: the same
        assert shared.state() == private.state()
    for conn in range(4):
        shared.drain(conn)
        private.drain(conn)
    assert shared.frames == private.frames  # every frame, byte for byte


def check_frame(
    frame: str | None, sent: dict[str, tuple[set[tuple[Any, ...]], int]], resynced: set[str]
) -> None:
    """A drained frame carries, per stream, exactly the keys that connection was sent since its
    last drain, at the newest of their positions, or a resync of that stream."""
    messages = json.loads(frame) if frame is not None else []
    for stream, (keys, offset) in sent.items():
        mine = [m for m in messages if m.get("stream") == stream]
        if any(m["type"] == "resync" for m in mine) or stream in resynced:
            continue
        (merged,) = [m for m in mine if m["type"] == "invalidate"]
        assert {tuple(key) for key in merged["keys"]} == keys
        assert merged["offset"] == offset


# -- over the wire -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_burst_of_invalidations_reaches_every_client_merged_with_every_key() -> None:
    """Clients of one stream get a burst of invalidations whose keys differ from event to
    event: each receives every key, in fewer frames than events, ending at the last offset."""
    events, clients = 300, 8
    server = serve_hub(Hub())
    try:

        async def burst() -> None:
            hub: Hub = server.hub  # type: ignore[attr-defined]
            async with hub.transaction() as tx:  # released back to back
                for n in range(events):
                    tx.publish(Invalidate([["jobs", n], ["dashboard-stats"]]), to=Topic("jobs"))

        async def client(results: list[tuple[set[str], int, int]]) -> None:
            async with ws_client(server) as ws:
                await ws.handshake(topics=["jobs"])
                ready.append(None)
                if len(ready) == clients:
                    go.set()
                keys: set[str] = set()
                frames, offset = 0, 0
                while offset < events:
                    frame = json.loads(await ws.session.receive_text())
                    frames += 1
                    for m in frame:
                        if m.get("type") == "invalidate":
                            keys.update(json.dumps(key) for key in m["keys"])
                            offset = m["offset"]
                results.append((keys, frames, offset))

        ready: list[None] = []
        go = anyio.Event()
        results: list[tuple[set[str], int, int]] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(clients):
                    tg.start_soon(client, results)
                await go.wait()
                await server.acall(burst)
    finally:
        server.stop()
    wanted = {json.dumps(["jobs", n]) for n in range(events)} | {json.dumps(["dashboard-stats"])}
    assert len(results) == clients
    for keys, frames, offset in results:
        assert keys == wanted
        assert offset == events
        assert frames < events  # merged: the burst left in fewer frames than events
