"""The outbox: merging, latest-value-wins, collapse into resync, bounds, one frame per drain."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from liveupdates import Event, Everyone, Hub, Invalidate, Limits, Set, Topic
from liveupdates._pipeline.outbox import Message, Outbox, event_message, position_prefix
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.events import encode_event, event_slot
from liveupdates.testing.websocket import connect_asgi


class Note(Event, tag="note"):
    text: str


def message(stream: str, offset: int, event: Event) -> Message:
    prefix = position_prefix(stream, "e1")
    return event_message(prefix, stream, "e1", offset, encode_event(event), event_slot(event), 0)


def frame(outbox: Outbox) -> list[dict[str, Any]]:
    text = outbox.drain()
    assert text is not None
    parsed = json.loads(text)
    assert isinstance(parsed, list)
    return parsed


def test_everything_pending_leaves_in_one_frame_in_order() -> None:
    outbox = Outbox(100, 1 << 20)
    outbox.push(message("topic:a", 1, Note("one")))
    outbox.push(message("topic:b", 1, Set(["x"], 1)))
    outbox.push(message("topic:a", 2, Note("two")))
    assert [(m["stream"], m["offset"]) for m in frame(outbox)] == [
        ("topic:a", 1), ("topic:b", 1), ("topic:a", 2),
    ]  # fmt: skip
    assert outbox.drain() is None


def test_invalidations_of_a_stream_merge_at_the_newest_position() -> None:
    outbox = Outbox(100, 1 << 20)
    outbox.push(message("topic:a", 1, Invalidate(["jobs", 1])))
    outbox.push(message("topic:a", 2, Note("between")))
    outbox.push(message("topic:b", 1, Invalidate(["other"])))
    outbox.push(message("topic:a", 3, Invalidate([["stats"], ["jobs"]])))
    assert frame(outbox) == [
        {"stream": "topic:a", "epoch": "e1", "offset": 2, "type": "note", "text": "between"},
        {"stream": "topic:b", "epoch": "e1", "offset": 1, "type": "invalidate",
         "keys": [["other"]]},
        {"stream": "topic:a", "epoch": "e1", "offset": 3, "type": "invalidate",
         "keys": [["stats"], ["jobs"]]},
    ]  # fmt: skip
    assert outbox.merged == 1


def test_set_keeps_only_the_newest_value_per_key() -> None:
    outbox = Outbox(100, 1 << 20)
    for offset in range(1, 6):
        outbox.push(message("user:u", offset, Set(["job", 7], offset)))
    outbox.push(message("user:u", 6, Set(["job", 8], "other key")))
    assert [(m["key"], m["data"], m["offset"]) for m in frame(outbox)] == [
        (["job", 7], 5, 5), (["job", 8], "other key", 6),
    ]  # fmt: skip


def test_overflow_collapses_into_a_resync_that_absorbs_later_events() -> None:
    outbox = Outbox(3, 1 << 20)
    outbox.push(Message('{"type":"pong"}'))  # control messages survive a collapse
    for offset in range(1, 4):
        outbox.push(message("topic:a", offset, Note(str(offset))))
    assert outbox.overflows == 1
    outbox.push(message("topic:a", 9, Note("absorbed")))
    outbox.push(message("topic:b", 1, Note("other stream")))
    assert frame(outbox) == [
        {"type": "pong"},
        {"type": "resync", "stream": "topic:a", "epoch": "e1", "offset": 9, "reason": "overflow"},
        {"stream": "topic:b", "epoch": "e1", "offset": 1, "type": "note", "text": "other stream"},
    ]


def test_a_resync_takes_the_place_of_the_oldest_event_it_replaces() -> None:
    outbox = Outbox(3, 1 << 20)
    outbox.push(message("topic:a", 1, Note("1")))
    outbox.push(message("topic:b", 1, Note("b")))
    outbox.push(message("topic:a", 2, Note("2")))
    outbox.push(Message('{"type":"pong"}'))  # a client's ping answered: the 4th message overflows
    assert [(m["type"], m.get("stream")) for m in frame(outbox)] == [
        ("resync", "topic:a"), ("resync", "topic:b"), ("pong", None),
    ]  # fmt: skip  # what was queued before the pong is still before it


def test_the_byte_bound_applies_too() -> None:
    outbox = Outbox(1000, 2000)
    for offset in range(1, 40):
        outbox.push(message("topic:a", offset, Note("x" * 100)))
        assert outbox.pending_bytes <= 2000
    assert frame(outbox)[0]["type"] == "resync"


def test_a_pending_resync_counts_in_the_bytes_operators_see() -> None:
    outbox = Outbox(1000, 1 << 20)
    outbox.resync("topic:a", "e1", 7, "backplane")
    outbox.resync("topic:a", "e1", 9, "backplane")  # merged into the first
    assert len(outbox) == 1
    assert 0 < outbox.pending_bytes < 200
    assert frame(outbox)[0]["type"] == "resync"
    assert outbox.pending_bytes == 0


def test_a_single_message_frame_is_shared_between_connections() -> None:
    shared = message("all", 1, Invalidate(["x"]))
    first, second = Outbox(10, 10_000), Outbox(10, 10_000)
    first.push(shared)
    second.push(shared)
    assert first.drain() is second.drain()  # the very same string: built once


@pytest.mark.anyio
async def test_a_client_that_reads_nothing_stays_within_its_bound_while_others_get_all() -> None:
    limits = Limits(
        outbox_max_messages=50, outbox_max_bytes=16_384, send_timeout=3600, rate=1000, burst=1000
    )
    async with Hub(limits=limits) as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app, send_buffer=1) as stuck, connect_asgi(app) as reader:
            for ws in (stuck, reader):
                await ws.send_json({"type": "hello", "topics": ["jobs"]})
                await ws.receive_until(lambda m: m.get("stream") == "topic:jobs")
            stuck_conn, reader_conn = hub.connections()
            largest = 0
            for n in range(100_000):
                event: Event = (Invalidate(["jobs", n]), Set(["job", n % 7], n), Note(str(n)))[
                    n % 3
                ]
                await hub.publish(event, to=Topic("jobs"))
                largest = max(largest, len(stuck_conn.outbox), stuck_conn.outbox.pending_bytes)
                if n % 1000 == 999:
                    # the reader keeps up: everything published so far reaches it
                    await reader.send_json({"type": "ping"})
                    last = await reader.receive_until(lambda m: m["type"] in ("note", "pong"))
                    while last["type"] != "pong":
                        last = await reader.receive_message()
            assert len(stuck_conn.outbox) <= 50
            assert stuck_conn.outbox.pending_bytes <= 16_384
            assert largest <= 16_384
            assert stuck_conn.outbox.overflows > 0
            assert reader_conn.outbox.overflows == 0
            # when it finally reads, the stuck client learns it must resync: nothing is silent
            with anyio.fail_after(5):
                resync = await stuck.receive_until(lambda m: m["type"] == "resync")
            assert (resync["stream"], resync["reason"]) == ("topic:jobs", "overflow")


@pytest.mark.anyio
async def test_a_client_whose_socket_stays_unwritable_is_closed_as_slow() -> None:
    hub = Hub(limits=Limits(send_timeout=0.2))
    async with hub, connect_asgi(WebSocketEndpoint(hub), send_buffer=1) as ws:
        await ws.send_json({"type": "hello"})  # and then never read
        await ws.receive_message()
        (conn,) = hub.connections()
        with anyio.fail_after(5):
            n = 0
            while not ws.finished.is_set():  # the publisher goes on, never waiting for it
                n += 1
                await hub.publish(Set(["n"], n), to=Everyone)
                assert len(conn.outbox) <= 1
        assert conn.close_code == 4503
        assert hub.stats().connections == 0
