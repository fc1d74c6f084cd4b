"""The typed event schema: built-in events, application events, pydantic payloads, one encode."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pydantic
import pytest

from liveupdates import Event, Everyone, Hub, Invalidate, Set, Topic
from liveupdates.events import encode_event, event_slot, merge_keys
from liveupdates.testing.websocket import connect_asgi

pytestmark = pytest.mark.anyio


class JobModel(pydantic.BaseModel):
    id: int
    status: str


class Progress(msgspec.Struct):
    done: int
    total: int


class JobFailed(Event, tag="job.failed"):
    job: JobModel
    error: str


class JobProgress(Event, tag="job.progress"):
    job_id: int
    progress: Progress

    def coalesce_key(self) -> str | None:
        return f"job:{self.job_id}"


def test_invalidate_accepts_one_key_or_a_list_and_drops_covered_keys() -> None:
    assert Invalidate(["jobs"]).keys == [["jobs"]]
    assert Invalidate([["jobs", 7], ["stats"], ["jobs"]]).keys == [["stats"], ["jobs"]]
    with pytest.raises(ValueError, match="query key"):
        Invalidate([])
    with pytest.raises(ValueError, match="query key"):
        Invalidate([[]])
    with pytest.raises(ValueError, match="query key"):
        Set("jobs", 1)  # type: ignore[arg-type]


def test_prefix_matching_is_tanstack_like() -> None:
    """A key covers the keys it is a prefix of (the invalidation merges them into it)."""
    assert merge_keys([["jobs"], ["jobs", 7, "progress"]]) == [["jobs"]]
    assert merge_keys([["jobs", 7], ["jobs", 7]]) == [["jobs", 7]]
    assert merge_keys([["jobs", 7], ["jobs"]]) == [["jobs"]]
    assert merge_keys([["jobs"], ["job"]]) == [["jobs"], ["job"]]
    assert merge_keys([["a", 1], ["a"], ["b", {"x": 1}]]) == [["a"], ["b", {"x": 1}]]


def test_application_events_encode_with_their_tag_and_pydantic_payloads() -> None:
    body = encode_event(JobFailed(JobModel(id=7, status="failed"), "disk full"))
    assert json.loads(body) == {
        "type": "job.failed",
        "job": {"id": 7, "status": "failed"},
        "error": "disk full",
    }
    assert event_slot(JobFailed(JobModel(id=1, status="x"), "e")) is None
    assert event_slot(JobProgress(7, Progress(1, 2))) == "job:7"
    assert event_slot(Invalidate(["x"])) == "inv"
    assert event_slot(Set(["job", 7], 1)) == 'set:["job",7]'


def test_reserved_event_types_are_refused_and_the_default_tag_is_the_class_name() -> None:
    class Welcome(Event, tag="welcome"):
        pass

    class Internal(Event, tag="lu.internal"):
        pass

    class Untagged(Event):
        pass

    for cls in (Welcome, Internal):
        with pytest.raises(TypeError, match="reserved"):
            encode_event(cls())
    assert json.loads(encode_event(Untagged())) == {"type": "Untagged"}


def test_fields_named_like_the_position_are_refused() -> None:
    """The server puts stream, epoch and offset in front of the body: a field of that name
    would override them in the browser (an event of one stream taken for another's)."""

    class Spoof(Event, tag="job.moved"):
        stream: str

    with pytest.raises(TypeError, match=r"Spoof: the field names \['stream'\] are reserved"):
        encode_event(Spoof("user:bob"))


def test_unencodable_payloads_are_a_clear_error() -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        encode_event(Set(["x"], object()))


async def test_one_encode_per_event_whatever_the_number_of_receivers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import liveupdates._pipeline.publisher
    import liveupdates.events

    calls: list[Any] = []
    real = liveupdates.events.encode_event

    def counting(event: Event) -> bytes:
        calls.append(event)
        return real(event)

    monkeypatch.setattr(liveupdates._pipeline.publisher, "encode_event", counting)
    from liveupdates.asgi import WebSocketEndpoint

    async with Hub() as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as a, connect_asgi(app) as b, connect_asgi(app) as c:
            for ws in (a, b, c):
                await ws.send_json({"type": "hello", "topics": ["jobs"]})
                await ws.receive_until(lambda m: m.get("stream") == "topic:jobs")
            await hub.publish(JobFailed(JobModel(id=1, status="failed"), "boom"), to=Everyone)
            await hub.publish(Invalidate(["jobs"]), to=[Topic("jobs"), Everyone])
            texts = []
            for ws in (a, b, c):
                failed = await ws.receive_until(lambda m: m.get("type") == "job.failed")
                texts.append(failed)
                await ws.receive_until(lambda m: m.get("type") == "invalidate")
                await ws.receive_until(lambda m: m.get("type") == "invalidate")
    assert len(calls) == 2  # two publishes, three receivers, two streams for the second
    assert texts[0] == texts[1] == texts[2]
